//! `RING_HASH` and `MAGLEV` with route `hash_policy` against Envoy 1.40: the same bootstrap
//! and keys through both must reach the same upstream, key by key (zerohop builds its ring
//! and table as Envoy does, from XXH64 of each endpoint's address). Envoy comes from PyPI;
//! CI sets ZEROHOP_REQUIRE_PEERS=1, so there a missing Envoy fails the test.

mod support;

use std::net::SocketAddr;

use support::envoy;
use support::http::{upstream, Client, Upstream};
use support::Proxy;

const NAMES: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];

fn config(ups: &[Upstream]) -> String {
    let endpoints = |weights: &[u32]| {
        ups.iter()
            .zip(weights)
            .map(|(u, w)| {
                format!(
                    "        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n          load_balancing_weight: {w}\n",
                    u.addr.port()
                )
            })
            .collect::<String>()
    };
    let cluster = |name: &str, lb: &str, weights: &[u32]| {
        format!(
            "  - name: {name}\n{lb}    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n{}",
            endpoints(weights)
        )
    };
    let clusters = [
        cluster("ring", "    lb_policy: RING_HASH\n", &[1; 5]),
        cluster(
            "ringw",
            "    lb_policy: RING_HASH\n    ring_hash_lb_config: { minimum_ring_size: 64, maximum_ring_size: 4096 }\n",
            &[1, 2, 3, 1, 5],
        ),
        cluster("maglev", "    lb_policy: MAGLEV\n", &[1; 5]),
        cluster(
            "maglevw",
            "    lb_policy: MAGLEV\n    maglev_lb_config: { table_size: 1009 }\n",
            &[4, 1, 1, 2, 1],
        ),
    ]
    .concat();
    let route = |prefix: &str, cluster: &str, policy: &str| {
        format!(
            "              - match: {{ prefix: \"{prefix}\" }}\n                route: {{ cluster: {cluster}, hash_policy: {policy} }}\n"
        )
    };
    let user = "[ { header: { header_name: x-user } } ]";
    let routes = [
        route("/ring", "ring", user),
        route("/weighted-ring", "ringw", user),
        route("/maglev", "maglev", user),
        route("/weighted-maglev", "maglevw", user),
        route("/cookie", "ring", "[ { cookie: { name: sid } } ]"),
        route("/query", "maglev", "[ { query_parameter: { name: u } } ]"),
        route("/source", "ring", "[ { connection_properties: { source_ip: true } } ]"),
        route(
            "/both",
            "ring",
            "[ { header: { header_name: x-a } }, { header: { header_name: x-user } } ]",
        ),
        route(
            "/terminal",
            "maglev",
            "[ { header: { header_name: x-a }, terminal: true }, { header: { header_name: x-user } } ]",
        ),
    ]
    .concat();
    support::http::http_bootstrap("", 0, "", &routes, &clusters)
}

/// Which upstream each key reached, per route.
fn run(addr: SocketAddr) -> Vec<String> {
    let mut c = Client::connect(addr);
    let mut out = Vec::new();
    let mut ask = |path: &str, headers: &[(&str, &str)]| {
        let r = c.get("svc", path, headers);
        assert_eq!(r.status, 200, "{path} {headers:?}: {}", r.text());
        format!(
            "{path} {headers:?} -> {}",
            r.header("x-upstream").unwrap_or("?")
        )
    };
    for k in 0..24 {
        let key = format!("user-{k}");
        for path in ["/ring", "/weighted-ring", "/maglev", "/weighted-maglev"] {
            out.push(ask(path, &[("x-user", &key)]));
        }
        let sid = format!("a=1; sid={key}; b=2");
        out.push(ask("/cookie", &[("cookie", &sid)]));
        out.push(ask(&format!("/query?x=1&u={key}"), &[]));
        out.push(ask("/both", &[("x-a", "fixed"), ("x-user", &key)]));
        out.push(ask("/terminal", &[("x-a", &key), ("x-user", "fixed")]));
    }
    out.push(ask("/source", &[]));
    out
}

#[test]
fn hashing_balancers_pick_the_hosts_envoy_picks() {
    // Upstreams listed in descending port order: Envoy builds its Maglev table in the order
    // of the hosts' address text, not the order the config lists them in.
    let mut ups: Vec<Upstream> = NAMES.iter().map(|n| upstream(n)).collect();
    ups.sort_by_key(|u| std::cmp::Reverse(u.addr.port()));
    let proxy = Proxy::start(&config(&ups));
    let z = run(proxy.addr("web"));
    // Keys spread over the hosts, and a key sticks to its host.
    let ring: std::collections::HashSet<&str> = z
        .iter()
        .filter(|l| l.starts_with("/ring "))
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert!(ring.len() >= 3, "{z:#?}");
    assert_eq!(z, run(proxy.addr("web")), "the same keys, the same hosts");
    if !envoy::available() {
        return;
    }
    let (_envoy, eaddr) = envoy::start(&config(&ups));
    let e = run(eaddr);
    let differ: Vec<(&String, &String)> = z.iter().zip(&e).filter(|(a, b)| a != b).collect();
    assert!(differ.is_empty(), "zerohop and Envoy differ: {differ:#?}");
}
