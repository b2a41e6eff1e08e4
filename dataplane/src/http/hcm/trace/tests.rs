use super::*;

fn spec(random: u32, overall: u32) -> TracingSpec {
    TracingSpec {
        client_sampling: 10_000,
        random_sampling: random,
        overall_sampling: overall,
        egress: false,
        propagation: zerohop_proto::tracing::Propagation::W3c,
    }
}

use crate::http::hcm::headers::tests::request;

fn traceparent(t: &Trace) -> String {
    let mut out = String::new();
    t.context(b"", |n, v| {
        if n == b"traceparent" {
            out = String::from_utf8(v.to_vec()).unwrap();
        }
    });
    out
}

/// The decision for a request with `headers` and the id [`ID`].
fn with_id(spec: &TracingSpec, headers: &[(&str, &str)]) -> Trace {
    decide(spec, &request(headers), Some(ID), false, &Rng::new(7))
}

const ID: &[u8] = b"00000101-5e6f-4a2b-9c3d-1234567890ab";

#[test]
fn random_sampling_follows_the_request_ids_number_and_marks_it() {
    // 0x101 % 10000 = 257.
    let t = with_id(&spec(258, 10_000), &[]);
    assert_eq!(t.request_id.unwrap()[14], b'9');
    assert!(t.span.unwrap().sampled());
    let t = with_id(&spec(257, 10_000), &[]);
    assert!(t.request_id.is_none(), "nothing changed, nothing written");
    assert!(!t.span.unwrap().sampled());
    // Overall sampling caps it, and says so in the id.
    let t = with_id(&spec(10_000, 257), &[]);
    assert_eq!(t.request_id.unwrap()[14], b'4');
    assert!(!t.span.unwrap().sampled());
}

#[test]
fn a_marked_id_keeps_its_reason_and_an_unreadable_one_is_not_traced() {
    let rng = Rng::new(7);
    let mut marked = ID.to_vec();
    marked[14] = b'b';
    let t = decide(&spec(0, 10_000), &request(&[]), Some(&marked), false, &rng);
    assert!(t.span.unwrap().sampled());
    assert!(t.request_id.is_none());
    let t = decide(
        &spec(10_000, 10_000),
        &request(&[]),
        Some(b"zz"),
        false,
        &rng,
    );
    assert!(!t.span.unwrap().sampled());
    let t = decide(&spec(10_000, 10_000), &request(&[]), None, false, &rng);
    assert!(!t.span.unwrap().sampled());
}

#[test]
fn the_client_can_force_a_trace() {
    let t = with_id(&spec(0, 10_000), &[("x-client-trace-id", "abc")]);
    assert_eq!(t.request_id.unwrap()[14], b'b');
    assert!(t.span.unwrap().sampled());
}

#[test]
fn a_parent_context_is_continued_with_its_sampled_flag() {
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let t = with_id(&spec(0, 10_000), &[("traceparent", tp)]);
    let s = t.span.unwrap();
    assert_eq!(
        (s.trace_hi, s.trace_lo),
        (0x0af7651916cd43dd, 0x8448eb211c80319c)
    );
    assert_eq!(s.parent, 0xb7ad6b7169203331);
    assert!(s.sampled());
    let out = traceparent(&t);
    let out = out.as_str();
    assert!(out.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
    assert!(out.ends_with("-01"));
    assert_ne!(&out[36..52], "b7ad6b7169203331");
    let off = tp.replace("-01", "-00");
    let t = with_id(&spec(10_000, 10_000), &[("traceparent", &off)]);
    assert!(!t.span.unwrap().sampled());
    assert!(traceparent(&t).ends_with("-00"));
}

#[test]
fn an_unreadable_traceparent_makes_no_span() {
    for bad in [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ] {
        let t = with_id(&spec(10_000, 10_000), &[("traceparent", bad)]);
        assert!(t.span.is_none(), "{bad}");
    }
}

#[test]
fn a_generated_id_carries_the_decision() {
    let rng = Rng::new(7);
    let t = decide(&spec(10_000, 10_000), &request(&[]), None, true, &rng);
    let id = t.request_id.unwrap();
    assert_eq!(id[14], b'9');
    assert!(t.span.unwrap().sampled());
    let t = decide(&spec(0, 10_000), &request(&[]), None, true, &rng);
    assert_eq!(t.request_id.unwrap()[14], b'4');
    assert!(!t.span.unwrap().sampled());
}

fn b3_spec(egress: bool) -> TracingSpec {
    TracingSpec {
        egress,
        propagation: zerohop_proto::tracing::Propagation::B3 {
            trace_id_128: false,
            shared: true,
        },
        ..spec(10_000, 10_000)
    }
}

#[test]
fn b3_spans_are_envoys_zipkin_spans() {
    // A root span: its id is its trace's.
    let t = with_id(&b3_spec(false), &[]);
    let s = t.span.unwrap();
    assert_eq!((s.trace_hi, s.trace_lo), (0, s.span));
    assert!(s.sampled() && s.shared() && !s.egress());
    // An ingress span shares its caller's; an egress one is its child.
    let ctx = [
        ("x-b3-traceid", "8448eb211c80319c"),
        ("x-b3-spanid", "b7ad6b7169203331"),
        ("x-b3-parentspanid", "2222222222222222"),
        ("x-b3-sampled", "0"),
    ];
    let t = with_id(&b3_spec(false), &ctx);
    let s = t.span.unwrap();
    assert_eq!((s.span, s.parent), (0xb7ad6b7169203331, 0x2222222222222222));
    assert!(!s.sampled(), "the caller's flag wins");
    let t = with_id(&b3_spec(true), &ctx);
    let s = t.span.unwrap();
    assert_eq!(s.parent, 0xb7ad6b7169203331);
    assert_ne!(s.span, 0xb7ad6b7169203331);
    assert!(s.egress() && !s.shared());
    assert_eq!(t.format, Format::B3Multi);
    // A single header is answered in kind; an unreadable one makes no span.
    let t = with_id(
        &b3_spec(false),
        &[("b3", "8448eb211c80319c-b7ad6b7169203331-1")],
    );
    assert_eq!(t.format, Format::B3Single);
    assert!(t.span.unwrap().sampled());
    let t = with_id(&b3_spec(false), &[("b3", "zz-yy-1")]);
    assert!(t.span.is_none());
}
