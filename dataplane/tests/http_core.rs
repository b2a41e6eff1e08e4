//! The HTTP core in-process: the connection manager, the filter chain and the router,
//! driven on a runtime in the test's own thread, without spawning zerohop or control. A
//! config compiles from Envoy YAML (control's compiler, as a library), becomes a generation
//! (the data plane's builder) and is served by a detached shard; clients and upstreams are
//! real sockets on 127.0.0.1.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::http::{fixture, upstream, Client};
use zerohop::config::{Latest, Slots};
use zerohop::shard::listeners::BoundListener;
use zerohop::shard::Shard;
use zerohop_proto::stats::Counter;

/// A running in-process HTTP core; dropped, it stops.
struct Core {
    addr: SocketAddr,
    latest: &'static Latest,
    counters: &'static [AtomicU64],
    slots: Mutex<Slots>,
    generation: AtomicU64,
}

impl Core {
    /// Compiles `yaml` and builds it as the next generation.
    fn build(&self, yaml: &str) -> zerohop::config::Generation {
        let b = zerohop_control::config::load(yaml, zerohop_control::config::Format::Yaml)
            .expect("a valid config");
        let n = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.slots
            .lock()
            .unwrap()
            .build(n, b.snapshot)
            .expect("builds")
    }

    /// Hands the shard a new generation (it takes it up at its next look).
    fn reload(&self, yaml: &str) {
        let g = self.build(yaml);
        self.latest.publish(Arc::new(g));
    }

    fn count(&self, c: Counter) -> u64 {
        self.counters[c.index()].load(Ordering::Relaxed)
    }
}

/// Serves `yaml`'s first listener (on a port of its own) while `test` runs on another
/// thread with it.
fn with_core(yaml: &str, test: impl FnOnce(&Core) + Send + 'static) {
    let counters: &'static [AtomicU64] =
        Vec::leak((0..Counter::ALL.len()).map(|_| AtomicU64::new(0)).collect());
    let mut core = Core {
        addr: "127.0.0.1:0".parse().unwrap(),
        latest: Box::leak(Box::new(Latest::new(Arc::new(
            zerohop::config::Generation::empty(),
        )))),
        counters,
        slots: Mutex::new(Slots::default()),
        generation: AtomicU64::new(0),
    };
    let first = core.build(yaml);
    let name = first.listeners[0].name.clone();
    core.latest.publish(Arc::new(first));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    core.addr = listener.local_addr().unwrap();
    let core: &'static Core = Box::leak(Box::new(core));
    let done = Arc::new(AtomicBool::new(false));
    let finished = done.clone();
    let client = std::thread::spawn(move || {
        // Stops the runtime however the test ends (a failed assertion included).
        struct Done(Arc<AtomicBool>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _done = Done(finished);
        test(core);
    });
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async move {
        let shard = Shard::detached(0, core.latest, core.counters);
        let bound = BoundListener::new(name, core.addr);
        let socket = monoio::net::TcpListener::from_std(listener).unwrap();
        let accepting = shard.clone();
        monoio::spawn(async move {
            while let Ok((stream, _)) = socket.accept().await {
                accepting.maybe_reload();
                let cfg = accepting.config();
                let index = bound.index_in(&cfg).expect("the listener is there");
                zerohop::conn::dispatch(&accepting, cfg, index, bound.clone(), stream);
            }
        });
        while !done.load(Ordering::SeqCst) {
            shard.maybe_reload();
            monoio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    client.join().expect("the test thread");
}

#[test]
fn a_request_is_routed_rewritten_and_forwarded() {
    let (a, b) = (upstream("a"), upstream("b"));
    with_core(&fixture(a.addr, b.addr), |core| {
        let mut c = Client::connect(core.addr);
        let r = c.get("api.example.com", "/v1/users?id=3", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-upstream"), Some("a"));
        assert_eq!(r.upstream_request_line(), "GET /users?id=3 HTTP/1.1");
        let up = r.upstream_headers();
        let value = |n: &str| up.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(value("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(value("x-request-id").map(|v| v.len()), Some(36));
        assert_eq!(
            r.header("x-proxied-by"),
            Some("mesh"),
            "route configuration edit"
        );
        // The same connection, another virtual host.
        let r = c.get("x.example.com", "/any", &[]);
        assert_eq!(r.header("x-upstream"), Some("b"));
        assert!(r
            .upstream_headers()
            .contains(&("host".into(), "rewritten.internal".into())));
        assert_eq!(core.count(Counter::DownstreamRqTotal), 2);
        assert_eq!(
            core.count(Counter::UpstreamCxReused),
            0,
            "two clusters, no reuse"
        );
    });
}

#[test]
fn errors_become_their_local_replies() {
    let (a, refused) = (upstream("a"), support::refused_port());
    let yaml = fixture(a.addr, refused);
    with_core(&yaml, |core| {
        let mut c = Client::connect(core.addr);
        // No route: 404, Envoy's empty body, the connection kept.
        let r = c.get("api.example.com", "/nowhere", &[]);
        assert_eq!((r.status, r.body.len()), (404, 0));
        // Cluster b refuses connections: 503 naming the connect failure (as Envoy's).
        let r = c.get("x.example.com", "/", &[]);
        assert_eq!(r.status, 503);
        assert!(
            r.text().contains("remote connection failure"),
            "{}",
            r.text()
        );
        assert_eq!(core.count(Counter::RouteNotFound), 1);
        assert_eq!(core.count(Counter::UpstreamCxConnectFail), 1);
        // A malformed request: 400.
        let mut c = Client::connect(core.addr);
        let r = c
            .raw(b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n")
            .unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(core.count(Counter::DownstreamRqMalformed), 1);
    });
}

/// An upstream that answers every request with 200 and then closes the connection without
/// saying so (no `connection: close`), as a server whose keep-alive timeout just expired.
fn closing_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let seen = conns.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = (&s).write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            // Closed right away: the proxy pools the connection and meets the close on reuse.
        }
    });
    (addr, conns)
}

#[test]
fn a_bodiless_request_that_meets_a_closed_pooled_connection_is_sent_again() {
    let (up, conns) = closing_upstream();
    let b = upstream("b");
    with_core(&fixture(up, b.addr), move |core| {
        let mut c = Client::connect(core.addr);
        assert_eq!(c.get("api.example.com", "/v1/x", &[]).status, 200);
        std::thread::sleep(Duration::from_millis(50)); // the upstream's close arrives
                                                       // Pooled less than 200 ms ago, so reused unchecked: the send or the read fails, and
                                                       // the router's retry state sends it again on a new connection.
        let r = c.get("api.example.com", "/v1/y", &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "ok");
        assert_eq!(core.count(Counter::UpstreamCxReused), 1);
        assert_eq!(conns.load(Ordering::SeqCst), 2);
        // A request with a body is not replayed: it fails (503, connection termination, as
        // Envoy's) when it meets the closed connection.
        std::thread::sleep(Duration::from_millis(50));
        let r = c
            .raw(b"POST /v1/z HTTP/1.1\r\nhost: api.example.com\r\ncontent-length: 2\r\n\r\nhi")
            .unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.text().ends_with("connection termination"), "{}", r.text());
    });
}

const BUFFER: &str = "          - name: buffer\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer\n              max_request_bytes: 1000\n          - name: envoy.filters.http.router\n";

fn chunked(n: usize) -> Vec<u8> {
    let mut req =
        b"POST /v1/b HTTP/1.1\r\nhost: api.example.com\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    req.extend_from_slice(format!("{n:x}\r\n").as_bytes());
    req.extend(std::iter::repeat_n(b'x', n));
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    req
}

#[test]
fn the_filter_chain_runs_before_the_router_and_routes_override_it() {
    let (a, b) = (upstream("a"), upstream("b"));
    let yaml = fixture(a.addr, b.addr).replacen(
        "          - name: envoy.filters.http.router\n",
        BUFFER,
        1,
    );
    let config = yaml.clone();
    with_core(&config, move |core| {
        // The buffer filter: a chunked body arrives whole, with a content-length.
        let mut c = Client::connect(core.addr);
        let r = c.raw(&chunked(600)).unwrap();
        assert_eq!(r.status, 200);
        let text = r.text().to_ascii_lowercase();
        assert!(
            text.contains("content-length: 600") && !text.contains("transfer-encoding"),
            "{text}"
        );
        let r = c.raw(&chunked(1500)).unwrap();
        assert_eq!(r.status, 413);
        assert_eq!(core.count(Counter::DownstreamRqTooLarge), 1);

        // The route disables the filter (typed_per_filter_config): the body streams as sent,
        // larger than the limit.
        let disabled = "                route: { cluster: a, prefix_rewrite: \"/\" }\n                typed_per_filter_config:\n                  buffer: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute, disabled: true }\n";
        let y = yaml.replacen(
            "                route: { cluster: a, prefix_rewrite: \"/\" }\n",
            disabled,
            1,
        );
        core.reload(&y);
        std::thread::sleep(Duration::from_millis(50));
        let mut c = Client::connect(core.addr);
        let r = c.raw(&chunked(1500)).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text().to_ascii_lowercase();
        assert!(
            text.contains("transfer-encoding: chunked") && text.contains("body-bytes: 1500"),
            "{text}"
        );
    });
}

#[test]
fn keep_alive_connections_route_each_request_with_the_newest_generation() {
    let (a, b) = (upstream("a"), upstream("b"));
    let yaml = fixture(a.addr, b.addr);
    let config = yaml.clone();
    with_core(&config, move |core| {
        let mut c = Client::connect(core.addr);
        assert_eq!(
            c.get("api.example.com", "/v1/", &[]).header("x-upstream"),
            Some("a")
        );
        // The same route now goes to cluster b.
        core.reload(&yaml.replacen(
            "route: { cluster: a, prefix_rewrite: \"/\" }",
            "route: { cluster: b, prefix_rewrite: \"/\" }",
            1,
        ));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            c.get("api.example.com", "/v1/", &[]).header("x-upstream"),
            Some("b")
        );
    });
}
