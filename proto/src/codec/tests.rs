use super::*;

fn sample() -> Snapshot {
    Snapshot {
        clusters: vec![
            Cluster {
                name: "backend".into(),
                connect_timeout: Duration::from_millis(250),
                lb_policy: LbPolicy::RoundRobin,
                endpoints: vec![
                    Endpoint {
                        address: "127.0.0.1:8080".parse().unwrap(),
                        weight: 1,
                    },
                    Endpoint {
                        address: "[::1]:8081".parse().unwrap(),
                        weight: 3,
                    },
                ],
                http: UpstreamHttp {
                    idle_timeout: Some(Duration::from_secs(90)),
                    max_requests_per_connection: Some(1000),
                    max_headers_count: 50,
                },
            },
            Cluster {
                name: "empty".into(),
                connect_timeout: Duration::from_secs(5),
                lb_policy: LbPolicy::Random,
                endpoints: vec![],
                http: UpstreamHttp {
                    idle_timeout: None,
                    ..UpstreamHttp::default()
                },
            },
        ],
        listeners: vec![
            Listener {
                name: "l".into(),
                address: "0.0.0.0:10000".parse().unwrap(),
                filter: NetworkFilter::TcpProxy(TcpProxy {
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
                }),
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
        },
        action,
        headers: edits.clone(),
    };
    Listener {
        name: "web".into(),
        address: "127.0.0.1:8000".parse().unwrap(),
        filter: NetworkFilter::Http(HttpManager {
            stat_prefix: "web".into(),
            max_request_headers_bytes: 60 * 1024,
            max_headers_count: 100,
            request_headers_timeout: Some(Duration::from_secs(10)),
            idle_timeout: None,
            stream_idle_timeout: Some(Duration::from_secs(300)),
            request_timeout: None,
            generate_request_id: true,
            use_remote_address: false,
            max_request_bytes: Some(1 << 20),
            route_config: RouteConfig {
                name: "rc".into(),
                headers: edits.clone(),
                virtual_hosts: vec![VirtualHost {
                    name: "vh".into(),
                    domains: vec!["*.example.com".into(), "*".into()],
                    headers: HeaderEdits::default(),
                    routes: vec![
                        route(
                            "fwd",
                            PathMatch::Prefix("/a".into()),
                            RouteAction::Forward(Forward {
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
        }),
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
    let NetworkFilter::TcpProxy(t) = &mut s.listeners[0].filter else {
        unreachable!()
    };
    t.targets[0].cluster = ClusterId(7);
    assert_eq!(
        decode(&encode(&s)).unwrap_err().what,
        "cluster id out of range"
    );
    let mut s = sample();
    let NetworkFilter::Http(h) = &mut s.listeners[1].filter else {
        unreachable!()
    };
    let RouteAction::Forward(f) = &mut h.route_config.virtual_hosts[0].routes[0].action else {
        unreachable!()
    };
    f.targets[1].cluster = ClusterId(2);
    assert_eq!(
        decode(&encode(&s)).unwrap_err().what,
        "cluster id out of range"
    );
}

#[test]
fn huge_count_does_not_allocate() {
    let mut bytes = encode(&Snapshot::default());
    bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode(&bytes).unwrap_err().what,
        "count exceeds remaining bytes"
    );
}
