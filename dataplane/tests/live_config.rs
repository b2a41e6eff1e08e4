//! Live configuration: generations published while traffic flows, listeners coming and
//! going, refused generations, restarts of either process, the snapshot cache, admin.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::*;
use zerohop_proto::stats::Counter;

/// How long a reload may take to reach the shards in these tests. Config work runs at
/// background priority (nice 19, short slice) by design, so on a busy machine (a parallel
/// test run) it is slow; the tests assert that it arrives, not how fast (bench/ measures that).
const RELOAD: Duration = Duration::from_secs(30);

fn echo(addr: SocketAddr, msg: &[u8]) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

/// `front` to `up`, plus (when `extra`) a second listener `extra` to the same cluster.
fn config(up: SocketAddr, extra: bool) -> String {
    let names: &[&str] = if extra {
        &["front", "extra"]
    } else {
        &["front"]
    };
    tcp_proxy_listeners(names, &[up], "", "1s")
}

#[test]
fn a_listener_added_by_editing_the_file_is_served_on_every_shard() {
    let up = echo_upstream();
    let proxy = Proxy::start_with(
        &config(up, false),
        Opts {
            shards: 2,
            ..Opts::default()
        },
    );
    proxy.rewrite_config(&config(up, true)); // no signal: control watches the file
    let extra = proxy.wait_listener("extra", RELOAD);
    let before: Vec<u64> = proxy
        .counters()
        .iter()
        .map(|s| s[Counter::DownstreamCxTotal.index()])
        .collect();
    for _ in 0..100 {
        echo(extra, b"new listener");
    }
    let after: Vec<u64> = proxy
        .counters()
        .iter()
        .map(|s| s[Counter::DownstreamCxTotal.index()])
        .collect();
    assert!(
        before.iter().zip(&after).all(|(b, a)| a > b),
        "both shards accept on it: {before:?} -> {after:?}"
    );
    echo(proxy.addr("front"), b"old listener still there");
}

#[test]
fn a_removed_listener_stops_accepting_and_its_connections_drain_until_the_deadline() {
    let up = echo_upstream();
    let opts = Opts {
        drain_timeout: "1",
        ..Opts::default()
    };
    let proxy = Proxy::start_with(&config(up, true), opts);
    let extra = proxy.addr("extra");
    let mut open = TcpStream::connect(extra).unwrap();
    open.write_all(b"a").unwrap();
    open.read_exact(&mut [0u8; 1]).unwrap();

    proxy.rewrite_config(&config(up, false));
    assert!(
        refused_within(extra, RELOAD),
        "removed listener still accepts:\n{}",
        proxy.log()
    );
    open.write_all(b"b").unwrap(); // the open connection keeps working during its drain
    open.read_exact(&mut [0u8; 1]).unwrap();
    echo(proxy.addr("front"), b"unaffected");

    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    assert!(
        matches!(open.read(&mut [0u8; 1]), Ok(0) | Err(_)),
        "closed at the drain deadline"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(
        proxy.wait_counter(Counter::DrainForcedClose, 1, Duration::from_secs(2)),
        1
    );
}

#[test]
fn a_changed_endpoint_takes_effect_for_new_connections_only() {
    let named = |name: &'static [u8]| {
        upstream(move |mut s| {
            s.write_all(name).unwrap();
            let _ = s.read(&mut [0u8; 1]); // hold the connection until the client closes
        })
    };
    let (a, b) = (named(b"A"), named(b"B"));
    let proxy = Proxy::start(&tcp_proxy_config(&[a], "", "1s"));
    let mut old = TcpStream::connect(proxy.addr("front")).unwrap();
    let mut who = [0u8; 1];
    old.read_exact(&mut who).unwrap();
    assert_eq!(&who, b"A");
    let seg = zerohop_proto::shm::Segment::open(&proxy.shm).unwrap();
    proxy.rewrite_config(&tcp_proxy_config(&[b], "", "1s"));
    let deadline = Instant::now() + RELOAD;
    while !(seg.current_generation() == 2 && seg.all_applied(2)) {
        assert!(Instant::now() < deadline, "generation 2 not applied");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut new = TcpStream::connect(proxy.addr("front")).unwrap();
    new.read_exact(&mut who).unwrap();
    assert_eq!(&who, b"B");
    old.write_all(b"x").unwrap(); // the old connection still reaches A
}

#[test]
fn corrupt_or_undecodable_generations_are_refused_and_the_old_config_serves() {
    let up = echo_upstream();
    let proxy = Proxy::start_with(
        &tcp_proxy_config(&[up], "", "1s"),
        Opts {
            shards: 2,
            ..Opts::default()
        },
    );
    let seg = zerohop_proto::shm::Segment::open(&proxy.shm).unwrap();
    // Published straight after start-up, possibly before a shard has run: shards start from
    // the generation the process decoded, so they still serve.
    let g = seg.publish_with_bad_checksum_for_test(b"ZHSN whatever");
    assert!(
        proxy.wait_log(
            &format!("refused generation {g} (checksum mismatch)"),
            Duration::from_secs(5)
        ),
        "{}",
        proxy.log()
    );
    echo(proxy.addr("front"), b"still serving");
    // Every shard records the refusal in its ack line before the next generation comes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(0..2).all(|s| seg.shard_ack(s).1 == g) {
        assert!(
            Instant::now() < deadline,
            "not every shard refused generation {g}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    let g2 = seg.publish(b"ZHSN\x01\x00\x00\x00 not a snapshot").unwrap();
    assert!(proxy.wait_log(&format!("refused generation {g2}"), Duration::from_secs(5)));
    echo(proxy.addr("front"), b"still serving");
    assert_eq!(
        proxy.wait_counter(Counter::ConfigRejected, 4, Duration::from_secs(2)),
        4,
        "2 generations x 2 shards"
    );
    for shard in 0..2 {
        let (applied, rejected, _) = seg.shard_ack(shard);
        assert_eq!(
            (applied, rejected),
            (1, g2),
            "shard {shard} keeps generation 1"
        );
    }
}

#[test]
fn a_restarted_data_plane_serves_the_current_snapshot_at_once() {
    let up = echo_upstream();
    let control = Control::start(&tcp_proxy_config(&[up], "", "1s"), &[]);
    let opts = Opts {
        attach: Some(control.shm.clone()),
        ..Opts::default()
    };
    let first = Proxy::start_with("", opts.clone());
    echo(first.addr("front"), b"first");
    drop(first); // SIGKILL
    let t = Instant::now();
    let second = Proxy::start_with("", opts);
    echo(second.addr("front"), b"second");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        control.segment().current_generation(),
        1,
        "no new generation was needed"
    );
}

#[test]
fn control_starts_from_the_snapshot_cache_when_its_config_is_unusable() {
    let up = echo_upstream();
    let cache = scratch("last-good.snapshot");
    let yaml = tcp_proxy_config(&[up], "", "1s");
    {
        let _first = Control::start(&yaml, &["--snapshot-cache", cache.to_str().unwrap()]);
        // The cache is written after the publish the start waits for.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cache.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(cache.exists());
    // A new control on a fresh segment, with a config file that is now broken.
    let broken = yaml.replace("cluster: backend", "cluster: gone");
    let control = Control::start(&broken, &["--snapshot-cache", cache.to_str().unwrap()]);
    let proxy = Proxy::start_with(
        "",
        Opts {
            attach: Some(control.shm.clone()),
            ..Opts::default()
        },
    );
    echo(proxy.addr("front"), b"served from the cache");
}

#[test]
fn admin_reports_readiness_config_and_stats() {
    let up = echo_upstream();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = tcp_proxy_config(&[up], "", "1s").replacen(
        "static_resources:",
        &format!("admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }}\nstatic_resources:", admin.port()),
        1,
    );
    let proxy = Proxy::start_with(
        &yaml,
        Opts {
            shards: 2,
            ..Opts::default()
        },
    );
    echo(proxy.addr("front"), b"x");
    // Control binds the admin port on its own schedule, which may be after the data plane
    // serves: until it does, a request reads as "not ready".
    let get = |path: &str| {
        let Ok(mut c) = TcpStream::connect(admin) else {
            return String::new();
        };
        write!(c, "GET {path} HTTP/1.1\r\nhost: admin\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !get("/ready").starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let dump = get("/generations");
    let body: serde_json::Value =
        serde_json::from_str(dump.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["generation"], 1);
    assert_eq!(body["shards"].as_array().unwrap().len(), 2);
    assert!(body["shards"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["applied_generation"] == 1));
    assert_eq!(body["listeners"][0], "front");
    // The configuration itself, in Envoy's ConfigDump shape (compared with Envoy's own in
    // tests/admin.rs).
    let dump = get("/config_dump");
    let dump: serde_json::Value =
        serde_json::from_str(dump.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        dump["configs"][2]["static_listeners"][0]["listener"]["name"],
        "front"
    );
    let prom = get("/stats/prometheus");
    assert!(
        prom.contains("zerohop_downstream_cx_total{shard=\"0\"}"),
        "{prom}"
    );
    let stats = get("/stats");
    assert!(stats.contains("zerohop.downstream_cx_total: 1"), "{stats}");
}

/// A config file caught empty or half written is never applied. Truncated in place and
/// left so (`: > config.yaml`, an editor that empties the file before writing it), it is
/// refused and the running generation keeps serving; written in place with a pause in the
/// middle, only the whole file is applied.
#[test]
fn an_empty_or_half_written_config_file_is_not_applied() {
    let up = echo_upstream();
    let whole = config(up, true);
    let proxy = Proxy::start(&config(up, false));
    let generation = || {
        zerohop_proto::shm::Segment::open(&proxy.shm)
            .unwrap()
            .current_generation()
    };
    let first = generation();
    // New connections at a fixed rate across every write below: none may fail.
    let traffic =
        support::traffic::FixedRate::start(proxy.addr("front"), 2, Duration::from_millis(5));
    std::fs::write(&proxy.config, "").unwrap();
    assert!(
        proxy.wait_log("the config is empty", RELOAD),
        "{}",
        proxy.log()
    );
    std::fs::write(&proxy.config, "# emptied by an editor\n").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(generation(), first, "nothing published");
    echo(proxy.addr("front"), b"still served");

    // In place, in two writes 100 ms apart (less than the watcher's hold-still interval).
    let (head, tail) = whole.split_at(whole.len() / 2);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&proxy.config)
        .unwrap();
    f.write_all(head.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    f.write_all(tail.as_bytes()).unwrap();
    drop(f);
    let extra = proxy.wait_listener("extra", RELOAD);
    echo(extra, b"the whole file");
    echo(proxy.addr("front"), b"and the old listener");
    assert_eq!(generation(), first + 1, "one generation: the whole file");
    // Refused: the empty file and the comment-only one; never a half-written one.
    let log = proxy.log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reload refused"))
        .collect();
    assert_eq!(refusals.len(), 2, "{log}");
    assert!(
        refusals.iter().all(|l| l.contains("the config is empty")),
        "{log}"
    );
    let (ok, failures) = traffic.stop();
    support::traffic::assert_no_failures(ok, &failures, 100);
}

/// A listener a reload adds on a port in use is counted (`listener_create_failure`, as
/// Envoy's `listener_manager.listener_create_failure`) and logged by name; the other
/// listeners keep serving, and the next generation binds it once the port is free.
#[test]
fn a_listener_whose_port_is_in_use_is_counted_and_tried_again() {
    let up = echo_upstream();
    let proxy = Proxy::start(&config(up, false));
    // Bound without SO_REUSEPORT: zerohop's bind on the same port fails.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let with_extra = |timeout: &str| {
        let text = tcp_proxy_listeners(&["front", "extra"], &[up], "", timeout);
        let at = text.match_indices("port_value: 0").nth(1).unwrap().0;
        let end = at + "port_value: 0".len();
        format!("{}port_value: {port}{}", &text[..at], &text[end..])
    };
    proxy.rewrite_config(&with_extra("1s"));
    assert_eq!(
        proxy.wait_counter(Counter::ListenerCreateFailure, 1, RELOAD),
        1
    );
    assert!(
        proxy.wait_log(&format!("listener extra on 127.0.0.1:{port}"), RELOAD),
        "{}",
        proxy.log()
    );
    echo(proxy.addr("front"), b"the others keep serving");
    drop(busy);
    proxy.rewrite_config(&with_extra("2s")); // any change: a new generation tries again
    let extra = proxy.wait_listener("extra", RELOAD);
    assert_eq!(extra.port(), port);
    echo(extra, b"bound on the next generation");
    assert_eq!(proxy.total(Counter::ListenerCreateFailure), 1);
}
