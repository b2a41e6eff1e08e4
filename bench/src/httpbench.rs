//! `zerohop-bench http`: HTTP/1.1 keep-alive throughput and proxy CPU per request, for
//! several response sizes, through zerohop, HAProxy (HTTP mode), nginx (proxy_pass with
//! upstream keep-alive) and Envoy (`--concurrency 1`), against a direct connection.
//!
//! Each proxy runs one worker pinned to one CPU; the load (closed loop: every connection
//! sends its next request when the previous one completes) and the upstream share the other.
//! On a 2-CPU machine the load side may saturate before a proxy does, so the figure that
//! compares proxies is *requests per proxy CPU-second* (req/s per core): the requests
//! completed in the measured window divided by the CPU time the proxy used in that window.

use std::fmt::Write as _;
use std::time::Duration;

use crate::gen::{self, Proto, Spec};
use crate::procstat;
use crate::targets::{self, Kind, Mode, Tools};

pub const HELP: &str = "\
zerohop-bench http: HTTP/1.1 keep-alive req/s and proxy CPU per request

USAGE:
    zerohop-bench http [OPTIONS]

OPTIONS:
        --sizes LIST       response body sizes in bytes [default: 100,16384,1048576]
        --targets LIST     [default: direct,zerohop,haproxy,nginx,envoy]
    -c, --connections N    [default: 50]
    -d, --duration SECS    measured time per target, size and round [default: 5]
        --rounds N         [default: 3]
        --zerohop PATH     [default: next to zerohop-bench]
        --zerohop-baseline PATH
                           another zerohop build, run as the target zerohop-baseline (add it
                           to --targets): e.g. the build before a change, in the same run
        --envoy PATH       [default: `envoy` on PATH]
        --gzip             the upstream answers text and the client sends `accept-encoding:
                           gzip`; every proxy compresses with gzip at level 1, 32 KiB window
                           (zerohop and Envoy: envoy.filters.http.compressor; HAProxy:
                           compression algo gzip; nginx: gzip on); direct is uncompressed
        --protocol P       http1, h2c (clients speak h2c: HTTP/1.1 upstream) or h2c-h2 (h2c
                           both ways; nginx cannot proxy HTTP/2 upstream: leave it out) or
                           tls (TLS 1.3 terminated by each proxy, HTTP/1.1 keep-alive inside),
                           tls-full or tls-resumed (a new TLS connection per request: full
                           handshakes, or sessions resumed by ticket) [default: http1]
        --streams N        h2c: concurrent streams per connection [default: 10]
        --out FILE         also write the report to FILE
";

pub struct Args {
    sizes: Vec<usize>,
    targets: Vec<Kind>,
    connections: usize,
    duration: f64,
    rounds: usize,
    tools: Tools,
    out: Option<std::path::PathBuf>,
    gzip: bool,
    /// `Mode::Http`, or `Mode::H2c`.
    mode: Mode,
    streams: usize,
    /// TLS: a new connection per request, resuming sessions (`Some(true)`) or not.
    handshakes: Option<bool>,
}

pub fn parse(args: Vec<std::ffi::OsString>) -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        sizes: vec![100, 16384, 1 << 20],
        targets: [&[Kind::Direct][..], &targets::LINEUP].concat(),
        connections: 50,
        duration: 5.0,
        rounds: 3,
        tools: Tools::default(),
        out: None,
        gzip: false,
        mode: Mode::Http,
        streams: 10,
        handshakes: None,
    };
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next()? {
        if let Some(name) = Tools::option(&arg) {
            a.tools.set(name, p.value()?);
            continue;
        }
        match arg {
            Long("sizes") => a.sizes = crate::parse_list(&p.value()?.string()?)?,
            Long("targets") => a.targets = targets::parse_targets(&p.value()?.string()?)?,
            Short('c') | Long("connections") => a.connections = p.value()?.parse()?,
            Short('d') | Long("duration") => a.duration = p.value()?.parse()?,
            Long("rounds") => a.rounds = p.value()?.parse()?,
            Long("out") => a.out = Some(p.value()?.into()),
            Long("gzip") => a.gzip = true,
            Long("protocol") => {
                let v = p.value()?.string()?;
                a.mode = match v.as_str() {
                    "http1" => Mode::Http,
                    "h2c" => Mode::H2c { upstream_h2: false },
                    "h2c-h2" => Mode::H2c { upstream_h2: true },
                    "tls" => Mode::Tls,
                    "tls-full" | "tls-resumed" => {
                        a.handshakes = Some(v == "tls-resumed");
                        Mode::Tls
                    }
                    other => {
                        return Err(
                            format!("--protocol {other:?}: http1, h2c, h2c-h2 or tls").into()
                        )
                    }
                }
            }
            Long("streams") => a.streams = p.value()?.parse()?,
            Short('h') | Long("help") => {
                print!("{HELP}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if a.rounds == 0 || a.connections == 0 || a.sizes.is_empty() || a.streams == 0 {
        return Err("--rounds, --connections, --streams and --sizes must be non-empty".into());
    }
    if a.gzip && a.mode != Mode::Http {
        return Err("--gzip is measured over HTTP/1.1 only".into());
    }
    Ok(a)
}

#[derive(Clone, Copy, Default)]
struct Sample {
    rps: f64,
    /// Proxy CPU seconds in the measured window.
    cpu: Option<f64>,
    requests: u64,
    errors: u64,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

pub fn run(a: &Args) -> Result<String, String> {
    crate::hopcost::check_available(&a.targets, a.mode, &a.tools)?;
    let mode = match a.gzip {
        true => Mode::HttpGzip,
        false => a.mode,
    };
    let (proto, streams, what) = match a.mode {
        Mode::H2c { upstream_h2 } => (
            Proto::H2c,
            a.streams,
            format!(
                "h2c ({} concurrent streams per connection) to the proxy, HTTP/{} to the upstream",
                a.streams,
                if upstream_h2 { "2" } else { "1.1" }
            ),
        ),
        Mode::Tls => {
            crate::gen::client::trust(targets::tls_files().0.clone());
            let (proto, conns) = match a.handshakes {
                None => (Proto::Https, "HTTP/1.1 keep-alive inside"),
                Some(false) => (Proto::HttpsFull, "a new connection per request, each a full handshake, HTTP/1.1 inside"),
                Some(true) => (Proto::HttpsResumed, "a new connection per request, each resuming a session (TLS 1.3 ticket), HTTP/1.1 inside"),
            };
            (
                proto,
                1,
                format!("TLS 1.3 (ECDSA P-256, ALPN http/1.1) terminated by the proxy, {conns}, HTTP/1.1 keep-alive to the upstream (direct: plain)"),
            )
        }
        _ => (Proto::Http1, 1, "HTTP/1.1 keep-alive".to_owned()),
    };
    let (proxy_cpu, load_cpu) = targets::cpus();
    let mut r = String::new();
    let _ = writeln!(
        r,
        "{what}, closed loop over {} connections, {} rounds x {} s per target and size (after 1 s warm-up), order rotated each round. Proxies: one worker pinned to one CPU; load and upstream on the other.{}\n",
        a.connections, a.rounds, a.duration,
        match a.gzip {
            true => " Text responses, compressed by each proxy with gzip (level 1, 32 KiB window); direct is uncompressed.",
            false => "",
        }
    );
    for &size in &a.sizes {
        let upstream = match a.gzip {
            true => crate::upstreams::http_text_server(load_cpu, size),
            false => crate::upstreams::http_server(load_cpu, size),
        };
        let samples = targets::Lineup {
            kinds: &a.targets,
            mode,
            upstream,
            tools: &a.tools,
            proxy_cpu,
        }
        .interleaved(a.rounds, &format!("{size} B, "), |t| {
            let spec = Spec {
                connections: a.connections,
                streams,
                cpus: load_cpu.map(|c| vec![c.id]).unwrap_or_default(),
                duration: Duration::from_secs_f64(a.duration),
                warmup: Duration::from_secs(1),
                spin: Duration::ZERO,
                headers: match a.gzip {
                    true => vec![("Accept-Encoding".into(), "gzip".into())],
                    false => Vec::new(),
                },
                ..Spec::new(crate::hopcost::plain_for_direct(proto, t), t.front, 0.0)
            };
            // Proxy CPU at the end of the warm-up second and at the end of the run.
            let mut marks: Vec<f64> = Vec::new();
            let outcome = gen::run(&spec, |p| {
                if let Some(pid) = t.pid {
                    if p.second == 1 || !p.warmup {
                        marks.push(procstat::cpu_seconds(pid));
                    }
                }
            });
            Sample {
                rps: outcome.achieved_rate,
                cpu: (marks.len() >= 2).then(|| marks[marks.len() - 1] - marks[0]),
                requests: outcome.ok,
                errors: outcome.failures.values().sum(),
            }
        });
        let _ = writeln!(r, "Responses of {size} B:\n");
        let _ = writeln!(r, "| target | req/s | proxy CPU | proxy CPU us per request | req per proxy CPU-second | errors |");
        let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|");
        let per_core = |s: &[Sample]| {
            median(
                s.iter()
                    .filter_map(|x| x.cpu.map(|c| x.requests as f64 / c.max(1e-3)))
                    .collect(),
            )
        };
        for (k, s) in a.targets.iter().zip(&samples) {
            let rps = median(s.iter().map(|x| x.rps).collect()).unwrap_or(0.0);
            let util = median(
                s.iter()
                    .filter_map(|x| x.cpu.map(|c| c / a.duration))
                    .collect(),
            );
            let us = median(
                s.iter()
                    .filter_map(|x| x.cpu.map(|c| c * 1e6 / x.requests.max(1) as f64))
                    .collect(),
            );
            let errors: u64 = s.iter().map(|x| x.errors).sum();
            let fmt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("—".to_owned(), f);
            let _ = writeln!(
                r,
                "| {} | {rps:.0} | {} | {} | {} | {errors} |",
                k.name(),
                fmt(util, &|u| format!("{:.0}%", u * 100.0)),
                fmt(us, &|u| format!("{u:.1}")),
                fmt(per_core(s), &|v| format!("{v:.0}")),
            );
        }
        if let Some(z) = a.targets.iter().position(|&k| k == Kind::Zerohop) {
            let _ = writeln!(r, "\nzerohop / baseline: req per proxy CPU-second (higher is better), CPU per request (lower is better):\n");
            let _ = writeln!(r, "| baseline | req per CPU-second | CPU per request |");
            let _ = writeln!(r, "|---|---:|---:|");
            for (i, k) in a.targets.iter().enumerate() {
                if i == z || *k == Kind::Direct {
                    continue;
                }
                match (per_core(&samples[z]), per_core(&samples[i])) {
                    (Some(zv), Some(bv)) => {
                        let _ = writeln!(r, "| {} | {:.2}x | {:.2}x |", k.name(), zv / bv, bv / zv);
                    }
                    _ => {
                        let _ = writeln!(r, "| {} | — | — |", k.name());
                    }
                }
            }
        }
        let _ = writeln!(r);
    }
    if let Some(p) = &a.out {
        std::fs::write(p, &r).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(r)
}
