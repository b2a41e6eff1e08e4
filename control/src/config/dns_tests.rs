//! Compiling `STRICT_DNS` and `LOGICAL_DNS` clusters: Envoy's defaults, every field zerohop
//! honours, and the refusals that name the field.

use std::time::Duration;

use super::*;

const BASE: &str = include_str!("../../tests/fixtures/tcp_proxy.yaml");

/// The fixture with its cluster made `kind`, its endpoints `svc.example:8080` (and a second
/// one when `two`), and `extra` (cluster fields, indented 4) added.
fn dns_config(kind: &str, two: bool, extra: &str) -> String {
    let second = match two {
        true => "        - endpoint: { address: { socket_address: { address: other.example, port_value: 8081 } } }\n",
        false => "",
    };
    let mut yaml = BASE
        .replace("type: STATIC", &format!("type: {kind}\n{extra}"))
        .replace(
            "address: 127.0.0.1, port_value: 8080",
            "address: svc.example, port_value: 8080",
        );
    let start = yaml
        .find("        - endpoint: { address: { socket_address: { address: \"::1\"")
        .unwrap();
    yaml.replace_range(start.., second);
    yaml
}

fn err(yaml: &str) -> ConfigError {
    load(yaml, Format::Yaml).expect_err("config should be refused")
}

#[test]
fn a_strict_dns_cluster_compiles_with_envoys_defaults() {
    let b = load(&dns_config("STRICT_DNS", true, ""), Format::Yaml).unwrap();
    assert!(
        b.snapshot.clusters[0].endpoints.is_empty(),
        "filled by resolution"
    );
    assert_eq!(b.dns.len(), 1);
    let d = &b.dns[0];
    assert_eq!(d.cluster, "backend");
    assert!(!d.logical);
    assert_eq!(d.refresh, Duration::from_secs(5));
    assert_eq!(d.family, LookupFamily::Auto);
    assert_eq!(d.failure_refresh, None);
    assert!(!d.respect_ttl);
    assert!(d.wait_for_warm);
    assert_eq!(d.resolver, ResolverConfig::Dns(DnsClient::default()));
    assert_eq!(
        d.targets,
        [
            DnsTarget {
                host: "svc.example".into(),
                port: 8080,
                weight: 1
            },
            DnsTarget {
                host: "other.example".into(),
                port: 8081,
                weight: 1
            },
        ]
    );
}

#[test]
fn every_dns_field_zerohop_honours_compiles() {
    let extra = r#"    dns_lookup_family: v4_preferred
    dns_refresh_rate: { seconds: 2, nanos: 500000000 }
    dns_failure_refresh_rate: { base_interval: 0.5s, max_interval: 4s }
    dns_jitter: 0.1s
    respect_dns_ttl: true
    wait_for_warm_on_init: false
    typed_dns_resolver_config:
      name: envoy.network.dns_resolver.cares
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
        resolvers: [{ socket_address: { address: 127.0.0.1, port_value: 5353 } }, { socket_address: { address: "::1" } }]
        use_resolvers_as_fallback: true
        rotate_nameservers: true
        query_timeout_seconds: 2
        query_tries: 3
        dns_resolver_options: { use_tcp_for_dns_lookups: true, no_default_search_domain: true }
"#;
    let b = load(&dns_config("LOGICAL_DNS", false, extra), Format::Yaml).unwrap();
    let d = &b.dns[0];
    assert!(d.logical);
    assert_eq!(d.family, LookupFamily::V4Preferred);
    assert_eq!(d.refresh, Duration::from_millis(2500));
    assert_eq!(
        d.failure_refresh,
        Some((Duration::from_millis(500), Duration::from_secs(4)))
    );
    assert_eq!(d.jitter, Some(Duration::from_millis(100)));
    assert!(d.respect_ttl);
    assert!(!d.wait_for_warm);
    assert_eq!(
        d.resolver,
        ResolverConfig::Dns(DnsClient {
            servers: vec![
                "127.0.0.1:5353".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ],
            servers_as_fallback: true,
            use_tcp: true,
            no_search: true,
            timeout: Some(Duration::from_secs(2)),
            tries: Some(3),
            rotate: true,
        })
    );

    let gai = r#"    typed_dns_resolver_config:
      name: envoy.network.dns_resolver.getaddrinfo
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig
        num_retries: 2
"#;
    let b = load(&dns_config("STRICT_DNS", false, gai), Format::Yaml).unwrap();
    assert_eq!(
        b.dns[0].resolver,
        ResolverConfig::Getaddrinfo { retries: 2 }
    );

    // The deprecated forms: dns_resolvers and use_tcp_for_dns_lookups on the cluster.
    let old = "    dns_resolvers: [{ socket_address: { address: 10.0.0.53, port_value: 53 } }]\n    use_tcp_for_dns_lookups: true\n";
    let b = load(&dns_config("STRICT_DNS", false, old), Format::Yaml).unwrap();
    let ResolverConfig::Dns(c) = &b.dns[0].resolver else {
        panic!("a DNS client")
    };
    assert_eq!(c.servers, ["10.0.0.53:53".parse().unwrap()]);
    assert!(c.use_tcp);
}

#[test]
fn dns_refusals_name_the_field() {
    let at = |e: ConfigError| format!("{}: {}", e.path, e.message);
    let c = "static_resources.clusters[0](backend)";

    let e = at(err(&dns_config("LOGICAL_DNS", true, "")));
    assert!(
        e.starts_with(&format!(
            "{c}.load_assignment: LOGICAL_DNS clusters must have a single"
        )),
        "{e}"
    );

    let e = at(err(&dns_config(
        "STRICT_DNS",
        false,
        "    dns_refresh_rate: 0.001s\n",
    )));
    assert!(
        e.starts_with(&format!("{c}.dns_refresh_rate: must be greater than 1ms")),
        "{e}"
    );

    let unroutable = r#"    typed_dns_resolver_config:
      name: envoy.network.dns_resolver.cares
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
        filter_unroutable_families: true
"#;
    let e = at(err(&dns_config("STRICT_DNS", false, unroutable)));
    assert!(
        e.contains("typed_dns_resolver_config") && e.contains("filter_unroutable_families"),
        "{e}"
    );

    let named = BASE.replace("type: STATIC", "type: STRICT_DNS").replace(
        "address: 127.0.0.1, port_value: 8080",
        "address: svc.example, port_value: 8080, resolver_name: custom",
    );
    let e = at(err(&named));
    assert!(e.contains("resolver_name"), "{e}");

    // A STATIC cluster still takes IP literals only.
    let e = at(err(&BASE.replace(
        "address: 127.0.0.1, port_value: 8080",
        "address: svc.example, port_value: 8080",
    )));
    assert!(e.contains("is not an IP address"), "{e}");
}
