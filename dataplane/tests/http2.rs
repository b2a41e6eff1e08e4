//! HTTP/2 downstream (issue #15) against Envoy 1.40: the same bootstrap (`codec_type` AUTO and
//! HTTP2, an HTTP/1.1 upstream that describes what it receives) and the same requests from
//! curl (`--http2-prior-knowledge`), nghttp and h2load through both; status, headers, bodies,
//! what the upstream saw, and the SETTINGS each sends must agree. CI sets
//! ZEROHOP_REQUIRE_PEERS=1, so there a missing Envoy, curl or h2load fails the test.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use support::envoy;
use support::http::{http_bootstrap, observed, static_cluster, upstream, Client, Response};
use support::Proxy;

fn config(codec: &str, hcm_extra: &str, upstream_port: u16) -> String {
    let hcm = format!("          codec_type: {codec}\n{hcm_extra}");
    let routes = concat!(
        "              - match: { prefix: \"/g\", grpc: {} }\n",
        "                direct_response: { status: 200, body: { inline_string: \"grpc\" } }\n",
        "              - match: { prefix: \"/direct\" }\n",
        "                direct_response: { status: 202, body: { inline_string: \"direct\" } }\n",
        "              - match: { prefix: \"/\", headers: [{ name: x-route, string_match: { exact: none } }] }\n",
        "                direct_response: { status: 200 }\n",
        "              - match: { prefix: \"/\", headers: [{ name: x-no-route, present_match: true, invert_match: true }] }\n",
        "                route: { cluster: a, timeout: 5s }\n",
    );
    http_bootstrap("", 0, &hcm, routes, &static_cluster("a", upstream_port))
}

/// A request through curl over h2c (prior knowledge), `stdin` fed to `-T -` if given.
fn curl(addr: SocketAddr, path: &str, args: &[&str], stdin: Option<&[u8]>) -> Response {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--http2-prior-knowledge", "--max-time", "10"])
        .args(args)
        .arg(format!("http://{addr}{path}"))
        .stdout(Stdio::piped())
        .stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("curl");
    let mut input = child.stdin.take().unwrap();
    if let Some(b) = stdin {
        input.write_all(b).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    support::http::parse_curl(&out.stdout)
}

/// What must agree for each request of the suite.
fn observe(addr: SocketAddr) -> Vec<String> {
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = support::scratch("h2-body.bin");
    std::fs::write(&file, &body).unwrap();
    let at_file = format!("@{}", file.display());
    let cases: Vec<(&str, Response)> = vec![
        ("get", curl(addr, "/a/b?x=1", &["-H", "x-shop: 1"], None)),
        (
            "te trailers",
            curl(addr, "/t", &["-H", "te: trailers"], None),
        ),
        (
            "cookies",
            curl(
                addr,
                "/c",
                &["-H", "cookie: a=1", "-H", "cookie: b=2"],
                None,
            ),
        ),
        ("head", curl(addr, "/h", &["-I"], None)),
        (
            "post with length",
            curl(addr, "/p", &["--data-binary", &at_file], None),
        ),
        // No length: the body streams (chunked to the upstream).
        ("post streamed", curl(addr, "/s", &["-T", "-"], Some(&body))),
        (
            "chunked response",
            curl(addr, "/chunked-response", &[], None),
        ),
        ("big response", curl(addr, "/big/1000000", &[], None)),
        ("no route", curl(addr, "/n", &["-H", "x-no-route: 1"], None)),
        // `match.grpc`: only a gRPC request takes the route (its answer gRPC-shaped).
        ("grpc route, plain request", curl(addr, "/g", &[], None)),
        (
            "grpc route, gRPC request",
            curl(
                addr,
                "/g",
                &["-H", "content-type: application/grpc", "-H", "te: trailers"],
                None,
            ),
        ),
        ("direct", curl(addr, "/direct", &[], None)),
        (
            "header route",
            curl(addr, "/x", &["-H", "x-route: none"], None),
        ),
    ];
    let mut out = Vec::new();
    for (name, r) in &cases {
        assert_eq!(r.version, "HTTP/2", "{name}");
        if name.starts_with("big") {
            // Not a description: its length, content and framing.
            let want: Vec<u8> = big(1_000_000);
            out.push(format!(
                "{name}: status {} intact {}",
                r.status,
                r.body == want
            ));
            out.push(format!(
                "{name}: content-length {:?}",
                r.header("content-length")
            ));
            continue;
        }
        let mut seen = observed(r);
        if r.header("x-upstream").is_some() {
            // The body as the upstream received it, and the request headers only an HTTP/2
            // client sends (or an HTTP/1.1 upstream needs) beside the common ones.
            let up = r.upstream_headers();
            for n in [
                "content-length",
                "transfer-encoding",
                "cookie",
                "te",
                "x-shop",
            ] {
                let v: Vec<&str> = up
                    .iter()
                    .filter(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str())
                    .collect();
                seen.push(format!("upstream saw {n}: {v:?}"));
            }
            let text = r.text();
            let tail: Vec<&str> = text.lines().filter(|l| l.starts_with("body-")).collect();
            seen.push(format!("upstream body {tail:?}"));
        } else {
            seen.push(format!("{} bytes", r.body.len()));
            for h in ["content-type", "grpc-status", "grpc-message"] {
                seen.push(format!("{h}: {:?}", r.header(h)));
            }
        }
        // The proxy's own address (the request's authority) differs between the two.
        let here = addr.to_string();
        out.extend(
            seen.into_iter()
                .map(|l| format!("{name}: {}", l.replace(&here, "PROXY"))),
        );
    }
    out
}

/// The upstream's `/big/N` body.
fn big(n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n as usize);
    let mut block = Box::new([0u8; support::BLOCK]);
    let mut i = 0;
    while (out.len() as u64) < n {
        support::block(7, i, &mut block);
        let k = (n - out.len() as u64).min(support::BLOCK as u64) as usize;
        out.extend_from_slice(&block[..k]);
        i += 1;
    }
    out
}

#[test]
fn h2c_requests_as_envoys() {
    let up = upstream("a");
    for codec in ["AUTO", "HTTP2"] {
        let cfg = config(codec, "", up.addr.port());
        let proxy = Proxy::start(&cfg);
        let z = observe(proxy.addr("web"));
        for line in &z {
            eprintln!("[zerohop {codec}] {line}");
        }
        assert!(
            z.iter()
                .any(|l| l == "post streamed: upstream saw transfer-encoding: [\"chunked\"]"),
            "{z:#?}"
        );
        assert!(
            z.iter()
                .any(|l| l == "cookies: upstream saw cookie: [\"a=1; b=2\"]"),
            "{z:#?}"
        );
        if codec == "AUTO" {
            // HTTP/1.1 on the same listener.
            let mut c = Client::connect(proxy.addr("web"));
            let r = c.get("h", "/one", &[]);
            assert_eq!(r.status, 200);
            assert_eq!(r.version, "HTTP/1.1");
        }
        if !envoy::available() {
            continue;
        }
        let (_envoy, addr) = envoy::start(&cfg);
        let e = observe(addr);
        for (zl, el) in z.iter().zip(&e) {
            if zl != el {
                eprintln!("differ:\n  zerohop {zl}\n  envoy   {el}");
            }
        }
        assert_eq!(z, e, "zerohop and Envoy differ ({codec})");
    }
}

/// The SETTINGS frame's entries and the window update nghttp reports receiving first.
fn settings(addr: SocketAddr) -> Vec<String> {
    let out = Command::new("nghttp")
        .args(["-v", "-n", &format!("http://{addr}/direct")])
        .output()
        .expect("nghttp (nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let mut got = Vec::new();
    while let Some(l) = lines.next() {
        if l.contains("recv SETTINGS frame") && !l.contains("flags=0x01") {
            // "(niv=N)" then N lines "[SETTINGS_...(0x..):V]".
            for s in lines.by_ref() {
                let s = s.trim();
                if s.starts_with("(niv=") {
                    continue;
                }
                if !s.starts_with("[SETTINGS_") {
                    break;
                }
                got.push(s.to_owned());
            }
        }
        if l.contains("recv WINDOW_UPDATE frame") && l.contains("stream_id=0") {
            if let Some(n) = lines.next() {
                got.push(format!("connection window update {}", n.trim()));
            }
        }
    }
    got.sort();
    got.dedup();
    got
}

#[test]
fn http2_protocol_options_as_envoys() {
    let up = upstream("a");
    let opts = concat!(
        "          http2_protocol_options:\n",
        "            max_concurrent_streams: 7\n",
        "            initial_stream_window_size: 70000\n",
        "            initial_connection_window_size: 1048576\n",
        "            hpack_table_size: 1024\n",
    );
    let cfg = config("HTTP2", opts, up.addr.port());
    let proxy = Proxy::start(&cfg);
    let z = settings(proxy.addr("web"));
    eprintln!("zerohop: {z:#?}");
    for want in [
        "[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):7]",
        "[SETTINGS_INITIAL_WINDOW_SIZE(0x04):70000]",
        "[SETTINGS_HEADER_TABLE_SIZE(0x01):1024]",
    ] {
        assert!(z.iter().any(|s| s == want), "{want} not in {z:#?}");
    }
    if !envoy::available() {
        return;
    }
    let (_envoy, addr) = envoy::start(&cfg);
    let e = settings(addr);
    eprintln!("envoy: {e:#?}");
    // Envoy sends more entries than asked for (its extended CONNECT setting, its header
    // list limit); each one zerohop sends must be Envoy's too.
    for s in &z {
        if s.contains("MAX_HEADER_LIST_SIZE") {
            continue;
        }
        assert!(e.contains(s), "zerohop sends {s}, Envoy does not: {e:#?}");
    }
}

#[test]
fn many_streams_through_h2load() {
    let up = upstream("a");
    let cfg = config("AUTO", "", up.addr.port());
    let proxy = Proxy::start(&cfg);
    let out = Command::new("h2load")
        .args(["-n", "2000", "-c", "4", "-m", "10"])
        .arg(format!("http://{}/", proxy.addr("web")))
        .output()
        .expect("h2load (nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2000 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
    assert!(text.contains("status codes: 2000 2xx"), "{text}");
}
