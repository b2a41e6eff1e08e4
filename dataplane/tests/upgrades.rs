//! `upgrade_configs`, through Envoy 1.40 and zerohop with the same config: an upgrade the
//! connection manager or the route enables is forwarded (WebSocket, then bytes both ways);
//! one that neither enables, or that its route disables, is answered 403 before any filter
//! or route action; `h2c` is no upgrade (served as HTTP/1.1). Without `upgrade_configs`, a
//! WebSocket request is refused too: Envoy's default.
//!
//! Envoy comes from PyPI; CI sets ZEROHOP_REQUIRE_PEERS=1, so there a missing Envoy fails
//! the test.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use support::envoy;
use support::http::{http_bootstrap, static_cluster, upstream, Client};
use support::Proxy;

fn config(upstream_port: u16, hcm_upgrades: &str) -> String {
    let routes = r#"              - match: { prefix: "/ws-off" }
                route: { cluster: a, upgrade_configs: [{ upgrade_type: websocket, enabled: false }] }
              - match: { prefix: "/spdy" }
                route: { cluster: a, upgrade_configs: [{ upgrade_type: spdy/3 }] }
              - match: { prefix: "/direct" }
                direct_response: { status: 200, body: { inline_string: "direct" } }
              - match: { prefix: "/" }
                route: { cluster: a }
"#;
    http_bootstrap(
        "",
        0,
        hcm_upgrades,
        routes,
        &static_cluster("a", upstream_port),
    )
}

const WEBSOCKET: &str = "          upgrade_configs:\n          - upgrade_type: WebSocket\n";

/// What a client sees: the status, whether the upstream answered, the `upgrade` header, the
/// body of a local reply, and, after a 101, whether bytes echo through the tunnel.
fn observe(addr: SocketAddr, path: &str, upgrade: Option<&str>) -> String {
    let mut c = Client::connect(addr);
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: x\r\n");
    if let Some(u) = upgrade {
        req.push_str(&format!("connection: upgrade, http2-settings\r\nupgrade: {u}\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n"));
    }
    req.push_str("\r\n");
    let Some(r) = c.raw(req.as_bytes()) else {
        return "no answer".into();
    };
    let mut seen = format!(
        "{} upstream {} upgrade {:?}",
        r.status,
        r.header("x-upstream").is_some(),
        r.header("upgrade"),
    );
    if r.header("x-upstream").is_none() {
        seen.push_str(&format!(" body {:?}", r.text()));
    }
    if r.status == 101 {
        c.w.write_all(b"through the tunnel").unwrap();
        let mut got = [0u8; 18];
        c.r.get_ref()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let echoed = c.r.read_exact(&mut got).is_ok() && &got == b"through the tunnel";
        seen.push_str(&format!(" echoed {echoed}"));
    } else if r.header("x-upstream").is_some() {
        // Which upgrade-related headers reached the upstream.
        let up = r.upstream_headers();
        // In name order: zerohop writes `upgrade` after the other headers, Envoy where the
        // client had it.
        let mut names: Vec<String> = up
            .iter()
            .filter(|(n, _)| ["upgrade", "connection", "http2-settings"].contains(&n.as_str()))
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        names.sort();
        seen.push_str(&format!(" upstream saw {names:?}"));
    }
    seen
}

#[test]
fn upgrades_are_forwarded_or_refused_as_envoy_does() {
    if !envoy::available() {
        return;
    }
    let a = upstream("a");
    let cases: [(&str, Option<&str>); 8] = [
        ("/ws", Some("websocket")),
        ("/ws", Some("WebSocket")),
        ("/ws-off", Some("websocket")),
        ("/plain", Some("spdy/3")),
        ("/spdy", Some("spdy/3")),
        ("/direct", Some("spdy/3")),
        ("/plain", Some("h2c")),
        ("/plain", None),
    ];
    let mut mismatches = Vec::new();
    for (what, upgrades) in [("with upgrade_configs", WEBSOCKET), ("without", "")] {
        let yaml = config(a.addr.port(), upgrades);
        let zerohop = Proxy::start(&yaml);
        let (_envoy, eaddr) = envoy::start(&yaml);
        let mut refused = 0;
        for (path, upgrade) in cases {
            let z = observe(zerohop.addr("web"), path, upgrade);
            let e = observe(eaddr, path, upgrade);
            eprintln!("{what}: {path} {upgrade:?}: envoy {e}; zerohop {z}");
            refused += u64::from(z.starts_with("403"));
            if z != e {
                mismatches.push(format!(
                    "{what}: {path} {upgrade:?}\n  envoy:   {e}\n  zerohop: {z}"
                ));
            }
        }
        // Each refusal counted, as Envoy's downstream_rq_ws_on_non_ws_route.
        assert!(refused > 0, "{what}: no case was refused");
        assert_eq!(
            zerohop.total(zerohop_proto::stats::Counter::DownstreamRqWsOnNonWsRoute),
            refused,
            "{what}"
        );
    }
    assert!(mismatches.is_empty(), "\n{}", mismatches.join("\n"));
}

#[test]
fn upgrade_config_refusals_name_the_field() {
    let bad = config(
        1,
        "          upgrade_configs:\n          - upgrade_type: CONNECT\n",
    );
    let file = support::scratch("connect.yaml");
    std::fs::write(&file, bad).unwrap();
    let out = std::process::Command::new(support::control_bin())
        .args(["--check", "-c", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("typed_config.upgrade_configs[0].upgrade_type: CONNECT is not supported"),
        "{err}"
    );
}
