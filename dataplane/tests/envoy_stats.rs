//! Envoy's stats, scopes and histograms (issue #18) against Envoy 1.40: one config (a
//! listener, its connection manager `web`, an upstream cluster `a`, a cluster `down` whose
//! endpoint refuses connections, a direct response and a path no route matches) and the
//! same requests through both, one worker / one shard each; then every series in
//! [`SERIES`] (what Envoy's common dashboards query: `cluster`, `http`, `listener`,
//! `server`, the managers) must be in both `/stats/prometheus` outputs with the same
//! value, both parsed by `prometheus_client` (tests/stats/compare.py). Envoy also gets
//! `stats_flush_interval: 1s`, its histograms being read at a flush (zerohop's are always
//! current). CI sets ZEROHOP_REQUIRE_PEERS=1.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::admin;
use support::envoy;
use support::http::{admin_prefix, http_bootstrap, static_cluster, upstream, Client};
use support::Proxy;

/// The samples compared; `LISTENER` is each proxy's own listener address.
const SERIES: &str = r#"
envoy_cluster_upstream_cx_total{envoy_cluster_name="a"}
envoy_cluster_upstream_cx_active{envoy_cluster_name="a"}
envoy_cluster_upstream_cx_http1_total{envoy_cluster_name="a"}
envoy_cluster_upstream_cx_connect_fail{envoy_cluster_name="a"}
envoy_cluster_upstream_rq_total{envoy_cluster_name="a"}
envoy_cluster_upstream_rq_active{envoy_cluster_name="a"}
envoy_cluster_upstream_rq_completed{envoy_cluster_name="a"}
envoy_cluster_upstream_rq_pending_total{envoy_cluster_name="a"}
envoy_cluster_upstream_rq_pending_active{envoy_cluster_name="a"}
envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="a"}
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="a"}
envoy_cluster_upstream_rq_timeout{envoy_cluster_name="a"}
envoy_cluster_upstream_rq_retry{envoy_cluster_name="a"}
envoy_cluster_membership_healthy{envoy_cluster_name="a"}
envoy_cluster_membership_total{envoy_cluster_name="a"}
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="a"}
envoy_cluster_upstream_cx_connect_ms_count{envoy_cluster_name="a"}
envoy_cluster_upstream_cx_total{envoy_cluster_name="down"}
envoy_cluster_upstream_cx_connect_fail{envoy_cluster_name="down"}
envoy_cluster_upstream_cx_destroy{envoy_cluster_name="down"}
envoy_cluster_upstream_cx_active{envoy_cluster_name="down"}
envoy_cluster_upstream_rq_total{envoy_cluster_name="down"}
envoy_cluster_upstream_rq_pending_total{envoy_cluster_name="down"}
envoy_cluster_upstream_rq{envoy_response_code="503",envoy_cluster_name="down"}
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="down"}
envoy_cluster_upstream_rq_completed{envoy_cluster_name="down"}
envoy_cluster_membership_total{envoy_cluster_name="down"}
envoy_http_downstream_cx_total{envoy_http_conn_manager_prefix="web"}
envoy_http_downstream_cx_active{envoy_http_conn_manager_prefix="web"}
envoy_http_downstream_cx_destroy{envoy_http_conn_manager_prefix="web"}
envoy_http_downstream_cx_http1_total{envoy_http_conn_manager_prefix="web"}
envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="web"}
envoy_http_downstream_rq_http1_total{envoy_http_conn_manager_prefix="web"}
envoy_http_downstream_rq_active{envoy_http_conn_manager_prefix="web"}
envoy_http_downstream_rq_completed{envoy_http_conn_manager_prefix="web"}
envoy_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="web"}
envoy_http_downstream_rq_xx{envoy_response_code_class="4",envoy_http_conn_manager_prefix="web"}
envoy_http_downstream_rq_xx{envoy_response_code_class="5",envoy_http_conn_manager_prefix="web"}
envoy_http_no_route{envoy_http_conn_manager_prefix="web"}
envoy_http_rq_direct_response{envoy_http_conn_manager_prefix="web"}
envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix="web"}
envoy_listener_downstream_cx_total{envoy_listener_address="LISTENER"}
envoy_listener_downstream_cx_active{envoy_listener_address="LISTENER"}
envoy_listener_downstream_cx_destroy{envoy_listener_address="LISTENER"}
envoy_cluster_manager_active_clusters
envoy_cluster_manager_cluster_added
envoy_listener_manager_total_listeners_active
envoy_listener_manager_listener_added
envoy_listener_manager_listener_create_success
envoy_server_live
envoy_server_state
envoy_server_concurrency
"#;

fn config(admin_port: u16, listen: u16, a: u16, down: u16) -> String {
    let routes = "              - match: { prefix: \"/a\" }\n                route: { cluster: a }\n              - match: { prefix: \"/down\" }\n                route: { cluster: down }\n              - match: { prefix: \"/d\" }\n                direct_response: { status: 200, body: { inline_string: \"direct\" } }\n";
    let clusters = format!("{}{}", static_cluster("a", a), static_cluster("down", down));
    http_bootstrap(&admin_prefix(admin_port), listen, "", routes, &clusters)
}

/// The requests, each on its own connection; the statuses seen.
fn traffic(addr: SocketAddr) -> Vec<u16> {
    let paths = [
        "/a/1", "/a/2", "/a/3", "/a/4", "/a/5", "/d", "/d", "/down", "/down", "/missing",
    ];
    paths
        .iter()
        .map(|p| Client::connect(addr).get("stats.test", p, &[]).status)
        .collect()
}

/// Waits until the proxy's connections and requests have all ended (its gauges at 0) and,
/// for Envoy, one stats flush has merged its histograms.
fn settle(port: u16, listener: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = admin::request(port, "GET", "/stats");
        let idle = [
            format!("listener.{listener}.downstream_cx_active"),
            "http.web.downstream_cx_active".into(),
            "http.web.downstream_rq_active".into(),
        ]
        .iter()
        .all(|n| admin::stat(&text, n) == 0);
        let done = admin::stat(&text, "http.web.downstream_rq_completed") == 10;
        if (idle && done) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Envoy's histograms show what its last flush merged.
    std::thread::sleep(Duration::from_millis(1500));
    admin::request(port, "GET", "/stats/prometheus").1
}

/// Reads both proxies' Prometheus output once they are idle and compares `series`.
fn compare(python: &std::path::Path, z: (u16, &str), e: (u16, &str), when: &str) {
    compare_series(
        python,
        SERIES,
        (settle(z.0, z.1), z.1),
        (settle(e.0, e.1), e.1),
        when,
    );
}

/// Compares `series` in two Prometheus outputs (with each one's listener address).
fn compare_series(
    python: &std::path::Path,
    series: &str,
    (zprom, zl): (String, &str),
    (eprom, el): (String, &str),
    when: &str,
) {
    let (zf, ef, sf) = (
        support::scratch("zerohop.prom"),
        support::scratch("envoy.prom"),
        support::scratch("series.txt"),
    );
    std::fs::write(&zf, &zprom).unwrap();
    std::fs::write(&ef, &eprom).unwrap();
    std::fs::write(&sf, series).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/stats/compare.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args([&zf, &ef, &sf])
        .args([zl, el])
        .output()
        .expect("run compare.py");
    assert!(
        out.status.success(),
        "compare.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let wanted = series.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(
        report["compared"], wanted,
        "{when}: every series in both outputs: {report:#}\nzerohop:\n{zprom}"
    );
    assert_eq!(
        report["different"].as_array().map(Vec::len),
        Some(0),
        "{when}: {report:#}"
    );
}

#[test]
fn envoys_dashboard_series_have_envoys_values() {
    if !envoy::available() {
        return;
    }
    let Some(python) = support::xds::grpc_python() else {
        return;
    };
    let up = upstream("a");
    let down = envoy::free_port();
    let (zadmin, eadmin) = (envoy::free_port(), envoy::free_port());
    let (zport, eport) = (envoy::free_port(), envoy::free_port());

    let proxy = Proxy::start(&config(zadmin, zport, up.addr.port(), down));
    let zaddr: SocketAddr = ([127, 0, 0, 1], zport).into();
    // Envoy's start is awaited by connecting to it: zerohop gets the same connection.
    drop(std::net::TcpStream::connect(zaddr).unwrap());
    let eyaml = format!(
        "stats_flush_interval: 1s\n{}",
        config(eadmin, eport, up.addr.port(), down)
    );
    let mut e = envoy::spawn(&eyaml);
    let eaddr: SocketAddr = ([127, 0, 0, 1], eport).into();
    envoy::wait_accepting(&mut e, eaddr, Duration::from_secs(30));

    std::thread::sleep(Duration::from_millis(200));
    let zs = traffic(zaddr);
    let es = traffic(eaddr);
    assert_eq!(zs, es, "statuses");
    assert_eq!(zs, [200, 200, 200, 200, 200, 200, 200, 503, 503, 404]);

    let zl = format!("127.0.0.1_{zport}");
    let el = format!("127.0.0.1_{eport}");
    compare(&python, (zadmin, &zl), (eadmin, &el), "after the requests");

    // `POST /reset_counters` on both, the same requests again: counters count from the
    // reset, gauges and histograms go on.
    for port in [zadmin, eadmin] {
        assert_eq!(admin::request(port, "POST", "/reset_counters").0, 200);
    }
    assert_eq!(traffic(zaddr), zs);
    assert_eq!(traffic(eaddr), es);
    compare(
        &python,
        (zadmin, &zl),
        (eadmin, &el),
        "after /reset_counters",
    );
    drop(proxy);
}

/// `tcp.<stat_prefix>.*` and the tcp_proxy's listener and cluster: the same connections
/// (each sends 1,000 bytes and reads them echoed back) through Envoy and zerohop.
#[test]
fn tcp_proxy_series_have_envoys_values() {
    if !envoy::available() {
        return;
    }
    let Some(python) = support::xds::grpc_python() else {
        return;
    };
    let echo = support::echo_upstream();
    let (zadmin, eadmin) = (envoy::free_port(), envoy::free_port());
    let (zport, eport) = (envoy::free_port(), envoy::free_port());
    let config = |admin_port: u16, port: u16| {
        format!(
            "{}{}",
            admin_prefix(admin_port),
            support::tcp_proxy_listeners(&["tcpx"], &[echo], "", "1s")
        )
        .replace("port_value: 0 }", &format!("port_value: {port} }}"))
    };
    let proxy = Proxy::start(&config(zadmin, zport));
    let zaddr: SocketAddr = ([127, 0, 0, 1], zport).into();
    let mut e = envoy::spawn(&config(eadmin, eport));
    let eaddr: SocketAddr = ([127, 0, 0, 1], eport).into();
    envoy::wait_accepting(&mut e, eaddr, Duration::from_secs(30));
    drop(std::net::TcpStream::connect(zaddr).unwrap());
    for addr in [zaddr, eaddr] {
        for _ in 0..4 {
            use std::io::{Read, Write};
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(&[7u8; 1000]).unwrap();
            let mut back = [0u8; 1000];
            c.read_exact(&mut back).unwrap();
        }
    }
    let idle = |port: u16, listener: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, text) = admin::request(port, "GET", "/stats");
            let open = admin::stat(&text, &format!("listener.{listener}.downstream_cx_active"));
            let done = admin::stat(&text, "tcp.tcpx.downstream_cx_rx_bytes_total") == 4000;
            if (open == 0 && done) || Instant::now() > deadline {
                return admin::request(port, "GET", "/stats/prometheus").1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (zl, el) = (format!("127.0.0.1_{zport}"), format!("127.0.0.1_{eport}"));
    let series = r#"
envoy_tcp_downstream_cx_total{envoy_tcp_prefix="tcpx"}
envoy_tcp_downstream_cx_rx_bytes_total{envoy_tcp_prefix="tcpx"}
envoy_tcp_downstream_cx_tx_bytes_total{envoy_tcp_prefix="tcpx"}
envoy_tcp_idle_timeout{envoy_tcp_prefix="tcpx"}
envoy_listener_downstream_cx_total{envoy_listener_address="LISTENER"}
envoy_listener_downstream_cx_active{envoy_listener_address="LISTENER"}
envoy_cluster_upstream_cx_total{envoy_cluster_name="backend"}
envoy_cluster_upstream_cx_active{envoy_cluster_name="backend"}
envoy_cluster_upstream_cx_destroy{envoy_cluster_name="backend"}
"#;
    compare_series(
        &python,
        series,
        (idle(zadmin, &zl), &zl),
        (idle(eadmin, &el), &el),
        "tcp_proxy",
    );
    drop(proxy);
}
