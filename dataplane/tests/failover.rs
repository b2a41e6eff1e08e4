//! Failover against Envoy 1.40: one of three endpoints dies at about 1,000 requests a
//! second, under a retry policy (connect-failure, reset) and outlier detection (consecutive
//! 5xx, local-origin failures counting as 503). Both proxies must fail no request, eject the
//! dead host, and stop trying it once ejected. Envoy comes from PyPI; CI sets
//! ZEROHOP_REQUIRE_PEERS=1, so there a missing Envoy fails the test.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::envoy;
use support::http::Client;
use support::{admin, Proxy};
use zerohop_proto::stats::Counter;

/// An upstream that can be killed: its port closed and its connections shut down at once.
struct Killable {
    addr: SocketAddr,
    dead: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Killable {
    fn start() -> Killable {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let dead = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (d, c) = (dead.clone(), conns.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                if d.load(Ordering::SeqCst) {
                    break; // the listener drops: the port refuses from now on
                }
                c.lock().unwrap().push(s.try_clone().unwrap());
                std::thread::spawn(move || serve(s, 200));
            }
        });
        Killable { addr, dead, conns }
    }

    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Wakes the accept loop so that it sees it is dead and closes the port.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Answers every request on `s` with `status`.
fn serve(s: TcpStream, status: u16) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line != "\r\n" {
            continue;
        }
        let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok");
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn config(ups: &[SocketAddr], admin_port: u16) -> String {
    let endpoints: String = ups
        .iter()
        .map(|a| {
            format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
                a.port()
            )
        })
        .collect();
    let prefix = support::http::admin_prefix(admin_port);
    support::http::http_bootstrap(
        &prefix,
        0,
        "",
        "              - match: { prefix: \"/\" }\n                route: { cluster: svc, retry_policy: { retry_on: \"connect-failure,reset\", num_retries: 3 } }\n",
        &format!(
            r#"  - name: svc
    outlier_detection:
      consecutive_5xx: 3
      interval: 1s
      base_ejection_time: 30s
      max_ejection_percent: 50
      enforcing_success_rate: 0
    load_assignment:
      cluster_name: svc
      endpoints:
      - lb_endpoints:
{endpoints}"#
        ),
    )
}

/// About 1,000 requests a second from 4 clients for 3 s, the third upstream killed after
/// the first second. Returns (requests, failures).
fn load(addr: SocketAddr, victim: &Killable) -> (usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut n, mut failed) = (0, 0);
                let mut c = Client::connect(addr);
                while !stop.load(Ordering::SeqCst) {
                    let t = Instant::now();
                    match c.raw(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n") {
                        Some(r) if r.status == 200 => {}
                        _ => {
                            failed += 1;
                            c = Client::connect(addr);
                        }
                    }
                    n += 1;
                    if let Some(rest) = Duration::from_millis(4).checked_sub(t.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
                (n, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    victim.kill();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// The outcome both proxies must reach: no failed request, the dead host ejected, and few
/// connect attempts to it (those before the ejection).
fn outcome(requests: usize, failed: usize, ejections: u64, connect_fails: u64) -> Vec<String> {
    vec![
        format!("over 1,500 requests: {}", requests > 1500),
        format!("failed: {failed}"),
        format!("dead host ejected: {}", ejections >= 1),
        format!(
            "connect attempts to it after ejection few: {}",
            connect_fails <= 10
        ),
    ]
}

#[test]
fn a_dead_endpoint_costs_no_request_and_is_ejected() {
    let ups: Vec<Killable> = (0..3).map(|_| Killable::start()).collect();
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let zadmin = envoy::free_port();
    let proxy = Proxy::start(&config(&addrs, zadmin));
    let (n, failed) = load(proxy.addr("web"), &ups[2]);
    // Read by Envoy's names, as Envoy's are below.
    let (_, zstats) = admin::request(zadmin, "GET", "/stats");
    let zstat = |name: &str| admin::stat(&zstats, &format!("cluster.svc.{name}"));
    let z = outcome(
        n,
        failed,
        zstat("outlier_detection.ejections_enforced_total"),
        zstat("upstream_cx_connect_fail"),
    );
    eprintln!("[zerohop] {n} requests: {z:?}");
    assert_eq!(
        z,
        outcome(2000, 0, 1, 0),
        "zerohop: a request failed or the host stayed in"
    );
    if !envoy::available() {
        return;
    }
    let ups: Vec<Killable> = (0..3).map(|_| Killable::start()).collect();
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let eadmin = envoy::free_port();
    let (_envoy, eaddr) = envoy::start(&config(&addrs, eadmin));
    let (n, failed) = load(eaddr, &ups[2]);
    let (_, stats) = admin::request(eadmin, "GET", "/stats");
    let stat = |name: &str| admin::stat(&stats, &format!("cluster.svc.{name}"));
    let e = outcome(
        n,
        failed,
        stat("outlier_detection.ejections_enforced_total"),
        stat("upstream_cx_connect_fail"),
    );
    eprintln!("[envoy]   {n} requests: {e:?}");
    assert_eq!(z, e, "zerohop and Envoy differ");
}

/// The tcp_proxy reports its connects to the outlier detector and passes over an ejected
/// host, as Envoy's: of two endpoints one refuses; after its first failure (the client's
/// connection closed, in both proxies) it is ejected and every later connection reaches the
/// live one.
#[test]
fn the_tcp_proxy_ejects_an_endpoint_that_refuses() {
    let live = support::echo_upstream();
    let dead = support::refused_port();
    let config = |admin_port: u16| {
        format!(
            "{}{}",
            support::http::admin_prefix(admin_port),
            support::tcp_proxy_config(&[dead, live], "", "1s").replace(
                "    type: STATIC\n",
                "    type: STATIC\n    outlier_detection: { consecutive_5xx: 1, max_ejection_percent: 50, enforcing_success_rate: 0 }\n",
            )
        )
    };
    let run = |addr: SocketAddr| {
        let mut failed = 0;
        for _ in 0..12 {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut echo = [0u8; 5];
            let ok = s.write_all(b"ping\n").is_ok()
                && std::io::Read::read_exact(&mut s, &mut echo).is_ok()
                && &echo == b"ping\n";
            failed += usize::from(!ok);
        }
        format!("connections failed: at most one: {}", failed <= 1)
    };
    let proxy = Proxy::start(&config(envoy::free_port()));
    let z = run(proxy.addr("front"));
    let z_ejected = proxy.total(Counter::OutlierEjectionsEnforcedTotal);
    eprintln!("[zerohop] {z}, ejections {z_ejected}");
    assert_eq!(z, "connections failed: at most one: true");
    if !envoy::available() {
        return;
    }
    let eadmin = envoy::free_port();
    let (_envoy, eaddr) = envoy::start(&config(eadmin));
    let e = run(eaddr);
    let (_, stats) = admin::request(eadmin, "GET", "/stats");
    let e_ejected = admin::stat(
        &stats,
        "cluster.backend.outlier_detection.ejections_enforced_total",
    );
    eprintln!("[envoy]   {e}, ejections {e_ejected}");
    assert_eq!(z, e, "zerohop and Envoy differ");
    assert_eq!(
        z_ejected.min(1),
        e_ejected.min(1),
        "ejected in one and not the other"
    );
}

/// An upstream that answers every request with `status`.
fn answering(status: u16) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s, status));
        }
    });
    addr
}

/// The success-rate and failure-percentage detectors as Envoy's: of five endpoints one
/// answers 503 to everything; under about 1,000 requests a second, its success rate (0%
/// against a mean of 80%) and its failure percentage (100%) put it out at an interval's
/// sweep, in both proxies, and afterwards every request is answered 200. The consecutive
/// detector is kept out of it (`enforcing_consecutive_5xx: 0`).
#[test]
fn success_rate_and_failure_percentage_eject_as_envoy_does() {
    let ups: Vec<SocketAddr> = (0..5)
        .map(|i| answering(if i == 4 { 503 } else { 200 }))
        .collect();
    let cases = [
        (
            "success rate",
            "",
            "outlier_detection_ejections_enforced_success_rate",
        ),
        (
            "failure percentage",
            "      enforcing_success_rate: 0\n      enforcing_failure_percentage: 100\n",
            "outlier_detection_ejections_enforced_failure_percentage",
        ),
    ];
    for (name, detector, counter) in cases {
        let config = |admin_port: u16| {
            config(&ups, admin_port)
                .replace(
                    ", retry_policy: { retry_on: \"connect-failure,reset\", num_retries: 3 }",
                    "",
                )
                .replace("      enforcing_success_rate: 0\n", detector)
                .replace(
                    "      consecutive_5xx: 3\n",
                    "      enforcing_consecutive_5xx: 0\n",
                )
        };
        // About 1,000 requests a second for 3.5 s (more than 100 per host per interval,
        // the detectors' request volume), then 40 requests: which statuses they get.
        let run = |front: SocketAddr| -> (usize, Vec<u16>) {
            let stop = Arc::new(AtomicBool::new(false));
            let clients: Vec<_> = (0..4)
                .map(|_| {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let mut c = Client::connect(front);
                        let mut n = 0;
                        while !stop.load(Ordering::SeqCst) {
                            let t = Instant::now();
                            if c.raw(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n").is_none() {
                                c = Client::connect(front);
                            }
                            n += 1;
                            if let Some(rest) = Duration::from_millis(4).checked_sub(t.elapsed()) {
                                std::thread::sleep(rest);
                            }
                        }
                        n
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(3500));
            stop.store(true, Ordering::SeqCst);
            let n = clients.into_iter().map(|c| c.join().unwrap()).sum();
            let mut c = Client::connect(front);
            let after = (0..40)
                .map(|_| {
                    c.raw(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n")
                        .map_or(0, |r| r.status)
                })
                .collect::<BTreeSet<u16>>()
                .into_iter()
                .collect();
            (n, after)
        };
        let zadmin = envoy::free_port();
        let proxy = Proxy::start(&config(zadmin));
        let (n, z) = run(proxy.addr("web"));
        let stat = counter.replacen("outlier_detection_", "outlier_detection.", 1);
        let (_, zstats) = admin::request(zadmin, "GET", "/stats");
        let z_ejected = admin::stat(&zstats, &format!("cluster.svc.{stat}"));
        eprintln!("[zerohop] {name}: {n} requests, then statuses {z:?}, ejected {z_ejected}");
        assert_eq!(z, [200], "{name}: the failing host is out");
        assert_eq!(z_ejected, 1, "{name}");
        drop(proxy);
        if !envoy::available() {
            continue;
        }
        let eadmin = envoy::free_port();
        let (_envoy, eaddr) = envoy::start(&config(eadmin));
        let (n, e) = run(eaddr);
        let (_, stats) = admin::request(eadmin, "GET", "/stats");
        let e_ejected = admin::stat(&stats, &format!("cluster.svc.{stat}"));
        eprintln!("[envoy]   {name}: {n} requests, then statuses {e:?}, ejected {e_ejected}");
        assert_eq!(z, e, "{name}: zerohop and Envoy differ");
        assert_eq!(z_ejected, e_ejected, "{name}: the ejections differ");
    }
}
