//! `zerohop-bench xds`: how long an xDS update takes to be served, zerohop next to Envoy.
//!
//! For each cluster count, each round starts a fresh scripted ADS server
//! (tests/xds/ads_server.py) and a fresh proxy, then measures two steps from the moment the
//! server sends the response:
//!
//! - **cold**: N EDS clusters by CDS, then their N assignments by EDS, until every cluster
//!   serves its endpoint;
//! - **update**: new endpoints for all N clusters in one EDS response.
//!
//! Two end points per step, for both proxies:
//! - **applied**: zerohop: the last shard's acknowledgement of the generation (each shard
//!   stamps it with CLOCK_MONOTONIC in the segment, the clock the server stamps its send
//!   time with). Envoy: the first `/clusters` poll (every 10 ms) that shows every cluster
//!   with its new endpoint; the poll interval and the time to fetch `/clusters` bound its
//!   precision.
//! - **ACK**: the server receives the acknowledgement of the step's last response. zerohop
//!   sends it only once every shard applied; Envoy sends it once its main thread applied.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::ads::AdsServer;
use zerohop_proto::shm::{monotonic_ns, Segment};

use crate::targets::{free_port, Tools};

pub const HELP: &str = "\
zerohop-bench xds: time from an xDS response to applied and to ACK, zerohop and Envoy

USAGE:
    zerohop-bench xds [OPTIONS]

OPTIONS:
        --clusters LIST    cluster counts [default: 10,1000,10000]
        --rounds N         [default: 3]
        --api API          GRPC (state of the world) or DELTA_GRPC [default: GRPC]
        --no-envoy         zerohop only
        --python PATH      Python with grpcio and xds-protos
                           [default: $ZEROHOP_XDS_PYTHON, else target/ci/xds-venv/bin/python3]
        --out FILE         also write the report to FILE
";

pub struct Args {
    clusters: Vec<usize>,
    rounds: usize,
    api: String,
    envoy: bool,
    python: PathBuf,
    tools: Tools,
    out: Option<PathBuf>,
}

pub fn parse(args: Vec<std::ffi::OsString>) -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        clusters: vec![10, 1000, 10000],
        rounds: 3,
        api: "GRPC".into(),
        envoy: true,
        python: crate::ads::default_python(),
        tools: Tools::default(),
        out: None,
    };
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next()? {
        match arg {
            Long("clusters") => {
                a.clusters = p
                    .value()?
                    .string()?
                    .split(',')
                    .map(|n| n.trim().parse())
                    .collect::<Result<_, _>>()
                    .map_err(|e| lexopt::Error::Custom(format!("--clusters: {e}").into()))?
            }
            Long("rounds") => a.rounds = p.value()?.parse()?,
            Long("api") => a.api = p.value()?.string()?,
            Long("no-envoy") => a.envoy = false,
            Long("python") => a.python = p.value()?.into(),
            Long("out") => a.out = Some(p.value()?.into()),
            Short('h') | Long("help") => {
                print!("{HELP}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if !matches!(a.api.as_str(), "GRPC" | "DELTA_GRPC") {
        return Err(lexopt::Error::Custom("--api is GRPC or DELTA_GRPC".into()));
    }
    Ok(a)
}

/// The response of `ty` at `version` that carried all `n` resources and the client's ACK:
/// `(sent, acknowledged)` in CLOCK_MONOTONIC ns.
fn exchange(ads: &AdsServer, ty: &str, version: &str, n: usize) -> Result<(u64, u64), String> {
    let (resp, ack) = ads.exchange(
        ty,
        version,
        |names| names.len() == n,
        Duration::from_secs(300),
    )?;
    if !ack["error"].is_null() {
        return Err(format!("{ty} v{version} was NACKed: {}", ack["error"]));
    }
    let ns = |e: &Value| e["mono_ns"].as_u64().unwrap_or(0);
    Ok((ns(&resp), ns(&ack)))
}

fn clusters(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                "name": format!("c{i}"), "type": "EDS", "connect_timeout": "1s",
                "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
            })
        })
        .collect()
}

/// Port of cluster `i`'s endpoint in assignment version `v` (1 or 2): disjoint ranges, so a
/// poll of Envoy's `/clusters` tells which version a cluster serves.
fn port(v: usize, i: usize) -> u16 {
    (20_000 + (v - 1) * 20_000 + i % 20_000) as u16
}

fn assignments(n: usize, v: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                "cluster_name": format!("c{i}"),
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": port(v, i)}}}}]}],
            })
        })
        .collect()
}

enum Proxy {
    Zerohop { child: Child, shm: PathBuf },
    Envoy { child: Child, admin: u16 },
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let (Proxy::Zerohop { child, .. } | Proxy::Envoy { child, .. }) = self;
        let _ = child.kill();
        let _ = child.wait();
        if let Proxy::Zerohop { shm, .. } = self {
            let _ = std::fs::remove_file(&*shm);
            let _ = std::fs::remove_file(format!("{}.upgrade", shm.display()));
        }
    }
}

fn start(kind: &str, ads: u16, api: &str, tools: &Tools) -> Result<Proxy, String> {
    let admin = free_port();
    let tag = format!("{kind}-{}-{admin}", std::process::id());
    let cfg = std::env::temp_dir().join(format!("zerohop-bench-xds-{tag}.yaml"));
    let server = crate::ads::socket_address(([127, 0, 0, 1], ads).into());
    let yaml = crate::ads::bootstrap("xds-bench", &server, api, admin, "0s");
    std::fs::write(&cfg, yaml).map_err(|e| e.to_string())?;
    let quiet = |mut c: Command| {
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    Ok(match kind {
        "zerohop" => {
            let shm = PathBuf::from(format!("/dev/shm/zerohop-bench-xds-{tag}"));
            let c = crate::targets::zerohop_command(tools, &cfg, &shm);
            let child = quiet(c).spawn().map_err(|e| format!("zerohop: {e}"))?;
            Proxy::Zerohop { child, shm }
        }
        _ => {
            let c = crate::targets::envoy_command(tools, &cfg);
            let child = quiet(c).spawn().map_err(|e| format!("envoy: {e}"))?;
            Proxy::Envoy { child, admin }
        }
    })
}

/// `GET path` on 127.0.0.1:`port`, the whole response (`connection: close`).
fn admin_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// When every cluster `c0..cN` shows its version-`v` endpoint in Envoy's `/clusters`
/// (polled every 10 ms), in CLOCK_MONOTONIC ns.
fn envoy_serving(admin: u16, n: usize, v: usize, timeout: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + timeout;
    let range = port(v, 0)..port(v, 0) + n.min(20_000) as u16;
    loop {
        let polled = monotonic_ns();
        if let Some(body) = admin_get(admin, "/clusters") {
            let mut serving: HashMap<&str, ()> = HashMap::new();
            for line in body.lines().filter(|l| l.contains("::health_flags::")) {
                let mut parts = line.split("::");
                let (Some(cluster), Some(host)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let port = host.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                if cluster.starts_with('c') && port.is_some_and(|p| range.contains(&p)) {
                    serving.insert(cluster, ());
                }
            }
            if serving.len() >= n {
                return Ok(polled);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "Envoy did not serve {n} clusters within {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// When the last shard applied the generation that followed `before` (CLOCK_MONOTONIC ns).
fn zerohop_applied(shm: &Path, before: u64, timeout: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(seg) = Segment::open(shm) {
            let g = seg.current_generation();
            if g > before && seg.active_shards() > 0 && seg.all_applied(g) {
                let last = (0..seg.active_shards())
                    .map(|s| seg.shard_ack(s).2)
                    .max()
                    .unwrap_or(0);
                return Ok(last);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("zerohop applied nothing after generation {before}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn generation(shm: &Path) -> u64 {
    Segment::open(shm).map_or(0, |s| s.current_generation())
}

/// One step's times in ms: (applied, ACK).
type Step = (f64, f64);

/// One round for one proxy: (cold, update).
fn round(a: &Args, kind: &str, n: usize) -> Result<(Step, Step), String> {
    let ms = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e6;
    let mut ads = AdsServer::start(&a.python, None)?;
    ads.set("lds", "1", vec![])?;
    ads.set("eds", "1", assignments(n, 1))?;
    ads.set("cds", "1", clusters(n))?;
    let proxy = start(kind, ads.port, &a.api, &a.tools)?;
    let timeout = Duration::from_secs(300);
    let (cds_sent, _) = exchange(&ads, "cds", "1", n)?;
    let (_, eds_ack) = exchange(&ads, "eds", "1", n)?;
    let cold_applied = match &proxy {
        Proxy::Zerohop { shm, .. } => zerohop_applied(shm, 0, timeout)?,
        Proxy::Envoy { admin, .. } => envoy_serving(*admin, n, 1, timeout)?,
    };
    let cold = (ms(cds_sent, cold_applied), ms(cds_sent, eds_ack));
    // Let the proxy settle (Envoy's first /clusters polls, zerohop's first acks).
    std::thread::sleep(Duration::from_millis(300));
    let before = match &proxy {
        Proxy::Zerohop { shm, .. } => generation(shm),
        Proxy::Envoy { .. } => 0,
    };
    ads.set("eds", "2", assignments(n, 2))?;
    let (sent, ack) = exchange(&ads, "eds", "2", n)?;
    let applied = match &proxy {
        Proxy::Zerohop { shm, .. } => zerohop_applied(shm, before, timeout)?,
        Proxy::Envoy { admin, .. } => envoy_serving(*admin, n, 2, timeout)?,
    };
    let update = (ms(sent, applied), ms(sent, ack));
    drop(proxy);
    Ok((cold, update))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn run(a: &Args) -> Result<String, String> {
    if !crate::ads::python_ready(&a.python) {
        return Err(format!(
            "{} cannot import grpc and xds-protos (python3 -m venv target/ci/xds-venv && target/ci/xds-venv/bin/pip install -r tests/xds/requirements.txt, or --python PATH)",
            a.python.display()
        ));
    }
    let kinds: Vec<&str> = match a.envoy {
        true => vec!["zerohop", "envoy"],
        false => vec!["zerohop"],
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "xDS ({}) response to applied / to ACK, ms (median of {} rounds; each round a fresh server and proxy, proxies alternating)\n",
        a.api, a.rounds
    );
    let _ = writeln!(
        out,
        "{:>8} {:<8} {:>13} {:>11} {:>15} {:>13}",
        "clusters", "proxy", "cold applied", "cold ACK", "update applied", "update ACK"
    );
    for &n in &a.clusters {
        let mut results: HashMap<&str, Vec<(Step, Step)>> = HashMap::new();
        for r in 0..a.rounds {
            for &kind in &kinds {
                let got = round(a, kind, n)?;
                eprintln!("{n} clusters, round {}, {kind}: {got:?}", r + 1);
                results.entry(kind).or_default().push(got);
            }
        }
        let mut medians: HashMap<&str, [f64; 4]> = HashMap::new();
        for &kind in &kinds {
            let rs = &results[kind];
            let m = [
                median(rs.iter().map(|r| r.0 .0).collect()),
                median(rs.iter().map(|r| r.0 .1).collect()),
                median(rs.iter().map(|r| r.1 .0).collect()),
                median(rs.iter().map(|r| r.1 .1).collect()),
            ];
            let _ = writeln!(
                out,
                "{n:>8} {kind:<8} {:>13.1} {:>11.1} {:>15.1} {:>13.1}",
                m[0], m[1], m[2], m[3]
            );
            medians.insert(kind, m);
        }
        if let (Some(z), Some(e)) = (medians.get("zerohop"), medians.get("envoy")) {
            let _ = writeln!(
                out,
                "{n:>8} {:<8} {:>12.2}x {:>10.2}x {:>14.2}x {:>12.2}x",
                "envoy/zh",
                e[0] / z[0],
                e[1] / z[1],
                e[2] / z[2],
                e[3] / z[3]
            );
        }
    }
    if let Some(path) = &a.out {
        std::fs::write(path, &out).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(out)
}
