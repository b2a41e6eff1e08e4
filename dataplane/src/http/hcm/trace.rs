//! Tracing on the shard: whether a stream is traced, as Envoy's connection manager decides
//! it (the reason packed into `x-request-id`), and the span's context as Envoy's tracers
//! make it: the OpenTelemetry tracer's W3C `traceparent` / `tracestate`, the Zipkin
//! tracer's B3 ([`b3`]), taken from the request and injected into the upstream request.
//! Sans-I/O: the stream asks [`decide`] once, after routing, and carries the [`Trace`]; the
//! span itself is built by control from the stream's record.

mod b3;

use zerohop_proto::tracing::{Propagation, SpanIds, TracingSpec};

use crate::http::message::Request;
use crate::upstream::lb::Rng;

/// Where Envoy's UUID request id keeps the trace reason, and its values.
const REASON_AT: usize = 14;
const UUID_LEN: usize = 36;

/// Why a stream is traced (Envoy's `Tracing::Reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    NotTraceable,
    Sampling,
    ServiceForced,
    ClientForced,
}

impl Reason {
    fn of(id: &[u8]) -> Reason {
        if id.len() != UUID_LEN {
            return Reason::NotTraceable;
        }
        match id[REASON_AT] {
            b'9' => Reason::Sampling,
            b'a' => Reason::ServiceForced,
            b'b' => Reason::ClientForced,
            _ => Reason::NotTraceable,
        }
    }

    fn mark(self) -> u8 {
        match self {
            Reason::Sampling => b'9',
            Reason::ServiceForced => b'a',
            Reason::ClientForced => b'b',
            Reason::NotTraceable => b'4',
        }
    }
}

/// A stream's tracing state.
#[derive(Clone, Copy, Debug)]
pub struct Trace {
    /// `x-request-id` as it goes on, when tracing generated it or rewrote its reason.
    pub request_id: Option<[u8; UUID_LEN]>,
    /// The span (`None`: an unreadable context header, for which Envoy makes a null span:
    /// nothing is injected or exported).
    pub span: Option<SpanIds>,
    /// The headers the span's context goes upstream in.
    pub format: Format,
}

/// How a span's context is written into the upstream request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `traceparent` and `tracestate`.
    W3c,
    /// `x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled`.
    B3Multi,
    /// One `b3` header (the request came with one).
    B3Single,
}

impl Format {
    /// Whether `name` is a header this format writes (the client's is not passed on).
    pub fn writes(self, name: &[u8]) -> bool {
        match self {
            Format::W3c => name == b"traceparent" || name == b"tracestate",
            Format::B3Multi => matches!(
                name,
                b"x-b3-traceid" | b"x-b3-spanid" | b"x-b3-parentspanid" | b"x-b3-sampled"
            ),
            Format::B3Single => name == b"b3",
        }
    }
}

/// Writes `n`'s low `digits` hex digits into `out`.
pub fn hex(n: u64, digits: usize, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, o) in out[..digits].iter_mut().enumerate() {
        *o = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
}

impl Trace {
    /// The span's context headers for the upstream request: `tracestate` is the client's
    /// (W3C: the span keeps its parent's, empty for a new trace). Nothing without a span.
    pub fn context(&self, tracestate: &[u8], mut f: impl FnMut(&[u8], &[u8])) {
        let Some(s) = &self.span else { return };
        match self.format {
            Format::W3c => {
                let mut tp = [b'-'; 55];
                hex(0, 2, &mut tp[0..]);
                hex(s.trace_hi, 16, &mut tp[3..]);
                hex(s.trace_lo, 16, &mut tp[19..]);
                hex(s.span, 16, &mut tp[36..]);
                hex(u64::from(s.sampled()), 2, &mut tp[53..]);
                f(b"traceparent", &tp);
                f(b"tracestate", tracestate);
            }
            Format::B3Multi | Format::B3Single => b3::inject(s, self.format, &mut f),
        }
    }
}

/// Decides `req`'s tracing under `spec`. `client_id` is the client's `x-request-id` when
/// it goes on; without one, `generate` makes one (`generate_request_id`), which the
/// [`Trace`] then carries.
pub fn decide(
    spec: &TracingSpec,
    req: &Request,
    client_id: Option<&[u8]>,
    generate: bool,
    rng: &Rng,
) -> Trace {
    let mut out = Trace {
        request_id: None,
        span: None,
        format: Format::W3c,
    };
    let mut made = [0u8; UUID_LEN];
    let id = match client_id {
        Some(id) => Some(id),
        None if generate => {
            super::headers::write_request_id(rng, &mut made);
            out.request_id = Some(made);
            Some(&made[..])
        }
        None => None,
    };
    let reason = match id {
        Some(id) => reason(spec, req, id, rng, &mut out),
        None => Reason::NotTraceable,
    };
    let traced = reason != Reason::NotTraceable;
    if let Propagation::B3 {
        trace_id_128,
        shared,
    } = spec.propagation
    {
        let ingress_shared = shared && !spec.egress;
        (out.span, out.format) =
            b3::span(req, traced, spec.egress, ingress_shared, trace_id_128, rng);
        return out;
    }
    let flags = if spec.egress { SpanIds::EGRESS } else { 0 };
    out.span = match req.header("traceparent").map(str::as_bytes) {
        // No propagation header: a new trace, sampled as decided.
        None => Some(SpanIds {
            trace_hi: nonzero(rng),
            trace_lo: nonzero(rng),
            span: nonzero(rng),
            parent: 0,
            flags: flags | if traced { SpanIds::SAMPLED } else { 0 },
        }),
        // The caller's context: its trace, a child span, its sampled flag (Envoy's tracer
        // respects the parent's decision).
        Some(v) => parse_traceparent(v).map(|p| SpanIds {
            trace_hi: p.trace_hi,
            trace_lo: p.trace_lo,
            span: nonzero(rng),
            parent: p.span,
            flags: flags | if p.sampled { SpanIds::SAMPLED } else { 0 },
        }),
    };
    out
}

/// Envoy's `mutateTracingRequestHeader`: the reason from the id, else the client's
/// `x-client-trace-id` (client sampling), else random sampling on the id; overall sampling
/// last. The reason is written into the id when it changes.
fn reason(spec: &TracingSpec, req: &Request, id: &[u8], rng: &Rng, out: &mut Trace) -> Reason {
    // The id's first 8 hex digits are its number; without one, no tracing at all.
    let Some(number) = id
        .get(..8)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| u64::from_str_radix(h, 16).ok())
    else {
        return Reason::NotTraceable;
    };
    let result = (number % 10_000) as u32;
    let mut reason = Reason::of(id);
    let mut set = None;
    if reason == Reason::NotTraceable {
        if req.header("x-client-trace-id").is_some()
            && ((rng.next_u64() % 10_000) as u32) < spec.client_sampling
        {
            reason = Reason::ClientForced;
            set = Some(reason);
        } else if result < spec.random_sampling {
            reason = Reason::Sampling;
            set = Some(reason);
        }
    }
    if reason != Reason::NotTraceable && result >= spec.overall_sampling {
        reason = Reason::NotTraceable;
        set = Some(reason);
    }
    if let (Some(r), Ok(mut id)) = (set, <[u8; UUID_LEN]>::try_from(id)) {
        id[REASON_AT] = r.mark();
        out.request_id = Some(id);
    }
    reason
}

fn nonzero(rng: &Rng) -> u64 {
    rng.next_u64().max(1)
}

/// A `traceparent`'s fields.
#[derive(Debug, PartialEq, Eq)]
struct Parent {
    trace_hi: u64,
    trace_lo: u64,
    span: u64,
    sampled: bool,
}

/// `00-<32 hex>-<16 hex>-<2 hex>` as Envoy's extractor reads it: version 00 (or any other
/// but ff), ids not all zero, else `None`.
fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    if v.len() != 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let hex = |b: &[u8]| -> Option<u64> {
        if !b
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        {
            return None;
        }
        u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
    };
    let version = hex(&v[0..2])?;
    if version == 0xff {
        return None;
    }
    let (trace_hi, trace_lo) = (hex(&v[3..19])?, hex(&v[19..35])?);
    let span = hex(&v[36..52])?;
    let flags = hex(&v[53..55])?;
    if (trace_hi == 0 && trace_lo == 0) || span == 0 {
        return None;
    }
    Some(Parent {
        trace_hi,
        trace_lo,
        span,
        sampled: flags & 1 == 1,
    })
}

#[cfg(test)]
mod tests;
