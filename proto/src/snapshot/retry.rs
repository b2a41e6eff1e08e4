//! A route's `retry_policy` (or its virtual host's), with Envoy's defaults filled in.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::HeaderMatcher;

/// Envoy's `retry_on` conditions, one bit each (`x-envoy-retry-on` names and the gRPC ones of
/// `x-envoy-retry-grpc-on`, which `retry_on` also takes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryOn(pub u32);

impl RetryOn {
    /// Any 5xx response, a reset, a connect failure or a per-try timeout.
    pub const FIVE_XX: u32 = 1;
    /// 502, 503 or 504, a reset, a connect failure or a per-try timeout.
    pub const GATEWAY_ERROR: u32 = 1 << 1;
    /// No response: a reset, a connect failure or a per-try timeout.
    pub const RESET: u32 = 1 << 2;
    /// A reset before the request was wholly sent upstream.
    pub const RESET_BEFORE_REQUEST: u32 = 1 << 3;
    /// The connection could not be made (refused, timed out).
    pub const CONNECT_FAILURE: u32 = 1 << 4;
    /// A response carrying `x-envoy-ratelimited`.
    pub const ENVOY_RATELIMITED: u32 = 1 << 5;
    /// 409.
    pub const RETRIABLE_4XX: u32 = 1 << 6;
    /// An HTTP/2 stream refused (REFUSED_STREAM): never on an HTTP/1.1 upstream.
    pub const REFUSED_STREAM: u32 = 1 << 7;
    /// A status in `retriable_status_codes`.
    pub const RETRIABLE_STATUS_CODES: u32 = 1 << 8;
    /// A response matching one of `retriable_headers`.
    pub const RETRIABLE_HEADERS: u32 = 1 << 9;
    /// `grpc-status` in the response headers: 1, 4, 13, 8, 14.
    pub const GRPC_CANCELLED: u32 = 1 << 10;
    pub const GRPC_DEADLINE_EXCEEDED: u32 = 1 << 11;
    pub const GRPC_INTERNAL: u32 = 1 << 12;
    pub const GRPC_RESOURCE_EXHAUSTED: u32 = 1 << 13;
    pub const GRPC_UNAVAILABLE: u32 = 1 << 14;
    /// A connect failure after HTTP/3 was used: zerohop has no HTTP/3, so never.
    pub const HTTP3_POST_CONNECT_FAILURE: u32 = 1 << 15;
    pub const GRPC_ANY: u32 = Self::GRPC_CANCELLED
        | Self::GRPC_DEADLINE_EXCEEDED
        | Self::GRPC_INTERNAL
        | Self::GRPC_RESOURCE_EXHAUSTED
        | Self::GRPC_UNAVAILABLE;

    /// Each condition's name as `retry_on` spells it.
    pub const NAMES: [(&'static str, u32); 16] = [
        ("5xx", Self::FIVE_XX),
        ("gateway-error", Self::GATEWAY_ERROR),
        ("reset", Self::RESET),
        ("reset-before-request", Self::RESET_BEFORE_REQUEST),
        ("connect-failure", Self::CONNECT_FAILURE),
        ("envoy-ratelimited", Self::ENVOY_RATELIMITED),
        ("retriable-4xx", Self::RETRIABLE_4XX),
        ("refused-stream", Self::REFUSED_STREAM),
        ("retriable-status-codes", Self::RETRIABLE_STATUS_CODES),
        ("retriable-headers", Self::RETRIABLE_HEADERS),
        (
            "http3-post-connect-failure",
            Self::HTTP3_POST_CONNECT_FAILURE,
        ),
        ("cancelled", Self::GRPC_CANCELLED),
        ("deadline-exceeded", Self::GRPC_DEADLINE_EXCEEDED),
        ("internal", Self::GRPC_INTERNAL),
        ("resource-exhausted", Self::GRPC_RESOURCE_EXHAUSTED),
        ("unavailable", Self::GRPC_UNAVAILABLE),
    ];

    pub fn has(self, bits: u32) -> bool {
        self.0 & bits != 0
    }
}

/// `envoy.config.route.v3.RetryPolicy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    /// `num_retries` (default 1).
    pub num_retries: u32,
    /// `per_try_timeout`: each attempt's bound, from when it has a connection until the
    /// response head (`None`: the route timeout alone).
    pub per_try_timeout: Option<Duration>,
    /// `retry_back_off`: fully jittered exponential, from `base` (default 25 ms) up to `max`
    /// (default 10 x base).
    pub back_off_base: Duration,
    pub back_off_max: Duration,
    /// `rate_limited_retry_back_off`: the wait a response's header asks for.
    pub rate_limited: Option<RateLimitedBackOff>,
    /// `retry_host_predicate` `envoy.retry_host_predicates.previous_hosts`: a retry avoids
    /// the hosts already tried, picking again up to `host_selection_retry_max_attempts`
    /// times.
    pub previous_hosts: bool,
    pub host_selection_retry_max_attempts: u32,
    pub retriable_status_codes: Vec<u16>,
    pub retriable_headers: Vec<HeaderMatcher>,
    /// Retries only for requests matching one of these (none: every request).
    pub retriable_request_headers: Vec<HeaderMatcher>,
}

/// `RateLimitedRetryBackOff`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitedBackOff {
    /// `reset_headers`: the first present and valid one gives the wait.
    pub reset_headers: Vec<ResetHeader>,
    /// `max_interval` (default 300 s): a longer wait is not taken from the header.
    pub max_interval: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetHeader {
    /// Lower-case.
    pub name: String,
    /// `format`: `UNIX_TIMESTAMP` (else `SECONDS`).
    pub unix_timestamp: bool,
}
