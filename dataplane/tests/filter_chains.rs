//! Listeners with several filter chains, `filter_chain_match`, a default chain and the
//! `http_inspector` listener filter: the same config through Envoy 1.40 and zerohop, the
//! same connections (from several source addresses of 127/8, with curl's `--interface`),
//! the same chain must answer.
//!
//! Each chain answers with a direct response naming itself, so the body says which chain
//! served a connection; the inspector's default chain is a tcp_proxy to an echo server.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use support::envoy;
use support::Proxy;

/// An HTTP connection manager answering every request with `name`.
fn answer(name: &str) -> String {
    format!(
        r#"      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "{name}" }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

/// Three listeners on `ports`:
/// - `by-port`: a chain for the listener's own port and source 127.0.0.3, one for sources in
///   127.0.0.0/8 and no port, and a default chain. Envoy's order of criteria means that once
///   the port narrowed the candidates, a source the port chain does not take falls to the
///   default chain, not to the portless one.
/// - `by-source`: the longest source prefix wins, source ports, the source type; default.
/// - `inspect`: `http_inspector`, chains for `http/1.1` and `http/1.0`, and a default
///   tcp_proxy for everything else.
fn config(ports: [u16; 3], echo: SocketAddr) -> String {
    let [p1, p2, p3] = ports;
    let chain = |matcher: &str, name: &str| {
        format!("    - filter_chain_match: {matcher}\n{}", answer(name))
    };
    format!(
        r#"static_resources:
  listeners:
  - name: by-port
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p1} }} }}
    filter_chains:
{c1}{c2}    default_filter_chain:
{d1}  - name: by-source
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p2} }} }}
    filter_chains:
{c3}{c4}{c5}{c6}    default_filter_chain:
{d2}  - name: inspect
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p3} }} }}
    listener_filters:
    - name: envoy.filters.listener.http_inspector
      typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector }}
    listener_filters_timeout: 2s
    filter_chains:
{c7}{c8}    default_filter_chain:
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: echo
          cluster: echo
  clusters:
  - name: echo
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {ep} }} }} }}
"#,
        c1 = chain(
            &format!("{{ destination_port: {p1}, source_prefix_ranges: [{{ address_prefix: 127.0.0.3, prefix_len: 32 }}] }}"),
            "port-and-source-3"
        ),
        c2 = chain(
            "{ source_prefix_ranges: [{ address_prefix: 127.0.0.0, prefix_len: 8 }] }",
            "source-8"
        ),
        d1 = answer("default-1"),
        c3 = chain(
            "{ source_prefix_ranges: [{ address_prefix: 127.0.0.0, prefix_len: 24 }] }",
            "source-24"
        ),
        c4 = chain(
            "{ source_prefix_ranges: [{ address_prefix: 127.0.0.2, prefix_len: 32 }] }",
            "source-2"
        ),
        c5 = chain(
            "{ source_prefix_ranges: [{ address_prefix: 127.0.1.0, prefix_len: 24 }], source_type: SAME_IP_OR_LOOPBACK }",
            "loopback-127.0.1"
        ),
        c6 = chain(
            "{ source_prefix_ranges: [{ address_prefix: 127.0.2.0, prefix_len: 24 }], source_type: EXTERNAL }",
            "external-127.0.2"
        ),
        d2 = answer("default-2"),
        c7 = chain("{ application_protocols: [http/1.1] }", "http-1.1"),
        c8 = chain("{ application_protocols: [http/1.0] }", "http-1.0"),
        ep = echo.port(),
    )
}

/// What one request through curl from `source` gets: the body, or why there was none.
fn curl(port: u16, source: &str, http10: bool) -> String {
    let mut c = Command::new("curl");
    c.args(["-s", "-S", "--max-time", "5", "--interface", source]);
    if http10 {
        c.arg("-0");
    }
    let out = c
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("curl runs");
    match out.status.success() {
        true => String::from_utf8_lossy(&out.stdout).into_owned(),
        false => format!("error: {}", String::from_utf8_lossy(&out.stderr).trim()),
    }
}

/// A line that is not HTTP, through the inspector's listener: echoed by the default chain.
fn not_http(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"hello, not http\n").unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => format!("error: {e}"),
    }
}

/// What every proxy must answer.
fn observations(ports: [u16; 3]) -> Vec<String> {
    let mut out = Vec::new();
    for source in ["127.0.0.1", "127.0.0.3", "127.0.0.9"] {
        out.push(format!(
            "by-port from {source}: {}",
            curl(ports[0], source, false)
        ));
    }
    for source in [
        "127.0.0.1",
        "127.0.0.2",
        "127.0.1.7",
        "127.0.2.7",
        "127.1.0.1",
    ] {
        out.push(format!(
            "by-source from {source}: {}",
            curl(ports[1], source, false)
        ));
    }
    out.push(format!(
        "inspect HTTP/1.1: {}",
        curl(ports[2], "127.0.0.1", false)
    ));
    out.push(format!(
        "inspect HTTP/1.0: {}",
        curl(ports[2], "127.0.0.1", true)
    ));
    out.push(format!("inspect not HTTP: {}", not_http(ports[2])));
    out
}

fn ports() -> [u16; 3] {
    [envoy::free_port(), envoy::free_port(), envoy::free_port()]
}

fn wait_listening(ports: [u16; 3]) {
    for p in ports {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", p)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nothing listens on {p}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn filter_chains_are_chosen_as_envoy_chooses_them() {
    let echo = support::echo_upstream();
    let zp = ports();
    let zerohop = Proxy::start(&config(zp, echo));
    wait_listening(zp);
    let z = observations(zp);
    // What zerohop must answer, whatever Envoy does: the chains named in the config.
    assert_eq!(
        &z[..3],
        [
            "by-port from 127.0.0.1: default-1",
            "by-port from 127.0.0.3: port-and-source-3",
            "by-port from 127.0.0.9: default-1",
        ]
    );
    assert_eq!(z[8], "inspect HTTP/1.1: http-1.1");
    assert_eq!(
        z[9], "inspect HTTP/1.0: Upgrade Required",
        "the http/1.0 chain, whose connection manager refuses HTTP/1.0 as Envoy's does"
    );
    assert_eq!(z[10], "inspect not HTTP: hello, not http\n");
    assert!(
        zerohop.total(zerohop_proto::stats::Counter::NoFilterChainMatch) == 0,
        "every connection had a chain"
    );
    if !envoy::available() {
        return;
    }
    let ep = ports();
    let mut e = envoy::spawn(&config(ep, echo));
    envoy::wait_accepting(
        &mut e,
        SocketAddr::from(([127, 0, 0, 1], ep[2])),
        Duration::from_secs(30),
    );
    wait_listening(ep);
    let theirs = observations(ep);
    let mismatches: Vec<String> = z
        .iter()
        .zip(&theirs)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("  envoy:   {b}\n  zerohop: {a}"))
        .collect();
    assert!(mismatches.is_empty(), "\n{}", mismatches.join("\n"));
}

/// Without a default chain, a connection no chain takes is closed, and counted.
#[test]
fn a_connection_no_chain_takes_is_closed() {
    let echo = support::echo_upstream();
    let zp = ports();
    let yaml = config(zp, echo);
    // by-port without its default chain: a source other than 127.0.0.3 has no chain.
    let start = yaml.find("    default_filter_chain:\n").unwrap();
    let end = yaml.find("  - name: by-source").unwrap();
    let yaml = format!("{}{}", &yaml[..start], &yaml[end..]);
    let zerohop = Proxy::start(&yaml);
    wait_listening([zp[1], zp[2], zp[1]]);
    assert_eq!(curl(zp[0], "127.0.0.3", false), "port-and-source-3");
    let refused = curl(zp[0], "127.0.0.1", false);
    assert!(refused.starts_with("error"), "{refused}");
    assert!(
        zerohop.wait_counter(
            zerohop_proto::stats::Counter::NoFilterChainMatch,
            1,
            Duration::from_secs(2)
        ) >= 1
    );
}
