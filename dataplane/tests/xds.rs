//! zerohop under an xDS control plane: the scripted ADS server (tests/xds/ads_server.py)
//! drives the same sequences, state of the world and delta, first against zerohop and then
//! against Envoy as the reference. Each step records the client's ACK/NACK decisions and
//! what traffic gets; the two transcripts must be equal, and zerohop's must also be what
//! the step expects.
//!
//! zerohop is held to "ACK means serving": the first request after its ACK must already see
//! the change. Envoy applies to its workers after it acknowledges, so its traffic is polled
//! for up to 3 s before it is recorded.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::envoy::{self, Envoy};
use support::http::{upstream, Client, Upstream};
use support::xds::{self as x, AdsServer};
use support::{Opts, Proxy};

const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    Zerohop,
    Envoy,
}

/// A running proxy of either kind; dropped, it stops.
struct Running {
    zerohop: Option<Proxy>,
    _envoy: Option<Envoy>,
    admin: u16,
}

fn start(peer: Peer, ads: &AdsServer, api: &str, listen: SocketAddr) -> Running {
    let admin = envoy::free_port();
    let yaml = x::bootstrap(ads.addr(), api, admin);
    match peer {
        Peer::Zerohop => Running {
            zerohop: Some(Proxy::start_with(&yaml, Opts::default())),
            _envoy: None,
            admin,
        },
        Peer::Envoy => {
            let mut e = envoy::spawn(&yaml);
            envoy::wait_accepting(&mut e, listen, WAIT);
            Running {
                zerohop: None,
                _envoy: Some(e),
                admin,
            }
        }
    }
}

/// `/config_dump`'s xDS part, one line per dump: each dynamic resource with its version and
/// its proto JSON (ports and times left out: they differ between the two runs; so do the
/// delta server's per-resource versions, hashes of resources that hold ports).
fn dynamic_dump(admin: u16, api: &str) -> Vec<String> {
    let body = support::admin::json(admin, "/config_dump");
    let mut out = Vec::new();
    for c in body["configs"].as_array().expect("configs") {
        let ty = c["@type"].as_str().unwrap().rsplit('.').next().unwrap();
        let mut c = c.clone();
        scrub(&mut c);
        if api.starts_with("DELTA") {
            hide_versions(&mut c);
        }
        for field in [
            "version_info",
            "dynamic_active_clusters",
            "dynamic_listeners",
            "dynamic_route_configs",
        ] {
            if !c[field].is_null() {
                out.push(format!("{ty}.{field}: {}", c[field]));
            }
        }
    }
    out
}

fn hide_versions(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(ver)) = o.get_mut("version_info") {
                assert!(!ver.is_empty(), "a delta resource's version is shown");
                *ver = "<hash>".into();
            }
            o.values_mut().for_each(hide_versions);
        }
        Value::Array(a) => a.iter_mut().for_each(hide_versions),
        _ => {}
    }
}

fn scrub(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.remove("last_updated");
            if let Some(p) = o.get_mut("port_value") {
                *p = 0.into();
            }
            o.values_mut().for_each(scrub);
        }
        Value::Array(a) => a.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// One request on a new connection: `200 a` (status and upstream), `503 -`, `refused`, or
/// `closed` (accepted, then closed without an answer: a listener being removed).
fn get(addr: SocketAddr, path: &str) -> String {
    if TcpStream::connect(addr).is_err() {
        return "refused".into();
    }
    let mut c = Client::connect(addr);
    match c.raw(format!("GET {path} HTTP/1.1\r\nhost: svc\r\n\r\n").as_bytes()) {
        Some(r) => format!("{} {}", r.status, r.header("x-upstream").unwrap_or("-")),
        None => "closed".into(),
    }
}

/// The transcript of one scenario run.
struct Transcript {
    peer: Peer,
    lines: Vec<String>,
}

impl Transcript {
    fn note(&mut self, line: String) {
        eprintln!("[{:?}] {line}", self.peer);
        self.lines.push(line);
    }

    /// Records the client's answer to `ty` at `version`: `ACK` or `NACK`, with the version
    /// a SotW client echoes.
    fn answer(&mut self, ads: &AdsServer, ty: &str, version: &str) -> Value {
        self.answer_for(ads, ty, version, None)
    }

    fn answer_for(
        &mut self,
        ads: &AdsServer,
        ty: &str,
        version: &str,
        name: Option<&str>,
    ) -> Value {
        let r = ads.answer_for(ty, version, name, WAIT);
        let verdict = if r["error"].is_null() { "ACK" } else { "NACK" };
        let echoed = match r["api"].as_str() {
            Some("sotw") => format!(" version_info={}", r["version_info"]),
            _ => String::new(),
        };
        self.note(format!("{ty} v{version}: {verdict}{echoed}"));
        r
    }

    /// Records what `GET path` gets. zerohop must give `want` at once; Envoy is given 3 s.
    fn traffic(&mut self, addr: SocketAddr, path: &str, want: &str) {
        let mut got = get(addr, path);
        if self.peer == Peer::Envoy {
            let deadline = Instant::now() + Duration::from_secs(3);
            while got != want && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
                got = get(addr, path);
            }
        }
        self.note(format!("GET {path} -> {got}"));
    }
}

struct Upstreams {
    a: Upstream,
    b: Upstream,
    c: Upstream,
}

fn upstreams() -> Upstreams {
    Upstreams {
        a: upstream("a"),
        b: upstream("b"),
        c: upstream("c"),
    }
}

/// Initial snapshot: listener -> RDS `local` -> EDS cluster `web` on upstream a.
fn initial(ads: &mut AdsServer, u: &Upstreams, listen: SocketAddr) {
    ads.set("cds", "1", vec![x::eds_cluster("web")]);
    ads.set("eds", "1", vec![x::assignment("web", &[u.a.addr])]);
    ads.set(
        "lds",
        "1",
        vec![x::http_listener("http", listen.port(), "local")],
    );
    ads.set("rds", "1", vec![x::routes("local", &[("/", "web")])]);
}

/// A proxy serving the initial snapshot, its four answers recorded.
struct Setup {
    ads: AdsServer,
    u: Upstreams,
    listen: SocketAddr,
    t: Transcript,
    running: Running,
}

fn setup(peer: Peer, api: &str) -> Option<Setup> {
    let mut ads = AdsServer::start()?;
    let u = upstreams();
    let listen: SocketAddr = ([127, 0, 0, 1], envoy::free_port()).into();
    let mut t = Transcript {
        peer,
        lines: Vec::new(),
    };
    initial(&mut ads, &u, listen);
    let running = start(peer, &ads, api, listen);
    for ty in ["cds", "eds", "lds", "rds"] {
        t.answer(&ads, ty, "1");
    }
    Some(Setup {
        ads,
        u,
        listen,
        t,
        running,
    })
}

/// Runs `scenario` through zerohop and checks its transcript with `check`; then, Envoy
/// permitting, through Envoy: the two transcripts must be equal.
fn parity_of(
    api: &str,
    scenario: fn(Peer, &str) -> Option<Vec<String>>,
    check: impl Fn(&[String]),
) {
    let Some(z) = scenario(Peer::Zerohop, api) else {
        return;
    };
    check(&z);
    if !envoy::available() {
        return;
    }
    let e = scenario(Peer::Envoy, api).expect("the ADS server started once already");
    assert_eq!(z, e, "zerohop and Envoy differ");
}

/// Initial snapshot, update, partial NACK, removal.
fn scenario(peer: Peer, api: &str) -> Option<Vec<String>> {
    let Setup {
        mut ads,
        u,
        listen,
        mut t,
        running,
    } = setup(peer, api)?;
    t.traffic(listen, "/", "200 a");

    // Endpoints move.
    ads.set("eds", "2", vec![x::assignment("web", &[u.b.addr])]);
    t.answer(&ads, "eds", "2");
    t.traffic(listen, "/", "200 b");

    // A cluster and a route are added.
    ads.set(
        "cds",
        "2",
        vec![x::eds_cluster("web"), x::eds_cluster("api")],
    );
    ads.set(
        "eds",
        "3",
        vec![
            x::assignment("web", &[u.b.addr]),
            x::assignment("api", &[u.c.addr]),
        ],
    );
    t.answer(&ads, "cds", "2");
    t.answer_for(&ads, "eds", "3", Some("api"));
    ads.set(
        "rds",
        "2",
        vec![x::routes("local", &[("/api", "api"), ("/", "web")])],
    );
    t.answer(&ads, "rds", "2");
    t.traffic(listen, "/api", "200 c");
    t.traffic(listen, "/", "200 b");
    for line in dynamic_dump(running.admin, api) {
        t.note(line);
    }

    // One invalid cluster: the response is NACKed, the valid ones in it are applied. (The
    // error must be semantic: Envoy refuses a whole response whose resource fails its proto
    // constraints, e.g. a negative connect_timeout, before applying any of it.)
    let mut bad = x::static_cluster("bad", &[u.a.addr]);
    bad["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"]["address"] = "not-an-ip".into();
    ads.set(
        "cds",
        "3",
        vec![
            x::eds_cluster("web"),
            x::eds_cluster("api"),
            x::static_cluster("extra", &[u.a.addr]),
            bad,
        ],
    );
    let nack = t.answer(&ads, "cds", "3");
    if peer == Peer::Zerohop {
        let detail = nack["error"].as_str().unwrap_or_default();
        assert!(
            detail.contains("Cluster \"bad\"") && detail.contains("socket_address.address"),
            "the NACK names the resource and the field: {detail}"
        );
    }
    ads.set(
        "rds",
        "3",
        vec![x::routes(
            "local",
            &[("/api", "api"), ("/extra", "extra"), ("/", "web")],
        )],
    );
    t.answer(&ads, "rds", "3");
    t.traffic(listen, "/extra", "200 a");

    // Removal: a cluster, then the listener.
    ads.set(
        "cds",
        "4",
        vec![
            x::eds_cluster("web"),
            x::static_cluster("extra", &[u.a.addr]),
        ],
    );
    t.answer(&ads, "cds", "4");
    t.traffic(listen, "/api", "503 -");
    t.traffic(listen, "/", "200 b");
    // Filters neither proxy implements: refused, unless marked optional.
    let other: SocketAddr = ([127, 0, 0, 1], envoy::free_port()).into();
    let main = x::http_listener("http", listen.port(), "local");
    ads.set(
        "lds",
        "2",
        vec![
            main.clone(),
            x::with_unknown_filter(x::http_listener("strict", other.port(), "local"), false),
        ],
    );
    t.answer(&ads, "lds", "2");
    t.traffic(other, "/", "refused");
    ads.set(
        "lds",
        "3",
        vec![
            main,
            x::with_unknown_filter(x::http_listener("lenient", other.port(), "local"), true),
        ],
    );
    t.answer(&ads, "lds", "3");
    t.traffic(other, "/", "200 b");
    ads.set("lds", "4", vec![]);
    t.answer(&ads, "lds", "4");
    t.traffic(listen, "/", "refused");
    t.traffic(other, "/", "refused");
    if let Some(p) = &running.zerohop {
        assert!(
            !p.log().contains("panicked"),
            "zerohop panicked:\n{}",
            p.log()
        );
    }
    Some(t.lines)
}

fn parity(api: &str) {
    parity_of(api, scenario, |z| check_sequence(api, z));
}

fn check_sequence(api: &str, z: &[String]) {
    let want = [
        "GET / -> 200 a",
        "GET / -> 200 b",
        "GET /api -> 200 c",
        "GET /extra -> 200 a",
        "GET /api -> 503 -",
        "GET / -> refused",
    ];
    // A state-of-the-world client echoes a version; a delta one has none to echo.
    let v = |n: &str| match api {
        "GRPC" => format!(" version_info=\"{n}\""),
        _ => String::new(),
    };
    assert!(
        z.ends_with(&[
            format!("lds v2: NACK{}", v("1")),
            "GET / -> refused".into(),
            format!("lds v3: ACK{}", v("3")),
            "GET / -> 200 b".into(),
            format!("lds v4: ACK{}", v("4")),
            "GET / -> refused".into(),
            "GET / -> refused".into(),
        ]),
        "{z:#?}"
    );
    for w in want {
        assert!(z.iter().any(|l| l == w), "zerohop: no {w:?} in {z:#?}");
    }
    let nack = z.iter().find(|l| l.starts_with("cds v3")).unwrap();
    assert!(nack.contains("NACK"), "{nack}");
    if api == "GRPC" {
        assert!(
            nack.contains("version_info=\"2\""),
            "a NACK echoes the last accepted version: {nack}"
        );
    }
    let lds = z.iter().find(|l| l.starts_with("lds v2")).unwrap();
    assert!(lds.contains("NACK"), "an unknown filter is refused: {lds}");
    assert_eq!(
        z.iter().filter(|l| l.contains("NACK")).count(),
        2,
        "only cds v3 and lds v2 are refused: {z:#?}"
    );
}

#[test]
fn sotw_sequence_matches_envoy() {
    parity("GRPC");
}

#[test]
fn delta_sequence_matches_envoy() {
    parity("DELTA_GRPC");
}

/// Requests at a fixed rate, each on a new connection, until stopped: `(sent at, outcome)`.
struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, per_second: u32, keep_alive: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, l) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let interval = Duration::from_secs(1) / per_second;
            let mut next = Instant::now();
            let mut conn: Option<Client> = None;
            while !s.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let outcome = if keep_alive {
                    let c = conn.get_or_insert_with(|| Client::connect(addr));
                    match c.raw(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n") {
                        Some(r) => {
                            format!("{} {}", r.status, r.header("x-upstream").unwrap_or("-"))
                        }
                        None => {
                            conn = None;
                            "closed".into()
                        }
                    }
                } else {
                    get(addr, "/")
                };
                l.lock().unwrap().push((sent, outcome));
                next += interval;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        });
        Load {
            stop,
            log,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(Instant, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// The ADS server goes away for a second and comes back: traffic never fails, and the
/// client reconnects presenting what it holds.
fn server_restart(peer: Peer, api: &str) -> Option<Vec<String>> {
    let Setup {
        mut ads,
        u,
        listen,
        mut t,
        running: _running,
    } = setup(peer, api)?;
    let load = Load::start(listen, 100, false);
    std::thread::sleep(Duration::from_millis(500));
    let mark = ads.events().len();
    ads.restart(1.0);
    let first = ads.wait_from(mark, WAIT, |e| {
        e["event"] == "request" && e["type"] == "cds" && e["nonce"] == ""
    });
    match api {
        "GRPC" => t.note(format!(
            "reconnect: cds version_info={}",
            first["version_info"]
        )),
        _ => t.note(format!(
            "reconnect: cds initial_resource_versions has web: {}",
            first["initial_versions"].get("web").is_some()
        )),
    }
    std::thread::sleep(Duration::from_millis(500));
    let log = load.finish();
    let failed: Vec<_> = log.iter().filter(|(_, o)| o != "200 a").collect();
    t.note(format!(
        "failed requests during the restart: {}",
        failed.len()
    ));
    assert!(log.len() >= 150, "the load ran: {} requests", log.len());
    // The new stream carries updates.
    ads.set("eds", "2", vec![x::assignment("web", &[u.b.addr])]);
    t.answer(&ads, "eds", "2");
    t.traffic(listen, "/", "200 b");
    Some(t.lines)
}

fn restart_parity(api: &str) {
    parity_of(api, server_restart, |z| {
        assert!(
            z.contains(&"failed requests during the restart: 0".to_string()),
            "{z:#?}"
        );
        assert!(
            z.iter().any(|l| l == "reconnect: cds version_info=\"1\""
                || l == "reconnect: cds initial_resource_versions has web: true"),
            "{z:#?}"
        );
    });
}

#[test]
fn sotw_server_restart_loses_no_request() {
    restart_parity("GRPC");
}

#[test]
fn delta_server_restart_loses_no_request() {
    restart_parity("DELTA_GRPC");
}

/// Endpoints change under load on keep-alive connections: after zerohop's ACK, no request
/// reaches the endpoint that was removed. Envoy runs the same sequence: its ACKs must match
/// and, once it has settled (1 s after its ACK), it too sends nothing to the removed endpoint;
/// how many of its requests reached it after its ACK is printed, not asserted.
fn endpoints_under_load(peer: Peer, api: &str) -> Option<Vec<String>> {
    let Setup {
        mut ads,
        u,
        listen,
        mut t,
        running: _running,
    } = setup(peer, api)?;
    let loads: Vec<Load> = (0..4).map(|_| Load::start(listen, 200, true)).collect();
    std::thread::sleep(Duration::from_millis(300));
    // a and b, then b only.
    ads.set(
        "eds",
        "2",
        vec![x::assignment("web", &[u.a.addr, u.b.addr])],
    );
    t.answer(&ads, "eds", "2");
    std::thread::sleep(Duration::from_millis(300));
    ads.set("eds", "3", vec![x::assignment("web", &[u.b.addr])]);
    t.answer(&ads, "eds", "3");
    let acked = Instant::now();
    std::thread::sleep(Duration::from_millis(1300));
    let log: Vec<_> = loads.into_iter().flat_map(Load::finish).collect();
    let after: Vec<_> = log.iter().filter(|(sent, _)| *sent > acked).collect();
    let late = after.iter().filter(|(_, o)| o != "200 b").count();
    let settled = acked + Duration::from_secs(1);
    let late_settled = after
        .iter()
        .filter(|(sent, o)| *sent > settled && o != "200 b")
        .count();
    eprintln!(
        "[{peer:?}] {late} of {} requests sent after the ACK did not reach b",
        after.len()
    );
    assert!(after.len() > 50, "load after the ACK: {}", after.len());
    if peer == Peer::Zerohop {
        assert_eq!(
            late, 0,
            "requests sent after zerohop's ACK reached a removed endpoint"
        );
    }
    t.note(format!(
        "after settling, requests not reaching b: {late_settled}"
    ));
    t.note(format!(
        "a served before it was removed: {}",
        log.iter().any(|(_, o)| o == "200 a")
    ));
    t.note(format!(
        "every request served: {}",
        log.iter().all(|(_, o)| o == "200 a" || o == "200 b")
    ));
    Some(t.lines)
}

fn endpoints_parity(api: &str) {
    parity_of(api, endpoints_under_load, |z| {
        assert!(
            z.iter()
                .any(|l| l == "after settling, requests not reaching b: 0")
                && z.iter()
                    .any(|l| l == "a served before it was removed: true")
                && z.iter().any(|l| l == "every request served: true"),
            "{z:#?}"
        );
    });
}

#[test]
fn sotw_endpoints_change_under_load() {
    endpoints_parity("GRPC");
}

#[test]
fn delta_endpoints_change_under_load() {
    endpoints_parity("DELTA_GRPC");
}

/// Delta ADS over a Unix socket, as Istio's pilot-agent serves it (`pipe` in the cluster).
#[test]
fn delta_over_a_unix_socket() {
    let socket = support::scratch("XDS");
    let Some(mut ads) = AdsServer::start_on(Some(&socket)) else {
        return;
    };
    let u = upstreams();
    let listen: SocketAddr = ([127, 0, 0, 1], envoy::free_port()).into();
    initial(&mut ads, &u, listen);
    let pipe = format!("{{ pipe: {{ path: {} }} }}", socket.display());
    let yaml = x::bootstrap_with("xds-test", &pipe, "DELTA_GRPC", envoy::free_port(), "5s");
    let _proxy = Proxy::start_with(&yaml, Opts::default());
    ads.answer("rds", "1", WAIT);
    assert_eq!(get(listen, "/"), "200 a");
    let stream = ads.wait(WAIT, |e| e["event"] == "stream");
    assert_eq!(stream["node"], "xds-test");
}

/// The first configuration never completes (the cluster's endpoints do not come): after
/// `initial_fetch_timeout` zerohop serves what it has, the cluster without endpoints.
#[test]
fn initial_fetch_timeout_serves_what_arrived() {
    let Some(mut ads) = AdsServer::start() else {
        return;
    };
    let listen: SocketAddr = ([127, 0, 0, 1], envoy::free_port()).into();
    ads.set("cds", "1", vec![x::eds_cluster("web")]);
    ads.set(
        "lds",
        "1",
        vec![x::http_listener("http", listen.port(), "local")],
    );
    ads.set("rds", "1", vec![x::routes("local", &[("/", "web")])]);
    let server = x::socket_address(ads.addr());
    let yaml = x::bootstrap_with("xds-test", &server, "GRPC", envoy::free_port(), "1s");
    let started = Instant::now();
    let proxy = Proxy::start_with(&yaml, Opts::default());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "served before the timeout: {:?}",
        started.elapsed()
    );
    assert!(
        proxy.log().contains("initial_fetch_timeout"),
        "{}",
        proxy.log()
    );
    assert_eq!(get(listen, "/"), "503 -");
}
