//! `zerohop-bench soak`: does memory grow with the number of connections served?
//!
//! Each target in turn (one worker pinned to one CPU) serves a fixed rate of HTTP/1.1
//! requests, each on a new connection, for the given time; its RSS is sampled every 10 s
//! and the growth reported as the least-squares slope over the second half of the run (after
//! the pools and caches have filled), in MiB per 10 minutes, with the failed requests.
//! Run it for 30 minutes to judge a leak; a short run (CI) catches a gross one.

use std::fmt::Write as _;
use std::time::Duration;

use crate::gen::{self, Proto, Spec};
use crate::procstat;
use crate::targets::{self, Kind, Mode, Tools};

pub const HELP: &str = "\
zerohop-bench soak: RSS slope under a fixed rate of requests, each on a new connection

USAGE:
    zerohop-bench soak [OPTIONS]

OPTIONS:
        --minutes N        per target [default: 30]
        --rate N           requests (= new connections) per second [default: 1000]
        --targets LIST     [default: zerohop,haproxy,nginx,envoy]
        --max-slope MIB    exit 1 if zerohop grows faster than this many MiB per 10 minutes
        --zerohop PATH     [default: next to zerohop-bench]
        --envoy PATH       [default: `envoy` on PATH]
        --out FILE         also write the report to FILE
";

pub struct Args {
    minutes: f64,
    rate: f64,
    targets: Vec<Kind>,
    pub max_slope: Option<f64>,
    tools: Tools,
    pub out: Option<std::path::PathBuf>,
}

pub fn parse(args: Vec<std::ffi::OsString>) -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        minutes: 30.0,
        rate: 1000.0,
        targets: targets::LINEUP.to_vec(),
        max_slope: None,
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
            Long("minutes") => a.minutes = p.value()?.parse()?,
            Long("rate") => a.rate = p.value()?.parse()?,
            Long("targets") => a.targets = targets::parse_targets(&p.value()?.string()?)?,
            Long("max-slope") => a.max_slope = Some(p.value()?.parse()?),
            Long("out") => a.out = Some(p.value()?.into()),
            Short('h') | Long("help") => {
                print!("{HELP}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if a.minutes <= 0.0 || a.rate <= 0.0 || a.targets.contains(&Kind::Direct) {
        return Err("--minutes and --rate must be positive; direct is not a target here".into());
    }
    Ok(a)
}

/// Least-squares slope of `(seconds, bytes)` points, in bytes per second.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// The report, and zerohop's slope in MiB per 10 minutes.
pub fn run(a: &Args) -> Result<(String, Option<f64>), String> {
    crate::hopcost::check_available(&a.targets, Mode::Http, &a.tools)?;
    let (proxy_cpu, load_cpu) = targets::cpus();
    let upstream = crate::upstreams::http_server(load_cpu, 100);
    let mut r = String::new();
    let _ = writeln!(
        r,
        "Soak: {} requests/s, each on a new connection, {} min per target; RSS every 10 s, slope over the second half.\n",
        a.rate, a.minutes
    );
    let _ = writeln!(
        r,
        "| target | requests | failed | RSS start | RSS end | slope (MiB per 10 min) |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|");
    let mut zerohop_slope = None;
    for &k in &a.targets {
        let t = targets::start(k, Mode::Http, upstream, &a.tools, proxy_cpu);
        let pid = t.pid.expect("a proxy target");
        let spec = Spec {
            connections: 64,
            cpus: load_cpu.map(|c| vec![c.id]).unwrap_or_default(),
            duration: Duration::from_secs_f64(a.minutes * 60.0),
            warmup: Duration::ZERO,
            ..Spec::new(Proto::Http1Close, t.front, a.rate)
        };
        let mut samples: Vec<(f64, f64)> = Vec::new();
        let outcome = gen::run(&spec, |p| {
            if p.second % 10 == 0 {
                samples.push((p.second as f64, procstat::rss_bytes(pid) as f64));
                eprint!(
                    "\rsoak {}: {} s, {} ok, {} failed   ",
                    k.name(),
                    p.second,
                    p.ok,
                    p.failed
                );
            }
        });
        eprintln!();
        drop(t);
        let half = &samples[samples.len() / 2..];
        let per_10min = slope(half) * 600.0 / (1 << 20) as f64;
        if k == Kind::Zerohop {
            zerohop_slope = Some(per_10min);
        }
        let mib = |v: Option<&(f64, f64)>| v.map_or(0.0, |p| p.1 / (1 << 20) as f64);
        let _ = writeln!(
            r,
            "| {} | {} | {} | {:.1} MiB | {:.1} MiB | {:+.2} |",
            k.name(),
            outcome.ok,
            outcome.failures.values().sum::<u64>(),
            mib(samples.first()),
            mib(samples.last()),
            per_10min
        );
    }
    Ok((r, zerohop_slope))
}

#[cfg(test)]
mod tests {
    #[test]
    fn slope_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 1.0)).collect();
        assert!((super::slope(&pts) - 3.0).abs() < 1e-9);
        assert_eq!(super::slope(&[(1.0, 2.0)]), 0.0);
    }
}
