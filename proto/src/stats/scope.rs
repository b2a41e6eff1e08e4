//! Envoy's stat scopes: what each holds, and where a scope lives in a shard's stat space.
//!
//! A scope is a run of words in each shard's stat space (see [`crate::shm`]): its counters
//! and gauges first, in the order of its kind's `ALL`, then its histograms, each
//! [`HIST_WORDS`] words. Control assigns the run's first word ([`StatScope`]) by the
//! scope's name when it compiles a snapshot; the data plane adds to `base + index`.
//! Changing a kind's list is a layout change ([`crate::shm::LAYOUT_VERSION`]).

use serde::{Deserialize, Serialize};

use super::hist::HIST_WORDS;

/// Where a scope's words start in every shard's stat space; [`StatScope::NONE`] when it
/// has none (a snapshot compiled for a test, or a stat space that was full).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StatScope(pub u32);

impl StatScope {
    pub const NONE: StatScope = StatScope(u32::MAX);

    pub fn is_none(self) -> bool {
        self == StatScope::NONE
    }
}

impl Default for StatScope {
    fn default() -> Self {
        StatScope::NONE
    }
}

/// A counter or gauge of some scope: its word within the scope.
pub trait ScopedStat: Copy {
    fn word(self) -> usize;
}

/// A histogram of some scope: its first word within the scope.
pub trait ScopedHist: Copy {
    fn word(self) -> usize;
}

/// A kind of scope: its stats and histograms and how many words it takes.
pub trait ScopeKind {
    /// The scope's name prefix (`cluster`, `http`, `listener`).
    const PREFIX: &'static str;
    /// Counters and gauges.
    const STATS: usize;
    /// Histograms.
    const HISTS: usize;
    /// Words a scope of this kind takes.
    const WORDS: usize = Self::STATS + Self::HISTS * HIST_WORDS;
    /// Name and whether it is a gauge, by index.
    fn stat(i: usize) -> (&'static str, bool);
    fn hist(i: usize) -> &'static str;
}

macro_rules! scope_kind {
    (
        $(#[$m:meta])* $kind:ident prefix $prefix:literal,
        $stat:ident { $($(#[$sm:meta])* $s:ident = $sn:literal : $sk:ident),* $(,)? },
        $hist:ident { $($(#[$hm:meta])* $h:ident = $hn:literal),* $(,)? }
    ) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug)]
        pub struct $kind;

        /// Counters and gauges of the scope, in layout order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u16)]
        pub enum $stat { $($(#[$sm])* $s),* }

        /// Histograms of the scope, in layout order (milliseconds).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $hist { $($(#[$hm])* $h),* }

        impl $stat {
            pub const ALL: &'static [$stat] = &[$($stat::$s),*];
            pub const fn name(self) -> &'static str {
                match self { $($stat::$s => $sn),* }
            }
            pub const fn is_gauge(self) -> bool {
                match self { $($stat::$s => scope_kind!(@gauge $sk)),* }
            }
            /// The word within the scope.
            #[inline]
            pub const fn word(self) -> usize {
                self as usize
            }
        }

        impl $hist {
            pub const ALL: &'static [$hist] = &[$($hist::$h),*];
            pub const fn name(self) -> &'static str {
                match self { $($hist::$h => $hn),* }
            }
            /// The histogram's first word within the scope.
            #[inline]
            pub const fn word(self) -> usize {
                $stat::ALL.len() + self as usize * HIST_WORDS
            }
        }

        impl ScopedStat for $stat {
            #[inline]
            fn word(self) -> usize {
                $stat::word(self)
            }
        }

        impl ScopedHist for $hist {
            #[inline]
            fn word(self) -> usize {
                $hist::word(self)
            }
        }

        impl ScopeKind for $kind {
            const PREFIX: &'static str = $prefix;
            const STATS: usize = $stat::ALL.len();
            const HISTS: usize = $hist::ALL.len();
            fn stat(i: usize) -> (&'static str, bool) {
                let s = $stat::ALL[i];
                (s.name(), s.is_gauge())
            }
            fn hist(i: usize) -> &'static str {
                $hist::ALL[i].name()
            }
        }
    };
    (@gauge gauge) => { true };
    (@gauge counter) => { false };
}

scope_kind! {
    /// `listener.<address>.*`: a listener's connections (the address as Envoy writes it,
    /// `127.0.0.1_10000`).
    ListenerScope prefix "listener",
    ListenerStat {
        DownstreamCxTotal = "downstream_cx_total": counter,
        DownstreamCxDestroy = "downstream_cx_destroy": counter,
        DownstreamCxActive = "downstream_cx_active": gauge,
        /// Connections closed because no filter chain matched them.
        NoFilterChainMatch = "no_filter_chain_match": counter,
        /// Listener filters that ran out of `listener_filters_timeout`.
        DownstreamPreCxTimeout = "downstream_pre_cx_timeout": counter,
        /// The listener's TLS handshakes and their failures.
        SslHandshake = "ssl.handshake": counter,
        SslConnectionError = "ssl.connection_error": counter,
        SslNoCertificate = "ssl.no_certificate": counter,
        SslFailVerifyNoCert = "ssl.fail_verify_no_cert": counter,
        SslFailVerifySan = "ssl.fail_verify_san": counter,
        SslFailVerifyError = "ssl.fail_verify_error": counter,
        SslSessionReused = "ssl.session_reused": counter,
    },
    ListenerHist {
        DownstreamCxLengthMs = "downstream_cx_length_ms",
    }
}

scope_kind! {
    /// `http.<stat_prefix>.*`: a connection manager's connections, requests and router.
    HttpScope prefix "http",
    HttpStat {
        DownstreamCxTotal = "downstream_cx_total": counter,
        DownstreamCxSslTotal = "downstream_cx_ssl_total": counter,
        DownstreamCxHttp1Total = "downstream_cx_http1_total": counter,
        DownstreamCxHttp2Total = "downstream_cx_http2_total": counter,
        DownstreamCxDestroy = "downstream_cx_destroy": counter,
        DownstreamCxActive = "downstream_cx_active": gauge,
        DownstreamCxSslActive = "downstream_cx_ssl_active": gauge,
        DownstreamCxHttp1Active = "downstream_cx_http1_active": gauge,
        DownstreamCxHttp2Active = "downstream_cx_http2_active": gauge,
        DownstreamCxRxBytesTotal = "downstream_cx_rx_bytes_total": counter,
        DownstreamCxTxBytesTotal = "downstream_cx_tx_bytes_total": counter,
        DownstreamCxDestroyRemoteActiveRq = "downstream_cx_destroy_remote_active_rq": counter,
        DownstreamCxUpgradesTotal = "downstream_cx_upgrades_total": counter,
        DownstreamRqTotal = "downstream_rq_total": counter,
        DownstreamRqHttp1Total = "downstream_rq_http1_total": counter,
        DownstreamRqHttp2Total = "downstream_rq_http2_total": counter,
        DownstreamRqActive = "downstream_rq_active": gauge,
        DownstreamRqCompleted = "downstream_rq_completed": counter,
        DownstreamRq1xx = "downstream_rq_1xx": counter,
        DownstreamRq2xx = "downstream_rq_2xx": counter,
        DownstreamRq3xx = "downstream_rq_3xx": counter,
        DownstreamRq4xx = "downstream_rq_4xx": counter,
        DownstreamRq5xx = "downstream_rq_5xx": counter,
        DownstreamRqTooLarge = "downstream_rq_too_large": counter,
        DownstreamRqHeaderTimeout = "downstream_rq_header_timeout": counter,
        DownstreamRqMaxDurationReached = "downstream_rq_max_duration_reached": counter,
        DownstreamRqWsOnNonWsRoute = "downstream_rq_ws_on_non_ws_route": counter,
        DownstreamRqFailedPathNormalization = "downstream_rq_failed_path_normalization": counter,
        DownstreamRqRedirectedWithNormalizedPath = "downstream_rq_redirected_with_normalized_path": counter,
        /// The router's: requests no route matched, direct responses and redirects.
        NoRoute = "no_route": counter,
        RqDirectResponse = "rq_direct_response": counter,
        RqRedirect = "rq_redirect": counter,
    },
    HttpHist {
        DownstreamCxLengthMs = "downstream_cx_length_ms",
        DownstreamRqTime = "downstream_rq_time",
    }
}

scope_kind! {
    /// `cluster.<name>.*`: a cluster's connections and requests. Membership gauges
    /// (`membership_total`, `membership_healthy`) are control's: it knows the endpoints and
    /// their health.
    ClusterScope prefix "cluster",
    ClusterStat {
        UpstreamCxTotal = "upstream_cx_total": counter,
        UpstreamCxHttp1Total = "upstream_cx_http1_total": counter,
        UpstreamCxHttp2Total = "upstream_cx_http2_total": counter,
        UpstreamCxActive = "upstream_cx_active": gauge,
        UpstreamCxConnectFail = "upstream_cx_connect_fail": counter,
        UpstreamCxConnectTimeout = "upstream_cx_connect_timeout": counter,
        UpstreamCxOverflow = "upstream_cx_overflow": counter,
        UpstreamCxNoneHealthy = "upstream_cx_none_healthy": counter,
        UpstreamCxDestroy = "upstream_cx_destroy": counter,
        UpstreamRqTotal = "upstream_rq_total": counter,
        UpstreamRqActive = "upstream_rq_active": gauge,
        UpstreamRqCompleted = "upstream_rq_completed": counter,
        UpstreamRq1xx = "upstream_rq_1xx": counter,
        UpstreamRq2xx = "upstream_rq_2xx": counter,
        UpstreamRq3xx = "upstream_rq_3xx": counter,
        UpstreamRq4xx = "upstream_rq_4xx": counter,
        UpstreamRq5xx = "upstream_rq_5xx": counter,
        UpstreamRqTimeout = "upstream_rq_timeout": counter,
        UpstreamRqPerTryTimeout = "upstream_rq_per_try_timeout": counter,
        UpstreamRqPendingTotal = "upstream_rq_pending_total": counter,
        UpstreamRqPendingActive = "upstream_rq_pending_active": gauge,
        UpstreamRqPendingOverflow = "upstream_rq_pending_overflow": counter,
        UpstreamRqRetry = "upstream_rq_retry": counter,
        UpstreamRqRetrySuccess = "upstream_rq_retry_success": counter,
        UpstreamRqRetryOverflow = "upstream_rq_retry_overflow": counter,
        UpstreamRqRetryLimitExceeded = "upstream_rq_retry_limit_exceeded": counter,
        /// Outlier detection's ejections, made and refused by `max_ejection_percent`.
        OutlierEjectionsEnforcedTotal = "outlier_detection.ejections_enforced_total": counter,
        OutlierEjectionsOverflow = "outlier_detection.ejections_overflow": counter,
        OutlierEjectionsEnforcedConsecutive5xx = "outlier_detection.ejections_enforced_consecutive_5xx": counter,
        OutlierEjectionsEnforcedConsecutiveGatewayFailure = "outlier_detection.ejections_enforced_consecutive_gateway_failure": counter,
        OutlierEjectionsEnforcedConsecutiveLocalOriginFailure = "outlier_detection.ejections_enforced_consecutive_local_origin_failure": counter,
        OutlierEjectionsEnforcedSuccessRate = "outlier_detection.ejections_enforced_success_rate": counter,
        OutlierEjectionsEnforcedFailurePercentage = "outlier_detection.ejections_enforced_failure_percentage": counter,
        OutlierEjectionsEnforcedLocalOriginSuccessRate = "outlier_detection.ejections_enforced_local_origin_success_rate": counter,
        OutlierEjectionsEnforcedLocalOriginFailurePercentage = "outlier_detection.ejections_enforced_local_origin_failure_percentage": counter,
    },
    ClusterHist {
        UpstreamCxConnectMs = "upstream_cx_connect_ms",
        UpstreamCxLengthMs = "upstream_cx_length_ms",
        UpstreamRqTime = "upstream_rq_time",
    }
}

scope_kind! {
    /// `tcp.<stat_prefix>.*`: a tcp_proxy's connections and bytes.
    TcpScope prefix "tcp",
    TcpStat {
        DownstreamCxTotal = "downstream_cx_total": counter,
        DownstreamCxRxBytesTotal = "downstream_cx_rx_bytes_total": counter,
        DownstreamCxTxBytesTotal = "downstream_cx_tx_bytes_total": counter,
        IdleTimeout = "idle_timeout": counter,
    },
    TcpHist {}
}

/// The class counter (`upstream_rq_2xx`) of a status code.
pub fn cluster_class(code: u16) -> Option<ClusterStat> {
    Some(match code / 100 {
        1 => ClusterStat::UpstreamRq1xx,
        2 => ClusterStat::UpstreamRq2xx,
        3 => ClusterStat::UpstreamRq3xx,
        4 => ClusterStat::UpstreamRq4xx,
        5 => ClusterStat::UpstreamRq5xx,
        _ => return None,
    })
}

/// The class counter (`downstream_rq_2xx`) of a status code.
pub fn http_class(code: u16) -> Option<HttpStat> {
    Some(match code / 100 {
        1 => HttpStat::DownstreamRq1xx,
        2 => HttpStat::DownstreamRq2xx,
        3 => HttpStat::DownstreamRq3xx,
        4 => HttpStat::DownstreamRq4xx,
        5 => HttpStat::DownstreamRq5xx,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_put_histograms_after_the_counters() {
        assert_eq!(
            ClusterHist::UpstreamCxConnectMs.word(),
            ClusterStat::ALL.len()
        );
        assert_eq!(
            ClusterHist::UpstreamRqTime.word() + HIST_WORDS,
            <ClusterScope as ScopeKind>::WORDS
        );
        for (i, s) in HttpStat::ALL.iter().enumerate() {
            assert_eq!(s.word(), i);
        }
        assert!(ListenerStat::DownstreamCxActive.is_gauge());
        assert!(!ListenerStat::DownstreamCxTotal.is_gauge());
        assert_eq!(cluster_class(503), Some(ClusterStat::UpstreamRq5xx));
        assert_eq!(http_class(99), None);
    }
}
