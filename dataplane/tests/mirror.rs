//! `request_mirror_policies` against Envoy 1.40: the same bootstrap and requests through
//! both; the client's answers, and what the mirror cluster's upstream receives (request
//! line, host, body) must agree. Envoy comes from PyPI; CI sets ZEROHOP_REQUIRE_PEERS=1, so
//! there a missing Envoy fails the test.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::envoy;
use support::http::{upstream, Client};
use support::Proxy;

/// An upstream that records each request as `METHOD TARGET host=H body=N` and answers 200.
fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || record(s, &log));
        }
    });
    (addr, seen)
}

fn record(s: TcpStream, log: &Mutex<Vec<String>>) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let (mut host, mut len) = (String::new(), 0usize);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                match n.to_ascii_lowercase().as_str() {
                    "host" => host = v.trim().to_owned(),
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        log.lock().unwrap().push(format!(
            "{} host={host} body={:?}",
            line.trim_end(),
            String::from_utf8_lossy(&body)
        ));
        let reply = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nshadow";
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn config(listen: u16, main: u16, shadow: u16) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: web
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/none" }}
                route:
                  cluster: main
                  request_mirror_policies:
                  - cluster: shadow
                    runtime_fraction: {{ default_value: {{ numerator: 0 }} }}
              - match: {{ prefix: "/plain" }}
                route:
                  cluster: main
                  request_mirror_policies:
                  - cluster: shadow
                    disable_shadow_host_suffix_append: true
              - match: {{ prefix: "/" }}
                route:
                  cluster: main
                  request_mirror_policies: [{{ cluster: shadow }}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: main
    load_assignment:
      cluster_name: main
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {main} }} }} }}
  - name: shadow
    load_assignment:
      cluster_name: shadow
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {shadow} }} }} }}
"#
    )
}

/// The requests: (raw request, what the client must see from the main upstream).
fn requests() -> Vec<String> {
    vec![
        "GET /a?q=1 HTTP/1.1\r\nhost: svc\r\n\r\n".into(),
        "GET /b HTTP/1.1\r\nhost: svc.example:8080\r\n\r\n".into(),
        "POST /c HTTP/1.1\r\nhost: svc\r\ncontent-length: 5\r\n\r\nhello".into(),
        "GET /plain HTTP/1.1\r\nhost: svc\r\n\r\n".into(),
        "GET /none HTTP/1.1\r\nhost: svc\r\n\r\n".into(),
    ]
}

/// What the client got, then what the shadow upstream saw (sorted: copies arrive in any
/// order), once it has settled.
fn run(addr: SocketAddr, seen: &Mutex<Vec<String>>) -> Vec<String> {
    seen.lock().unwrap().clear();
    let mut c = Client::connect(addr);
    let mut out = Vec::new();
    for req in requests() {
        let r = c.raw(req.as_bytes()).expect("an answer");
        out.push(format!("{} from {:?}", r.status, r.header("x-upstream")));
    }
    // The copies are fire and forget: wait for them to settle.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = usize::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let n = seen.lock().unwrap().len();
        if (n == last && n >= 4) || Instant::now() > deadline {
            break;
        }
        last = n;
    }
    let mut shadow = seen.lock().unwrap().clone();
    shadow.sort();
    out.extend(shadow.into_iter().map(|s| format!("shadow saw {s}")));
    out
}

#[test]
fn requests_are_mirrored_as_envoy_mirrors_them() {
    let main = upstream("main");
    let (shadow, seen) = recording_upstream();
    let proxy = Proxy::start(&config(0, main.addr.port(), shadow.port()));
    let z = run(proxy.addr("web"), &seen);
    for l in &z {
        eprintln!("[zerohop] {l}");
    }
    assert!(
        z.iter()
            .any(|l| l.contains("GET /a?q=1 HTTP/1.1 host=svc-shadow")),
        "{z:#?}"
    );
    assert!(
        z.iter().any(|l| l.contains("host=svc.example-shadow:8080")),
        "{z:#?}"
    );
    assert!(
        z.iter()
            .any(|l| l.contains("POST /c HTTP/1.1 host=svc-shadow body=\"hello\"")),
        "{z:#?}"
    );
    assert!(!z.iter().any(|l| l.contains("/none")), "{z:#?}");
    assert_eq!(
        proxy.total(zerohop_proto::stats::Counter::UpstreamRqMirrored),
        4
    );
    if !envoy::available() {
        return;
    }
    let (_envoy, eaddr) = envoy::start(&config(0, main.addr.port(), shadow.port()));
    let e = run(eaddr, &seen);
    assert_eq!(z, e, "zerohop and Envoy differ");
}
