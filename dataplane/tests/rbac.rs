//! RBAC (issue #16) against Envoy 1.40: `envoy.filters.http.rbac` and
//! `envoy.filters.network.rbac` with the same policies and the same requests through both,
//! each kind of principal and permission allowed and denied (ALLOW and DENY actions,
//! shadow rules counted), `authenticated` principals from mutual TLS client certificates
//! with SPIFFE URI SANs. Outcomes (status and body, or a closed connection) and the
//! `rbac.*` counters must agree. CI sets ZEROHOP_REQUIRE_PEERS=1.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use support::envoy;
use support::http::{admin_prefix, http_bootstrap, ROUTER};
use support::same;
use support::tls::{bootstrap, curl as tls_curl, server_tls, Pki};
use support::Proxy;
use zerohop_proto::stats::Counter;

fn rbac_filter(rules: &str, shadow: &str) -> String {
    format!(
        r#"          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
{rules}{shadow}"#
    )
}

/// A listener `web` answering 200 `in` to everything, behind `filters` (before the router),
/// its connection manager trusting one `x-forwarded-for` hop; Envoy's admin on `admin`.
fn http_config(admin: u16, filters: &str) -> String {
    let hcm = "          use_remote_address: true\n          xff_num_trusted_hops: 1\n";
    let routes = "              - match: { prefix: \"/\" }\n                direct_response: { status: 200, body: { inline_string: \"in\" } }\n";
    http_bootstrap(&admin_prefix(admin), 0, hcm, routes, "")
        .replacen(ROUTER, &format!("{filters}{ROUTER}"), 1)
        .replace("  clusters:\n", "  clusters: []\n")
}

/// `curl` with `args`: "status body", or "failed".
fn curl(addr: SocketAddr, path: &str, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", " %{http_code}"])
        .args(args)
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Envoy's `http.web.rbac.*` and `<prefix>.rbac.*` counters, as zerohop names them.
fn envoy_counts(admin: u16) -> Vec<(String, u64)> {
    let stats = support::admin::get(admin, "/stats").unwrap_or_default();
    let mut out = Vec::new();
    for n in ["allowed", "denied", "shadow_allowed", "shadow_denied"] {
        let v: u64 = stats
            .lines()
            .filter(|l| l.contains(&format!("rbac.{n}:")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        out.push((n.to_owned(), v));
    }
    out
}

fn zerohop_counts(p: &Proxy, network: bool) -> Vec<(String, u64)> {
    let c = match network {
        false => [
            Counter::RbacAllowed,
            Counter::RbacDenied,
            Counter::RbacShadowAllowed,
            Counter::RbacShadowDenied,
        ],
        true => [
            Counter::NetworkRbacAllowed,
            Counter::NetworkRbacDenied,
            Counter::NetworkRbacShadowAllowed,
            Counter::NetworkRbacShadowDenied,
        ],
    };
    ["allowed", "denied", "shadow_allowed", "shadow_denied"]
        .iter()
        .zip(c)
        .map(|(n, c)| (n.to_string(), p.total(c)))
        .collect()
}

/// Each principal and permission kind, ALLOW: the requests that pass are exactly those a
/// policy names.
#[test]
fn http_rbac_as_envoys() {
    let rules = r#"              rules:
                action: ALLOW
                policies:
                  by-path:
                    permissions: [ { url_path: { path: { prefix: "/public/" } } } ]
                    principals: [ { any: true } ]
                  by-header-and-method:
                    permissions: [ { and_rules: { rules: [ { header: { name: ":method", string_match: { exact: POST } } }, { header: { name: x-team, string_match: { suffix: "-ops" } } } ] } } ]
                    principals: [ { any: true } ]
                  by-remote-ip:
                    permissions: [ { any: true } ]
                    principals: [ { remote_ip: { address_prefix: 10.1.0.0, prefix_len: 16 } } ]
                  by-principal-header:
                    permissions: [ { not_rule: { url_path: { path: { exact: "/admin" } } } } ]
                    principals: [ { header: { name: x-user, string_match: { exact: alice } } } ]
                  by-port:
                    permissions: [ { and_rules: { rules: [ { destination_port_range: { start: 1, end: 65535 } }, { url_path: { path: { suffix: ".port" } } } ] } } ]
                    principals: [ { direct_remote_ip: { address_prefix: 127.0.0.0, prefix_len: 8 } } ]
                  by-or:
                    permissions: [ { or_rules: { rules: [ { url_path: { path: { contains: "/or-a" } } }, { url_path: { path: { contains: "/or-b" } } } ] } } ]
                    principals: [ { not_id: { remote_ip: { address_prefix: 10.9.0.0, prefix_len: 16 } } } ]
"#;
    let shadow = r#"              shadow_rules:
                action: DENY
                policies:
                  shadow-deny-x:
                    permissions: [ { header: { name: x-shadow, present_match: true } } ]
                    principals: [ { any: true } ]
"#;
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("/public/a", vec![]),
        ("/private", vec![]),
        ("/private", vec!["-X", "POST", "-H", "x-team: db-ops"]),
        ("/private", vec!["-X", "POST", "-H", "x-team: db"]),
        ("/private", vec!["-H", "x-team: db-ops"]),
        ("/private", vec!["-H", "x-forwarded-for: 10.1.2.3"]),
        ("/private", vec!["-H", "x-forwarded-for: 10.2.2.3"]),
        ("/data", vec!["-H", "x-user: alice"]),
        ("/admin", vec!["-H", "x-user: alice"]),
        ("/x.port", vec![]),
        ("/x/or-b", vec![]),
        ("/x/or-b", vec!["-H", "x-forwarded-for: 10.9.0.1"]),
        ("/private", vec!["-H", "x-shadow: 1"]),
    ];
    let run = |addr: SocketAddr| -> Vec<String> {
        cases
            .iter()
            .map(|(p, a)| format!("{p} {a:?}: {}", curl(addr, p, a)))
            .collect()
    };
    let admin = envoy::free_port();
    let cfg = http_config(admin, &rbac_filter(rules, shadow));
    let proxy = Proxy::start(&cfg.replace(&format!("port_value: {admin}"), "port_value: 0"));
    let z = run(proxy.addr("web"));
    eprintln!("[zerohop] {z:#?}");
    assert!(z[0].ends_with("in 200"), "{z:#?}");
    assert!(z[1].ends_with("RBAC: access denied 403"), "{z:#?}");
    let zc = zerohop_counts(&proxy, false);
    let denied = z.iter().filter(|l| l.ends_with(" 403")).count() as u64;
    assert_eq!(zc[1].1, denied, "denied: {zc:?}");
    assert_eq!(zc[0].1, z.len() as u64 - denied, "allowed: {zc:?}");
    if !envoy::available() {
        return;
    }
    let (_envoy, addr) = envoy::start(&cfg);
    let e = run(addr);
    same("RBAC", &z, &e);
    assert_eq!(zc, envoy_counts(admin), "RBAC counters differ");
}

/// DENY, and the network filter: a connection from a denied source is closed before the
/// HTTP connection manager sees a byte.
#[test]
fn deny_and_network_rbac_as_envoys() {
    let deny = r#"              rules:
                action: DENY
                policies:
                  no-delete:
                    permissions: [ { header: { name: ":method", string_match: { exact: DELETE } } } ]
                    principals: [ { any: true } ]
"#;
    let admin = envoy::free_port();
    let network = r#"      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: net
          rules:
            action: ALLOW
            policies:
              loopback-to-this-port:
                permissions: [ { destination_ip: { address_prefix: 127.0.0.1, prefix_len: 32 } } ]
                principals: [ { direct_remote_ip: { address_prefix: 127.0.0.0, prefix_len: 8 } } ]
          shadow_rules:
            action: DENY
            policies:
              everyone:
                permissions: [ { any: true } ]
                principals: [ { any: true } ]
"#;
    let cfg = http_config(admin, &rbac_filter(deny, ""))
        .replace("    - filters:\n", &format!("    - filters:\n{network}"));
    let run = |addr: SocketAddr| {
        vec![
            curl(addr, "/a", &[]),
            curl(addr, "/a", &["-X", "DELETE"]),
            curl(addr, "/a", &["-X", "PUT"]),
        ]
    };
    let proxy = Proxy::start(&cfg.replace(&format!("port_value: {admin}"), "port_value: 0"));
    let z = run(proxy.addr("web"));
    eprintln!("[zerohop] {z:?}");
    assert_eq!(z, ["in 200", "RBAC: access denied 403", "in 200"]);
    let zn = zerohop_counts(&proxy, true);
    assert_eq!(zn[0].1, 3, "{zn:?}");
    assert_eq!(zn[3].1, 3, "{zn:?}");
    // The network filter denying: only 10.0.0.0/8 clients allowed.
    let closed = cfg.replace(
        "address_prefix: 127.0.0.0, prefix_len: 8",
        "address_prefix: 10.0.0.0, prefix_len: 8",
    );
    let proxy2 = Proxy::start(&closed.replace(&format!("port_value: {admin}"), "port_value: 0"));
    let z2 = curl(proxy2.addr("web"), "/a", &[]);
    assert_eq!(z2, " 000", "closed without a response");
    assert_eq!(proxy2.total(Counter::NetworkRbacDenied), 1);
    if !envoy::available() {
        return;
    }
    let (_envoy, addr) = envoy::start(&cfg);
    assert_eq!(z, run(addr), "zerohop and Envoy differ");
    let (_envoy2, addr2) =
        envoy::start(&closed.replace(&admin.to_string(), &envoy::free_port().to_string()));
    assert_eq!(
        z2,
        curl(addr2, "/a", &[]),
        "zerohop and Envoy differ (network deny)"
    );
}

/// RBAC's `authenticated` principal reads the client certificate's URI SAN (SPIFFE id).
#[test]
fn authenticated_principals_as_envoys() {
    let pki = Pki::new("rbac");
    let validation = format!(
        "            validation_context:\n              trusted_ca: {{ filename: {} }}\n",
        pki.path("ca.pem")
    );
    let tls = server_tls(
        &pki,
        "          require_client_certificate: true\n",
        &validation,
    );
    let routes = "              - match: { prefix: \"/\" }\n                direct_response: { status: 200, body: { inline_string: \"in\" } }\n";
    let rbac = r#"          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:
                  ns-a-only:
                    permissions: [ { url_path: { path: { prefix: "/a/" } } } ]
                    principals: [ { authenticated: { principal_name: { prefix: "spiffe://cluster.local/ns/a/" } } } ]
                  any-peer:
                    permissions: [ { url_path: { path: { prefix: "/peers/" } } } ]
                    principals: [ { authenticated: {} } ]
"#;
    let cfg = bootstrap(&tls, routes, "").replacen(ROUTER, &format!("{rbac}{ROUTER}"), 1);
    let run = |addr: SocketAddr| {
        let mut out = Vec::new();
        for who in ["client", "intruder"] {
            let (c, k) = (
                pki.path(&format!("{who}.pem")),
                pki.path(&format!("{who}.key")),
            );
            for path in ["/a/x", "/peers/x", "/other"] {
                let r = tls_curl(&pki, addr, path, &["--http1.1", "--cert", &c, "--key", &k]);
                out.push(format!("{who} {path}: {}", r[0]));
            }
        }
        out
    };
    let proxy = Proxy::start(&cfg);
    let z = run(proxy.addr("web"));
    eprintln!("[zerohop] {z:#?}");
    assert_eq!(
        z,
        [
            "client /a/x: HTTP/1.1 200",
            "client /peers/x: HTTP/1.1 200",
            "client /other: HTTP/1.1 403",
            "intruder /a/x: HTTP/1.1 403",
            "intruder /peers/x: HTTP/1.1 200",
            "intruder /other: HTTP/1.1 403",
        ]
    );
    if envoy::available() {
        let (_envoy, addr) = envoy::start(&cfg);
        same("authenticated principals", &z, &run(addr));
    }
}
