//! Per-request facts, what Envoy calls stream info: when the request started, the bytes
//! each way, the upstream host and cluster, the attempts, the route, the response code and
//! its details, and Envoy's response flags. Filled in as the request moves through the
//! layers; stats, retries (and, later, access logs and tracing) read it.
//!
//! Only the start time is recorded for every request, because it is read anyway (the route
//! timeout counts from it). Further timestamps (upstream response, end) cost a clock read
//! each, about 0.6% of a small request's CPU together: they are for access logs and
//! tracing to record when one is configured.

use std::net::SocketAddr;
use std::time::Instant;

/// Envoy's response flags (`%RESPONSE_FLAGS%`), as a bit set in Envoy's own order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseFlags(u32);

macro_rules! flags {
    ($($name:ident = $bit:expr, $short:literal;)*) => {
        impl ResponseFlags {
            $(pub const $name: ResponseFlags = ResponseFlags(1 << $bit);)*
            const SHORT: &'static [(ResponseFlags, &'static str)] = &[$((ResponseFlags::$name, $short)),*];
        }
    };
}

flags! {
    FAILED_LOCAL_HEALTH_CHECK = 0, "LH";
    NO_HEALTHY_UPSTREAM = 1, "UH";
    UPSTREAM_REQUEST_TIMEOUT = 2, "UT";
    LOCAL_RESET = 3, "LR";
    UPSTREAM_REMOTE_RESET = 4, "UR";
    UPSTREAM_CONNECTION_FAILURE = 5, "UF";
    UPSTREAM_CONNECTION_TERMINATION = 6, "UC";
    UPSTREAM_OVERFLOW = 7, "UO";
    NO_ROUTE_FOUND = 8, "NR";
    DELAY_INJECTED = 9, "DI";
    FAULT_INJECTED = 10, "FI";
    RATE_LIMITED = 11, "RL";
    UNAUTHORIZED_EXTERNAL_SERVICE = 12, "UAEX";
    RATE_LIMIT_SERVICE_ERROR = 13, "RLSE";
    DOWNSTREAM_CONNECTION_TERMINATION = 14, "DC";
    UPSTREAM_RETRY_LIMIT_EXCEEDED = 15, "URX";
    STREAM_IDLE_TIMEOUT = 16, "SI";
    INVALID_ENVOY_REQUEST_HEADERS = 17, "IH";
    DOWNSTREAM_PROTOCOL_ERROR = 18, "DPE";
    UPSTREAM_MAX_STREAM_DURATION_REACHED = 19, "UMSDR";
    RESPONSE_FROM_CACHE_FILTER = 20, "RFCF";
    NO_FILTER_CONFIG_FOUND = 21, "NFCF";
    DURATION_TIMEOUT = 22, "DT";
    UPSTREAM_PROTOCOL_ERROR = 23, "UPE";
    NO_CLUSTER_FOUND = 24, "NC";
    OVERLOAD_MANAGER = 25, "OM";
    DNS_RESOLUTION_FAILED = 26, "DF";
    DROP_OVERLOAD = 27, "DO";
    DOWNSTREAM_REMOTE_RESET = 28, "DR";
}

impl ResponseFlags {
    pub const fn empty() -> ResponseFlags {
        ResponseFlags(0)
    }

    pub fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }

    /// As `%RESPONSE_FLAGS%` prints them: short names joined by commas, `-` when none.
    pub fn short_names(self) -> String {
        if self.0 == 0 {
            return "-".into();
        }
        let names: Vec<&str> = Self::SHORT
            .iter()
            .filter(|(f, _)| self.contains(*f))
            .map(|(_, n)| *n)
            .collect();
        names.join(",")
    }
}

/// What the layers record about one request; `'g` is the generation it is served with.
#[derive(Clone, Debug)]
pub struct StreamInfo<'g> {
    /// When its head had arrived whole (the request's clock: timeouts count from here).
    pub start: Instant,
    /// Request bytes from the client: head and body.
    pub bytes_received: u64,
    /// Response bytes to the client: head and body.
    pub bytes_sent: u64,
    pub route_name: Option<&'g str>,
    /// The cluster's name.
    pub upstream_cluster: Option<&'g str>,
    pub upstream_host: Option<SocketAddr>,
    /// Requests sent upstream (more than one after a retry).
    pub attempts: u32,
    pub response_code: Option<u16>,
    /// Why the response is what it is, as Envoy's `%RESPONSE_CODE_DETAILS%`
    /// (`via_upstream`, `route_not_found`, ...).
    pub response_code_details: &'static str,
    pub flags: ResponseFlags,
    /// From the request's start to its upstream response head (`x-envoy-upstream-service-time`).
    pub upstream_service_time: Option<std::time::Duration>,
}

impl StreamInfo<'_> {
    pub fn new(start: Instant, head_bytes: usize) -> Self {
        StreamInfo {
            start,
            bytes_received: head_bytes as u64,
            bytes_sent: 0,
            route_name: None,
            upstream_cluster: None,
            upstream_host: None,
            attempts: 0,
            response_code: None,
            response_code_details: "",
            flags: ResponseFlags::empty(),
            upstream_service_time: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_as_envoy_prints_them() {
        let mut f = ResponseFlags::empty();
        assert_eq!(f.short_names(), "-");
        f.insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
        f.insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
        assert_eq!(f.short_names(), "UF,URX");
        assert!(f.contains(ResponseFlags::UPSTREAM_CONNECTION_FAILURE));
        assert!(!f.contains(ResponseFlags::NO_ROUTE_FOUND));
    }
}
