//! HTTP/2 at the frame level (issue #15), zerohop against Envoy 1.40 on the same bootstrap,
//! driven by raw frames (tests/h2/raw.py, PyPI's `h2` frame and HPACK codecs): streams are
//! independent (a stream whose window is never opened holds back nothing else), a stream
//! reset while it waits for its upstream leaves the connection serving, and the attacks are
//! refused: rapid reset (CVE-2023-44487), a CONTINUATION flood, a header list over
//! `max_request_headers_kb`, a flood of empty DATA frames. Where zerohop and Envoy differ
//! on purpose (documented in the README's HTTP/2 section) each side's own outcome is
//! asserted: a malformed request (no `:path`, a connection-specific header) resets its
//! stream in zerohop (as Envoy's `override_stream_error_on_invalid_http_message: true`)
//! where Envoy's default closes the connection; a PING flood is answered at the pace the
//! client reads (no queue grows) where Envoy's `max_outbound_control_frames` closes it.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use serde_json::Value;
use support::envoy;
use support::http::{http_bootstrap, static_cluster, upstream};
use support::Proxy;

fn cases(python: &std::path::Path, addr: SocketAddr) -> Vec<Value> {
    run(python, addr, &[])
}

/// tests/h2/raw.py against `addr`, only the cases `only` if any.
fn run(python: &std::path::Path, addr: SocketAddr, only: &[&str]) -> Vec<Value> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/h2/raw.py");
    let out = Command::new(python)
        .arg(script)
        .arg(addr.to_string())
        .args(only)
        .output()
        .expect("raw.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "raw.py: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn case<'a>(all: &'a [Value], name: &str) -> &'a Value {
    all.iter()
        .find(|c| c["case"] == name)
        .unwrap_or_else(|| panic!("no case {name}: {all:#?}"))
}

/// Whether a 200 came back (the request went through).
fn served(c: &Value) -> bool {
    c["statuses"]
        .as_array()
        .is_some_and(|s| s.iter().any(|v| v == 200))
}

/// One listener (`codec_type`) routing everything to the describing upstream on `port`.
fn config(codec: &str, port: u16) -> String {
    let routes = "              - { match: { prefix: \"/\" }, route: { cluster: a } }\n";
    let hcm = format!("          codec_type: {codec}\n");
    http_bootstrap("", 0, &hcm, routes, &static_cluster("a", port))
}

#[test]
fn frames_and_floods_as_envoy_handles_them() {
    let Some(python) = support::xds::grpc_python() else {
        return;
    };
    let up = upstream("a");
    let cfg = config("AUTO", up.addr.port());
    let proxy = Proxy::start(&cfg);
    let z = cases(&python, proxy.addr("web"));
    for c in &z {
        eprintln!("[zerohop] {c}");
    }
    let same_for_both = |all: &[Value]| {
        let c = case(all, "independent streams");
        assert_eq!(c["second_done"], true, "{c}");
        assert_eq!(c["first_held"], true, "{c}");
        for flood in ["rapid reset", "continuation flood", "empty DATA flood"] {
            let c = case(all, flood);
            assert_eq!(c["closed"], true, "{c}");
            assert!(!served(c), "{c}");
        }
        let c = case(all, "header list over the limit");
        assert!(!served(c) && c["closed"] == false, "{c}");
        let c = case(all, "reset while waiting");
        assert_eq!(c["next_answered"], true, "{c}");
    };
    same_for_both(&z);
    for malformed in ["request without :path", "connection-specific header"] {
        let c = case(&z, malformed);
        assert_eq!(c["resets"], serde_json::json!(["PROTOCOL_ERROR"]), "{c}");
        assert_eq!(c["closed"], false, "{c}");
    }
    assert!(served(case(&z, "ping flood")), "{z:#?}");
    // The three connections the codec closed are counted as malformed input.
    let malformed = proxy.total(zerohop_proto::stats::Counter::DownstreamRqMalformed);
    assert!(malformed >= 3, "downstream_rq_malformed {malformed}");
    if !envoy::available() {
        return;
    }
    let (_envoy, addr) = envoy::start(&cfg);
    let e = cases(&python, addr);
    for c in &e {
        eprintln!("[envoy] {c}");
    }
    same_for_both(&e);
    for malformed in ["request without :path", "connection-specific header"] {
        assert_eq!(
            case(&e, malformed)["closed"],
            true,
            "Envoy's default changed"
        );
    }
}

/// A draining listener (SIGTERM) sends GOAWAY to its HTTP/2 connections and lets the streams
/// in flight finish, then the process exits. (Envoy drains the same way, by its drain
/// manager; its SIGTERM does not drain, so this one is zerohop's alone.)
#[test]
fn a_drain_sends_goaway_and_lets_streams_finish() {
    let Some(python) = support::xds::grpc_python() else {
        return;
    };
    let up = upstream("a");
    let cfg = config("HTTP2", up.addr.port());
    let mut proxy = Proxy::start(&cfg);
    let addr = proxy.addr("web");
    let client = std::thread::spawn(move || run(&python, addr, &["drain"]));
    // The request is out (its upstream answers after a second).
    std::thread::sleep(std::time::Duration::from_millis(400));
    proxy.signal("TERM");
    let out = client.join().unwrap();
    let c = case(&out, "drain");
    assert_eq!(c["goaway"], "NO_ERROR", "{c}");
    assert_eq!(c["first_done"], true, "{c}");
    assert!(served(c), "{c}");
    assert!(
        proxy
            .wait_exit(std::time::Duration::from_secs(20))
            .is_some(),
        "zerohop exits once drained"
    );
}
