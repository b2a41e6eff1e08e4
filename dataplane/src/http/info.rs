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

pub use zerohop_proto::accesslog::ResponseFlags;

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
    /// Access logs only: the values of the headers the loggers name
    /// ([`crate::accesslog::capture`]), and whether the request's were taken as forwarded.
    pub log_headers: Vec<u8>,
    pub request_captured: bool,
    /// Access logs only: when the request's last byte had arrived.
    pub request_done: Option<Instant>,
    /// Response body bytes to the client (`%BYTES_SENT%`; `bytes_sent` counts heads too).
    pub body_sent: u64,
    /// The request's head bytes (`bytes_received` less these is `%BYTES_RECEIVED%`).
    pub head_received: u64,
    /// Access logs only: the upstream connection's local address, when a format reads it.
    pub upstream_local: Option<SocketAddr>,
    /// Why the upstream connection failed, as Envoy's `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    pub failure_reason: &'static str,
    /// Tracing: the stream's span, and its route's decorator operation.
    pub span: Option<zerohop_proto::tracing::SpanIds>,
    pub operation: &'g str,
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
            log_headers: Vec::new(),
            request_captured: false,
            request_done: None,
            body_sent: 0,
            head_received: head_bytes as u64,
            upstream_local: None,
            failure_reason: "",
            span: None,
            operation: "",
        }
    }
}
