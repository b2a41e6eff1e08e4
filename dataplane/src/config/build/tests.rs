use std::time::Duration;

use zerohop_proto::*;

use super::*;

fn cluster(name: &str, ports: &[u16]) -> Cluster {
    Cluster {
        stats: Default::default(),
        name: name.into(),
        connect_timeout: Duration::from_secs(1),
        lb_policy: LbPolicy::RoundRobin,
        endpoints: ports
            .iter()
            .map(|&p| Endpoint::new(([127, 0, 0, 1], p).into(), 1))
            .collect(),
        protocol: UpstreamProtocol::default(),
        transport: TransportSocket::default(),
        circuit_breakers: CircuitBreakers::default(),
        outlier_detection: None,
        healthy_panic_threshold: 50.0f64.to_bits(),
        health_checks: Vec::new(),
    }
}

fn http_listener(route_name: &str, regex: &str) -> Listener {
    let route = zerohop_proto::Route {
        name: "r".into(),
        matcher: RouteMatch {
            path: PathMatch::Regex(regex.into()),
            case_sensitive: true,
            headers: vec![],
            query_parameters: vec![],
            runtime_fraction: None,
            grpc: false,
        },
        action: RouteAction::Forward(Forward {
            upgrades: vec![],
            mirrors: vec![],
            retry: None,
            hash_policy: vec![],
            buffer_limit: 1 << 20,
            attempt_count_upstream: false,
            attempt_count_downstream: false,
            targets: vec![WeightedCluster {
                cluster: ClusterId(0),
                weight: 1,
            }],
            prefix_rewrite: None,
            regex_rewrite: None,
            host_rewrite: None,
            timeout: None,
        }),
        headers: HeaderEdits::default(),
        per_filter: vec![],
        decorator: None,
    };
    Listener::simple(
        "web",
        ([127, 0, 0, 1], 8000).into(),
        NetworkFilter::Http(HttpManager {
            stats: Default::default(),
            access_log: Default::default(),
            server_name: "envoy".into(),
            server_header: ServerHeader::Overwrite,
            path: PathNormalization::default(),
            suppress_envoy_headers: false,
            user_agent: None,
            max_stream_duration: None,
            skip_xff_append: false,
            xff_num_trusted_hops: 0,
            preserve_external_request_id: false,
            upgrades: vec![],
            stat_prefix: "web".into(),
            codec: CodecType::Auto,
            max_request_headers_bytes: 60 * 1024,
            max_headers_count: 100,
            request_headers_timeout: None,
            idle_timeout: None,
            stream_idle_timeout: None,
            request_timeout: None,
            generate_request_id: true,
            use_remote_address: false,
            http1: Http1Options::default(),
            http2: Default::default(),
            http_filters: vec![HttpFilter {
                name: "envoy.filters.http.router".into(),
                config: HttpFilterConfig::Router,
            }],
            route_config: RouteConfig {
                name: route_name.into(),
                virtual_hosts: vec![VirtualHost {
                    name: "all".into(),
                    domains: vec!["*".into()],
                    routes: vec![route],
                    headers: HeaderEdits::default(),
                    per_filter: vec![],
                }],
                ..RouteConfig::default()
            },
            tracing: None,
        }),
    )
}

fn snapshot(clusters: Vec<Cluster>, regex: &str) -> Snapshot {
    Snapshot {
        listeners: vec![http_listener("routes", regex)],
        clusters,
    }
}

fn table(g: &Generation) -> &Arc<RouteTable> {
    match &g.listeners[0].chains[0].terminal {
        Terminal::Http(h) => &h.routes,
        Terminal::Tcp(_) => unreachable!(),
    }
}

#[test]
fn unchanged_parts_are_reused_and_slots_stay_put() {
    let mut slots = Slots::default();
    let g1 = slots
        .build(
            1,
            snapshot(vec![cluster("a", &[1]), cluster("b", &[2])], "/x"),
        )
        .unwrap();
    // b's endpoints change, c is new, the routes are the same.
    let g2 = slots
        .build(
            2,
            snapshot(
                vec![cluster("a", &[1]), cluster("b", &[3]), cluster("c", &[4])],
                "/x",
            ),
        )
        .unwrap();
    assert!(
        Arc::ptr_eq(&g1.clusters[0], &g2.clusters[0]),
        "a unchanged: the same plan"
    );
    assert_eq!(g1.clusters[1].slot, g2.clusters[1].slot, "b keeps its slot");
    assert_ne!(
        g1.clusters[1].lb_version, g2.clusters[1].lb_version,
        "new endpoints: new version"
    );
    assert!(
        Arc::ptr_eq(table(&g1), table(&g2)),
        "the route table is reused"
    );
    let slots_seen: Vec<u32> = g2.clusters.iter().map(|c| c.slot).collect();
    assert_eq!(slots_seen, [0, 1, 2]);

    // a connect timeout alone changes: a new plan, but the same balancer version.
    let mut a = cluster("a", &[1]);
    a.connect_timeout = Duration::from_secs(2);
    let g3 = slots
        .build(3, snapshot(vec![a, cluster("c", &[4])], "/y"))
        .unwrap();
    assert!(!Arc::ptr_eq(&g2.clusters[0], &g3.clusters[0]));
    assert_eq!(g2.clusters[0].lb_version, g3.clusters[0].lb_version);
    assert!(
        !Arc::ptr_eq(table(&g2), table(&g3)),
        "new routes: compiled again"
    );
    // b is gone; the next new cluster takes its slot, with a version of its own.
    let g4 = slots
        .build(
            4,
            snapshot(
                vec![cluster("a", &[1]), cluster("c", &[4]), cluster("d", &[5])],
                "/y",
            ),
        )
        .unwrap();
    assert_eq!(g4.clusters[2].slot, 1, "b's slot");
    assert_ne!(g4.clusters[2].lb_version, g1.clusters[1].lb_version);
}

#[test]
fn a_failed_build_leaves_the_last_good_state() {
    let mut slots = Slots::default();
    let g1 = slots
        .build(1, snapshot(vec![cluster("a", &[1])], "/x"))
        .unwrap();
    let e = slots
        .build(
            2,
            snapshot(vec![cluster("a", &[9]), cluster("z", &[2])], "(unclosed"),
        )
        .unwrap_err();
    assert!(e.contains("route configuration"), "{e}");
    let g3 = slots
        .build(3, snapshot(vec![cluster("a", &[1])], "/x"))
        .unwrap();
    assert!(
        Arc::ptr_eq(&g1.clusters[0], &g3.clusters[0]),
        "built from generation 1"
    );
    assert!(Arc::ptr_eq(table(&g1), table(&g3)));
}
