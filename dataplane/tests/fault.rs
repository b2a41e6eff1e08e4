//! `envoy.filters.http.fault` against Envoy 1.40: the same bootstrap and requests through
//! both; compared, per request: status, body and whether it was delayed; and the fault
//! counters. Envoy comes from PyPI; CI sets ZEROHOP_REQUIRE_PEERS=1, so there a missing
//! Envoy fails the test.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::envoy;
use support::http::{admin_prefix, manager_bootstrap, static_cluster, upstream, Client, ROUTER};
use support::{admin, Proxy};
use zerohop_proto::stats::Counter;

const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

fn config(up: u16, admin_port: u16) -> String {
    let manager = format!(
        r#"          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/abort" }}
                route: {{ cluster: up }}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": {FAULT}
                    abort: {{ http_status: 503, percentage: {{ numerator: 100 }} }}
              - match: {{ prefix: "/body" }}
                route: {{ cluster: up }}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": {FAULT}
                    abort: {{ http_status: 429, response_body: "slow down", percentage: {{ numerator: 100 }} }}
              - match: {{ prefix: "/delay" }}
                route: {{ cluster: up }}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": {FAULT}
                    delay: {{ fixed_delay: 0.3s, percentage: {{ numerator: 100 }} }}
              - match: {{ prefix: "/both" }}
                route: {{ cluster: up }}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": {FAULT}
                    delay: {{ fixed_delay: 0.3s, percentage: {{ numerator: 100 }} }}
                    abort: {{ http_status: 500, percentage: {{ numerator: 100 }} }}
              - match: {{ prefix: "/unset" }}
                route: {{ cluster: up }}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": {FAULT}
                    abort: {{ http_status: 500 }}
              - match: {{ prefix: "/never" }}
                route: {{ cluster: up }}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": {FAULT}
                    abort: {{ http_status: 500, percentage: {{ numerator: 0 }} }}
              - match: {{ prefix: "/matched" }}
                route: {{ cluster: up }}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": {FAULT}
                    abort: {{ http_status: 418, percentage: {{ numerator: 100 }} }}
                    headers: [ {{ name: x-fault, string_match: {{ exact: "yes" }} }} ]
                    downstream_nodes: [ n1 ]
              - match: {{ prefix: "/off" }}
                route: {{ cluster: up }}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
              - match: {{ prefix: "/" }}
                route: {{ cluster: up }}
          http_filters:
          - name: envoy.filters.http.fault
            typed_config:
              "@type": {FAULT}
              max_active_faults: 1
              delay: {{ header_delay: {{}}, percentage: {{ numerator: 100 }} }}
              abort: {{ header_abort: {{}}, percentage: {{ numerator: 100 }} }}
{ROUTER}"#
    );
    manager_bootstrap(
        &admin_prefix(admin_port),
        0,
        &manager,
        &static_cluster("up", up),
    )
}

const CASES: &[(&str, &[(&str, &str)])] = &[
    ("/abort", &[]),
    ("/body", &[]),
    ("/delay", &[]),
    ("/both", &[]),
    ("/unset", &[]),
    ("/never", &[]),
    (
        "/matched",
        &[
            ("x-fault", "yes"),
            ("x-envoy-downstream-service-node", "n1"),
        ],
    ),
    (
        "/matched",
        &[
            ("x-fault", "yes"),
            ("x-envoy-downstream-service-node", "n2"),
        ],
    ),
    (
        "/matched",
        &[("x-fault", "no"), ("x-envoy-downstream-service-node", "n1")],
    ),
    ("/header", &[("x-envoy-fault-abort-request", "451")]),
    ("/header", &[("x-envoy-fault-abort-request", "700")]),
    (
        "/header",
        &[
            ("x-envoy-fault-abort-request", "451"),
            ("x-envoy-fault-abort-request-percentage", "0"),
        ],
    ),
    ("/header", &[("x-envoy-fault-delay-request", "300")]),
    ("/off", &[("x-envoy-fault-abort-request", "451")]),
];

/// One request: `status body delayed?`.
fn one(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let mut c = Client::connect(addr);
    let t = Instant::now();
    let r = c.get("svc", path, headers);
    let delayed = t.elapsed() >= Duration::from_millis(250);
    let body = match r.status {
        200 => "(upstream)".to_owned(),
        _ => r.text(),
    };
    format!(
        "{path} {headers:?}: {} {body:?} delayed={delayed}",
        r.status
    )
}

fn run(addr: SocketAddr) -> Vec<String> {
    let mut out: Vec<String> = CASES.iter().map(|(p, h)| one(addr, p, h)).collect();
    // max_active_faults 1: a second delayed request while one is delayed is not delayed.
    let first =
        std::thread::spawn(move || one(addr, "/active", &[("x-envoy-fault-delay-request", "600")]));
    std::thread::sleep(Duration::from_millis(150));
    out.push(one(
        addr,
        "/active",
        &[("x-envoy-fault-delay-request", "600")],
    ));
    out.push(first.join().unwrap());
    out
}

const COUNTERS: &[(Counter, &str)] = &[
    (Counter::FaultDelaysInjected, "delays_injected"),
    (Counter::FaultAbortsInjected, "aborts_injected"),
    (Counter::FaultFaultsOverflow, "faults_overflow"),
    (Counter::FaultActiveFaults, "active_faults"),
];

#[test]
fn faults_are_injected_as_envoy_injects_them() {
    let up = upstream("up");
    let proxy = Proxy::start(&config(up.addr.port(), envoy::free_port()));
    let z = run(proxy.addr("web"));
    for l in &z {
        eprintln!("[zerohop] {l}");
    }
    let zc: Vec<(&str, u64)> = COUNTERS
        .iter()
        .map(|(c, n)| (*n, proxy.total(*c)))
        .collect();
    eprintln!("[zerohop] {zc:?}");
    assert!(
        z[0].contains(": 503 \"fault filter abort\" delayed=false"),
        "{z:#?}"
    );
    assert!(
        z[3].contains(": 500 \"fault filter abort\" delayed=true"),
        "{z:#?}"
    );
    assert!(z[z.len() - 1].contains("delayed=true"), "{z:#?}");
    assert!(z[z.len() - 2].contains("delayed=false"), "{z:#?}");
    if !envoy::available() {
        return;
    }
    let eadmin = envoy::free_port();
    let (_envoy, eaddr) = envoy::start(&config(up.addr.port(), eadmin));
    let e = run(eaddr);
    for l in &e {
        eprintln!("[envoy]   {l}");
    }
    let (_, stats) = admin::request(eadmin, "GET", "/stats");
    let ec: Vec<(&str, u64)> = COUNTERS
        .iter()
        .map(|(_, n)| (*n, admin::stat(&stats, &format!("http.web.fault.{n}"))))
        .collect();
    eprintln!("[envoy]   {ec:?}");
    assert_eq!(z, e, "zerohop and Envoy differ");
    assert_eq!(zc, ec, "the fault counters differ");
}
