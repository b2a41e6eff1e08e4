//! A cluster's active health checks (`envoy.config.core.v3.HealthCheck`), with Envoy's
//! defaults filled in. Control runs them; the data plane sees only their verdicts, one per
//! host, in the segment's health table.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// How long one check may take (connect included).
    pub timeout: Duration,
    /// Between checks of a healthy host, once the cluster has had traffic.
    pub interval: Duration,
    /// Before a host's first check: up to this much, drawn at random.
    pub initial_jitter: Duration,
    /// Added to every interval: up to this much, and up to `interval_jitter_percent` of it.
    pub interval_jitter: Duration,
    pub interval_jitter_percent: u32,
    /// Network failures (and retriable statuses) in a row that make a healthy host unhealthy;
    /// any other failure does at once.
    pub unhealthy_threshold: u32,
    /// Successes in a row that make an unhealthy host healthy (the first check ever needs one).
    pub healthy_threshold: u32,
    /// Between checks of an unhealthy host (default `interval`).
    pub unhealthy_interval: Duration,
    /// After a failure that did not yet make a healthy host unhealthy (default
    /// `unhealthy_interval`).
    pub unhealthy_edge_interval: Duration,
    /// After a success that did not yet make an unhealthy host healthy (default `interval`).
    pub healthy_edge_interval: Duration,
    /// Between checks while the cluster has never had traffic (default 60 s).
    pub no_traffic_interval: Duration,
    /// As `no_traffic_interval`, for a healthy host (default `no_traffic_interval`).
    pub no_traffic_healthy_interval: Duration,
    /// Keep the connection between checks (default true).
    pub reuse_connection: bool,
    pub checker: HealthChecker,
}

/// What a check sends and expects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthChecker {
    Http(HttpHealthCheck),
    /// `tcp_health_check`: `send` written once connected; healthy when every `receive` block
    /// has arrived, in order. With nothing to receive, a connect is the check.
    Tcp {
        send: Vec<u8>,
        receive: Vec<Vec<u8>>,
    },
    /// `grpc_health_check`: `grpc.health.v1.Health/Check` over HTTP/2; healthy on SERVING.
    Grpc {
        service_name: String,
        /// `authority`, else the cluster's name.
        authority: String,
    },
}

/// `http_health_check` (HTTP/1.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpHealthCheck {
    /// `host`, else the cluster's name (Envoy's choice when neither the check nor the
    /// endpoint names one).
    pub host: String,
    pub path: String,
    /// `method` (default GET).
    pub method: String,
    /// `send`: a request body (POST, PUT, PATCH or OPTIONS only).
    pub send: Vec<u8>,
    /// `receive`: blocks the first `response_buffer_size` bytes of the body must hold, in
    /// order.
    pub receive: Vec<Vec<u8>>,
    pub response_buffer_size: u64,
    pub request_headers_to_add: Vec<(String, String)>,
    pub request_headers_to_remove: Vec<String>,
    /// `[start, end)` ranges; default `[200, 201)`.
    pub expected_statuses: Vec<(u16, u16)>,
    /// A status here (and not expected) counts toward `unhealthy_threshold` instead of
    /// failing the host at once.
    pub retriable_statuses: Vec<(u16, u16)>,
}
