use super::*;
use std::time::Duration;
use zerohop_proto::{
    BufferConfig, CircuitBreakers, FilterOverride, HttpFilterConfig, LbPolicy, Listener,
    NetworkFilter, RouteAction, UpstreamHttp, UpstreamProtocol,
};

const BASE: &str = include_str!("../../tests/fixtures/tcp_proxy.yaml");

fn err(yaml: &str) -> ConfigError {
    load(yaml, Format::Yaml).expect_err("config should be refused")
}

#[test]
fn envoy_bootstrap_compiles_with_defaults() {
    let b = load(BASE, Format::Yaml).unwrap();
    let s = &b.snapshot;
    assert_eq!(s.clusters[0].connect_timeout, Duration::from_millis(250));
    assert_eq!(s.clusters[0].lb_policy, LbPolicy::RoundRobin);
    assert_eq!(
        s.clusters[0].endpoints[1].address,
        "[::1]:8081".parse().unwrap()
    );
    assert_eq!(s.clusters[0].endpoints[1].weight, 3);
    assert_eq!(s.clusters[0].endpoints[0].weight, 1);
    let NetworkFilter::TcpProxy(t) = &s.listeners[0].filter_chains[0].filters[0] else {
        panic!("tcp_proxy expected")
    };
    assert_eq!(
        t.idle_timeout,
        Some(Duration::from_secs(3600)),
        "Envoy's default idle timeout"
    );
    assert_eq!(t.targets.len(), 1);
}

#[test]
fn json_and_camel_case_load_the_same_config() {
    let value: serde_json::Value = serde_yaml::from_str(BASE).unwrap();
    let json = serde_json::to_string(&value)
        .unwrap()
        .replace("connect_timeout", "connectTimeout");
    // The same but for the text each was loaded from.
    let compiled = |b: Result<Bootstrap, ConfigError>| Bootstrap {
        source: None,
        ..b.unwrap()
    };
    assert_eq!(
        compiled(load(&json, Format::Json)),
        compiled(load(BASE, Format::Yaml))
    );
    assert_eq!(
        compiled(load_bytes(json.as_bytes())),
        compiled(load(BASE, Format::Yaml))
    );
}

#[test]
fn the_embedded_default_config_loads() {
    let b = load(DEFAULT_CONFIG, Format::Yaml).unwrap();
    assert_eq!(
        b.snapshot.listeners[0].address,
        "127.0.0.1:10000".parse().unwrap()
    );
    assert_eq!(b.admin_address, Some("127.0.0.1:9901".parse().unwrap()));
    let web = &b.snapshot.listeners[1];
    assert_eq!(web.address, "127.0.0.1:10080".parse().unwrap());
    assert!(matches!(
        web.filter_chains[0].filters[..],
        [NetworkFilter::Http(_)]
    ));
}

#[test]
fn weighted_clusters_and_disabled_idle_timeout() {
    let yaml = BASE.replace(
        "cluster: backend",
        "idle_timeout: 0s\n          weighted_clusters: { clusters: [ { name: backend, weight: 3 }, { name: backend, weight: 1 } ] }",
    );
    let s = load(&yaml, Format::Yaml).unwrap().snapshot;
    let NetworkFilter::TcpProxy(t) = &s.listeners[0].filter_chains[0].filters[0] else {
        panic!("tcp_proxy expected")
    };
    assert_eq!(
        t.targets.iter().map(|w| w.weight).collect::<Vec<_>>(),
        vec![3, 1]
    );
    assert_eq!(t.idle_timeout, None);
}

#[test]
fn misspelled_field_is_refused_with_its_path() {
    let e = err(&BASE.replace("connect_timeout: 0.25s", "conect_timeout: 0.25s"));
    assert_eq!(e.path, "static_resources.clusters[0].conect_timeout");
}

#[test]
fn unimplemented_field_is_refused_naming_resource_and_field() {
    let e = err(&BASE.replace(
        "    type: STATIC",
        "    type: STATIC\n    per_connection_buffer_limit_bytes: 1024",
    ));
    assert_eq!(
        e.path,
        "static_resources.clusters[0](backend).per_connection_buffer_limit_bytes"
    );
    assert!(e.message.contains("not supported by zerohop"), "{e}");
}

#[test]
fn unsupported_lb_policy_is_refused() {
    let e = err(&BASE.replace("ROUND_ROBIN", "CLUSTER_PROVIDED"));
    assert_eq!(e.path, "static_resources.clusters[0](backend).lb_policy");
    assert!(e.message.contains("CLUSTER_PROVIDED"), "{e}");
    // The hashing and least-request policies compile, their settings checked.
    let lb = |policy: &str| BASE.replace("lb_policy: ROUND_ROBIN", policy);
    assert!(load(&lb("lb_policy: LEAST_REQUEST"), Format::Yaml).is_ok());
    assert!(load(&lb("lb_policy: RING_HASH"), Format::Yaml).is_ok());
    assert!(load(&lb("lb_policy: MAGLEV"), Format::Yaml).is_ok());
    let e = err(&lb(
        "lb_policy: MAGLEV\n    maglev_lb_config: { table_size: 1000 }",
    ));
    assert!(e.path.ends_with("maglev_lb_config.table_size"), "{e}");
    let e = err(&lb(
        "lb_policy: LEAST_REQUEST\n    least_request_lb_config: { choice_count: 1 }",
    ));
    assert!(
        e.path.ends_with("least_request_lb_config.choice_count"),
        "{e}"
    );
    let e = err(&lb("lb_policy: ROUND_ROBIN\n    ring_hash_lb_config: {}"));
    assert!(e.path.ends_with("ring_hash_lb_config"), "{e}");
}

#[test]
fn unsupported_cluster_type_is_refused() {
    let e = err(&BASE.replace("type: STATIC", "type: ORIGINAL_DST"));
    assert_eq!(e.path, "static_resources.clusters[0](backend).type");
    assert!(e.message.contains("ORIGINAL_DST"), "{e}");
}

#[test]
fn undefined_cluster_reference_is_refused() {
    let e = err(&BASE.replace("cluster: backend", "cluster: nowhere"));
    assert_eq!(e.path, "static_resources.listeners[0](front).filter_chains[0].filters[0](envoy.filters.network.tcp_proxy).typed_config.cluster");
    assert!(e.message.contains("\"nowhere\" is not defined"), "{e}");
}

#[test]
fn unimplemented_extension_is_refused() {
    let e = err(&BASE.replace(
        "\"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: front\n          cluster: backend",
        "\"@type\": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor",
    ));
    assert!(e.message.contains("Decompressor is not supported"), "{e}");
    assert!(e.path.ends_with("typed_config"), "{e}");
}

#[test]
fn unknown_any_type_is_refused() {
    let e = err(&BASE.replace("tcp_proxy.v3.TcpProxy", "tcp_proxy.v3.Nope"));
    assert!(e.to_string().contains("tcp_proxy.v3.Nope"), "{e}");
}

#[test]
fn malformed_values_are_refused_with_their_path() {
    let e = err(&BASE.replace("0.25s", "quarter second"));
    assert_eq!(e.path, "static_resources.clusters[0].connect_timeout");
    let e = err(&BASE.replace("port_value: 8080", "port_value: 70000"));
    assert!(
        e.path
            .ends_with("lb_endpoints[0].endpoint.address.socket_address.port_value"),
        "{e}"
    );
    let e = err(&BASE.replace(
        "address: 127.0.0.1, port_value: 8080",
        "address: backend.local, port_value: 8080",
    ));
    assert!(e.message.contains("not an IP address"), "{e}");
    let e = err(&BASE.replace("load_balancing_weight: 3", "load_balancing_weight: 0"));
    assert!(e.path.ends_with("load_balancing_weight"), "{e}");
}

#[test]
fn duplicate_names_and_structural_errors_are_refused() {
    let dup = BASE.replace("  clusters:\n", "  clusters:\n  - name: backend\n");
    assert!(err(&dup).message.contains("duplicate cluster name"));
    assert!(err("- just\n- a list\n")
        .message
        .contains("not an Envoy bootstrap"));
    let e = err("static_resources: [");
    assert!(e.message.contains("line 1"), "{e}");
    let no_chain = BASE.replace(
        "    filter_chains:\n",
        "    filter_chains: []\n    unused:\n",
    );
    assert!(load(&no_chain, Format::Yaml).is_err());
}

const HTTP: &str = include_str!("../../tests/fixtures/http.yaml");

#[test]
fn http_connection_manager_compiles_with_envoy_defaults() {
    let b = load(HTTP, Format::Yaml).unwrap();
    let NetworkFilter::Http(h) = &b.snapshot.listeners[0].filter_chains[0].filters[0] else {
        panic!("http expected")
    };
    assert_eq!(h.max_request_headers_bytes, 60 * 1024);
    assert_eq!(h.max_headers_count, 100);
    assert_eq!(
        h.request_headers_timeout,
        Some(std::time::Duration::from_secs(10))
    );
    assert!(h.generate_request_id);
    let vh = &h.route_config.virtual_hosts[3];
    assert_eq!(vh.domains, ["*"]);
    let names: Vec<&str> = vh.routes.iter().map(|r| r.name.as_str()).collect();
    assert!(
        names.contains(&"weighted") && names.contains(&"redirect"),
        "{names:?}"
    );
    let RouteAction::Forward(f) = &vh
        .routes
        .iter()
        .find(|r| r.name == "weighted")
        .unwrap()
        .action
    else {
        panic!("forward expected")
    };
    assert_eq!(f.targets.len(), 2);
    assert_eq!(
        f.timeout,
        Some(std::time::Duration::from_secs(15)),
        "Envoy's default route timeout"
    );
}

#[test]
fn http_config_errors_name_the_field() {
    let cases = [
        (
            "regex: \"/rx/[0-9]+\"",
            "regex: \"(unclosed\"",
            ".match.safe_regex.regex",
            "invalid regex",
        ),
        (
            "cluster: b, timeout: 2s",
            "cluster: nowhere, timeout: 2s",
            ".route.cluster",
            "\"nowhere\" is not defined",
        ),
        (
            "cluster: b, timeout: 2s",
            "cluster: b, retry_policy: {retry_on: \"5xx,sometimes\"}",
            ".route.retry_policy.retry_on",
            "invalid retry_on value \"sometimes\"",
        ),
        (
            "cluster: b, timeout: 2s",
            "cluster: b, retry_policy: {retry_on: 5xx, per_try_idle_timeout: 1s}",
            ".route.retry_policy.per_try_idle_timeout",
            "not supported",
        ),
        (
            "cluster: b, timeout: 2s",
            "cluster: b, retry_policy: {retry_back_off: {base_interval: 1s, max_interval: 0.5s}}",
            ".route.retry_policy.retry_back_off.max_interval",
            "greater than or equal to the base_interval",
        ),
        (
            "cluster: b, timeout: 2s",
            "cluster: b, retry_policy: {retry_priority: {name: envoy.retry_priorities.previous_priorities}}",
            ".route.retry_policy.retry_priority",
            "not supported",
        ),
        (
            "cluster: b, timeout: 2s",
            "cluster: b, hedge_policy: {hedge_on_per_try_timeout: true}",
            ".route.hedge_policy",
            "not supported",
        ),
        (
            "domains: [\"*\"]",
            "domains: [\"a*b\"]",
            ".domains[0]",
            "wildcard",
        ),
    ];
    for (from, to, path, msg) in cases {
        assert!(HTTP.contains(from), "fixture lacks {from}");
        let e = err(&HTTP.replacen(from, to, 1));
        assert!(e.path.ends_with(path), "{to}: {e}");
        assert!(e.message.contains(msg), "{to}: {e}");
    }
}

#[test]
fn the_buffer_filter_compiles_and_its_misuse_is_refused() {
    let router = "          - name: envoy.filters.http.router\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n";
    let buffer = |body: &str| {
        format!("          - name: envoy.filters.http.buffer\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer\n{body}")
    };
    let limit = buffer("              max_request_bytes: 4096\n");
    assert!(HTTP.contains(router), "fixture lacks the router");
    let with = |filters: String| HTTP.replacen(router, &filters, 1);

    let b = load(&with(format!("{limit}{router}")), Format::Yaml).unwrap();
    let NetworkFilter::Http(h) = &b.snapshot.listeners[0].filter_chains[0].filters[0] else {
        panic!("http expected")
    };
    assert_eq!(
        h.http_filters[0].config,
        HttpFilterConfig::Buffer(BufferConfig {
            max_request_bytes: 4096
        })
    );
    assert_eq!(h.http_filters[1].config, HttpFilterConfig::Router);
    let b = load(HTTP, Format::Yaml).unwrap();
    let NetworkFilter::Http(h) = &b.snapshot.listeners[0].filter_chains[0].filters[0] else {
        panic!("http expected")
    };
    assert_eq!(
        h.http_filters.len(),
        1,
        "no buffer filter, bodies stream: {:?}",
        h.http_filters
    );

    let cases = [
        (
            format!("{router}{limit}"),
            "http_filters[0]",
            "router must be the last",
        ),
        (
            format!("{limit}{router}{limit}"),
            "http_filters[1]",
            "router must be the last",
        ),
        (
            format!("{}{router}", buffer("              max_request_bytes: 0\n")),
            "max_request_bytes",
            "greater than 0",
        ),
        (
            format!("{}{router}", buffer("")),
            "max_request_bytes",
            "must be set",
        ),
    ];
    for (filters, path, msg) in cases {
        let e = err(&with(filters));
        assert!(e.path.contains(path), "{e}");
        assert!(e.message.contains(msg), "{e}");
    }
}

#[test]
fn cluster_http_protocol_options_compile_and_refuse_what_zerohop_lacks() {
    let cluster_a = "  - name: a\n    connect_timeout: 1s\n";
    assert!(HTTP.contains(cluster_a), "fixture lacks cluster a");
    let with = |common: &str, explicit: &str| {
        HTTP.replacen(
            cluster_a,
            &format!("{cluster_a}    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: {explicit}\n        common_http_protocol_options: {common}\n"),
            1,
        )
    };
    let b = load(
        &with(
            "{ idle_timeout: 90s, max_requests_per_connection: 100, max_headers_count: 50 }",
            "{ http_protocol_options: {} }",
        ),
        Format::Yaml,
    )
    .unwrap();
    let a = &b.snapshot.clusters[0];
    assert_eq!(a.name, "a");
    assert_eq!(
        a.protocol,
        UpstreamProtocol::Http1(UpstreamHttp {
            idle_timeout: Some(Duration::from_secs(90)),
            max_requests_per_connection: Some(100),
            max_headers_count: 50,
            auto_sni: None,
        })
    );
    assert_eq!(b.snapshot.clusters[1].protocol, UpstreamProtocol::default());
    let b = load(
        &with("{ idle_timeout: 0s }", "{ http_protocol_options: {} }"),
        Format::Yaml,
    )
    .unwrap();
    assert_eq!(
        b.snapshot.clusters[0].protocol.common().idle_timeout,
        None,
        "0 disables"
    );

    let cases = [
        (
            with("{ max_headers_count: 0 }", "{ http_protocol_options: {} }"),
            "max_headers_count",
            "at least 1",
        ),
        (
            with(
                "{ max_stream_duration: 1s }",
                "{ http_protocol_options: {} }",
            ),
            "max_stream_duration",
            "not supported",
        ),
        (
            HTTP.replacen(
                "          use_remote_address: true\n",
                "          use_remote_address: true\n          common_http_protocol_options: { max_requests_per_connection: 5 }\n",
                1,
            ),
            "max_requests_per_connection",
            "only on a cluster",
        ),
    ];
    for (yaml, path, msg) in cases {
        let e = err(&yaml);
        assert!(e.path.contains(path), "{e}");
        assert!(e.message.contains(msg), "{e}");
    }
}

#[test]
fn circuit_breaker_thresholds_compile_and_what_zerohop_lacks_is_refused() {
    let cluster_a = "  - name: a\n    connect_timeout: 1s\n";
    let with = |cb: &str| {
        HTTP.replacen(
            cluster_a,
            &format!("{cluster_a}    circuit_breakers: {cb}\n"),
            1,
        )
    };
    let b = load(
        &with("{ thresholds: [ { priority: HIGH, max_connections: 7 }, { max_connections: 5, max_requests: 9, max_retries: 0 }, { max_connections: 6 } ] }"),
        Format::Yaml,
    )
    .unwrap();
    assert_eq!(
        b.snapshot.clusters[0].circuit_breakers,
        CircuitBreakers {
            max_connections: 5,
            max_pending_requests: 1024,
            max_requests: 9,
            max_retries: 0,
            retry_budget: None,
        },
        "the first DEFAULT entry; what it leaves out keeps Envoy's default"
    );
    assert_eq!(
        b.snapshot.clusters[1].circuit_breakers,
        CircuitBreakers::default()
    );
    let b = load(
        &with("{ thresholds: [ { priority: HIGH, max_connections: 7 } ] }"),
        Format::Yaml,
    )
    .unwrap();
    assert_eq!(
        b.snapshot.clusters[0].circuit_breakers,
        CircuitBreakers::default()
    );
    // A retry budget, with Envoy's defaults (20%, 3) for what it leaves out.
    let b = load(
        &with("{ thresholds: [ { retry_budget: {} } ] }"),
        Format::Yaml,
    )
    .unwrap();
    assert_eq!(
        b.snapshot.clusters[0].circuit_breakers.retry_budget,
        Some(zerohop_proto::RetryBudget {
            budget_percent: 20.0f64.to_bits(),
            min_retry_concurrency: 3
        })
    );
    for (cb, field) in [
        (
            "{ thresholds: [ { track_remaining: true } ] }",
            "track_remaining",
        ),
        (
            "{ thresholds: [ { max_connection_pools: 3 } ] }",
            "max_connection_pools",
        ),
        (
            "{ per_host_thresholds: [ { max_connections: 3 } ] }",
            "per_host_thresholds",
        ),
    ] {
        let e = err(&with(cb));
        assert!(e.path.contains(field), "{e}");
        assert!(e.path.contains("circuit_breakers"), "{e}");
    }
}

/// A listener with `chains` (YAML list items, indented for `filter_chains:`) and `rest`
/// (more listener fields), in front of the tcp_proxy fixture's cluster.
fn chains_config(chains: &str, rest: &str) -> String {
    format!(
        "static_resources:
  listeners:
  - name: front
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 10000 }} }}
{rest}    filter_chains:{chains}
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8080 }} }} }} }} ] }} ]
"
    )
}

const TCP_FILTER: &str = "      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: backend";

fn chain(matcher: &str) -> String {
    format!("\n    - filter_chain_match: {matcher}\n{TCP_FILTER}")
}

#[test]
fn filter_chains_matches_and_listener_filters_compile() {
    let yaml = chains_config(
        &format!(
            "{}{}{}",
            chain("{ destination_port: 10000, prefix_ranges: [{ address_prefix: 127.1.2.3, prefix_len: 8 }] }"),
            chain("{ server_names: [\"*.Example.com\", a.example.com], transport_protocol: tls, application_protocols: [h2] }"),
            chain("{ source_type: SAME_IP_OR_LOOPBACK, source_prefix_ranges: [{ address_prefix: \"fd00::1\", prefix_len: 16 }], direct_source_prefix_ranges: [{ address_prefix: 0.0.0.0 }], source_ports: [1, 65535] }"),
        ),
        &format!(
            "    listener_filters:\n    - name: envoy.filters.listener.http_inspector\n      typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector }}\n    listener_filters_timeout: 2s\n    continue_on_listener_filters_timeout: true\n    default_filter_chain:\n{}\n",
            TCP_FILTER
        ),
    );
    let s = load(&yaml, Format::Yaml).unwrap().snapshot;
    let l: &Listener = &s.listeners[0];
    assert_eq!(
        l.listener_filters,
        [zerohop_proto::ListenerFilter::HttpInspector]
    );
    assert_eq!(l.listener_filters_timeout, Some(Duration::from_secs(2)));
    assert!(l.continue_on_listener_filters_timeout);
    assert_eq!(l.filter_chains.len(), 3);
    assert!(l.default_filter_chain.is_some());
    let m = &l.filter_chains[0].matcher;
    assert_eq!(m.destination_port, Some(10000));
    assert_eq!(
        m.prefix_ranges[0].address,
        "127.0.0.0".parse::<std::net::IpAddr>().unwrap(),
        "stored masked"
    );
    assert_eq!(m.prefix_ranges[0].prefix_len, 8);
    let m = &l.filter_chains[1].matcher;
    assert_eq!(
        m.server_names,
        ["*.example.com", "a.example.com"],
        "lower-cased"
    );
    assert_eq!(m.transport_protocol.as_deref(), Some("tls"));
    assert_eq!(m.application_protocols, ["h2"]);
    let m = &l.filter_chains[2].matcher;
    assert_eq!(m.source_type, zerohop_proto::SourceType::SameIpOrLoopback);
    assert_eq!(
        m.source_prefix_ranges[0].address,
        "fd00::".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(m.direct_source_prefix_ranges[0].prefix_len, 0);
    assert_eq!(m.source_ports, [1, 65535]);
    // Defaults, as Envoy's.
    let s = load(BASE, Format::Yaml).unwrap().snapshot;
    assert_eq!(
        s.listeners[0].listener_filters_timeout,
        Some(Duration::from_secs(15))
    );
    assert!(!s.listeners[0].continue_on_listener_filters_timeout);
    assert!(s.listeners[0].filter_chains[0].matcher.is_empty());
}

#[test]
fn filter_chain_errors_name_the_field() {
    let cases = [
        (
            chains_config(&format!("{}{}", chain("{ destination_port: 80 }"), chain("{ destination_port: 80 }")), ""),
            "filter_chains[1].filter_chain_match",
            "overlapping matching rules",
        ),
        (
            chains_config(
                &format!(
                    "{}{}",
                    chain("{ source_prefix_ranges: [{ address_prefix: 10.0.0.0, prefix_len: 8 }, { address_prefix: 11.0.0.0, prefix_len: 8 }] }"),
                    chain("{ source_prefix_ranges: [{ address_prefix: 11.0.0.0, prefix_len: 8 }] }"),
                ),
                "",
            ),
            "filter_chains[1].filter_chain_match",
            "overlapping matching rules",
        ),
        (
            chains_config(&chain("{ prefix_ranges: [{ address_prefix: 10.0.0.0, prefix_len: 33 }] }"), ""),
            "filter_chain_match.prefix_ranges[0].prefix_len",
            "longer than the address",
        ),
        (
            chains_config(&chain("{ source_prefix_ranges: [{ address_prefix: ten, prefix_len: 8 }] }"), ""),
            "source_prefix_ranges[0].address_prefix",
            "not an IP address",
        ),
        (
            chains_config(&chain("{ destination_port: 70000 }"), ""),
            "destination_port",
            "out of range",
        ),
        (
            chains_config(&chain("{ server_names: [\"a.*.com\"] }"), ""),
            "server_names[0]",
            "host name",
        ),
        (
            chains_config(&chain("{ address_suffix: 1.2.3.4 }"), ""),
            "filter_chain_match.address_suffix",
            "not supported",
        ),
        (
            chains_config(
                &chain("{}"),
                "    listener_filters:\n    - name: dst\n      typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst }\n",
            ),
            "listener_filters[0](dst)",
            "not supported",
        ),
        (
            chains_config(" []", ""),
            "front).filter_chains",
            "needs a filter chain",
        ),
    ];
    for (yaml, path, msg) in cases {
        let e = err(&yaml);
        assert!(e.path.contains(path), "{path}: {e}");
        assert!(e.message.contains(msg), "{msg}: {e}");
    }
}

#[test]
fn typed_per_filter_config_compiles_at_each_level() {
    let per = |key: &str, json: &str| format!("typed_per_filter_config: {{ {key}: {json} }}");
    let buffer_filter = "          - name: buf\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer\n              max_request_bytes: 4096\n";
    let router = "          - name: envoy.filters.http.router\n";
    let with = |route: &str, vhost: &str, rc: &str| {
        HTTP.replacen(router, &format!("{buffer_filter}{router}"), 1)
            .replacen("                route: { cluster: a, prefix_rewrite: \"/\" }\n", &format!("                route: {{ cluster: a, prefix_rewrite: \"/\" }}\n                {route}\n"), 1)
            .replacen("              domains: [\"api.example.com\"]\n", &format!("              domains: [\"api.example.com\"]\n              {vhost}\n"), 1)
            .replacen("            name: routes\n", &format!("            name: routes\n            {rc}\n"), 1)
    };
    let disabled = "{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute, disabled: true }";
    let larger = "{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute, buffer: { max_request_bytes: 9 } }";
    let generic_off =
        "{ \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true }";
    let optional_unknown = "{ \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig, is_optional: true, config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute } }";
    let yaml = with(
        &per("buf", disabled),
        &per("buf", larger),
        &format!("typed_per_filter_config: {{ buf: {generic_off}, fault: {optional_unknown} }}"),
    );
    let b = load(&yaml, Format::Yaml).unwrap();
    let NetworkFilter::Http(h) = &b.snapshot.listeners[0].filter_chains[0].filters[0] else {
        panic!("http expected")
    };
    assert_eq!(h.http_filters[0].name, "buf");
    let rc = &h.route_config;
    assert_eq!(
        rc.per_filter.len(),
        1,
        "the optional unknown one is skipped: {:?}",
        rc.per_filter
    );
    assert_eq!(rc.per_filter[0].config, FilterOverride::Disabled);
    let api = &rc.virtual_hosts[0];
    assert_eq!(
        api.per_filter[0].config,
        FilterOverride::Config(HttpFilterConfig::Buffer(BufferConfig {
            max_request_bytes: 9
        }))
    );
    assert_eq!(api.routes[0].per_filter[0].filter, "buf");
    assert_eq!(api.routes[0].per_filter[0].config, FilterOverride::Disabled);

    let fault =
        "{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute }";
    let cases = [
        (with(&per("f", fault), "", ""), "routes[0](api-v1).typed_per_filter_config[\"f\"]", "not supported"),
        (
            with(&per("buf", "{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute }"), "", ""),
            "typed_per_filter_config[\"buf\"]",
            "disabled: true or a buffer",
        ),
        (
            with("", &per("buf", "{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute, buffer: { max_request_bytes: 0 } }"), ""),
            "typed_per_filter_config[\"buf\"].buffer.max_request_bytes",
            "greater than 0",
        ),
    ];
    for (yaml, path, msg) in cases {
        let e = err(&yaml);
        assert!(e.path.contains(path), "{path}: {e}");
        assert!(e.message.contains(msg), "{msg}: {e}");
    }
}

/// A file with no document is refused, as Envoy refuses it ("Unable to convert YAML as
/// JSON"): applied, it would remove every listener, and it is what a file truncated before
/// it is rewritten looks like.
#[test]
fn an_empty_config_is_refused() {
    for text in ["", "\n  \n", "# only a comment\n", "---\n# nothing\n...\n"] {
        let e = err(text);
        assert!(
            e.to_string().contains("the config is empty"),
            "{text:?}: {e}"
        );
        assert!(load(text, Format::Json).is_err(), "{text:?} as JSON");
    }
    assert!(load(BASE, Format::Yaml).is_ok());
}

/// Nesting deeper than any Envoy message is refused before libyaml sees it (100,000 levels
/// of `[` took 33 s to refuse otherwise), naming the line; ordinary configs, brackets in
/// quoted strings and comments included, are not affected.
#[test]
fn yaml_nested_past_the_limit_is_refused_before_parsing() {
    let deep = |open: &str, close: &str, n: usize| {
        format!(
            "node: {{ id: x }}\nstatic_resources: {}{}\n",
            open.repeat(n),
            close.repeat(n)
        )
    };
    for (text, what) in [
        (
            deep("[", "]", 100_000),
            "collections nested deeper than 128 levels",
        ),
        (
            deep("{a: ", "}", 200),
            "collections nested deeper than 128 levels",
        ),
        (
            format!("node:\n{}x\n", "- ".repeat(100_000)),
            "indented deeper than 1024 columns",
        ),
    ] {
        let e = err(&text);
        assert_eq!(e.path, "", "{e}");
        assert!(e.message.contains(what), "{e}");
        assert!(e.message.contains("line 2"), "{e}");
    }
    // Within the limit, the ordinary error of the shape itself comes back instead.
    let e = err(&deep("[", "]", 100));
    assert!(!e.message.contains("nested deeper"), "{e}");
    // Brackets inside quotes and comments do not count.
    let quoted = format!(
        "{BASE}\n# {}\nlayered_runtime: {{ layers: [{{ name: a, static_layer: {{ k: \"{}\" }} }}] }}\n",
        "[".repeat(500),
        "{".repeat(500)
    );
    if let Err(e) = load(&quoted, Format::Yaml) {
        assert!(!e.message.contains("nested deeper"), "{e}");
    }
}
