//! HTTP/1.1 end to end: the real binaries on 127.0.0.1, the shared fixture
//! (control/tests/fixtures/http.yaml), upstreams that describe what they received, raw-socket
//! clients for the framing rules, curl for the ordinary ones.

mod support;

use std::io::{Read, Write};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::http::{fixture, upstream, Client, Upstream};
use support::{Opts, Proxy};
use zerohop_proto::stats::Counter;

struct Setup {
    proxy: Proxy,
    a: Upstream,
    b: Upstream,
}

fn setup() -> Setup {
    setup_with(|y| y)
}

fn setup_with(edit: impl FnOnce(String) -> String) -> Setup {
    let (a, b) = (upstream("a"), upstream("b"));
    let proxy = Proxy::start(&edit(fixture(a.addr, b.addr)));
    Setup { proxy, a, b }
}

impl Setup {
    fn client(&self) -> Client {
        Client::connect(self.proxy.addr("web"))
    }
}

#[test]
fn routes_by_host_path_headers_and_query_with_rewrites() {
    let s = setup();
    let mut c = s.client();
    // host, path, extra headers, upstream, request line the upstream saw
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (
            "api.example.com",
            "/v1/users?id=3",
            &[],
            "a",
            "GET /users?id=3 HTTP/1.1",
        ),
        ("x.example.com", "/any", &[], "b", "GET /any HTTP/1.1"),
        ("shop.local", "/cart", &[], "a", "GET /cart HTTP/1.1"),
        ("other", "/exact", &[], "a", "GET /exact HTTP/1.1"),
        ("other", "/exact/not", &[], "a", "GET /exact/not HTTP/1.1"), // catch-all
        ("other", "/rx/42", &[], "b", "GET /num/42 HTTP/1.1"),
        ("other", "/rx/4x2", &[], "a", "GET /rx/4x2 HTTP/1.1"),
        (
            "other",
            "/h",
            &[("x-canary", "yes")],
            "b",
            "GET /h HTTP/1.1",
        ),
        ("other", "/h", &[("x-canary", "no")], "a", "GET /h HTTP/1.1"),
        ("other", "/h?debug", &[], "b", "GET /h?debug HTTP/1.1"),
        (
            "other",
            "/case/Sensitive",
            &[],
            "b",
            "GET /case/Sensitive HTTP/1.1",
        ),
    ];
    for (host, path, extra, want_up, want_line) in cases {
        let r = c.get(host, path, extra);
        assert_eq!(r.status, 200, "{host}{path}: {}", r.text());
        assert_eq!(r.header("x-upstream"), Some(*want_up), "{host}{path}");
        assert_eq!(r.upstream_request_line(), *want_line, "{host}{path}");
    }
    // host_rewrite_literal, and the Host seen otherwise.
    let host_seen = |r: &support::http::Response| {
        r.upstream_headers()
            .into_iter()
            .find(|(n, _)| n == "host")
            .map(|(_, v)| v)
    };
    assert_eq!(
        host_seen(&c.get("x.example.com", "/", &[])).as_deref(),
        Some("rewritten.internal")
    );
    assert_eq!(
        host_seen(&c.get("shop.local", "/", &[])).as_deref(),
        Some("shop.local")
    );
    // A virtual host's request header.
    let r = c.get("shop.local", "/", &[]);
    assert!(r
        .upstream_headers()
        .contains(&("x-shop".into(), "1".into())));

    // Local answers: direct response, redirects.
    let r = c.get("other", "/direct", &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "direct answer\n"));
    assert_eq!(
        r.header("x-proxied-by"),
        Some("mesh"),
        "route config response headers apply"
    );
    let r = c.get("other:8080", "/old/page?x=1", &[]);
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://other:8080/new/page?x=1"));
    let r = c.get("other:8080", "/secure/a", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://other/secure/a"));

    // Weighted clusters reach both.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        seen.insert(
            c.get("other", "/weighted", &[])
                .header("x-upstream")
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn headers_are_edited_forwarded_and_hop_by_hop_ones_dropped() {
    let s = setup();
    let mut c = s.client();
    let r = c.get(
        "other",
        "/edits",
        &[
            ("x-remove-me", "1"),
            ("x-added", "client"),
            ("connection", "keep-alive, x-private-hop"),
            ("x-private-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-request-id", "my-id"),
        ],
    );
    assert_eq!(r.status, 200);
    let up = r.upstream_headers();
    let get = |n: &str| {
        up.iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert!(get("x-remove-me").is_empty());
    assert_eq!(get("x-added"), ["route"]);
    for hop in ["connection", "x-private-hop", "keep-alive"] {
        assert!(get(hop).is_empty(), "{hop} forwarded: {up:?}");
    }
    // `te: trailers` goes on, as Envoy sanitizes `te` (any other value is dropped).
    assert_eq!(get("te"), ["trailers"]);
    // The peer is loopback: as Envoy, the host's own address is appended instead.
    let host = zerohop::net::sys::local_address();
    assert_eq!(get("x-forwarded-for"), [format!("10.0.0.1,{host}")]);
    assert_eq!(get("x-forwarded-proto"), ["http"]);
    // The fixture has use_remote_address: the request is external (Envoy's default), so its
    // x-request-id is replaced by a new one, as Envoy replaces it.
    let id = get("x-request-id");
    assert_eq!(id.len(), 1);
    assert_ne!(id[0], "my-id");
    assert_eq!(id[0].len(), 36, "{id:?}");
    // Response edits: the route's and the route configuration's.
    assert_eq!(r.header("x-resp"), Some("r"));
    assert_eq!(r.header("x-upstream-secret"), None);
    assert_eq!(r.header("x-proxied-by"), Some("mesh"));
    // A generated request id when the client sends none.
    let r = c.get("other", "/", &[]);
    let id = r
        .upstream_headers()
        .into_iter()
        .find(|(n, _)| n == "x-request-id")
        .unwrap()
        .1;
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.as_bytes()[14], b'4', "a version 4 UUID: {id}");
}

#[test]
fn keep_alive_reuses_upstream_connections() {
    let s = setup();
    let mut c = s.client();
    for i in 0..50 {
        let r = c.get("other", &format!("/n/{i}"), &[]);
        assert_eq!(r.status, 200);
    }
    assert_eq!(s.a.requests.load(Ordering::SeqCst), 50);
    assert_eq!(
        s.a.conns.load(Ordering::SeqCst),
        1,
        "one upstream connection for 50 requests"
    );
    assert_eq!(s.proxy.total(Counter::UpstreamCxReused), 49);
    assert_eq!(s.proxy.total(Counter::DownstreamCxTotal), 1);
    // curl, too: two requests on one connection.
    let url = format!("http://{}/curl", s.proxy.addr("web"));
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{num_connects}\n",
            &url,
            &url,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 1\n200 0\n");
    assert_eq!(s.a.conns.load(Ordering::SeqCst), 1);
}

/// A cluster's `HttpProtocolOptions`: `max_requests_per_connection` retires a connection
/// after that many requests; `idle_timeout` closes a pooled one that waited that long, without
/// waiting for a request to find it.
#[test]
fn upstream_protocol_options_limit_pooled_connections() {
    let s = setup_with(|y| {
        y.replacen(
            "  - name: a\n    connect_timeout: 1s\n",
            "  - name: a\n    connect_timeout: 1s\n    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http_protocol_options: {} }\n        common_http_protocol_options: { idle_timeout: 0.3s, max_requests_per_connection: 3 }\n",
            1,
        )
    });
    let mut c = s.client();
    for i in 0..7 {
        assert_eq!(c.get("other", &format!("/n/{i}"), &[]).status, 200);
    }
    assert_eq!(s.a.requests.load(Ordering::SeqCst), 7);
    assert_eq!(s.a.conns.load(Ordering::SeqCst), 3, "3 + 3 + 1 requests");
    assert_eq!(s.proxy.total(Counter::UpstreamCxReused), 4);
    // The third connection sits in the pool; its idle timeout closes it.
    let start = Instant::now();
    while s.a.open.load(Ordering::SeqCst) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the idle upstream connection was not closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "not before its timeout"
    );
    assert_eq!(c.get("other", "/after", &[]).status, 200);
    assert_eq!(s.a.conns.load(Ordering::SeqCst), 4);
}

/// Requests sent back to back before any answer (pipelining) are served in order, bodies
/// included, from what the first read brought in.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = setup();
    let mut c = s.client();
    c.w.write_all(
        b"GET /p/1 HTTP/1.1\r\nhost: other\r\n\r\nPOST /p/2 HTTP/1.1\r\nhost: other\r\ncontent-length: 5\r\n\r\nhelloGET /p/3 HTTP/1.1\r\nhost: other\r\n\r\n",
    )
    .unwrap();
    for (path, body) in [("/p/1", 0), ("/p/2", 5), ("/p/3", 0)] {
        let r = c.response().unwrap();
        assert_eq!(r.status, 200);
        let text = r.text();
        assert!(
            text.starts_with(&format!(
                "{} {path} HTTP/1.1\n",
                if body > 0 { "POST" } else { "GET" }
            )),
            "{text}"
        );
        assert!(text.contains(&format!("body-bytes: {body}")), "{text}");
    }
    assert_eq!(s.a.conns.load(Ordering::SeqCst), 1);
}

/// The same request path on the epoll driver (the fallback when no ring can be set up), where
/// the "ring" receives and sends are readiness waits and syscalls inside monoio: keep-alive
/// requests, a body, and a head that times out (its pending receive abandoned).
#[test]
fn http_on_the_epoll_driver() {
    let (a, b) = (upstream("a"), upstream("b"));
    let yaml = fixture(a.addr, b.addr).replace(
        "          use_remote_address: true\n",
        "          use_remote_address: true\n          request_headers_timeout: 0.5s\n",
    );
    let opts = Opts {
        driver: "epoll",
        ..Opts::default()
    };
    let proxy = Proxy::start_with(&yaml, opts);
    assert!(
        proxy.wait_log("epoll driver", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    let mut c = Client::connect(proxy.addr("web"));
    for i in 0..20 {
        assert_eq!(c.get("other", &format!("/e/{i}"), &[]).status, 200);
    }
    let r = c
        .raw(b"POST /e HTTP/1.1\r\nhost: other\r\ncontent-length: 5\r\n\r\nhello")
        .unwrap();
    assert!(r.text().contains("body-bytes: 5"), "{}", r.text());
    assert_eq!(a.conns.load(Ordering::SeqCst), 1);
    let mut slow = Client::connect(proxy.addr("web"));
    assert_eq!(
        slow.raw(b"GET / HTTP/1.1\r\nhost: h\r\n").unwrap().status,
        408
    );
    // The first connection still serves.
    assert_eq!(c.get("other", "/after", &[]).status, 200);
}

#[test]
fn chunked_bodies_both_ways_and_expect_continue() {
    let s = setup();
    // curl sends a chunked upload; the upstream sees the same bytes.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let file = support::scratch("chunked-body");
    std::fs::write(&file, &body).unwrap();
    let url = format!("http://{}/upload", s.proxy.addr("web"));
    let out = Command::new("curl")
        .args([
            "-s",
            "-H",
            "transfer-encoding: chunked",
            "-H",
            "expect:",
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .arg(&url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("body-bytes: 200000"), "{text}");
    assert!(
        text.contains(&format!("body-crc: {}", crc32fast::hash(&body))),
        "{text}"
    );
    assert!(text.contains("transfer-encoding: chunked"), "{text}");

    // A chunked response reaches the client whole.
    let mut c = s.client();
    let r = c.get("other", "/chunked-response", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(
        r.text().starts_with("GET /chunked-response HTTP/1.1\n"),
        "{}",
        r.text()
    );

    // Expect: 100-continue is answered by the proxy before the body is sent.
    let mut c = s.client();
    c.w.write_all(
        b"POST /e HTTP/1.1\r\nhost: other\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let interim = c.response().unwrap();
    assert_eq!(interim.status, 100);
    c.w.write_all(b"hello").unwrap();
    let r = c.response().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("body-bytes: 5"), "{}", r.text());
    assert!(
        !r.text().to_ascii_lowercase().contains("expect:"),
        "Expect is not forwarded"
    );
}

/// `envoy.filters.http.buffer` before the router, as Envoy's: the whole body is read before
/// anything goes upstream, a chunked one arrives there with a content-length, and a body over
/// `max_request_bytes` gets 413 (by its Content-Length at once, unread).
const BUFFER_FILTER: &str = "          - name: envoy.filters.http.buffer\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer\n              max_request_bytes: 1000\n          - name: envoy.filters.http.router\n";

fn with_buffer_filter(yaml: String) -> String {
    yaml.replacen(
        "          - name: envoy.filters.http.router\n",
        BUFFER_FILTER,
        1,
    )
}

#[test]
fn the_buffer_filter_answers_413_and_sends_whole_bodies() {
    let s = setup_with(with_buffer_filter);
    // Within the limit, chunked: the upstream sees one content-length body.
    let mut c = s.client();
    let r = c
        .raw(
            b"POST /up HTTP/1.1\r\nhost: other\r\ntransfer-encoding: chunked\r\n\r\n190\r\n"
                .iter()
                .copied()
                .chain([b'x'; 400])
                .chain(*b"\r\n258\r\n")
                .chain([b'y'; 600])
                .chain(*b"\r\n0\r\n\r\n")
                .collect::<Vec<u8>>()
                .as_slice(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text().to_ascii_lowercase();
    assert!(text.contains("body-bytes: 1000"), "{text}");
    assert!(text.contains("content-length: 1000"), "{text}");
    assert!(!text.contains("transfer-encoding"), "{text}");
    // The connection stays usable.
    assert_eq!(c.get("other", "/again", &[]).status, 200);

    // Over the limit by Content-Length: 413 before the body is asked for.
    let mut c = s.client();
    c.w.write_all(
        b"POST /e HTTP/1.1\r\nhost: other\r\ncontent-length: 1001\r\nexpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let r = c.response().unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.text(), "Payload Too Large");
    assert!(c.closed_within(Duration::from_secs(3)));

    // Over the limit in chunks: 413 once the total passes it.
    let mut c = s.client();
    let mut req =
        b"POST /up HTTP/1.1\r\nhost: other\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"190\r\n");
        req.extend_from_slice(&[b'z'; 400]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = c.raw(&req).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(s.proxy.total(Counter::DownstreamRqTooLarge), 2);
    // Exactly at the limit is accepted.
    let mut c = s.client();
    let mut req = b"POST /up HTTP/1.1\r\nhost: other\r\ncontent-length: 1000\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'q'; 1000]);
    let r = c.raw(&req).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("body-bytes: 1000"), "{}", r.text());
    // Nothing reached an upstream for the refused ones: two bodies went through.
    let seen = s.a.requests.load(Ordering::SeqCst) + s.b.requests.load(Ordering::SeqCst);
    assert_eq!(seen, 3, "two buffered bodies and one GET");
}

#[test]
fn one_gib_up_and_down_intact() {
    let s = setup();
    const BLOCKS: u64 = 16 * 1024; // x 64 KiB = 1 GiB
    let n = BLOCKS * support::BLOCK as u64;
    // Upload: the upstream's CRC of the body must equal ours.
    let mut c = s.client();
    c.w.write_all(
        format!("PUT /up HTTP/1.1\r\nhost: other\r\ncontent-length: {n}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let sent = support::send_stream(&mut c.w, 3, BLOCKS);
    let r = c.response().unwrap();
    assert!(
        r.text()
            .contains(&format!("body-bytes: {n}\nbody-crc: {sent}\n")),
        "{}",
        r.text()
    );
    // Download on the same connection.
    c.w.write_all(format!("GET /big/{n} HTTP/1.1\r\nhost: other\r\n\r\n").as_bytes())
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut c.r, &mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        std::io::BufRead::read_line(&mut c.r, &mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let mut h = crc32fast::Hasher::new();
    let mut want = crc32fast::Hasher::new();
    let mut block = Box::new([0u8; support::BLOCK]);
    let mut buf = vec![0u8; support::BLOCK];
    for i in 0..BLOCKS {
        support::block(7, i, &mut block);
        want.update(&block[..]);
        c.r.read_exact(&mut buf).unwrap();
        h.update(&buf);
    }
    assert_eq!(h.finalize(), want.finalize());
    assert!(
        s.proxy.total(Counter::BytesSpliced) > n,
        "large bodies are spliced"
    );
}

#[test]
fn websocket_upgrade_becomes_a_tunnel() {
    let s = setup();
    let mut c = s.client();
    let r = c
        .raw(b"GET /ws HTTP/1.1\r\nhost: other\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .unwrap();
    assert_eq!(r.status, 101);
    assert_eq!(r.header("upgrade"), Some("websocket"));
    // A masked WebSocket text frame ("hello"), echoed byte for byte through the tunnel.
    let frame = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    for _ in 0..3 {
        c.w.write_all(&frame).unwrap();
        let mut back = [0u8; 11];
        c.r.read_exact(&mut back).unwrap();
        assert_eq!(back, frame);
    }
    assert_eq!(s.proxy.total(Counter::UpgradesTotal), 1);
}

/// Each malformed or ambiguously framed request gets 400 and a closed connection, and
/// nothing reaches the upstream.
#[test]
fn ambiguous_framing_is_refused_with_400_and_close() {
    let s = setup();
    let cases: &[(&str, &[u8])] = &[
        ("CL and TE", b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("differing CL", b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"),
        ("bare LF in a header line", b"GET / HTTP/1.1\r\nhost: h\nx: y\r\n\r\n"),
        ("obs-fold", b"GET / HTTP/1.1\r\nhost: h\r\nx-a: 1\r\n  folded\r\n\r\n"),
        ("invalid header name", b"GET / HTTP/1.1\r\nhost: h\r\nx(a): 1\r\n\r\n"),
        ("missing host", b"GET / HTTP/1.1\r\n\r\n"),
    ];
    for (what, bytes) in cases {
        let mut c = s.client();
        let r = c
            .raw(bytes)
            .unwrap_or_else(|| panic!("{what}: no response"));
        assert_eq!(r.status, 400, "{what}");
        assert_eq!(r.header("connection"), Some("close"), "{what}");
        assert!(
            c.closed_within(Duration::from_secs(5)),
            "{what}: connection left open"
        );
    }
    // A transfer coding zerohop does not implement: 501, as Envoy answers (envoy_parity).
    let mut c = s.client();
    let r = c
        .raw(b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked, gzip\r\n\r\n")
        .unwrap();
    assert_eq!((r.status, r.header("connection")), (501, Some("close")));
    assert!(c.closed_within(Duration::from_secs(5)));
    // Chunk lines are checked as the body streams: the head has gone upstream by then, the
    // client still gets 400 and the connection closes.
    for (what, bytes) in [
        ("empty chunk size", &b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n"[..]),
        ("bare LF in a chunk line", b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n"),
        ("non-hex chunk size", b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n0\r\n\r\n"),
    ] {
        let mut c = s.client();
        let r = c.raw(bytes).unwrap_or_else(|| panic!("{what}: no response"));
        assert_eq!(r.status, 400, "{what}");
        assert!(c.closed_within(Duration::from_secs(5)), "{what}: connection left open");
    }
    // The chunked cases' heads went upstream, but no complete request did: the upstream
    // connection was closed mid-body, never reused.
    assert_eq!(
        s.a.requests.load(Ordering::SeqCst) + s.b.requests.load(Ordering::SeqCst),
        0,
        "nothing complete was forwarded"
    );
    assert_eq!(s.proxy.total(Counter::UpstreamCxReused), 0);
    assert_eq!(s.proxy.total(Counter::DownstreamRqMalformed), 10);
}

#[test]
fn local_replies_for_limits_routes_and_upstream_failures() {
    let s = setup_with(|y| {
        y.replace(
            "          use_remote_address: true\n",
            "          use_remote_address: true\n          request_headers_timeout: 0.5s\n          stream_idle_timeout: 0.5s\n          common_http_protocol_options: { max_headers_count: 20 }\n",
        )
    });
    // 431: more header fields than max_headers_count, or more bytes than 60 KiB.
    let mut c = s.client();
    let many: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
    let r = c
        .raw(format!("GET / HTTP/1.1\r\nhost: h\r\n{many}\r\n").as_bytes())
        .unwrap();
    assert_eq!(r.status, 431);
    let mut c = s.client();
    let big = "a".repeat(61 * 1024);
    let r = c
        .raw(format!("GET / HTTP/1.1\r\nhost: h\r\nx-big: {big}\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(r.status, 431);
    // 408: a head that does not complete within request_headers_timeout (slowloris).
    let mut c = s.client();
    let start = Instant::now();
    let r = c.raw(b"GET / HTTP/1.1\r\nhost: h\r\n").unwrap();
    assert_eq!(r.status, 408);
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(s.proxy.total(Counter::DownstreamRqHeadersTimeout), 1);
    // 408: a request body that stops arriving (stream_idle_timeout).
    let mut c = s.client();
    let start = Instant::now();
    let r = c
        .raw(b"POST /x HTTP/1.1\r\nhost: h\r\ncontent-length: 10\r\n\r\nabc")
        .unwrap();
    assert_eq!(r.status, 408);
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(c.closed_within(Duration::from_secs(3)));
    // 404: no route (an asterisk-form target matches no prefix).
    let mut c = s.client();
    assert_eq!(
        c.raw(b"OPTIONS * HTTP/1.1\r\nhost: h\r\n\r\n")
            .unwrap()
            .status,
        404
    );
    assert_eq!(s.proxy.total(Counter::RouteNotFound), 1);
    // 504: the route timeout (0.3 s) passes before the upstream answers (1 s).
    let mut c = s.client();
    let start = Instant::now();
    let r = c.get("other", "/slow", &[]);
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), "upstream request timeout");
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(s.proxy.total(Counter::UpstreamRqTimeout), 1);
    // 502: upstream responses held to the same framing rules as requests.
    for path in ["/bad-framing", "/bad-lengths", "/bad-lf"] {
        let mut c = s.client();
        assert_eq!(c.get("other", path, &[]).status, 502, "{path}");
    }
    assert_eq!(s.proxy.total(Counter::UpstreamRespMalformed), 3);
    // A malformed chunk after the response head has gone out: the client gets the head and
    // the valid first chunk, then the connection ends; the second chunk never arrives.
    let mut c = s.client();
    c.w.write_all(b"GET /bad-chunk HTTP/1.1\r\nhost: other\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = c.r.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        got.contains("5\r\nhello\r\n") && !got.contains("world"),
        "{got}"
    );
}

#[test]
fn connect_failures_and_empty_clusters() {
    let a = upstream("a");
    let refused = support::refused_port();
    let yaml = fixture(a.addr, refused)
        .replace(
            "  clusters:\n",
            "  clusters:\n  - name: empty\n    load_assignment: { cluster_name: empty }\n",
        )
        .replace(
            "              - name: catch-all\n",
            "              - name: to-empty\n                match: { prefix: \"/empty\" }\n                route: { cluster: empty }\n              - name: catch-all\n",
        );
    let proxy = Proxy::start(&yaml);
    let mut c = Client::connect(proxy.addr("web"));
    let r = c.get("x.example.com", "/", &[]); // cluster b: nothing listening
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("remote connection failure"),
        "{}",
        r.text()
    );
    let mut c = Client::connect(proxy.addr("web"));
    let r = c.get("other", "/empty", &[]);
    assert_eq!((r.status, r.text().as_str()), (503, "no healthy upstream"));
    assert_eq!(proxy.total(Counter::UpstreamCxConnectFail), 1);
    assert_eq!(proxy.total(Counter::UpstreamCxNoHealthyUpstream), 1);
    // The proxy keeps serving.
    let mut c = Client::connect(proxy.addr("web"));
    assert_eq!(c.get("other", "/", &[]).status, 200);
}

/// On SIGTERM an idle keep-alive connection is closed at once (not held to the drain
/// deadline), and a request in flight finishes with `connection: close`.
#[test]
fn draining_closes_idle_keep_alive_connections() {
    let (a, b) = (upstream("a"), upstream("b"));
    let mut proxy = Proxy::start_with(
        &fixture(a.addr, b.addr),
        Opts {
            drain_timeout: "30",
            ..Default::default()
        },
    );
    let mut idle = Client::connect(proxy.addr("web"));
    assert_eq!(idle.get("other", "/", &[]).status, 200);
    let mut busy = Client::connect(proxy.addr("web"));
    // The "header" route (2 s timeout) to an upstream that answers after 1 s.
    busy.w
        .write_all(b"GET /h/slow HTTP/1.1\r\nhost: other\r\nx-canary: yes\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    proxy.signal("TERM");
    assert!(
        idle.closed_within(Duration::from_secs(5)),
        "idle keep-alive connection left open"
    );
    let r = busy.response().expect("the request in flight completes");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("exits well before the 30 s deadline");
    assert!(status.success(), "{status}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}
