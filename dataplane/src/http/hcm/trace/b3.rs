//! B3 as Envoy's Zipkin tracer reads and writes it: the sampled flag from `b3` or
//! `x-b3-sampled`, the caller's context from the single `b3` header or from
//! `x-b3-traceid` / `x-b3-spanid` / `x-b3-parentspanid`, the span made from it (a root
//! span's id is its trace id; an ingress span shares its caller's id with
//! `shared_span_context`), and the same format written upstream.

use zerohop_proto::tracing::SpanIds;

use super::{hex, nonzero, Format};
use crate::http::message::Request;
use crate::upstream::lb::Rng;

/// A caller's context.
#[derive(Debug, PartialEq, Eq)]
struct Context {
    trace_hi: u64,
    trace_lo: u64,
    span: u64,
    parent: u64,
}

/// The span of `req`: `None` when a context header cannot be read (Envoy's null span).
pub(super) fn span(
    req: &Request,
    traced: bool,
    egress: bool,
    ingress_shared: bool,
    trace_id_128: bool,
    rng: &Rng,
) -> (Option<SpanIds>, Format) {
    let single = req.header("b3").map(str::as_bytes);
    let format = match single {
        Some(_) => Format::B3Single,
        None => Format::B3Multi,
    };
    let sampled = sampled(req, single).unwrap_or(traced);
    let context = match single {
        Some(v) => single_context(v),
        None => multi_context(req),
    };
    let Ok(context) = context else {
        return (None, format);
    };
    let mut flags = if sampled { SpanIds::SAMPLED } else { 0 };
    let span = match context {
        // A root span: its id is its trace's (low) id.
        None => {
            let id = nonzero(rng);
            flags |= match (egress, ingress_shared) {
                (true, _) => SpanIds::EGRESS,
                (false, true) => SpanIds::SHARED,
                (false, false) => 0,
            };
            SpanIds {
                trace_hi: if trace_id_128 { nonzero(rng) } else { 0 },
                trace_lo: id,
                span: id,
                parent: 0,
                flags,
            }
        }
        // An ingress span shares its caller's span.
        Some(c) if ingress_shared => SpanIds {
            trace_hi: c.trace_hi,
            trace_lo: c.trace_lo,
            span: c.span,
            parent: c.parent,
            flags: flags | SpanIds::SHARED,
        },
        // A child of the caller's span, a client span (Envoy's CS annotation).
        Some(c) => SpanIds {
            trace_hi: c.trace_hi,
            trace_lo: c.trace_lo,
            span: nonzero(rng),
            parent: c.span,
            flags: flags | SpanIds::EGRESS,
        },
    };
    (Some(span), format)
}

/// The sampling flag the request carries, if any.
fn sampled(req: &Request, single: Option<&[u8]>) -> Option<bool> {
    if let Some(b3) = single {
        let at = match b3.len() {
            1 => 0,
            35 | 52 => 34,
            51 | 68 => 50,
            _ => return None,
        };
        return match b3[at] {
            b'0' => Some(false),
            b'1' | b'd' => Some(true),
            _ => None,
        };
    }
    let v = req.header("x-b3-sampled")?;
    Some(v == "1" || v == "true")
}

/// A hex number of at most 16 digits, all of it read.
fn number(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(v).ok()?, 16).ok()
}

/// A trace id of 16 or 32 hex digits (high, low).
fn trace_id(v: &[u8]) -> Option<(u64, u64)> {
    match v.len() {
        32 => Some((number(&v[..16])?, number(&v[16..])?)),
        _ => Some((0, number(v)?)),
    }
}

/// `x-b3-traceid` and `x-b3-spanid` (both, else no context), `x-b3-parentspanid`.
fn multi_context(req: &Request) -> Result<Option<Context>, ()> {
    let (Some(t), Some(s)) = (req.header("x-b3-traceid"), req.header("x-b3-spanid")) else {
        return Ok(None);
    };
    let (trace_hi, trace_lo) = trace_id(t.as_bytes()).ok_or(())?;
    let span = number(s.as_bytes()).ok_or(())?;
    let parent = match req.header("x-b3-parentspanid").filter(|p| !p.is_empty()) {
        Some(p) => number(p.as_bytes()).ok_or(())?,
        None => 0,
    };
    Ok(Some(Context {
        trace_hi,
        trace_lo,
        span,
        parent,
    }))
}

/// `b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]`, or a lone sampling flag.
fn single_context(b3: &[u8]) -> Result<Option<Context>, ()> {
    match b3 {
        [] => return Err(()),
        [b'0' | b'1' | b'd'] => return Ok(None),
        [_] => return Err(()),
        _ if b3.len() < 33 || b3.len() > 68 => return Err(()),
        _ => {}
    }
    let long = b3.len() > 32 && b3[32] == b'-';
    let (trace_hi, trace_lo, mut at) = match long {
        true => (
            number(&b3[..16]).ok_or(())?,
            number(&b3[16..32]).ok_or(())?,
            32,
        ),
        false => (0, number(&b3[..16]).ok_or(())?, 16),
    };
    if b3.get(at) != Some(&b'-') {
        return Err(());
    }
    at += 1;
    let span = number(b3.get(at..at + 16).ok_or(())?).ok_or(())?;
    at += 16;
    let mut parent = 0;
    if b3.len() > at {
        // `-{flag}`, then optionally `-{parent}`.
        if b3.len() == at + 1 || b3[at] != b'-' {
            return Err(());
        }
        at += 1;
        let flag_ends = b3.len() == at + 1 || b3.get(at + 1) == Some(&b'-');
        if !flag_ends || !matches!(b3[at], b'0' | b'1' | b'd') {
            return Err(());
        }
        at += 1;
        if b3.len() > at {
            if b3.len() != at + 17 {
                return Err(());
            }
            parent = number(&b3[at + 1..]).ok_or(())?;
        }
    }
    Ok(Some(Context {
        trace_hi,
        trace_lo,
        span,
        parent,
    }))
}

/// The span's context in `format`.
pub(super) fn inject(s: &SpanIds, format: Format, f: &mut impl FnMut(&[u8], &[u8])) {
    let mut trace = [0u8; 32];
    let trace = match s.trace_hi {
        0 => {
            hex(s.trace_lo, 16, &mut trace);
            &trace[..16]
        }
        hi => {
            hex(hi, 16, &mut trace);
            hex(s.trace_lo, 16, &mut trace[16..]);
            &trace[..]
        }
    };
    let mut span = [0u8; 16];
    hex(s.span, 16, &mut span);
    let mut parent = [0u8; 16];
    hex(s.parent, 16, &mut parent);
    let flag: &[u8] = if s.sampled() { b"1" } else { b"0" };
    if format == Format::B3Single {
        // `{trace}-{span}-{flag}[-{parent}]`, at most 32 + 1 + 16 + 2 + 17 bytes.
        let mut v = [0u8; 68];
        let mut len = 0;
        let parent: &[u8] = if s.parent != 0 { &parent } else { b"" };
        let sep: &[u8] = if s.parent != 0 { b"-" } else { b"" };
        for part in [trace, b"-", &span, b"-", flag, sep, parent] {
            v[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
        return f(b"b3", &v[..len]);
    }
    f(b"x-b3-traceid", trace);
    f(b"x-b3-spanid", &span);
    if s.parent != 0 {
        f(b"x-b3-parentspanid", &parent);
    }
    f(b"x-b3-sampled", flag);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_headers_read_as_envoys_extractor_reads_them() {
        let ok =
            single_context(b"0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1-2222222222222222")
                .unwrap()
                .unwrap();
        assert_eq!(
            (ok.trace_hi, ok.trace_lo, ok.span, ok.parent),
            (
                0x0af7651916cd43dd,
                0x8448eb211c80319c,
                0xb7ad6b7169203331,
                0x2222222222222222
            )
        );
        let short = single_context(b"8448eb211c80319c-b7ad6b7169203331")
            .unwrap()
            .unwrap();
        assert_eq!((short.trace_hi, short.parent), (0, 0));
        assert_eq!(single_context(b"1"), Ok(None));
        for bad in [
            &b""[..],
            b"x",
            b"8448eb211c80319c-b7ad6b716920333",
            b"8448eb211c80319c-b7ad6b7169203331-",
            b"8448eb211c80319c-b7ad6b7169203331-x",
            b"8448eb211c80319c-b7ad6b7169203331-1-22",
            b"8448eb211c80319c+b7ad6b7169203331",
            b"zz48eb211c80319c-b7ad6b7169203331",
        ] {
            assert!(
                single_context(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn injected_headers_are_envoys() {
        let s = SpanIds {
            trace_hi: 0,
            trace_lo: 0xab,
            span: 0xcd,
            parent: 0,
            flags: SpanIds::SAMPLED,
        };
        let injected = |s: &SpanIds, format| {
            let mut got = Vec::new();
            inject(s, format, &mut |n, v| {
                got.push(format!(
                    "{}: {}",
                    String::from_utf8_lossy(n),
                    String::from_utf8_lossy(v)
                ))
            });
            got
        };
        assert_eq!(
            injected(&s, Format::B3Multi),
            [
                "x-b3-traceid: 00000000000000ab",
                "x-b3-spanid: 00000000000000cd",
                "x-b3-sampled: 1"
            ]
        );
        let s = SpanIds {
            trace_hi: 1,
            parent: 2,
            flags: 0,
            ..s
        };
        assert_eq!(
            injected(&s, Format::B3Single),
            ["b3: 000000000000000100000000000000ab-00000000000000cd-0-0000000000000002"]
        );
    }
}
