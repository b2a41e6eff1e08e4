//! `envoy.filters.http.csrf` (issue #16) against Envoy 1.40: the same policy and requests
//! through both, statuses, bodies and the `csrf.*` counters compared: same-origin and
//! cross-origin mutating requests, missing and `null` origins, the referer fallback,
//! `additional_origins`, a route that disables the filter and one that only shadows it.
//! CI sets ZEROHOP_REQUIRE_PEERS=1.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use support::envoy;
use support::http::{admin_prefix, http_bootstrap, ROUTER};
use support::Proxy;
use zerohop_proto::stats::Counter;

fn config(admin: u16) -> String {
    let per_route = |enabled: u32, shadow: u32| {
        format!(
            r#"                typed_per_filter_config:
                  envoy.filters.http.csrf:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
                    filter_enabled: {{ default_value: {{ numerator: {enabled} }} }}
                    shadow_enabled: {{ default_value: {{ numerator: {shadow} }} }}
"#
        )
    };
    let routes = format!(
        r#"              - match: {{ prefix: "/open" }}
                direct_response: {{ status: 200, body: {{ inline_string: "open" }} }}
{}              - match: {{ prefix: "/shadow" }}
                direct_response: {{ status: 200, body: {{ inline_string: "shadow" }} }}
{}              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "in" }} }}
"#,
        per_route(0, 0),
        per_route(0, 100)
    );
    let csrf = r#"          - name: envoy.filters.http.csrf
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
              filter_enabled: { default_value: { numerator: 100 } }
              additional_origins: [ { suffix: ".trusted.example" } ]
"#;
    http_bootstrap(&admin_prefix(admin), 0, "", &routes, "")
        .replacen(ROUTER, &format!("{csrf}{ROUTER}"), 1)
        .replace("  clusters:\n", "  clusters: []\n")
}

fn run(addr: SocketAddr) -> Vec<String> {
    let own = format!("http://{addr}");
    let cases: Vec<(&str, &str, Vec<String>)> = vec![
        ("GET", "/a", vec!["origin: https://evil.example".into()]),
        ("POST", "/a", vec![format!("origin: {own}")]),
        ("POST", "/a", vec!["origin: https://evil.example".into()]),
        ("PUT", "/a", vec![]),
        ("POST", "/a", vec!["referer: https://evil.example/x".into()]),
        ("POST", "/a", vec!["origin: evil.example".into()]),
        ("DELETE", "/a", vec![format!("referer: {own}/page?x=1")]),
        (
            "PATCH",
            "/a",
            vec![
                "origin: null".into(),
                "referer: https://evil.example/".into(),
            ],
        ),
        (
            "POST",
            "/a",
            vec!["origin: https://app.trusted.example".into()],
        ),
        ("POST", "/open", vec!["origin: https://evil.example".into()]),
        (
            "POST",
            "/shadow",
            vec!["origin: https://evil.example".into()],
        ),
        ("OPTIONS", "/a", vec!["origin: https://evil.example".into()]),
    ];
    cases
        .iter()
        .map(|(m, p, h)| {
            let mut c = Command::new("curl");
            c.args(["-s", "--max-time", "10", "-w", " %{http_code}", "-X", m]);
            for x in h {
                c.args(["-H", x]);
            }
            let out = c.arg(format!("http://{addr}{p}")).output().expect("curl");
            let shown: Vec<String> = h.iter().map(|x| x.replace(&own, "OWN")).collect();
            format!(
                "{m} {p} {shown:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
        .collect()
}

#[test]
fn csrf_as_envoys() {
    let admin = envoy::free_port();
    let cfg = config(admin);
    let proxy = Proxy::start(&cfg.replace(&format!("port_value: {admin}"), "port_value: 0"));
    let z = run(proxy.addr("web"));
    eprintln!("[zerohop] {z:#?}");
    assert!(z[2].ends_with("Invalid origin 403"), "{z:#?}");
    assert!(z[1].ends_with("in 200"), "{z:#?}");
    let zc: Vec<u64> = [
        Counter::CsrfMissingSourceOrigin,
        Counter::CsrfRequestInvalid,
        Counter::CsrfRequestValid,
    ]
    .iter()
    .map(|c| proxy.total(*c))
    .collect();
    if !envoy::available() {
        return;
    }
    let (_envoy, addr) = envoy::start(&cfg);
    let e = run(addr);
    support::same("CSRF", &z, &e);
    let stats = support::admin::get(admin, "/stats").unwrap_or_default();
    let ec: Vec<u64> = ["missing_source_origin", "request_invalid", "request_valid"]
        .iter()
        .map(|n| support::admin::stat(&stats, &format!("http.web.csrf.{n}")))
        .collect();
    assert_eq!(zc, ec, "csrf counters (missing, invalid, valid) differ");
}
