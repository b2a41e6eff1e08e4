//! Per-shard counters kept in shared memory.
//!
//! Each shard writes only its own block (plain relaxed load + store: one writer, so no locked
//! instruction), and control sums the blocks for display. The index of a counter is its
//! position in [`Counter::ALL`]; changing that order is a layout change.

/// A shard-wide counter or gauge. Names follow Envoy's where Envoy has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Connections accepted from downstream.
    DownstreamCxTotal,
    /// Downstream connections currently open (gauge).
    DownstreamCxActive,
    /// Bytes received from downstream clients.
    DownstreamCxRxBytes,
    /// Bytes sent to downstream clients.
    DownstreamCxTxBytes,
    /// Upstream connections established.
    UpstreamCxTotal,
    /// Upstream connect attempts that failed (refused, unreachable, reset).
    UpstreamCxConnectFail,
    /// Upstream connect attempts that hit the cluster's connect_timeout.
    UpstreamCxConnectTimeout,
    /// Connections closed because the target cluster had no endpoint.
    UpstreamCxNoHealthyUpstream,
    /// Connections closed by the tcp_proxy idle_timeout.
    IdleTimeout,
    /// Connections closed with a reset forwarded from one side to the other.
    ResetForwarded,
    /// Bytes moved through a pipe with splice(2) (no copy through user space).
    BytesSpliced,
    /// Bytes moved with recv/send through a pooled buffer.
    BytesCopied,
    /// Connections still open when the drain deadline passed and were closed.
    DrainForcedClose,
    /// Snapshot generations this shard applied.
    ConfigApplied,
    /// Snapshot generations this shard refused (bad checksum, layout, or decode error).
    ConfigRejected,
    /// HTTP requests received (heads parsed).
    DownstreamRqTotal,
    /// Responses sent downstream, by class.
    DownstreamRq1xx,
    DownstreamRq2xx,
    DownstreamRq3xx,
    DownstreamRq4xx,
    DownstreamRq5xx,
    /// Requests refused as malformed or ambiguously framed (400, 431).
    DownstreamRqMalformed,
    /// Requests whose head did not arrive within `request_headers_timeout` (408).
    DownstreamRqHeadersTimeout,
    /// Requests that matched no virtual host or route (404).
    RouteNotFound,
    /// Requests sent upstream.
    UpstreamRqTotal,
    /// Upstream requests sent on a pooled (kept-alive) connection.
    UpstreamCxReused,
    /// Requests that hit the route timeout (504).
    UpstreamRqTimeout,
    /// Upstream connections that failed or closed before a whole response (502).
    UpstreamRqReset,
    /// Upstream responses refused as malformed or ambiguously framed (502).
    UpstreamRespMalformed,
    /// Upgraded connections (WebSocket) tunnelled.
    UpgradesTotal,
    /// Requests refused with 413: a body larger than the buffer filter's `max_request_bytes`.
    DownstreamRqTooLarge,
    /// Connections closed because no filter chain of their listener matched them.
    NoFilterChainMatch,
    /// `accept` failed for a reason other than an empty queue (EMFILE, ENFILE, ENOBUFS,
    /// ENOMEM): the connection waits in the kernel's queue while the shard backs off.
    DownstreamCxAcceptFailed,
    /// Listeners a generation asked for that could not be bound (the port in use, no
    /// permission): Envoy's `listener_manager.listener_create_failure`. Each generation tries
    /// them again. Counted in the first shard's block.
    ListenerCreateFailure,
    /// Times the data plane re-created the segment file because it had been removed or its
    /// header damaged while control was gone (see `shm::Segment::recreate`). First shard's
    /// block.
    SegmentRecreated,
    /// Upstream connections not opened because the cluster's connection circuit breaker was
    /// full (Envoy's `upstream_cx_overflow`).
    UpstreamCxOverflow,
    /// Requests refused with 503 (flag UO) because the cluster's pending-request or request
    /// circuit breaker was full (Envoy's `upstream_rq_pending_overflow`).
    UpstreamRqPendingOverflow,
    /// Connections the client closed while a request on them waited for its upstream: the
    /// upstream request is abandoned (Envoy's `downstream_cx_destroy_remote_active_rq`).
    DownstreamCxDestroyRemoteActiveRq,
    /// Retries not made because the cluster's retry circuit breaker was full (Envoy's
    /// `upstream_rq_retry_overflow`).
    UpstreamRqRetryOverflow,
    /// Responses the compressor filter compressed, and those it passed on as they were
    /// (Envoy's `compressor.<name>.<library>.compressed` / `not_compressed`, summed).
    CompressorCompressed,
    CompressorNotCompressed,
    /// Bytes into and out of the compressors.
    CompressorTotalUncompressedBytes,
    CompressorTotalCompressedBytes,
    /// Streams ended by the connection manager's `max_stream_duration` (Envoy's
    /// `downstream_rq_max_duration_reached`).
    DownstreamRqMaxDurationReached,
    /// Requests refused (400) by path normalization, and redirected (307) to the normalized
    /// path (Envoy's `downstream_rq_failed_path_normalization`,
    /// `downstream_rq_redirected_with_normalized_path`).
    DownstreamRqFailedPathNormalization,
    DownstreamRqRedirectedWithNormalizedPath,
    /// Upgrade requests refused (403) because nothing enables their type (Envoy's
    /// `downstream_rq_ws_on_non_ws_route`).
    DownstreamRqWsOnNonWsRoute,
    /// Copies of requests sent to mirror clusters, and requests a mirror policy drew but
    /// whose streaming body could not be copied.
    UpstreamRqMirrored,
    UpstreamRqMirrorSkipped,
    /// Retries made under a retry policy (Envoy's `upstream_rq_retry`), requests whose retry
    /// then succeeded (`upstream_rq_retry_success`), and failures that would have been
    /// retried but had used every retry (`upstream_rq_retry_limit_exceeded`).
    UpstreamRqRetry,
    UpstreamRqRetrySuccess,
    UpstreamRqRetryLimitExceeded,
    /// Retries that waited the jittered exponential back-off, or the interval a rate-limited
    /// response's header asked for (`upstream_rq_retry_backoff_exponential` / `_ratelimited`).
    UpstreamRqRetryBackoffExponential,
    UpstreamRqRetryBackoffRatelimited,
    /// Attempts ended by the retry policy's `per_try_timeout` (`upstream_rq_per_try_timeout`).
    UpstreamRqPerTryTimeout,
    /// Requests whose body could not be held for a retry (larger than the buffer limit, or
    /// streaming without a length): sent without retries (Envoy's
    /// `retry_or_shadow_abandoned`).
    RetryOrShadowAbandoned,
    /// The fault filter's delays and aborts injected, faults not injected because
    /// `max_active_faults` were active (Envoy's `fault.delays_injected`, `aborts_injected`,
    /// `faults_overflow`), and the faults active now (gauge, `fault.active_faults`).
    FaultDelaysInjected,
    FaultAbortsInjected,
    FaultFaultsOverflow,
    FaultActiveFaults,
    /// Outlier ejections made (Envoy's `outlier_detection.ejections_enforced_total` and by
    /// detector), and ejections not made because `max_ejection_percent` was reached
    /// (`ejections_overflow`).
    OutlierEjectionsEnforcedTotal,
    OutlierEjectionsEnforcedConsecutive5xx,
    OutlierEjectionsEnforcedConsecutiveGatewayFailure,
    OutlierEjectionsEnforcedConsecutiveLocalOriginFailure,
    OutlierEjectionsOverflow,
    /// Ejections by the success-rate and failure-percentage detectors (Envoy's
    /// `outlier_detection.ejections_enforced_success_rate`, `_failure_percentage`, and their
    /// `_local_origin_` forms).
    OutlierEjectionsEnforcedSuccessRate,
    OutlierEjectionsEnforcedFailurePercentage,
    OutlierEjectionsEnforcedLocalOriginSuccessRate,
    OutlierEjectionsEnforcedLocalOriginFailurePercentage,
    /// The HTTP local rate limit filter: requests it checked (`filter_enabled` drew them),
    /// found within the bucket, found over it, and answered over it (`filter_enforced`
    /// drew them): Envoy's `http_local_rate_limit.enabled`, `ok`, `rate_limited`,
    /// `enforced`.
    HttpLocalRateLimitEnabled,
    HttpLocalRateLimitOk,
    HttpLocalRateLimitRateLimited,
    HttpLocalRateLimitEnforced,
    /// Connections the network local rate limit closed (Envoy's
    /// `local_rate_limit.<stat_prefix>.rate_limited`).
    LocalRateLimitRateLimited,
    /// TLS, Envoy's `ssl.*` of listeners (downstream) and clusters (upstream): handshakes
    /// completed (`no_certificate`: of them, those whose client sent no certificate),
    /// handshakes that failed other than by verification (`connection_error`), peers refused
    /// for want of a certificate, for a certificate whose SAN matched no
    /// `match_typed_subject_alt_names` entry, or for one that did not verify (chain, expiry,
    /// revocation), and sessions resumed.
    SslHandshake,
    SslConnectionError,
    SslNoCertificate,
    SslFailVerifyNoCert,
    SslFailVerifySan,
    SslFailVerifyError,
    SslSessionReused,
    UpstreamSslHandshake,
    UpstreamSslConnectionError,
    UpstreamSslFailVerifySan,
    UpstreamSslFailVerifyError,
    UpstreamSslSessionReused,
    /// RBAC, Envoy's `http.<prefix>.rbac.allowed` / `denied` / `shadow_allowed` /
    /// `shadow_denied`, and the network filter's `<prefix>.rbac.allowed` / `denied` /
    /// `shadow_allowed` / `shadow_denied`.
    RbacAllowed,
    RbacDenied,
    RbacShadowAllowed,
    RbacShadowDenied,
    NetworkRbacAllowed,
    NetworkRbacDenied,
    NetworkRbacShadowAllowed,
    NetworkRbacShadowDenied,
    /// The CSRF filter, Envoy's `http.<prefix>.csrf.missing_source_origin` /
    /// `request_invalid` / `request_valid`.
    CsrfMissingSourceOrigin,
    CsrfRequestInvalid,
    CsrfRequestValid,
    /// The CORS filter, Envoy's `http.<prefix>.cors.origin_valid` / `origin_invalid`.
    CorsOriginValid,
    CorsOriginInvalid,
    /// Response codes not counted by code (`upstream_rq_<code>`) because the shard's code
    /// table had no room (see [`super::codes`]); their class counters still were.
    StatsCodeOverflow,
}

impl Counter {
    pub const ALL: [Counter; 100] = [
        Counter::DownstreamCxTotal,
        Counter::DownstreamCxActive,
        Counter::DownstreamCxRxBytes,
        Counter::DownstreamCxTxBytes,
        Counter::UpstreamCxTotal,
        Counter::UpstreamCxConnectFail,
        Counter::UpstreamCxConnectTimeout,
        Counter::UpstreamCxNoHealthyUpstream,
        Counter::IdleTimeout,
        Counter::ResetForwarded,
        Counter::BytesSpliced,
        Counter::BytesCopied,
        Counter::DrainForcedClose,
        Counter::ConfigApplied,
        Counter::ConfigRejected,
        Counter::DownstreamRqTotal,
        Counter::DownstreamRq1xx,
        Counter::DownstreamRq2xx,
        Counter::DownstreamRq3xx,
        Counter::DownstreamRq4xx,
        Counter::DownstreamRq5xx,
        Counter::DownstreamRqMalformed,
        Counter::DownstreamRqHeadersTimeout,
        Counter::RouteNotFound,
        Counter::UpstreamRqTotal,
        Counter::UpstreamCxReused,
        Counter::UpstreamRqTimeout,
        Counter::UpstreamRqReset,
        Counter::UpstreamRespMalformed,
        Counter::UpgradesTotal,
        Counter::DownstreamRqTooLarge,
        Counter::NoFilterChainMatch,
        Counter::DownstreamCxAcceptFailed,
        Counter::ListenerCreateFailure,
        Counter::SegmentRecreated,
        Counter::UpstreamCxOverflow,
        Counter::UpstreamRqPendingOverflow,
        Counter::DownstreamCxDestroyRemoteActiveRq,
        Counter::UpstreamRqRetryOverflow,
        Counter::CompressorCompressed,
        Counter::CompressorNotCompressed,
        Counter::CompressorTotalUncompressedBytes,
        Counter::CompressorTotalCompressedBytes,
        Counter::DownstreamRqMaxDurationReached,
        Counter::DownstreamRqFailedPathNormalization,
        Counter::DownstreamRqRedirectedWithNormalizedPath,
        Counter::DownstreamRqWsOnNonWsRoute,
        Counter::UpstreamRqMirrored,
        Counter::UpstreamRqMirrorSkipped,
        Counter::UpstreamRqRetry,
        Counter::UpstreamRqRetrySuccess,
        Counter::UpstreamRqRetryLimitExceeded,
        Counter::UpstreamRqRetryBackoffExponential,
        Counter::UpstreamRqRetryBackoffRatelimited,
        Counter::UpstreamRqPerTryTimeout,
        Counter::RetryOrShadowAbandoned,
        Counter::FaultDelaysInjected,
        Counter::FaultAbortsInjected,
        Counter::FaultFaultsOverflow,
        Counter::FaultActiveFaults,
        Counter::OutlierEjectionsEnforcedTotal,
        Counter::OutlierEjectionsEnforcedConsecutive5xx,
        Counter::OutlierEjectionsEnforcedConsecutiveGatewayFailure,
        Counter::OutlierEjectionsEnforcedConsecutiveLocalOriginFailure,
        Counter::OutlierEjectionsOverflow,
        Counter::OutlierEjectionsEnforcedSuccessRate,
        Counter::OutlierEjectionsEnforcedFailurePercentage,
        Counter::OutlierEjectionsEnforcedLocalOriginSuccessRate,
        Counter::OutlierEjectionsEnforcedLocalOriginFailurePercentage,
        Counter::HttpLocalRateLimitEnabled,
        Counter::HttpLocalRateLimitOk,
        Counter::HttpLocalRateLimitRateLimited,
        Counter::HttpLocalRateLimitEnforced,
        Counter::LocalRateLimitRateLimited,
        Counter::SslHandshake,
        Counter::SslConnectionError,
        Counter::SslNoCertificate,
        Counter::SslFailVerifyNoCert,
        Counter::SslFailVerifySan,
        Counter::SslFailVerifyError,
        Counter::SslSessionReused,
        Counter::UpstreamSslHandshake,
        Counter::UpstreamSslConnectionError,
        Counter::UpstreamSslFailVerifySan,
        Counter::UpstreamSslFailVerifyError,
        Counter::UpstreamSslSessionReused,
        Counter::RbacAllowed,
        Counter::RbacDenied,
        Counter::RbacShadowAllowed,
        Counter::RbacShadowDenied,
        Counter::NetworkRbacAllowed,
        Counter::NetworkRbacDenied,
        Counter::NetworkRbacShadowAllowed,
        Counter::NetworkRbacShadowDenied,
        Counter::CsrfMissingSourceOrigin,
        Counter::CsrfRequestInvalid,
        Counter::CsrfRequestValid,
        Counter::CorsOriginValid,
        Counter::CorsOriginInvalid,
        Counter::StatsCodeOverflow,
    ];

    pub const fn index(self) -> usize {
        self as usize
    }

    pub const fn name(self) -> &'static str {
        match self {
            Counter::DownstreamCxTotal => "downstream_cx_total",
            Counter::DownstreamCxActive => "downstream_cx_active",
            Counter::DownstreamCxRxBytes => "downstream_cx_rx_bytes_total",
            Counter::DownstreamCxTxBytes => "downstream_cx_tx_bytes_total",
            Counter::UpstreamCxTotal => "upstream_cx_total",
            Counter::UpstreamCxConnectFail => "upstream_cx_connect_fail",
            Counter::UpstreamCxConnectTimeout => "upstream_cx_connect_timeout",
            Counter::UpstreamCxNoHealthyUpstream => "upstream_cx_none_healthy",
            Counter::IdleTimeout => "idle_timeout",
            Counter::ResetForwarded => "reset_forwarded",
            Counter::BytesSpliced => "bytes_spliced",
            Counter::BytesCopied => "bytes_copied",
            Counter::DrainForcedClose => "drain_forced_close",
            Counter::ConfigApplied => "config_applied",
            Counter::ConfigRejected => "config_rejected",
            Counter::DownstreamRqTotal => "downstream_rq_total",
            Counter::DownstreamRq1xx => "downstream_rq_1xx",
            Counter::DownstreamRq2xx => "downstream_rq_2xx",
            Counter::DownstreamRq3xx => "downstream_rq_3xx",
            Counter::DownstreamRq4xx => "downstream_rq_4xx",
            Counter::DownstreamRq5xx => "downstream_rq_5xx",
            Counter::DownstreamRqMalformed => "downstream_rq_malformed",
            Counter::DownstreamRqHeadersTimeout => "downstream_rq_headers_timeout",
            Counter::RouteNotFound => "rq_route_not_found",
            Counter::UpstreamRqTotal => "upstream_rq_total",
            Counter::UpstreamCxReused => "upstream_cx_pool_reuse",
            Counter::UpstreamRqTimeout => "upstream_rq_timeout",
            Counter::UpstreamRqReset => "upstream_rq_reset",
            Counter::UpstreamRespMalformed => "upstream_resp_malformed",
            Counter::UpgradesTotal => "downstream_cx_upgrades_total",
            Counter::DownstreamRqTooLarge => "downstream_rq_too_large",
            Counter::NoFilterChainMatch => "no_filter_chain_match",
            Counter::DownstreamCxAcceptFailed => "downstream_cx_accept_failed",
            Counter::ListenerCreateFailure => "listener_create_failure",
            Counter::SegmentRecreated => "segment_recreated",
            Counter::UpstreamCxOverflow => "upstream_cx_overflow",
            Counter::UpstreamRqPendingOverflow => "upstream_rq_pending_overflow",
            Counter::DownstreamCxDestroyRemoteActiveRq => "downstream_cx_destroy_remote_active_rq",
            Counter::UpstreamRqRetryOverflow => "upstream_rq_retry_overflow",
            Counter::CompressorCompressed => "compressor_compressed",
            Counter::CompressorNotCompressed => "compressor_not_compressed",
            Counter::CompressorTotalUncompressedBytes => "compressor_total_uncompressed_bytes",
            Counter::CompressorTotalCompressedBytes => "compressor_total_compressed_bytes",
            Counter::DownstreamRqMaxDurationReached => "downstream_rq_max_duration_reached",
            Counter::DownstreamRqFailedPathNormalization => {
                "downstream_rq_failed_path_normalization"
            }
            Counter::DownstreamRqRedirectedWithNormalizedPath => {
                "downstream_rq_redirected_with_normalized_path"
            }
            Counter::DownstreamRqWsOnNonWsRoute => "downstream_rq_ws_on_non_ws_route",
            Counter::UpstreamRqMirrored => "upstream_rq_mirrored",
            Counter::UpstreamRqMirrorSkipped => "upstream_rq_mirror_skipped",
            Counter::UpstreamRqRetry => "upstream_rq_retry",
            Counter::UpstreamRqRetrySuccess => "upstream_rq_retry_success",
            Counter::UpstreamRqRetryLimitExceeded => "upstream_rq_retry_limit_exceeded",
            Counter::UpstreamRqRetryBackoffExponential => "upstream_rq_retry_backoff_exponential",
            Counter::UpstreamRqRetryBackoffRatelimited => "upstream_rq_retry_backoff_ratelimited",
            Counter::UpstreamRqPerTryTimeout => "upstream_rq_per_try_timeout",
            Counter::RetryOrShadowAbandoned => "retry_or_shadow_abandoned",
            Counter::FaultDelaysInjected => "fault_delays_injected",
            Counter::FaultAbortsInjected => "fault_aborts_injected",
            Counter::FaultFaultsOverflow => "fault_faults_overflow",
            Counter::FaultActiveFaults => "fault_active_faults",
            Counter::OutlierEjectionsEnforcedTotal => "outlier_detection_ejections_enforced_total",
            Counter::OutlierEjectionsEnforcedConsecutive5xx => {
                "outlier_detection_ejections_enforced_consecutive_5xx"
            }
            Counter::OutlierEjectionsEnforcedConsecutiveGatewayFailure => {
                "outlier_detection_ejections_enforced_consecutive_gateway_failure"
            }
            Counter::OutlierEjectionsEnforcedConsecutiveLocalOriginFailure => {
                "outlier_detection_ejections_enforced_consecutive_local_origin_failure"
            }
            Counter::OutlierEjectionsOverflow => "outlier_detection_ejections_overflow",
            Counter::OutlierEjectionsEnforcedSuccessRate => {
                "outlier_detection_ejections_enforced_success_rate"
            }
            Counter::OutlierEjectionsEnforcedFailurePercentage => {
                "outlier_detection_ejections_enforced_failure_percentage"
            }
            Counter::OutlierEjectionsEnforcedLocalOriginSuccessRate => {
                "outlier_detection_ejections_enforced_local_origin_success_rate"
            }
            Counter::OutlierEjectionsEnforcedLocalOriginFailurePercentage => {
                "outlier_detection_ejections_enforced_local_origin_failure_percentage"
            }
            Counter::HttpLocalRateLimitEnabled => "http_local_rate_limit_enabled",
            Counter::HttpLocalRateLimitOk => "http_local_rate_limit_ok",
            Counter::HttpLocalRateLimitRateLimited => "http_local_rate_limit_rate_limited",
            Counter::HttpLocalRateLimitEnforced => "http_local_rate_limit_enforced",
            Counter::LocalRateLimitRateLimited => "local_rate_limit_rate_limited",
            Counter::SslHandshake => "ssl_handshake",
            Counter::SslConnectionError => "ssl_connection_error",
            Counter::SslNoCertificate => "ssl_no_certificate",
            Counter::SslFailVerifyNoCert => "ssl_fail_verify_no_cert",
            Counter::SslFailVerifySan => "ssl_fail_verify_san",
            Counter::SslFailVerifyError => "ssl_fail_verify_error",
            Counter::SslSessionReused => "ssl_session_reused",
            Counter::UpstreamSslHandshake => "upstream_ssl_handshake",
            Counter::UpstreamSslConnectionError => "upstream_ssl_connection_error",
            Counter::UpstreamSslFailVerifySan => "upstream_ssl_fail_verify_san",
            Counter::UpstreamSslFailVerifyError => "upstream_ssl_fail_verify_error",
            Counter::UpstreamSslSessionReused => "upstream_ssl_session_reused",
            Counter::RbacAllowed => "rbac_allowed",
            Counter::RbacDenied => "rbac_denied",
            Counter::RbacShadowAllowed => "rbac_shadow_allowed",
            Counter::RbacShadowDenied => "rbac_shadow_denied",
            Counter::NetworkRbacAllowed => "network_rbac_allowed",
            Counter::NetworkRbacDenied => "network_rbac_denied",
            Counter::NetworkRbacShadowAllowed => "network_rbac_shadow_allowed",
            Counter::NetworkRbacShadowDenied => "network_rbac_shadow_denied",
            Counter::CsrfMissingSourceOrigin => "csrf_missing_source_origin",
            Counter::CsrfRequestInvalid => "csrf_request_invalid",
            Counter::CsrfRequestValid => "csrf_request_valid",
            Counter::CorsOriginValid => "cors_origin_valid",
            Counter::CorsOriginInvalid => "cors_origin_invalid",
            Counter::StatsCodeOverflow => "stats_code_overflow",
        }
    }

    /// Gauges go up and down; everything else only counts up.
    pub const fn is_gauge(self) -> bool {
        matches!(
            self,
            Counter::DownstreamCxActive | Counter::FaultActiveFaults
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Counter;

    #[test]
    fn all_is_in_index_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i, "{}", c.name());
        }
    }
}
