//! Tracing as the shards see it: a connection manager's sampling settings
//! ([`TracingSpec`], compiled by control from `HttpConnectionManager.tracing`) and the ids
//! of a span a stream made ([`SpanIds`]), which ride in the stream's access-log record to
//! control. Control builds and exports the span (OTLP); nothing here formats or sends.

use serde::{Deserialize, Serialize};

/// `HttpConnectionManager.tracing`, as the data plane applies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracingSpec {
    /// `client_sampling`, `random_sampling`, `overall_sampling`: out of 10,000 (Envoy's
    /// `Percent` at its 0.01% precision).
    pub client_sampling: u32,
    pub random_sampling: u32,
    pub overall_sampling: u32,
    /// The listener's `traffic_direction` is OUTBOUND: spans are Envoy's egress (client)
    /// spans, and a route decorator's operation is propagated upstream.
    pub egress: bool,
    /// How the span's context is read from the request and written upstream.
    pub propagation: Propagation,
}

/// The tracer's context headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Propagation {
    /// W3C `traceparent` / `tracestate` (`envoy.tracers.opentelemetry`).
    W3c,
    /// B3, multi-header (`x-b3-*`) or the single `b3` header (`envoy.tracers.zipkin`):
    /// `trace_id_128bit`, and `shared_span_context` (an ingress span shares its caller's
    /// span id).
    B3 { trace_id_128: bool, shared: bool },
}

/// All of [`TracingSpec`]'s percentages at 100%.
pub const FULL: u32 = 10_000;

/// A span's ids and what the record's reader needs to know of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_hi: u64,
    pub trace_lo: u64,
    pub span: u64,
    /// 0: the span has no parent.
    pub parent: u64,
    /// [`SpanIds::SAMPLED`], [`SpanIds::EGRESS`].
    pub flags: u8,
}

impl SpanIds {
    /// The span is exported.
    pub const SAMPLED: u8 = 1;
    /// A client span (an egress one; with B3, also an ingress one that does not share its
    /// caller's context).
    pub const EGRESS: u8 = 2;
    /// A B3 server span whose context is shared with its caller (Zipkin's `shared`).
    pub const SHARED: u8 = 4;

    pub fn sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    pub fn egress(&self) -> bool {
        self.flags & Self::EGRESS != 0
    }

    pub fn shared(&self) -> bool {
        self.flags & Self::SHARED != 0
    }
}

/// A route's `decorator`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decorator {
    /// The span's name on this route.
    pub operation: String,
    /// `propagate` (default true): an egress span's operation goes upstream in
    /// `x-envoy-decorator-operation`.
    pub propagate: bool,
}
