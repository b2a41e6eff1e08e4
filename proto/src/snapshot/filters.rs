//! The HTTP filters' own configurations (the variants of [`super::HttpFilterConfig`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Fraction, HeaderMatcher, StringRule};

/// `envoy.filters.http.csrf` (its `CsrfPolicy`, the filter's or a route's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsrfConfig {
    /// `filter_enabled`: the share of requests checked and enforced.
    pub enabled: Fraction,
    /// `shadow_enabled`: the share checked and counted only.
    pub shadow: Fraction,
    /// `additional_origins`: source origins accepted besides the request's own host.
    pub additional_origins: Vec<StringRule>,
}

/// `envoy.extensions.filters.http.cors.v3.CorsPolicy` at one level (route configuration,
/// virtual host, route), or those levels merged as Envoy reads them: each field from the
/// most specific level that sets it, `filter_enabled` / `shadow_enabled` from the most
/// specific policy. `None` / empty: not set at that level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsPolicy {
    /// False for the filter's own (empty) config: no policy, the filter does nothing.
    pub present: bool,
    /// `allow_origin_string_match` (a rule that matches `*` allows every origin).
    pub allow_origins: Vec<StringRule>,
    pub allow_methods: Option<String>,
    pub allow_headers: Option<String>,
    pub expose_headers: Option<String>,
    pub max_age: Option<String>,
    pub allow_credentials: Option<bool>,
    pub allow_private_network_access: Option<bool>,
    pub forward_not_matching_preflights: Option<bool>,
    /// `filter_enabled` (unset: every request).
    pub enabled: Fraction,
    /// `shadow_enabled` (unset: none).
    pub shadow: Fraction,
}

/// `envoy.extensions.filters.http.compressor.v3.Compressor`, response direction, with
/// Envoy's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressorConfig {
    /// `compressor_library.name` (for logs).
    pub name: String,
    pub library: CompressorLibrary,
    /// `common_config.enabled` (its default value: control reads the runtime key).
    pub enabled: bool,
    /// `min_content_length` (default 30).
    pub min_content_length: u32,
    /// Media types compressed (lower-case; Envoy's default list when none is given).
    pub content_types: Vec<String>,
    pub disable_on_etag_header: bool,
    /// A strong `etag` becomes weak (`W/`) instead of being removed.
    pub weaken_etag_on_compress: bool,
    pub remove_accept_encoding_header: bool,
    /// Status codes never compressed.
    pub uncompressible_response_codes: Vec<u16>,
    pub choose_first: bool,
}

/// A compressor library and its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompressorLibrary {
    /// `envoy.compression.gzip.compressor`: zlib level 0-9, window bits 9-15.
    Gzip {
        level: u32,
        window_bits: u8,
        chunk_size: u32,
    },
    /// `envoy.compression.brotli.compressor`.
    Brotli {
        quality: u32,
        window_bits: u32,
        input_block_bits: u32,
        /// 0 generic, 1 text, 2 font.
        mode: u32,
        disable_literal_context_modeling: bool,
        chunk_size: u32,
    },
    /// `envoy.compression.zstd.compressor`.
    Zstd {
        level: i32,
        checksum: bool,
        /// 0 default, else ZSTD_strategy 1-9.
        strategy: u32,
        chunk_size: u32,
    },
}

impl CompressorLibrary {
    /// The `content-encoding` token it produces.
    pub fn encoding(&self) -> &'static str {
        match self {
            CompressorLibrary::Gzip { .. } => "gzip",
            CompressorLibrary::Brotli { .. } => "br",
            CompressorLibrary::Zstd { .. } => "zstd",
        }
    }
}

/// `envoy.extensions.filters.http.buffer.v3.Buffer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferConfig {
    /// Each request body is read whole (up to this many bytes, else 413) before the request
    /// goes upstream, with a `content-length` in place of chunked framing.
    pub max_request_bytes: u32,
}

/// `envoy.extensions.filters.http.fault.v3.HTTPFault`, its runtime keys read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultConfig {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
    /// Every one must match the request for a fault to apply.
    pub headers: Vec<HeaderMatcher>,
    /// When not empty, `x-envoy-downstream-service-node` must be one of these.
    pub downstream_nodes: Vec<String>,
    /// Faults active at once (delayed or aborted streams), on each shard; `None`: no limit.
    pub max_active_faults: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultDelay {
    /// `fixed_delay` (the runtime's `delay_duration_runtime` over it); `None`:
    /// `header_delay`, the request's `x-envoy-fault-delay-request` in ms.
    pub fixed: Option<Duration>,
    /// The share of requests delayed (`x-envoy-fault-delay-request-percentage` may lower it
    /// for header delays).
    pub percentage: Fraction,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultAbort {
    /// `http_status` (the runtime's `abort_http_status_runtime` over it); `None`:
    /// `header_abort`, the request's `x-envoy-fault-abort-request`.
    pub http_status: Option<u16>,
    pub percentage: Fraction,
    /// `response_body` (default `fault filter abort`).
    pub body: Option<String>,
}

/// `envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit` (the filter's, or a
/// route's in `typed_per_filter_config`, which replaces it), its runtime keys read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRateLimitConfig {
    pub stat_prefix: String,
    /// `status` of a limited request's reply (default 429).
    pub status: u16,
    /// `None`: this configuration limits nothing (Envoy's filter without a `token_bucket`,
    /// there for routes to configure).
    pub bucket: Option<TokenBucket>,
    /// `filter_enabled`: the share of requests the bucket is checked for (default 0%).
    pub enabled: Fraction,
    /// `filter_enforced`: the share of limited requests that are answered (default 0%).
    pub enforced: Fraction,
    /// `response_headers_to_add`, on limited requests' replies.
    pub response_headers: Vec<super::HeaderAdd>,
    /// `enable_retry_after_header`: a limited reply says when the bucket fills again.
    pub retry_after: bool,
}

/// `envoy.type.v3.TokenBucket`: `max_tokens`, refilled by `tokens_per_fill` every
/// `fill_interval` (at least 50 ms) from when it is first used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenBucket {
    /// Which bucket: control derives it from where the configuration is and what it says,
    /// so that a bucket keeps its tokens across generations while both stay the same, and
    /// two filters (or routes) never share one. Shared by every shard.
    pub id: u64,
    pub max_tokens: u32,
    pub tokens_per_fill: u32,
    pub fill_interval: Duration,
}

/// `envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRateLimit {
    pub stat_prefix: String,
    pub bucket: TokenBucket,
    /// `runtime_enabled`, its runtime key read (default: enabled).
    pub enabled: bool,
}
