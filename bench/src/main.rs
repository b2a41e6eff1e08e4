//! `zerohop-bench`: side-by-side benchmarks. Every figure is measured in one invocation
//! against a baseline (a direct connection, HAProxy), in interleaved rounds, and reported
//! with ratios: on a shared machine absolute numbers drift, ratios from one run hold.

mod ads;
mod chart;
mod churn;
mod config;
mod gen;
mod hopcost;
mod httpbench;
mod idlemem;
mod load;
mod loadcmd;
mod procstat;
mod soak;
mod targets;
mod upstreams;
mod validate;
mod xdsbench;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use targets::{Kind, Mode, Tools};

const HELP: &str = "\
zerohop-bench: side-by-side benchmarks, reported as ratios

USAGE:
    zerohop-bench l4 [OPTIONS]
    zerohop-bench config [OPTIONS]
    zerohop-bench load [OPTIONS] --rate N URL     (see `zerohop-bench load --help`)
    zerohop-bench hop-cost [OPTIONS]              (see `zerohop-bench hop-cost --help`)
    zerohop-bench http [OPTIONS]                  (see `zerohop-bench http --help`)
    zerohop-bench idle-http [OPTIONS]             (see `zerohop-bench idle-http --help`)
    zerohop-bench soak [OPTIONS]                  (see `zerohop-bench soak --help`)
    zerohop-bench xds [OPTIONS]                   (see `zerohop-bench xds --help`)
    zerohop-bench validate [OPTIONS]              (see `zerohop-bench validate --help`)
    zerohop-bench serve [OPTIONS]                 (see `zerohop-bench serve --help`)

    Runs direct, zerohop (1 shard), HAProxy (1 thread, TCP mode) and HAProxy with
    `option splice-auto`, each proxy pinned to one CPU and the load on another, and measures:
      (a) small request/response exchanges over persistent connections: exchanges/s and
          proxy CPU microseconds per exchange;
      (b) bulk upload: Gbit/s and GB moved per proxy CPU-second;
      (c) proxy RSS per idle proxied connection (1,000 connections).

    `config` measures the live-configuration path: publish -> applied-by-every-shard latency
    for several config sizes (10 endpoints per cluster), the memory of both processes, the data
    plane's RSS after many swaps, and p99 / p99.9 of fixed-rate traffic with a reload or a config
    change every second (through control, and published straight to the data plane) against the
    same traffic without changes.

OPTIONS (config):
        --sizes LIST       cluster counts, or `none` [default: 10,1000,10000]
        --updates N        updates measured per size [default: 50]
        --swaps N          swaps for the memory-return check (1,000 clusters) [default: 100]
        --rate N           exchanges/s for the churn comparison [default: 1000]
        --churn-seconds N  length of each churn run; 0 skips it [default: 20]
        --churn-rounds N   rounds of the churn arms (see bench/README.md) [default: 3]
        --churn-clusters N clusters in the churn runs' config (10 endpoints each) [default: 1000]

OPTIONS (l4):
        --seconds N        length of each measurement [default: 5]
        --rounds N         interleaved rounds; the median is reported [default: 3]
        --conns N          connections for the exchange test [default: 50]
        --size N           bytes per request and per response [default: 64]
        --bulk-conns N     connections for the bulk test [default: 4]
        --idle N           idle connections for the RSS test [default: 1000]
        --zerohop PATH     the zerohop binary [default: next to zerohop-bench]
        --zerohop-arg ARG  an extra flag for zerohop (repeatable), e.g. --zerohop-arg=--io-driver=epoll
        --no-haproxy       skip HAProxy (when it is not installed)
        --out FILE         also write the markdown report to FILE
";

#[derive(Debug)]
struct Opts {
    command: String,
    sizes: Vec<usize>,
    updates: usize,
    swaps: usize,
    rate: f64,
    churn_seconds: f64,
    churn_rounds: usize,
    churn_clusters: usize,
    seconds: f64,
    rounds: usize,
    conns: usize,
    size: usize,
    bulk_conns: usize,
    idle: usize,
    zerohop: PathBuf,
    zerohop_args: Vec<String>,
    haproxy: bool,
    out: Option<PathBuf>,
}

fn parse() -> Result<Opts, lexopt::Error> {
    use lexopt::prelude::*;
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_default();
    let mut o = Opts {
        command: String::new(),
        sizes: vec![10, 1000, 10000],
        updates: 50,
        swaps: 100,
        rate: 1000.0,
        churn_seconds: 20.0,
        churn_rounds: 3,
        churn_clusters: 1000,
        seconds: 5.0,
        rounds: 3,
        conns: 50,
        size: 64,
        bulk_conns: 4,
        idle: 1000,
        zerohop: exe_dir.join("zerohop"),
        zerohop_args: Vec::new(),
        haproxy: true,
        out: None,
    };
    let mut p = lexopt::Parser::from_env();
    let mut cmd = None;
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if cmd.is_none() => cmd = Some(v.string()?),
            Long("seconds") => o.seconds = p.value()?.parse()?,
            Long("sizes") => {
                let v = p.value()?.string()?;
                o.sizes = match v.as_str() {
                    "none" => Vec::new(),
                    list => parse_list(list).map_err(|e| format!("--sizes: {e}"))?,
                };
            }
            Long("updates") => o.updates = p.value()?.parse()?,
            Long("swaps") => o.swaps = p.value()?.parse()?,
            Long("rate") => o.rate = p.value()?.parse()?,
            Long("churn-seconds") => o.churn_seconds = p.value()?.parse()?,
            Long("churn-rounds") => o.churn_rounds = p.value()?.parse()?,
            Long("churn-clusters") => o.churn_clusters = p.value()?.parse()?,
            Long("rounds") => o.rounds = p.value()?.parse()?,
            Long("conns") => o.conns = p.value()?.parse()?,
            Long("size") => o.size = p.value()?.parse()?,
            Long("bulk-conns") => o.bulk_conns = p.value()?.parse()?,
            Long("idle") => o.idle = p.value()?.parse()?,
            Long("zerohop") => o.zerohop = p.value()?.into(),
            Long("zerohop-arg") => o.zerohop_args.push(p.value()?.string()?),
            Long("no-haproxy") => o.haproxy = false,
            Long("out") => o.out = Some(p.value()?.into()),
            Short('h') | Long("help") => {
                print!("{HELP}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    match cmd.as_deref() {
        Some(c @ ("l4" | "config")) => {
            o.command = c.to_owned();
            Ok(o)
        }
        _ => Err("expected the `l4` or `config` subcommand (see --help)".into()),
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    exch_per_s: f64,
    cpu_us_per_exch: Option<f64>,
    gbit_s: f64,
    gb_per_cpu_s: Option<f64>,
    rss_per_idle: Option<f64>,
}

/// Parses a comma-separated list of numbers.
fn parse_list<T: std::str::FromStr>(v: &str) -> Result<Vec<T>, String>
where
    T::Err: std::fmt::Display,
{
    v.split(',')
        .map(|n| n.trim().parse::<T>().map_err(|e| format!("{n:?}: {e}")))
        .collect()
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("zerohop-bench: {e}");
    std::process::exit(2);
}

fn main() {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match args.first().and_then(|a| a.to_str()) {
        Some("load") => {
            args.remove(0);
            let a = loadcmd::parse_load(args).unwrap_or_else(|e| fail(e));
            loadcmd::load(a).unwrap_or_else(|e| fail(e));
            return;
        }
        Some("hop-cost") => {
            args.remove(0);
            let a = hopcost::parse(args).unwrap_or_else(|e| fail(e));
            print!("{}", hopcost::run(&a).unwrap_or_else(|e| fail(e)));
            return;
        }
        Some("xds") => {
            args.remove(0);
            let a = xdsbench::parse(args).unwrap_or_else(|e| fail(e));
            print!("{}", xdsbench::run(&a).unwrap_or_else(|e| fail(e)));
            return;
        }
        Some("http") => {
            args.remove(0);
            let a = httpbench::parse(args).unwrap_or_else(|e| fail(e));
            print!("{}", httpbench::run(&a).unwrap_or_else(|e| fail(e)));
            return;
        }
        Some("idle-http") => {
            args.remove(0);
            let a = idlemem::parse(args).unwrap_or_else(|e| fail(e));
            let report = idlemem::run(&a).unwrap_or_else(|e| fail(e));
            print!("{report}");
            if let Some(path) = &a.out {
                std::fs::write(path, &report).unwrap_or_else(|e| fail(e));
            }
            return;
        }
        Some("soak") => {
            args.remove(0);
            let a = soak::parse(args).unwrap_or_else(|e| fail(e));
            let (report, slope) = soak::run(&a).unwrap_or_else(|e| fail(e));
            print!("{report}");
            if let Some(path) = &a.out {
                std::fs::write(path, &report).unwrap_or_else(|e| fail(e));
            }
            if let (Some(max), Some(s)) = (a.max_slope, slope) {
                if s > max {
                    fail(format!(
                        "zerohop's RSS grew {s:.2} MiB per 10 minutes (over {max})"
                    ));
                }
            }
            return;
        }
        Some("validate") => {
            args.remove(0);
            let a = validate::parse(args).unwrap_or_else(|e| fail(e));
            print!("{}", validate::run(&a).unwrap_or_else(|e| fail(e)));
            return;
        }
        Some("serve") => {
            args.remove(0);
            loadcmd::serve(args).unwrap_or_else(|e| fail(e));
            return;
        }
        _ => {}
    }
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("zerohop-bench: {e}");
            std::process::exit(2);
        }
    };
    if o.command == "config" {
        let report = config_report(&o);
        print!("{report}");
        if let Some(path) = &o.out {
            std::fs::write(path, &report).expect("write report");
        }
        return;
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let proxy_cpu = cores.first().map_or(0, |c| c.id);
    let load_core = cores.last().copied().filter(|_| cores.len() > 1);
    let dur = Duration::from_secs_f64(o.seconds);

    let echo = upstreams::echo_server(load_core);
    let sink = upstreams::sink_server(load_core);
    let mut kinds = vec![Kind::Direct, Kind::Zerohop];
    if o.haproxy {
        kinds.extend([
            Kind::Haproxy { splice: false },
            Kind::Haproxy { splice: true },
        ]);
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); kinds.len()];
    for round in 0..o.rounds {
        for (i, &kind) in kinds.iter().enumerate() {
            eprintln!("round {}/{}: {}", round + 1, o.rounds, kind.name());
            samples[i].push(measure(kind, &o, echo, sink, proxy_cpu, load_core, dur));
        }
    }
    let report = report(&o, &kinds, &samples);
    print!("{report}");
    if let Some(path) = &o.out {
        std::fs::write(path, &report).expect("write report");
    }
}

fn measure(
    kind: Kind,
    o: &Opts,
    echo: std::net::SocketAddr,
    sink: std::net::SocketAddr,
    proxy_cpu: usize,
    load_core: Option<core_affinity::CoreId>,
    dur: Duration,
) -> Sample {
    let mut s = Sample::default();
    let cpu = |pid: Option<u32>| pid.map(procstat::cpu_seconds);
    let tools = Tools {
        zerohop: o.zerohop.clone(),
        zerohop_args: o.zerohop_args.clone(),
        ..Tools::default()
    };

    // (a) exchanges
    let t = targets::start(kind, Mode::Tcp, echo, &tools, proxy_cpu);
    let before = cpu(t.pid);
    let n = load::exchanges(t.front, o.conns, o.size, dur, load_core);
    let used = cpu(t.pid).zip(before).map(|(a, b)| a - b);
    s.exch_per_s = n as f64 / dur.as_secs_f64();
    s.cpu_us_per_exch = used.map(|c| c * 1e6 / n as f64);

    // (c) idle connections, on the same (warmed-up) proxy
    if let Some(pid) = t.pid {
        let base = procstat::rss_bytes(pid);
        let idle = load::idle_connections(t.front, o.idle);
        std::thread::sleep(Duration::from_millis(300));
        let with = procstat::rss_bytes(pid);
        s.rss_per_idle = Some(with.saturating_sub(base) as f64 / o.idle as f64);
        drop(idle);
    }
    drop(t);

    // (b) bulk
    let t = targets::start(kind, Mode::Tcp, sink, &tools, proxy_cpu);
    let before = cpu(t.pid);
    let bytes = load::bulk(t.front, o.bulk_conns, dur, load_core);
    let used = cpu(t.pid).zip(before).map(|(a, b)| a - b);
    s.gbit_s = bytes as f64 * 8.0 / 1e9 / dur.as_secs_f64();
    s.gb_per_cpu_s = used.map(|c| bytes as f64 / 1e9 / c.max(1e-3));
    s
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn report(o: &Opts, kinds: &[Kind], samples: &[Vec<Sample>]) -> String {
    let med = |i: usize, f: &dyn Fn(&Sample) -> Option<f64>| {
        let v: Vec<f64> = samples[i].iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(v))
    };
    let fmt = |v: Option<f64>, prec: usize| v.map_or("—".to_owned(), |x| format!("{x:.prec$}"));
    let mut r = String::new();
    let _ = writeln!(
        r,
        "L4 benchmark: {} rounds x {} s; exchanges: {} connections x {} B; bulk: {} connections; idle: {} connections\n",
        o.rounds, o.seconds, o.conns, o.size, o.bulk_conns, o.idle
    );
    let _ = writeln!(r, "| target | exchanges/s | proxy CPU us/exchange | bulk Gbit/s | GB per proxy CPU-s | RSS per idle conn |");
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|");
    for (i, k) in kinds.iter().enumerate() {
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {} | {} |",
            k.name(),
            fmt(med(i, &|s| Some(s.exch_per_s)), 0),
            fmt(med(i, &|s| s.cpu_us_per_exch), 2),
            fmt(med(i, &|s| Some(s.gbit_s)), 2),
            fmt(med(i, &|s| s.gb_per_cpu_s), 2),
            med(i, &|s| s.rss_per_idle)
                .map_or("—".to_owned(), |b| format!("{:.1} KiB", b / 1024.0)),
        );
    }
    let find = |k: Kind| kinds.iter().position(|&x| x == k);
    if let Some(z) = find(Kind::Zerohop) {
        let _ = writeln!(r, "\nRatios (zerohop / baseline; CPU and RSS: lower is better, the rest: higher is better):\n");
        let _ = writeln!(
            r,
            "| baseline | exchanges/s | CPU per exchange | bulk Gbit/s | GB per CPU-s |"
        );
        let _ = writeln!(r, "|---|---:|---:|---:|---:|");
        for b in kinds.iter().filter(|&&k| k != Kind::Zerohop) {
            let bi = find(*b).unwrap();
            let ratio = |f: &dyn Fn(&Sample) -> Option<f64>| match (med(z, f), med(bi, f)) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => "—".to_owned(),
            };
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} | {} |",
                b.name(),
                ratio(&|s| Some(s.exch_per_s)),
                ratio(&|s| s.cpu_us_per_exch),
                ratio(&|s| Some(s.gbit_s)),
                ratio(&|s| s.gb_per_cpu_s),
            );
        }
    }
    r
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn config_report(o: &Opts) -> String {
    let echo = upstreams::echo_server(None);
    let mut r = String::new();
    let _ = writeln!(
        r,
        "Live configuration: {} updates per size, 10 endpoints per cluster, all shards\n",
        o.updates
    );
    let _ = writeln!(
        r,
        "| clusters | endpoints | publish->applied p50 | p99 | max | shard event-loop time per generation p50 | p99 | max | zerohop RSS | control RSS |"
    );
    let _ = writeln!(r, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &o.sizes {
        // (the table below is empty with --sizes none)
        let front = free_addr();
        let proxy = config::Proxy::start(&o.zerohop, &config::yaml(n, 10, front, echo, 0), front);
        let (mut lat, mut busy): (Vec<Duration>, Vec<Duration>) = (1..=o.updates)
            .map(|i| {
                eprint!("\r{n} clusters: update {i}/{}   ", o.updates);
                proxy.update(&config::yaml(n, 10, front, echo, i))
            })
            .unzip();
        eprintln!();
        lat.sort();
        busy.sort();
        let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let _ = writeln!(
            r,
            "| {n} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} us | {:.0} us | {:.0} us | {:.1} MiB | {:.1} MiB |",
            n * 10,
            ms(pct(&lat, 0.5)),
            ms(pct(&lat, 0.99)),
            ms(*lat.last().unwrap()),
            us(pct(&busy, 0.5)),
            us(pct(&busy, 0.99)),
            us(*busy.last().unwrap()),
            config::rss_mib(proxy.pid()),
            config::rss_mib(proxy.control_pid()),
        );
    }

    // Is a retired snapshot's memory returned? Baseline after 10 warm-up swaps (two
    // generations have coexisted, allocator caches are filled), then `--swaps` more.
    // (`--swaps 0` skips it: the churn runs alone read nothing from the segment, so they can
    // measure a build of another segment layout.)
    let front = free_addr();
    let proxy = config::Proxy::start(&o.zerohop, &config::yaml(1000, 10, front, echo, 0), front);
    if o.swaps > 0 {
        for i in 1..=10 {
            proxy.update(&config::yaml(1000, 10, front, echo, i));
        }
        std::thread::sleep(Duration::from_millis(500));
        let base = config::rss_mib(proxy.pid());
        let mut peak = base;
        for i in 0..o.swaps {
            eprint!("\rswap {}/{}   ", i + 1, o.swaps);
            proxy.update(&config::yaml(1000, 10, front, echo, i + 11));
            peak = peak.max(config::rss_mib(proxy.pid()));
        }
        eprintln!();
        std::thread::sleep(Duration::from_millis(500));
        let after = config::rss_mib(proxy.pid());
        let _ = writeln!(
            r,
            "\nData plane RSS with 1,000 clusters: {base:.1} MiB after 10 warm-up swaps, {after:.1} MiB after {} more ({:+.1} MiB; peak {peak:.1} MiB).",
            o.swaps,
            after - base
        );
    }

    drop(proxy);
    if o.churn_seconds > 0.0 {
        let spec = churn::Spec {
            zerohop: o.zerohop.clone(),
            clusters: o.churn_clusters,
            rate: o.rate,
            seconds: o.churn_seconds,
            rounds: o.churn_rounds,
        };
        r.push_str(&churn::report(&spec, echo));
    }
    r
}
