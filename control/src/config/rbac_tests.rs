//! Config tests of the access filters, RBAC (HTTP and network) and CSRF: policies compile
//! into the snapshot, and what zerohop does not match is refused with the field named.

use super::*;

const HTTP: &str = include_str!("../../tests/fixtures/http.yaml");

/// RBAC policies compile; what zerohop does not match is refused by name.
#[test]
fn rbac_compiles_and_refuses_by_name() {
    const ROUTER: &str = "          - name: envoy.filters.http.router\n";
    assert!(HTTP.contains(ROUTER), "fixture lacks the router");
    let with = |policy: &str| {
        HTTP.replacen(
            ROUTER,
            &format!("          - name: envoy.filters.http.rbac\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC\n              rules: {{ action: DENY, policies: {{ p: {policy} }} }}\n{ROUTER}"),
            1,
        )
    };
    let b = load(
        &with("{ permissions: [ { url_path: { path: { prefix: \"/x\" } } } ], principals: [ { authenticated: { principal_name: { exact: \"spiffe://a\" } } } ] }"),
        Format::Yaml,
    )
    .unwrap();
    let zerohop_proto::NetworkFilter::Http(h) =
        &b.snapshot.listeners[0].filter_chains[0].filters[0]
    else {
        panic!("http expected")
    };
    let zerohop_proto::HttpFilterConfig::Rbac(r) = &h.http_filters[0].config else {
        panic!("rbac first: {:?}", h.http_filters[0])
    };
    let rules = r.rules.as_ref().unwrap();
    assert_eq!(rules.action, zerohop_proto::RbacAction::Deny);
    assert_eq!(rules.policies[0].0, "p");
    let cases = [
        (
            "{ permissions: [ { url_path: { path: { safe_regex: { regex: \"/x.*\" } } } } ], principals: [ { any: true } ] }",
            ".permissions[0].url_path.path.safe_regex",
            "regular expressions",
        ),
        (
            "{ permissions: [ { any: true } ], principals: [ { source_ip: { address_prefix: 10.0.0.0, prefix_len: 8 } } ] }",
            ".principals[0].source_ip",
            "not supported",
        ),
        (
            "{ permissions: [ { metadata: { filter: f, path: [ { key: k } ], value: { present_match: true } } } ], principals: [ { any: true } ] }",
            ".permissions[0].metadata",
            "not supported",
        ),
        ("{ permissions: [], principals: [ { any: true } ] }", ".policies[p]", "at least one"),
    ];
    for (policy, path, msg) in cases {
        let e = load(&with(policy), Format::Yaml).expect_err(policy);
        assert!(e.path.ends_with(path), "{policy}: {e}");
        assert!(e.to_string().contains(msg), "{policy}: {e}");
    }
}

/// The CSRF filter's policy compiles; `filter_enabled` is required and regular expressions
/// in `additional_origins` are refused by name.
#[test]
fn csrf_compiles_and_refuses_by_name() {
    const ROUTER: &str = "          - name: envoy.filters.http.router\n";
    let with = |policy: &str| {
        HTTP.replacen(
            ROUTER,
            &format!("          - name: envoy.filters.http.csrf\n            typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy, {policy} }}\n{ROUTER}"),
            1,
        )
    };
    let b = load(
        &with("filter_enabled: { default_value: { numerator: 100 } }, additional_origins: [ { exact: a.example } ]"),
        Format::Yaml,
    )
    .unwrap();
    let zerohop_proto::NetworkFilter::Http(h) =
        &b.snapshot.listeners[0].filter_chains[0].filters[0]
    else {
        panic!("http expected")
    };
    let zerohop_proto::HttpFilterConfig::Csrf(c) = &h.http_filters[0].config else {
        panic!("csrf first: {:?}", h.http_filters[0])
    };
    assert_eq!(c.enabled.numerator, 100);
    assert_eq!(c.shadow.numerator, 0);
    assert_eq!(c.additional_origins.len(), 1);
    for (policy, path, msg) in [
        ("shadow_enabled: { default_value: { numerator: 100 } }", ".filter_enabled", "required"),
        (
            "filter_enabled: { default_value: { numerator: 100 } }, additional_origins: [ { safe_regex: { regex: \".*\" } } ]",
            ".additional_origins[0].safe_regex",
            "regular expressions",
        ),
    ] {
        let e = load(&with(policy), Format::Yaml).expect_err(policy);
        assert!(e.path.ends_with(path), "{policy}: {e}");
        assert!(e.to_string().contains(msg), "{policy}: {e}");
    }
}
