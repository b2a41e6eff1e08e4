//! The load generator and the hop-cost mode, run as a user runs them: the real binary against
//! real servers on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_zerohop-bench");

fn bench(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run zerohop-bench")
}

fn tmp(name: &str) -> PathBuf {
    // The pid and this process's start time: CI runs the suite twice (root, then an
    // unprivileged user), and a pid reused from the first pass met a root-owned directory.
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("zerohop-loadgen-{}-{t:x}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        dir
    });
    dir.join(name)
}

/// `zerohop-bench serve` on port 0; its addresses from what it prints.
struct Serve {
    child: Child,
    http: SocketAddr,
    echo: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Serve {
    let mut child = Command::new(BIN)
        .args(["serve", "--http", "127.0.0.1:0", "--echo", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = || -> SocketAddr {
        let line = lines.next().unwrap().unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (http, echo) = (addr(), addr());
    Serve { child, http, echo }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_protocol_holds_its_rate_and_writes_json_hlog_and_hgrm() {
    let s = serve();
    for (proto, url) in [
        ("http1", format!("http://{}/a", s.http)),
        ("http1-close", format!("http://{}/b", s.http)),
        ("h2c", format!("http://{}/c", s.http)),
        ("tcp", format!("tcp://{}", s.echo)),
    ] {
        let (j, hlog, hgrm) = (
            tmp(&format!("{proto}.json")),
            tmp(&format!("{proto}.hlog")),
            tmp(&format!("{proto}.hgrm")),
        );
        let out = bench(&[
            "load",
            "--protocol",
            proto,
            "--rate",
            "400",
            "-d",
            "2",
            "--warmup",
            "0.5",
            "-c",
            "4",
            "--size",
            "100",
            "--quiet",
            "--json",
            j.to_str().unwrap(),
            "--hlog",
            hlog.to_str().unwrap(),
            "--hgrm",
            hgrm.to_str().unwrap(),
            &url,
        ]);
        assert_ok(&out);
        let table = String::from_utf8(out.stdout).unwrap();
        assert!(
            table.contains("p99.99") && table.contains("errors: none"),
            "{proto}: {table}"
        );
        let v = json(&j);
        // Exactly the requests scheduled in the measured 2 s, all answered.
        assert_eq!(v["requests_ok"], 800, "{proto}: {v}");
        assert_eq!(v["errors"], serde_json::json!({}), "{proto}");
        let achieved = v["achieved_rate"].as_f64().unwrap();
        assert!(
            (achieved - 400.0).abs() <= 12.0,
            "{proto}: achieved {achieved}"
        );
        if proto != "tcp" {
            assert_eq!(v["statuses"]["200"], 800, "{proto}");
        }
        let lat = &v["latency_us"];
        let (p50, p99, max) = (
            lat["p50"].as_f64().unwrap(),
            lat["p99"].as_f64().unwrap(),
            lat["max"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{proto}: {lat}");

        // The interval log holds every measured response, once.
        let log = std::fs::read(&hlog).unwrap();
        let mut total = 0;
        for entry in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&log) {
            if let hdrhistogram::serialization::interval_log::LogEntry::Interval(h) = entry.unwrap()
            {
                let bytes = base64_decode(h.encoded_histogram());
                let hist: hdrhistogram::Histogram<u64> =
                    hdrhistogram::serialization::Deserializer::new()
                        .deserialize(&mut &bytes[..])
                        .unwrap();
                total += hist.len();
            }
        }
        assert_eq!(total, 800, "{proto}: hlog");
        // The percentile distribution ends at the 100th percentile with every response.
        let hgrm = std::fs::read_to_string(&hgrm).unwrap();
        let last = hgrm
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap();
        let cols: Vec<&str> = last.split_whitespace().collect();
        assert_eq!(
            (cols[1], cols[2]),
            ("1.000000000000", "800"),
            "{proto}: {last}"
        );
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | T.iter().position(|&t| t == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// An echo server over one connection that stops answering for `stall` once, after `after`
/// exchanges.
fn stalling_echo(after: usize, stall: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                s.set_nodelay(true).unwrap();
                let mut buf = [0u8; 64];
                let mut n = 0;
                while s.read_exact(&mut buf).is_ok() {
                    n += 1;
                    if n == after {
                        std::thread::sleep(stall);
                    }
                    if s.write_all(&buf).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Coordinated omission: a 300 ms stall at 200 requests/s over one connection delays the 60
/// requests scheduled during it. Measured from the intended send time, about 40 of them
/// (6.7% of 600) wait over 100 ms. A generator that measured from the actual send would see
/// one slow request (0.17%), and its p95 would be a normal round trip.
#[test]
fn a_stall_counts_against_every_request_scheduled_during_it() {
    let addr = stalling_echo(200, Duration::from_millis(300));
    let j = tmp("stall.json");
    let out = bench(&[
        "load",
        "--rate",
        "200",
        "-d",
        "3",
        "--warmup",
        "0",
        "-c",
        "1",
        "--quiet",
        "--json",
        j.to_str().unwrap(),
        &format!("tcp://{addr}"),
    ]);
    assert_ok(&out);
    let v = json(&j);
    assert_eq!(v["requests_ok"], 600, "{v}");
    let lat = &v["latency_us"];
    let ms = |k: &str| lat[k].as_f64().unwrap() / 1e3;
    assert!(ms("max") >= 290.0, "the stalled request itself: {lat}");
    assert!(ms("p90") < 100.0, "{lat}");
    assert!(
        ms("p99") >= 150.0,
        "requests queued behind the stall: {lat}"
    );
    // They waited for the connection, not for the generator.
    assert!(
        v["send_wait_us"]["p99"].as_f64().unwrap() >= 100_000.0,
        "{v}"
    );
}

/// `load` at 100/s for 1 s (no warm-up) against `url`: its JSON summary.
fn one_second_at_100(url: &str) -> serde_json::Value {
    let j = tmp("one-second.json");
    let out = bench(&[
        "load",
        "--rate",
        "100",
        "-d",
        "1",
        "--warmup",
        "0",
        "--quiet",
        "--json",
        j.to_str().unwrap(),
        url,
    ]);
    assert_ok(&out);
    json(&j)
}

#[test]
fn failures_are_counted_by_kind() {
    // Nothing listening: every request fails to connect.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let v = one_second_at_100(&format!("http://{dead}/"));
    assert_eq!(v["requests_ok"], 0);
    assert_eq!(v["errors"]["connect"], 100, "{v}");

    // A server that closes every connection without answering.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            drop(s);
        }
    });
    let v = one_second_at_100(&format!("http://{addr}/"));
    let errors: u64 = v["errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(errors, 100, "{v}");
    assert!(
        v["errors"].get("closed").is_some() || v["errors"].get("read").is_some(),
        "{v}"
    );

    // No rate: an open-loop generator refuses to guess one.
    let out = bench(&["load", "http://127.0.0.1:1/"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate is required"));
}

/// `hop-cost` end to end against every target installed here. CI installs them all and sets
/// ZEROHOP_REQUIRE_PEERS=1, so there a missing one fails instead of being left out.
#[test]
fn hop_cost_reports_tables_chart_and_distributions() {
    let require = std::env::var_os("ZEROHOP_REQUIRE_PEERS").is_some();
    let runs = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut targets = vec!["direct", "zerohop"];
    for (name, ok) in [
        ("haproxy", runs("haproxy", "-v")),
        (
            "nginx",
            runs("nginx", "-v")
                && Path::new("/usr/lib/nginx/modules/ngx_stream_module.so").exists(),
        ),
        ("envoy", runs("envoy", "--version")),
    ] {
        if ok {
            targets.push(name);
        } else {
            assert!(
                !require,
                "{name} is required here (ZEROHOP_REQUIRE_PEERS) but not installed"
            );
            eprintln!("hop-cost test: {name} not installed, left out");
        }
    }
    // `cargo test --workspace` builds the data plane's binary beside this one.
    let zerohop = Path::new(BIN).with_file_name("zerohop");
    assert!(
        zerohop.exists(),
        "{} missing: cargo build -p zerohop",
        zerohop.display()
    );
    let dir = tmp("hop-cost");
    let list = targets.join(",");
    let out = bench(&[
        "hop-cost",
        "--targets",
        &list,
        "--rate",
        "300",
        "-d",
        "1",
        "--warmup",
        "0.5",
        "--rounds",
        "2",
        "--zerohop",
        zerohop.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let md = std::fs::read_to_string(dir.join("hop-cost.md")).unwrap();
    for t in &targets {
        assert!(md.contains(&format!("| {t} |")), "{t} missing:\n{md}");
        let hgrm = std::fs::read_to_string(dir.join(format!("{t}.hgrm"))).unwrap();
        assert!(hgrm.contains("#[Max"), "{t}.hgrm");
    }
    assert!(md.contains("vCPU per 1000 req/s") && md.contains("Latency added by the hop"));
    let svg = std::fs::read_to_string(dir.join("hop-cost.svg")).unwrap();
    assert_eq!(svg.matches("<polyline").count(), targets.len());
    let j: serde_json::Value = json(&dir.join("hop-cost.json"));
    let rounds = &j[1]["rounds"];
    assert_eq!(rounds.as_array().unwrap().len(), 2);
    // Every proxy round used some CPU and served every request.
    for t in j.as_array().unwrap().iter().skip(1) {
        for r in t["rounds"].as_array().unwrap() {
            assert!(r["vcpu_per_1000_rps"].as_f64().unwrap() > 0.0, "{t}");
            assert_eq!(r["summary"]["requests_ok"], 300, "{t}");
        }
    }
}
