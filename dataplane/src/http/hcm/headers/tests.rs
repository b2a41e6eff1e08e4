use super::*;
use crate::http::message::{Framing, Header, Version};
use zerohop_proto::{HttpManager, ServerHeader};

/// A request with `headers` (lower-case names), as the codec hands it over.
pub(crate) fn request(headers: &[(&str, &str)]) -> Request {
    let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
    let mut hs = Vec::new();
    let mut connection = Vec::new();
    for (n, v) in headers {
        let name = raw.len()..raw.len() + n.len();
        raw.extend_from_slice(n.as_bytes());
        raw.extend_from_slice(b": ");
        let value = raw.len()..raw.len() + v.len();
        raw.extend_from_slice(v.as_bytes());
        raw.extend_from_slice(b"\r\n");
        if *n == "connection" {
            connection.push(value.clone());
        }
        hs.push(Header { name, value });
    }
    Request {
        raw,
        method: 0..3,
        path: 4..5,
        query: None,
        host: 0..0,
        headers: hs,
        framing: Framing::Empty,
        version: Version::Http11,
        close: false,
        expect_continue: false,
        upgrade: None,
        connection,
    }
}

fn collect(src: &impl HeaderSource) -> Vec<(String, String)> {
    let mut out = Vec::new();
    src.for_each(|n, v| {
        out.push((
            String::from_utf8_lossy(n).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ))
    });
    out
}

#[test]
fn request_id_is_a_version_4_uuid() {
    let rng = Rng::new(7);
    let mut id = [0u8; 36];
    write_request_id(&rng, &mut id);
    let text = std::str::from_utf8(&id).unwrap();
    let groups: Vec<&str> = text.split('-').collect();
    assert_eq!(
        groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );
    assert!(groups
        .iter()
        .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit())));
    assert!(groups[2].starts_with('4'), "version 4: {text}");
    assert!(
        matches!(&groups[3][..1], "8" | "9" | "a" | "b"),
        "variant 10: {text}"
    );
    let mut other = [0u8; 36];
    write_request_id(&rng, &mut other);
    assert_ne!(id, other);
}

#[test]
fn hop_by_hop_headers_are_dropped_and_forwarding_headers_set() {
    let req = request(&[
        ("connection", "keep-alive, x-private"),
        ("keep-alive", "timeout=5"),
        ("x-private", "1"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("accept", "*/*"),
        ("content-length", "0"),
    ]);
    let rng = Rng::new(1);
    let mut with_remote = RequestHeaders::new(&req, Some("192.0.2.9"), true, Some(&rng), None);
    with_remote.external_address = Some("192.0.2.9");
    let got = collect(&with_remote);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "x-forwarded-for",
            "accept",
            "x-envoy-external-address",
            "x-forwarded-proto",
            "x-request-id"
        ],
        "{got:?}"
    );
    assert_eq!(
        got[0].1, "10.0.0.1,192.0.2.9",
        "the peer appended, Envoy's separator"
    );
    assert_eq!(got[2].1, "192.0.2.9", "the peer as the external address");
    assert_eq!(
        got[3].1, "http",
        "the downstream scheme replaces the client's"
    );
    // Without use_remote_address: passed through, and no new request id when asked not to.
    let plain = RequestHeaders::new(&req, None, false, None, None);
    let got = collect(&plain);
    assert!(got.contains(&("x-forwarded-proto".into(), "https".into())));
    assert!(got.contains(&("x-forwarded-for".into(), "10.0.0.1".into())));
    assert!(!got.iter().any(|(n, _)| n == "x-request-id"));
    // A client's request id is kept, none added.
    let req = request(&[("x-request-id", "mine")]);
    let got = collect(&RequestHeaders::new(&req, None, false, Some(&rng), None));
    assert_eq!(
        got,
        [
            ("x-request-id".into(), "mine".into()),
            ("x-forwarded-proto".into(), "http".into())
        ]
    );
}

#[test]
fn route_edits_apply_to_request_and_response_headers() {
    use zerohop_proto::{AppendAction, HeaderAdd};
    let req = request(&[("x-drop", "1"), ("x-keep", "2")]);
    let edits = [HeaderEdits {
        request_add: vec![HeaderAdd {
            name: "x-added".into(),
            value: "v".into(),
            append: AppendAction::AppendIfExistsOrAdd,
        }],
        request_remove: vec!["x-drop".into()],
        response_add: vec![],
        response_remove: vec!["server".into()],
    }];
    let got = collect(&RequestHeaders::new(&req, None, true, None, Some(&edits)));
    assert_eq!(
        got,
        [
            ("x-keep".into(), "2".into()),
            ("x-forwarded-proto".into(), "http".into()),
            ("x-added".into(), "v".into())
        ]
    );
    // A response: hop-by-hop and content-length left to the codec; the edit removes server.
    let raw =
        b"server: s\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\nx-a: 1\r\n".to_vec();
    let h = |n: std::ops::Range<usize>, v: std::ops::Range<usize>| Header { name: n, value: v };
    let resp = Response {
        status: 200,
        reason: None,
        framing: Framing::Length(3),
        len: raw.len(),
        close: false,
        connection: vec![],
        headers: vec![
            h(0..6, 8..9),
            h(11..28, 30..37),
            h(39..53, 55..56),
            h(58..61, 63..64),
        ],
    };
    let mut manager = manager();
    manager.server_header = ServerHeader::PassThrough;
    let src = ResponseHeaders {
        resp: &resp,
        raw: &raw,
        upgrade: false,
        edits: Some(&edits),
        server: &manager,
        date: b"Sun, 06 Dec 2026 16:07:15 GMT",
        service_time: None,
        attempts: None,
        coding: None,
        filter_headers: &[],
    };
    assert_eq!(
        collect(&src),
        [
            ("x-a".into(), "1".into()),
            ("date".into(), "Sun, 06 Dec 2026 16:07:15 GMT".into())
        ]
    );
}

fn manager() -> HttpManager {
    let yaml = include_str!("../../../../../control/tests/fixtures/http.yaml");
    let boot = zerohop_control::config::load(yaml, zerohop_control::config::Format::Yaml).unwrap();
    match &boot.snapshot.listeners[0].filter_chains[0].filters[0] {
        zerohop_proto::NetworkFilter::Http(m) => m.clone(),
        other => panic!("{other:?}"),
    }
}

/// `server_header_transformation`, after the route's edits as Envoy applies it: OVERWRITE
/// replaces the upstream's (and an edit's), APPEND_IF_ABSENT keeps one, PASS_THROUGH adds
/// none.
#[test]
fn the_server_header_follows_its_transformation() {
    let h = |n: std::ops::Range<usize>, v: std::ops::Range<usize>| Header { name: n, value: v };
    let with = b"server: up\r\nx-a: 1\r\n".to_vec();
    let without = b"x-a: 1\r\n".to_vec();
    let resp = |raw: &[u8], headers| Response {
        status: 200,
        reason: None,
        framing: Framing::Length(0),
        len: raw.len(),
        close: false,
        connection: vec![],
        headers,
    };
    let (r_with, r_without) = (
        resp(&with, vec![h(0..6, 8..10), h(12..15, 17..18)]),
        resp(&without, vec![h(0..3, 5..6)]),
    );
    let add_server = [HeaderEdits {
        response_add: vec![zerohop_proto::HeaderAdd {
            name: "server".into(),
            value: "edit".into(),
            append: zerohop_proto::AppendAction::OverwriteIfExistsOrAdd,
        }],
        ..HeaderEdits::default()
    }];
    let mut m = manager();
    m.server_name = "mesh".into();
    let server_of = |m: &HttpManager, r: &Response, raw: &[u8], edits: Option<&[HeaderEdits]>| {
        let got = collect(&ResponseHeaders {
            resp: r,
            raw,
            upgrade: false,
            edits,
            server: m,
            date: b"Sun, 06 Dec 2026 16:07:15 GMT",
            service_time: None,
            attempts: None,
            coding: None,
            filter_headers: &[],
        });
        got.into_iter()
            .filter(|(n, _)| n == "server")
            .map(|(_, v)| v)
            .collect::<Vec<String>>()
    };
    for (mode, upstream_has, no_upstream, edited) in [
        (
            ServerHeader::Overwrite,
            vec!["mesh"],
            vec!["mesh"],
            vec!["mesh"],
        ),
        (
            ServerHeader::AppendIfAbsent,
            vec!["up"],
            vec!["mesh"],
            vec!["edit"],
        ),
        (ServerHeader::PassThrough, vec!["up"], vec![], vec!["edit"]),
    ] {
        m.server_header = mode;
        assert_eq!(
            server_of(&m, &r_with, &with, None),
            upstream_has,
            "{mode:?}"
        );
        assert_eq!(
            server_of(&m, &r_without, &without, None),
            no_upstream,
            "{mode:?}"
        );
        assert_eq!(
            server_of(&m, &r_with, &with, Some(&add_server)),
            edited,
            "{mode:?}"
        );
    }
    let date = *b"Sun, 06 Dec 2026 16:07:15 GMT";
    let names = |m: &HttpManager| -> Vec<Vec<u8>> {
        local_headers(m, &date)
            .into_iter()
            .map(|(n, _)| n.to_vec())
            .collect()
    };
    assert_eq!(
        names(&m),
        [b"date".to_vec()],
        "PASS_THROUGH: local replies carry no server"
    );
    m.server_header = ServerHeader::Overwrite;
    assert_eq!(names(&m), [b"date".to_vec(), b"server".to_vec()]);
}
