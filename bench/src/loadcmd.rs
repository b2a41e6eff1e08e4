//! `zerohop-bench load`: the open-loop generator from the command line, and `serve`: the
//! benchmarks' trivial upstreams on fixed ports, for trying the generator (or another tool)
//! against something whose cost is known.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::gen::{self, report, Proto, Spec};

pub const LOAD_HELP: &str = "\
zerohop-bench load: open-loop load at a constant rate, latency from the intended send time

USAGE:
    zerohop-bench load [OPTIONS] --rate N URL

    URL is http://HOST:PORT/PATH (HTTP/1.1 or h2c) or tcp://HOST:PORT (echo exchanges).

OPTIONS:
        --rate N           requests per second, all threads together (required); `max` runs
                           closed loop instead (each connection sends its next request when
                           the previous one completes, as wrk does): a throughput test, whose
                           latencies are service times, not open-loop latencies
        --protocol P       http1 | http1-close (a new connection per request) | h2c | tcp
                           [default: http1 for http://, tcp for tcp://]
    -c, --connections N    connections [default: 10]
        --streams N        h2c: concurrent streams per connection [default: 10]
    -t, --threads N        generator threads, one runtime each [default: 1]
        --cpus LIST        pin the threads to these CPUs, e.g. 1 or 2,3 [default: not pinned]
    -d, --duration SECS    measured time [default: 10]
        --warmup SECS      run at the same rate first, results discarded [default: 2]
        --size N           HTTP: request body bytes (POST when > 0); tcp: bytes each way
                           [default: 0 for HTTP, 64 for tcp]
        --host NAME        HTTP Host / :authority [default: from the URL]
        --timeout SECS     a request without a response by then is an error [default: 10]
        --spin-us N        wake this early and yield until the send time: a timer wake-up
                           alone takes tens of us on a VM, all counted as latency [default: 50]
        --json FILE        write the summary as JSON (`-` for stdout, instead of the table)
        --hlog FILE        write per-second histograms as an HdrHistogram interval log
        --hgrm FILE        write the percentile distribution (HdrHistogram plotter format)
        --quiet            no progress display
";

pub struct LoadArgs {
    pub spec: Spec,
    pub json: Option<PathBuf>,
    pub hlog: Option<PathBuf>,
    pub hgrm: Option<PathBuf>,
    pub quiet: bool,
}

/// Parses `tcp://host:port` or `http://host:port/path` into (scheme, address, authority, path).
pub fn parse_url(url: &str) -> Result<(String, SocketAddr, String, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?}: expected http://HOST:PORT/PATH or tcp://HOST:PORT"))?;
    if scheme != "http" && scheme != "tcp" {
        return Err(format!("{url:?}: scheme {scheme:?} is not http or tcp"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{url:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url:?}: no address"))?;
    Ok((
        scheme.to_owned(),
        addr,
        authority.to_owned(),
        path.to_owned(),
    ))
}

pub fn parse_load(args: Vec<std::ffi::OsString>) -> Result<LoadArgs, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut url, mut rate, mut proto, mut host) = (None, None, None, None);
    let (mut connections, mut streams, mut threads) = (10, 10, 1);
    let (mut cpus, mut duration, mut warmup, mut size, mut timeout) =
        (Vec::new(), 10.0, 2.0, None, 10.0);
    let (mut json, mut hlog, mut hgrm, mut quiet, mut spin) = (
        None,
        None,
        None,
        false,
        gen::DEFAULT_SPIN.as_micros() as u64,
    );
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if url.is_none() => url = Some(v.string()?),
            Long("rate") => {
                let v = p.value()?.string()?;
                rate = Some(if v == "max" {
                    0.0
                } else {
                    v.parse::<f64>().map_err(|e| format!("--rate {v:?}: {e}"))?
                });
            }
            Long("protocol") => proto = Some(Proto::parse(&p.value()?.string()?)?),
            Short('c') | Long("connections") => connections = p.value()?.parse()?,
            Long("streams") => streams = p.value()?.parse()?,
            Short('t') | Long("threads") => threads = p.value()?.parse()?,
            Long("cpus") => cpus = crate::parse_list(&p.value()?.string()?)?,
            Short('d') | Long("duration") => duration = p.value()?.parse()?,
            Long("warmup") => warmup = p.value()?.parse()?,
            Long("size") => size = Some(p.value()?.parse()?),
            Long("host") => host = Some(p.value()?.string()?),
            Long("timeout") => timeout = p.value()?.parse()?,
            Long("json") => json = Some(p.value()?.into()),
            Long("hlog") => hlog = Some(p.value()?.into()),
            Long("hgrm") => hgrm = Some(p.value()?.into()),
            Long("quiet") => quiet = true,
            Long("spin-us") => spin = p.value()?.parse()?,
            Short('h') | Long("help") => {
                print!("{LOAD_HELP}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    let url = url.ok_or("a target URL is required (see --help)")?;
    let rate = rate.ok_or("--rate is required: the generator is open-loop")?;
    if !(rate >= 0.0 && rate.is_finite()) {
        return Err("--rate must be a positive number, or `max`".into());
    }
    if connections == 0 || threads == 0 || streams == 0 {
        return Err("--connections, --threads and --streams must be at least 1".into());
    }
    let (scheme, addr, authority, path) = parse_url(&url)?;
    let proto = proto.unwrap_or(if scheme == "tcp" {
        Proto::Tcp
    } else {
        Proto::Http1
    });
    if (proto == Proto::Tcp) != (scheme == "tcp") {
        return Err(format!("--protocol {} does not fit {url:?}", proto.name()).into());
    }
    Ok(LoadArgs {
        spec: Spec {
            proto,
            addr,
            authority: Some(host.unwrap_or(authority)),
            path,
            rate,
            connections,
            streams,
            threads,
            cpus,
            duration: Duration::from_secs_f64(duration),
            warmup: Duration::from_secs_f64(warmup),
            size: size.unwrap_or(if proto == Proto::Tcp { 64 } else { 0 }),
            timeout: Duration::from_secs_f64(timeout),
            spin: Duration::from_micros(spin),
            headers: Vec::new(),
        },
        json,
        hlog,
        hgrm,
        quiet,
    })
}

/// A progress bar for runs of a few seconds or more (drawn only on a terminal).
pub fn progress_bar(spec: &Spec, quiet: bool) -> indicatif::ProgressBar {
    let total = (spec.warmup + spec.duration).as_secs_f64().ceil() as u64;
    if quiet || total < 3 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos:>3}/{len}s  {msg}")
            .expect("static template"),
    );
    bar
}

pub fn progress_message(p: &gen::Progress) -> String {
    if p.warmup {
        format!("warm-up: {}/s", p.ok + p.failed)
    } else {
        format!(
            "{}/s ok, {} failed, p99 {:.1} us",
            p.ok,
            p.failed,
            p.p99_ns as f64 / 1e3
        )
    }
}

pub fn load(args: LoadArgs) -> Result<(), String> {
    let bar = progress_bar(&args.spec, args.quiet);
    let outcome = gen::run(&args.spec, |p| {
        bar.set_position(p.second as u64);
        bar.set_message(progress_message(p));
    });
    bar.finish_and_clear();
    let summary = report::summary(&outcome);
    let write = |path: &PathBuf, text: &str| {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    match &args.json {
        Some(p) if p.as_os_str() == "-" => {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).expect("serializable")
            )
        }
        Some(p) => {
            write(
                p,
                &serde_json::to_string_pretty(&summary).expect("serializable"),
            )?;
            print!("{}", report::table(&summary));
        }
        None => print!("{}", report::table(&summary)),
    }
    if let Some(p) = &args.hlog {
        report::write_hlog(&outcome, p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if let Some(p) = &args.hgrm {
        write(p, &report::hgrm(&outcome.latency))?;
    }
    Ok(())
}

pub const SERVE_HELP: &str = "\
zerohop-bench serve: the benchmarks' upstreams, on fixed ports, until interrupted

USAGE:
    zerohop-bench serve [--http ADDR] [--echo ADDR] [--body N] [--cpu N]

        --http ADDR   HTTP/1.1 + h2c server answering 200 with N bytes [e.g. 127.0.0.1:8080]
        --echo ADDR   TCP echo server
        --body N      response body bytes [default: 100]
        --cpu N       pin the servers to this CPU
";

pub fn serve(args: Vec<std::ffi::OsString>) -> Result<(), lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut http, mut echo, mut body, mut cpu) = (None, None, 100usize, None);
    while let Some(arg) = p.next()? {
        match arg {
            Long("http") => http = Some(p.value()?.parse::<SocketAddr>()?),
            Long("echo") => echo = Some(p.value()?.parse::<SocketAddr>()?),
            Long("body") => body = p.value()?.parse()?,
            Long("cpu") => {
                cpu = Some(core_affinity::CoreId {
                    id: p.value()?.parse()?,
                })
            }
            Short('h') | Long("help") => {
                print!("{SERVE_HELP}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if http.is_none() && echo.is_none() {
        return Err("nothing to serve: give --http and/or --echo".into());
    }
    if let Some(a) = http {
        println!(
            "http (HTTP/1.1 + h2c) on {}",
            crate::upstreams::http_server_on(a, cpu, body)
        );
    }
    if let Some(a) = echo {
        println!("echo on {}", crate::upstreams::echo_server_on(a, cpu));
    }
    loop {
        std::thread::park();
    }
}
