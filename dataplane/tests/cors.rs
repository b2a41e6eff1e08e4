//! `envoy.filters.http.cors` (issue #16) against Envoy 1.40: the same policies and requests
//! through both; statuses, every `access-control-*` response header, whether the upstream
//! answered, and the `cors.*` counters compared. A virtual host's policy, a route's that
//! overrides some of its fields (merged field by field, as Envoy), preflights from allowed,
//! regex-matched and refused origins (forwarded, or answered without
//! `forward_not_matching_preflights`), `*` echoing the requested methods and headers, simple
//! requests to an upstream and to a direct response (which Envoy's filter leaves alone), a
//! route that disables the filter and one that only shadows it. CI sets ZEROHOP_REQUIRE_PEERS=1.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use support::envoy;
use support::http::{admin_prefix, http_bootstrap, static_cluster, upstream, ROUTER};
use support::Proxy;
use zerohop_proto::stats::Counter;

const POLICY: &str =
    "\"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";

fn config(admin: u16, upstream_port: u16) -> String {
    let route_policy = |fields: &str| {
        format!(
            "                typed_per_filter_config:\n                  envoy.filters.http.cors: {{ {POLICY}, {fields} }}\n"
        )
    };
    let direct = |prefix: &str, body: &str, policy: &str| {
        format!(
            "              - match: {{ prefix: \"{prefix}\" }}\n                direct_response: {{ status: 200, body: {{ inline_string: \"{body}\" }} }}\n{policy}"
        )
    };
    let forward = |prefix: &str, _: &str, policy: &str| {
        format!(
            "              - match: {{ prefix: \"{prefix}\" }}\n                route: {{ cluster: a }}\n{policy}"
        )
    };
    let routes = [
        "              - match: { prefix: \"/api\" }\n                route: { cluster: a }\n".to_owned(),
        forward("/star", "star", &route_policy("allow_methods: \"*\", allow_headers: \"*\"")),
        forward(
            "/strict",
            "strict",
            &route_policy("forward_not_matching_preflights: false, allow_origin_string_match: [ { exact: \"https://only.example\" } ]"),
        ),
        forward(
            "/off",
            "off",
            "                typed_per_filter_config:\n                  envoy.filters.http.cors: { \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true }\n",
        ),
        forward(
            "/shadow",
            "shadow",
            &route_policy("filter_enabled: { default_value: { numerator: 0 } }, shadow_enabled: { default_value: { numerator: 100 } }"),
        ),
        forward(
            "/any",
            "",
            &route_policy("allow_origin_string_match: [ { exact: \"*\" } ]"),
        ),
        forward("/up", "", ""),
        direct("/", "in", ""),
    ]
    .concat();
    let vhost_policy = format!(
        "              typed_per_filter_config:\n                envoy.filters.http.cors:\n                  {POLICY}\n                  allow_origin_string_match: [ {{ exact: \"https://app.example\" }}, {{ safe_regex: {{ regex: \"https://[a-z]+\\\\.trusted\\\\.example\" }} }} ]\n                  allow_methods: \"GET, POST\"\n                  allow_headers: \"content-type, x-a\"\n                  expose_headers: \"x-upstream\"\n                  max_age: \"600\"\n                  allow_credentials: true\n"
    );
    let cors = "          - name: envoy.filters.http.cors\n            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors }\n";
    http_bootstrap(
        &admin_prefix(admin),
        0,
        "",
        &routes,
        &static_cluster("a", upstream_port),
    )
    .replacen(ROUTER, &format!("{cors}{ROUTER}"), 1)
    .replacen(
        "              domains: [\"*\"]\n",
        &format!("              domains: [\"*\"]\n{vhost_policy}"),
        1,
    )
}

fn run(addr: SocketAddr) -> Vec<String> {
    let preflight = |origin: &str, method: &str, headers: &str| {
        let mut h = vec![
            format!("origin: {origin}"),
            format!("access-control-request-method: {method}"),
        ];
        if !headers.is_empty() {
            h.push(format!("access-control-request-headers: {headers}"));
        }
        h
    };
    let origin = |o: &str| vec![format!("origin: {o}")];
    let cases: Vec<(&str, &str, Vec<String>)> = vec![
        ("GET", "/api", origin("https://app.example")),
        ("GET", "/api", origin("https://evil.example")),
        ("POST", "/api", origin("https://web.trusted.example")),
        (
            "OPTIONS",
            "/api",
            preflight("https://app.example", "PUT", "x-b"),
        ),
        (
            "OPTIONS",
            "/api",
            preflight("https://evil.example", "PUT", ""),
        ),
        ("OPTIONS", "/api", origin("https://app.example")),
        (
            "OPTIONS",
            "/star",
            preflight("https://web.trusted.example", "DELETE", "x-q, x-r"),
        ),
        (
            "OPTIONS",
            "/strict",
            preflight("https://evil.example", "GET", ""),
        ),
        (
            "OPTIONS",
            "/strict",
            preflight("https://only.example", "GET", ""),
        ),
        (
            "OPTIONS",
            "/off",
            preflight("https://app.example", "GET", ""),
        ),
        (
            "OPTIONS",
            "/shadow",
            preflight("https://evil.example", "GET", ""),
        ),
        ("GET", "/", origin("https://app.example")),
        ("GET", "/any", origin("https://whoever.example")),
        ("GET", "/up", vec![]),
        ("GET", "/up", origin("")),
    ];
    cases
        .iter()
        .map(|(m, p, h)| {
            let mut c = Command::new("curl");
            c.args(["-s", "-i", "--max-time", "10", "-X", m]);
            for x in h {
                c.args(["-H", x]);
            }
            let out = c.arg(format!("http://{addr}{p}")).output().expect("curl");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let status = head
                .lines()
                .next()
                .unwrap_or("")
                .split(' ')
                .nth(1)
                .unwrap_or("");
            let mut cors: Vec<String> = head
                .lines()
                .map(|l| l.to_ascii_lowercase())
                .filter(|l| l.starts_with("access-control-") || l.starts_with("x-upstream:"))
                .map(|l| l.trim().to_owned())
                .collect();
            cors.sort();
            let body = match body.lines().next() {
                Some(l)
                    if l.starts_with("OPTIONS ")
                        || l.starts_with("GET ")
                        || l.starts_with("POST ") =>
                {
                    "(upstream)".to_owned()
                }
                Some(l) => l.to_owned(),
                None => String::new(),
            };
            format!("{m} {p} {h:?}: {status} {cors:?} {body}")
        })
        .collect()
}

#[test]
fn cors_as_envoys() {
    let up = upstream("a");
    let admin = envoy::free_port();
    let cfg = config(admin, up.addr.port());
    let proxy = Proxy::start(&cfg.replace(&format!("port_value: {admin}"), "port_value: 0"));
    let z = run(proxy.addr("web"));
    for l in &z {
        eprintln!("[zerohop] {l}");
    }
    assert!(
        z[0].contains("access-control-allow-origin: https://app.example"),
        "{z:#?}"
    );
    assert!(!z[1].contains("access-control-allow-origin"), "{z:#?}");
    let zc: Vec<u64> = [Counter::CorsOriginValid, Counter::CorsOriginInvalid]
        .iter()
        .map(|c| proxy.total(*c))
        .collect();
    if !envoy::available() {
        return;
    }
    let (_envoy, addr) = envoy::start(&cfg);
    let e = run(addr);
    support::same("CORS", &z, &e);
    let stats = support::admin::get(admin, "/stats").unwrap_or_default();
    let ec: Vec<u64> = ["origin_valid", "origin_invalid"]
        .iter()
        .map(|n| support::admin::stat(&stats, &format!("http.web.cors.{n}")))
        .collect();
    assert_eq!(zc, ec, "cors counters (valid, invalid) differ");
}
