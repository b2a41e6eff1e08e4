use super::*;
use std::time::Duration;

fn sample() -> Snapshot {
    Snapshot {
        clusters: vec![
            Cluster {
                stats: Default::default(),
                name: "backend".into(),
                connect_timeout: Duration::from_millis(250),
                lb_policy: LbPolicy::RoundRobin,
                endpoints: vec![
                    Endpoint::new("127.0.0.1:8080".parse().unwrap(), 1),
                    Endpoint::new("[::1]:8081".parse().unwrap(), 3),
                ],
                protocol: UpstreamProtocol::Http1(UpstreamHttp {
                    idle_timeout: Some(Duration::from_secs(90)),
                    max_requests_per_connection: Some(1000),
                    max_headers_count: 50,
                    auto_sni: Some(AutoSni {
                        sni: true,
                        san_validation: true,
                        header: Some("x-sni".into()),
                    }),
                }),
                transport: TransportSocket::RawBuffer,
                circuit_breakers: CircuitBreakers::default(),
                outlier_detection: None,
                healthy_panic_threshold: 50.0f64.to_bits(),
                health_checks: Vec::new(),
            },
            Cluster {
                stats: Default::default(),
                name: "empty".into(),
                connect_timeout: Duration::from_secs(5),
                lb_policy: LbPolicy::Random,
                endpoints: vec![],
                protocol: UpstreamProtocol::Http1(UpstreamHttp {
                    idle_timeout: None,
                    ..UpstreamHttp::default()
                }),
                transport: TransportSocket::Tls(Box::new(UpstreamTls {
                    common: TlsCommon {
                        certificates: Vec::new(),
                        min_version: TlsVersion::Tls13,
                        max_version: TlsVersion::Tls13,
                        cipher_suites: Vec::new(),
                        ecdh_curves: Vec::new(),
                        alpn: vec!["h2".into()],
                        validation: None,
                    },
                    sni: Some("backend.example".into()),
                    max_session_keys: 1,
                    pool_id: 7,
                })),
                circuit_breakers: CircuitBreakers::default(),
                outlier_detection: None,
                healthy_panic_threshold: 50.0f64.to_bits(),
                health_checks: Vec::new(),
            },
        ],
        listeners: vec![
            Listener {
                stats: Default::default(),
                name: "l".into(),
                address: "0.0.0.0:10000".parse().unwrap(),
                listener_filters: vec![],
                listener_filters_timeout: None,
                continue_on_listener_filters_timeout: false,
                default_filter_chain: None,
                filter_chains: vec![chain(NetworkFilter::TcpProxy(TcpProxy {
                    stats: Default::default(),
                    access_log: Default::default(),
                    stat_prefix: "tcp".into(),
                    targets: vec![
                        WeightedCluster {
                            cluster: ClusterId(0),
                            weight: 9,
                        },
                        WeightedCluster {
                            cluster: ClusterId(1),
                            weight: 1,
                        },
                    ],
                    idle_timeout: Some(Duration::from_secs(3600)),
                }))],
            },
            http_listener(),
        ],
    }
}

/// An HTTP listener using every route feature the encoding carries.
fn http_listener() -> Listener {
    let add = |n: &str, a| HeaderAdd {
        name: n.into(),
        value: "v".into(),
        append: a,
    };
    let edits = HeaderEdits {
        request_add: vec![
            add("x-a", AppendAction::AppendIfExistsOrAdd),
            add("x-b", AppendAction::AddIfAbsent),
        ],
        request_remove: vec!["x-drop".into()],
        response_add: vec![
            add("x-c", AppendAction::OverwriteIfExistsOrAdd),
            add("x-d", AppendAction::OverwriteIfExists),
        ],
        response_remove: vec!["server".into()],
    };
    let route = |name: &str, path, action| Route {
        name: name.into(),
        matcher: RouteMatch {
            path,
            case_sensitive: false,
            headers: vec![
                HeaderMatcher {
                    name: "x-v".into(),
                    rule: StringRule::Exact {
                        value: "1".into(),
                        ignore_case: true,
                    },
                    invert: true,
                },
                HeaderMatcher {
                    name: "x-p".into(),
                    rule: StringRule::Present(true),
                    invert: false,
                },
                HeaderMatcher {
                    name: "x-r".into(),
                    rule: StringRule::Regex("a+".into()),
                    invert: false,
                },
                HeaderMatcher {
                    name: "x-s".into(),
                    rule: StringRule::Suffix {
                        value: "z".into(),
                        ignore_case: false,
                    },
                    invert: false,
                },
            ],
            query_parameters: vec![
                QueryMatcher {
                    name: "q".into(),
                    rule: None,
                },
                QueryMatcher {
                    name: "r".into(),
                    rule: Some(StringRule::Contains {
                        value: "c".into(),
                        ignore_case: false,
                    }),
                },
            ],
            runtime_fraction: Some(Fraction {
                numerator: 5,
                denominator: 10_000,
            }),
            grpc: true,
        },
        action,
        headers: edits.clone(),
        per_filter: vec![PerFilterConfig {
            filter: "buffer".into(),
            config: FilterOverride::Config(HttpFilterConfig::Buffer(BufferConfig {
                max_request_bytes: 10,
            })),
        }],
        decorator: None,
    };
    let http = NetworkFilter::Http(HttpManager {
        stats: Default::default(),
        access_log: Default::default(),
        server_name: "edge".into(),
        server_header: ServerHeader::AppendIfAbsent,
        path: PathNormalization {
            normalize: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::UnescapeAndRedirect,
        },
        suppress_envoy_headers: true,
        user_agent: Some(LocalNode {
            cluster: "c".into(),
            id: "n".into(),
        }),
        max_stream_duration: Some(Duration::from_millis(1500)),
        skip_xff_append: true,
        xff_num_trusted_hops: 2,
        preserve_external_request_id: true,
        upgrades: vec![UpgradeConfig {
            upgrade_type: "websocket".into(),
            enabled: true,
        }],
        stat_prefix: "web".into(),
        codec: CodecType::Auto,
        max_request_headers_bytes: 60 * 1024,
        max_headers_count: 100,
        request_headers_timeout: Some(Duration::from_secs(10)),
        idle_timeout: None,
        stream_idle_timeout: Some(Duration::from_secs(300)),
        request_timeout: None,
        generate_request_id: true,
        use_remote_address: false,
        http1: Http1Options::default(),
        http2: Default::default(),
        http_filters: vec![
            HttpFilter {
                name: "buffer".into(),
                config: HttpFilterConfig::Buffer(BufferConfig {
                    max_request_bytes: 1 << 20,
                }),
            },
            HttpFilter {
                name: "envoy.filters.http.router".into(),
                config: HttpFilterConfig::Router,
            },
        ],
        route_config: RouteConfig {
            name: "rc".into(),
            headers: edits.clone(),
            per_filter: vec![PerFilterConfig {
                filter: "buffer".into(),
                config: FilterOverride::Disabled,
            }],
            virtual_hosts: vec![VirtualHost {
                name: "vh".into(),
                domains: vec!["*.example.com".into(), "*".into()],
                headers: HeaderEdits::default(),
                per_filter: vec![],
                routes: vec![
                    route(
                        "fwd",
                        PathMatch::Prefix("/a".into()),
                        RouteAction::Forward(Forward {
                            upgrades: vec![],
                            mirrors: vec![Mirror {
                                cluster: ClusterId(0),
                                fraction: Some(Fraction {
                                    numerator: 50,
                                    denominator: 100,
                                }),
                                shadow_suffix: true,
                            }],
                            targets: vec![
                                WeightedCluster {
                                    cluster: ClusterId(0),
                                    weight: 3,
                                },
                                WeightedCluster {
                                    cluster: ClusterId(1),
                                    weight: 1,
                                },
                            ],
                            prefix_rewrite: Some("/b".into()),
                            regex_rewrite: Some(("x(.)".into(), "\\1".into())),
                            host_rewrite: Some("h".into()),
                            timeout: Some(Duration::from_millis(1500)),
                            hash_policy: vec![
                                HashPolicy {
                                    on: HashOn::Header("x-user".into()),
                                    terminal: true,
                                },
                                HashPolicy {
                                    on: HashOn::SourceIp,
                                    terminal: false,
                                },
                            ],
                            retry: Some(Box::new(RetryPolicy {
                                retry_on: RetryOn(RetryOn::FIVE_XX | RetryOn::GRPC_UNAVAILABLE),
                                num_retries: 3,
                                per_try_timeout: Some(Duration::from_millis(250)),
                                back_off_base: Duration::from_millis(10),
                                back_off_max: Duration::from_millis(100),
                                rate_limited: Some(RateLimitedBackOff {
                                    reset_headers: vec![ResetHeader {
                                        name: "retry-after".into(),
                                        unix_timestamp: false,
                                    }],
                                    max_interval: Duration::from_secs(300),
                                }),
                                previous_hosts: true,
                                host_selection_retry_max_attempts: 3,
                                retriable_status_codes: vec![418],
                                retriable_headers: vec![HeaderMatcher {
                                    name: "x-retry".into(),
                                    rule: StringRule::Present(true),
                                    invert: false,
                                }],
                                retriable_request_headers: vec![],
                            })),
                            buffer_limit: 4096,
                            attempt_count_upstream: true,
                            attempt_count_downstream: true,
                        }),
                    ),
                    route(
                        "direct",
                        PathMatch::Path("/d".into()),
                        RouteAction::Direct {
                            status: 418,
                            body: "teapot".into(),
                        },
                    ),
                    route(
                        "redirect",
                        PathMatch::Regex("/r/.*".into()),
                        RouteAction::Redirect(Redirect {
                            scheme: Some("https".into()),
                            host: None,
                            port: Some(8443),
                            path: None,
                            prefix_rewrite: Some("/s/".into()),
                            status: 308,
                            strip_query: true,
                        }),
                    ),
                ],
            }],
        },
        tracing: None,
    });
    let matcher = FilterChainMatch {
        destination_port: Some(8000),
        prefix_ranges: vec![CidrRange {
            address: "127.0.0.0".parse().unwrap(),
            prefix_len: 8,
        }],
        server_names: vec!["*.example.com".into()],
        transport_protocol: Some("raw_buffer".into()),
        application_protocols: vec!["http/1.1".into()],
        direct_source_prefix_ranges: vec![CidrRange {
            address: "::".parse().unwrap(),
            prefix_len: 0,
        }],
        source_type: SourceType::SameIpOrLoopback,
        source_prefix_ranges: vec![],
        source_ports: vec![1, 65535],
    };
    Listener {
        stats: Default::default(),
        name: "web".into(),
        address: "127.0.0.1:8000".parse().unwrap(),
        listener_filters: vec![ListenerFilter::HttpInspector],
        listener_filters_timeout: Some(Duration::from_secs(15)),
        continue_on_listener_filters_timeout: true,
        filter_chains: vec![FilterChain {
            name: "matched".into(),
            matcher,
            filters: vec![http.clone()],
            tls: Some(DownstreamTls {
                common: TlsCommon {
                    certificates: vec![TlsCertificate {
                        chain: vec![vec![0x30, 0x82, 1], vec![0x30, 0x82, 2]],
                        key: vec![0x30, 3],
                        key_format: KeyFormat::Pkcs8,
                    }],
                    min_version: TlsVersion::Tls12,
                    max_version: TlsVersion::Tls13,
                    cipher_suites: vec![0xc02f],
                    ecdh_curves: vec![0x001d],
                    alpn: vec!["h2".into(), "http/1.1".into()],
                    validation: Some(CertValidation {
                        trusted_ca: vec![vec![0x30, 4]],
                        crls: Vec::new(),
                        san_matchers: vec![SanMatcher {
                            san_type: SanType::Uri,
                            rule: StringRule::Prefix {
                                value: "spiffe://cluster.local/".into(),
                                ignore_case: false,
                            },
                        }],
                    }),
                },
                require_client_certificate: true,
                disable_stateless_session_resumption: false,
                disable_stateful_session_resumption: true,
            }),
        }],
        default_filter_chain: Some(chain(http)),
    }
}

fn chain(filter: NetworkFilter) -> FilterChain {
    FilterChain {
        name: String::new(),
        matcher: FilterChainMatch::default(),
        filters: vec![filter],
        tls: None,
    }
}

#[test]
fn round_trips() {
    let s = sample();
    assert_eq!(decode(&encode(&s)).unwrap(), s);
    assert_eq!(
        decode(&encode(&Snapshot::default())).unwrap(),
        Snapshot::default()
    );
}

#[test]
fn every_truncation_is_rejected() {
    let bytes = encode(&sample());
    for n in 0..bytes.len() {
        assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = encode(&sample());
    bytes.push(0);
    assert_eq!(decode(&bytes).unwrap_err().what, "trailing bytes");
}

#[test]
fn dangling_cluster_id_is_rejected() {
    let mut s = sample();
    let NetworkFilter::TcpProxy(t) = &mut s.listeners[0].filter_chains[0].filters[0] else {
        unreachable!()
    };
    t.targets[0].cluster = ClusterId(7);
    let e = decode(&encode(&s)).unwrap_err().what;
    assert_eq!(
        e,
        "listeners[0].filter_chains[0].filters[0]: cluster id out of range"
    );
    let mut s = sample();
    let NetworkFilter::Http(h) = &mut s.listeners[1].filter_chains[0].filters[0] else {
        unreachable!()
    };
    let RouteAction::Forward(f) = &mut h.route_config.virtual_hosts[0].routes[0].action else {
        unreachable!()
    };
    f.targets[1].cluster = ClusterId(2);
    assert!(decode(&encode(&s))
        .unwrap_err()
        .what
        .ends_with("route_config.virtual_hosts[0].routes[0]: cluster id out of range"));
}

#[test]
fn broken_invariants_are_rejected() {
    let mut s = sample();
    s.listeners[0].filter_chains[0].filters.clear();
    assert!(decode(&encode(&s))
        .unwrap_err()
        .what
        .contains("must be terminal"));
    let mut s = sample();
    let NetworkFilter::Http(h) = &mut s.listeners[1].filter_chains[0].filters[0] else {
        unreachable!()
    };
    h.http_filters.reverse();
    assert!(decode(&encode(&s))
        .unwrap_err()
        .what
        .contains("router must be last"));
    let mut s = sample();
    s.clusters[0].endpoints[0].weight = 0;
    assert!(decode(&encode(&s))
        .unwrap_err()
        .what
        .contains("zero weight"));
    let mut s = sample();
    s.listeners[0].filter_chains.clear();
    assert!(decode(&encode(&s))
        .unwrap_err()
        .what
        .contains("no filter chain"));
}

#[test]
fn huge_count_does_not_allocate() {
    // The listener count is the first varint of the body: claim u32::MAX of them.
    let mut bytes = encode(&Snapshot::default());
    bytes.truncate(8);
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(decode(&bytes).is_err());
}

#[test]
fn cidr_ranges_contain_their_addresses() {
    let r = |a: &str, n| CidrRange {
        address: a.parse().unwrap(),
        prefix_len: n,
    };
    let ip = |a: &str| a.parse::<std::net::IpAddr>().unwrap();
    assert!(r("10.0.0.0", 8).contains(ip("10.1.2.3")));
    assert!(!r("10.0.0.0", 8).contains(ip("11.1.2.3")));
    assert!(r("0.0.0.0", 0).contains(ip("1.2.3.4")));
    assert!(
        r("10.0.0.0", 8).contains(ip("::ffff:10.9.9.9")),
        "v4-mapped"
    );
    assert!(r("fd00::", 8).contains(ip("fd12::1")));
    assert!(!r("fd00::", 16).contains(ip("fd12::1")));
    assert!(!r("fd00::", 8).contains(ip("10.0.0.1")));
    assert!(r("1.2.3.4", 32).contains(ip("1.2.3.4")));
}
