//! A cluster's policies: the HTTP protocol it is spoken to in, load balancing, circuit
//! breakers, outlier detection.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Http2Options;

/// How a cluster picks an endpoint (`lb_policy` and its settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LbPolicy {
    RoundRobin,
    Random,
    /// `RING_HASH` (`ring_hash_lb_config`: ring size bounds; xxHash only).
    RingHash {
        min_ring_size: u64,
        max_ring_size: u64,
    },
    /// `MAGLEV` (`maglev_lb_config.table_size`, a prime; default 65,537).
    Maglev {
        table_size: u64,
    },
    /// `LEAST_REQUEST` (`least_request_lb_config`: `choice_count`, default 2;
    /// `active_request_bias`, default 1.0, as the bits of an `f64`).
    LeastRequest {
        choice_count: u32,
        active_request_bias: u64,
    },
}

/// `envoy.config.cluster.v3.OutlierDetection`: the consecutive-failure detectors and the
/// success-rate and failure-percentage ones, with Envoy's defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierDetection {
    /// An ejected host returns at the first sweep (every `interval`) after its ejection
    /// time has passed.
    pub interval: Duration,
    /// Ejection time: `base_ejection_time` x the host's ejections, at most
    /// `max(max_ejection_time, base_ejection_time)`, plus up to `max_ejection_time_jitter`.
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_time_jitter: Duration,
    pub max_ejection_percent: u32,
    pub always_eject_one_host: bool,
    pub consecutive_5xx: u32,
    pub enforcing_consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub enforcing_consecutive_gateway_failure: u32,
    /// Local-origin failures (connect failures, timeouts, resets) counted apart from the
    /// upstream's 5xx; otherwise they count as 503 / 504.
    pub split_external_local_origin_errors: bool,
    pub consecutive_local_origin_failure: u32,
    pub enforcing_consecutive_local_origin_failure: u32,
    /// Success rate, every `interval` over the requests of the last one: hosts with at
    /// least `success_rate_request_volume` requests, when there are
    /// `success_rate_minimum_hosts` of them, whose rate is below the mean less
    /// `success_rate_stdev_factor` / 1000 standard deviations.
    pub success_rate_minimum_hosts: u32,
    pub success_rate_request_volume: u32,
    pub success_rate_stdev_factor: u32,
    pub enforcing_success_rate: u32,
    /// With `split_external_local_origin_errors`: the same over local-origin events.
    pub enforcing_local_origin_success_rate: u32,
    /// Failure percentage: hosts with at least `failure_percentage_request_volume`
    /// requests, when there are `failure_percentage_minimum_hosts` of them, that failed at
    /// least `failure_percentage_threshold` percent.
    pub failure_percentage_threshold: u32,
    pub failure_percentage_minimum_hosts: u32,
    pub failure_percentage_request_volume: u32,
    pub enforcing_failure_percentage: u32,
    pub enforcing_failure_percentage_local_origin: u32,
}

impl OutlierDetection {
    /// Whether the success-rate or failure-percentage detectors may eject (they then need
    /// each host's requests counted, and a sweep every `interval`).
    pub fn sweeps(&self) -> bool {
        let split = self.split_external_local_origin_errors;
        self.enforcing_success_rate > 0
            || self.enforcing_failure_percentage > 0
            || (split
                && (self.enforcing_local_origin_success_rate > 0
                    || self.enforcing_failure_percentage_local_origin > 0))
    }
}

/// A cluster's circuit-breaker thresholds for the whole process (each shard enforces its
/// share; see the data plane's `upstream::breaker`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreakers {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    /// `retry_budget`: retries in flight bounded by a share of the requests active and
    /// pending instead of `max_retries`.
    pub retry_budget: Option<RetryBudget>,
}

/// `CircuitBreakers.Thresholds.RetryBudget`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryBudget {
    /// `budget_percent` (default 20%), the bits of an `f64`.
    pub budget_percent: u64,
    /// `min_retry_concurrency` (default 3).
    pub min_retry_concurrency: u32,
}

impl Default for CircuitBreakers {
    /// Envoy's defaults for a cluster without `circuit_breakers`.
    fn default() -> Self {
        CircuitBreakers {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            retry_budget: None,
        }
    }
}

/// How HTTP requests reach a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpstreamProtocol {
    /// HTTP/1.1, with `HttpProtocolOptions.common_http_protocol_options`.
    Http1(UpstreamHttp),
    /// HTTP/2 (prior knowledge): `explicit_http_config.http2_protocol_options`, or the
    /// deprecated `Cluster.http2_protocol_options`; streams multiplexed per connection.
    Http2(UpstreamHttp, Http2Options),
}

impl UpstreamProtocol {
    /// The options common to every HTTP protocol.
    pub fn common(&self) -> &UpstreamHttp {
        match self {
            UpstreamProtocol::Http1(h) | UpstreamProtocol::Http2(h, _) => h,
        }
    }
}

impl Default for UpstreamProtocol {
    fn default() -> Self {
        UpstreamProtocol::Http1(UpstreamHttp::default())
    }
}

/// `typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]`
/// `.common_http_protocol_options`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamHttp {
    /// `idle_timeout`: a pooled connection idle this long is closed instead of reused
    /// (Envoy's default 1 h; `None` when set to 0, never).
    pub idle_timeout: Option<Duration>,
    /// `max_requests_per_connection`: a connection that served this many requests is closed
    /// (`None`: unlimited, Envoy's default).
    pub max_requests_per_connection: Option<u32>,
    /// `max_headers_count`: a response with more header fields is refused (502; default 100).
    pub max_headers_count: u32,
    /// `upstream_http_protocol_options`: the upstream TLS server name taken from each
    /// request (`auto_sni`) and the certificate checked against it (`auto_san_validation`).
    pub auto_sni: Option<AutoSni>,
}

/// `UpstreamHttpProtocolOptions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoSni {
    /// `auto_sni`: new connections send the request's host (not an IP address) as SNI.
    pub sni: bool,
    /// `auto_san_validation`: the server's certificate must be valid for that host.
    pub san_validation: bool,
    /// `override_auto_sni_header`: the header that names the host instead of `:authority`.
    pub header: Option<String>,
}

impl Default for UpstreamHttp {
    fn default() -> UpstreamHttp {
        UpstreamHttp {
            idle_timeout: Some(Duration::from_secs(3600)),
            max_requests_per_connection: None,
            max_headers_count: 100,
            auto_sni: None,
        }
    }
}
