//! `zerohop-bench validate`: the load generator checked against external tools, and its own
//! ceiling.
//!
//! - Against wrk (HTTP/1.1) and h2load (h2c), on the same built-in server, at a low rate over
//!   one connection: wrk paces with its `delay()` script hook (it has no rate option), h2load
//!   with `--rps`; zerohop-bench then runs at the rate the other tool achieved. One connection,
//!   because both tools start their connections' timers together, so with several connections
//!   their requests leave in bursts that queue at the server, where ours are evenly spaced.
//! - The ceiling: the highest rate one generator thread sustains (achieved >= 99% of
//!   intended, p99 send wait under 1 ms), per protocol, with its CPU use at that rate. These
//!   runs do not spin before sends (`--spin-us 0`): spinning only fills idle time, and would
//!   make the CPU figure read 100% at any rate.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::gen::{self, report, Proto, Spec};

pub const HELP: &str = "\
zerohop-bench validate: the generator against wrk and h2load, and its own ceiling

USAGE:
    zerohop-bench validate [OPTIONS]

    Needs wrk and h2load (apt-get install wrk nghttp2-client). The built-in HTTP server runs
    on the first CPU, every generator on the last.

OPTIONS:
    -d, --duration SECS   length of each run [default: 10]
        --rounds N        interleaved rounds [default: 3]
        --rps N           h2load's rate (and ours) [default: 1000]
        --ceiling LIST    rates tried for the ceiling, or `none` [default: 20000,40000,80000,120000,160000,240000,320000]
        --out FILE        also write the report to FILE
";

pub struct Args {
    duration: f64,
    rounds: usize,
    rps: f64,
    ceiling: Vec<f64>,
    out: Option<std::path::PathBuf>,
}

pub fn parse(args: Vec<std::ffi::OsString>) -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        duration: 10.0,
        rounds: 3,
        rps: 1000.0,
        ceiling: vec![20e3, 40e3, 80e3, 120e3, 160e3, 240e3, 320e3],
        out: None,
    };
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next()? {
        match arg {
            Short('d') | Long("duration") => a.duration = p.value()?.parse()?,
            Long("rounds") => a.rounds = p.value()?.parse()?,
            Long("rps") => a.rps = p.value()?.parse()?,
            Long("ceiling") => {
                let v = p.value()?.string()?;
                a.ceiling = if v == "none" {
                    Vec::new()
                } else {
                    crate::parse_list(&v)?
                };
            }
            Long("out") => a.out = Some(p.value()?.into()),
            Short('h') | Long("help") => {
                print!("{HELP}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(a)
}

/// A duration as wrk and h2load print them (`53.45us`, `1.64ms`, `2.00s`), in microseconds.
fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else {
        return None;
    };
    num.trim().parse::<f64>().ok().map(|n| n * scale)
}

/// What an external tool reported.
#[derive(Debug, Default, PartialEq)]
struct External {
    rate: f64,
    mean_us: f64,
    p50_us: Option<f64>,
    p90_us: Option<f64>,
    p99_us: Option<f64>,
}

fn parse_wrk(out: &str) -> Option<External> {
    let mut e = External::default();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Latency", avg, ..] if parse_time(avg).is_some() => e.mean_us = parse_time(avg)?,
            ["50%", v] => e.p50_us = parse_time(v),
            ["90%", v] => e.p90_us = parse_time(v),
            ["99%", v] => e.p99_us = parse_time(v),
            ["Requests/sec:", v] => e.rate = v.parse().ok()?,
            _ => {}
        }
    }
    (e.rate > 0.0 && e.mean_us > 0.0).then_some(e)
}

fn parse_h2load(out: &str) -> Option<External> {
    let mut e = External::default();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // finished in 5.00s, 998.40 req/s, 121.88KB/s
            e.rate = rest
                .split(", ")
                .nth(1)?
                .strip_suffix(" req/s")?
                .parse()
                .ok()?;
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            // min max mean sd +/-sd
            e.mean_us = parse_time(rest.split_whitespace().nth(2)?)?;
        }
    }
    (e.rate > 0.0 && e.mean_us > 0.0).then_some(e)
}

fn tool(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| {
        format!(
            "{:?}: {e} (apt-get install wrk nghttp2-client)",
            cmd.get_program()
        )
    })?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ours(
    proto: Proto,
    addr: SocketAddr,
    rate: f64,
    conns: usize,
    secs: f64,
    cpu: usize,
    spin: Duration,
) -> report::Summary {
    let spec = Spec {
        connections: conns,
        streams: 1,
        cpus: vec![cpu],
        duration: Duration::from_secs_f64(secs),
        warmup: Duration::from_secs(1),
        spin,
        ..Spec::new(proto, addr, rate)
    };
    report::summary(&gen::run(&spec, |_| {}))
}

pub fn run(a: &Args) -> Result<String, String> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let server_core = cores.first().copied();
    let gen_cpu = cores.last().map_or(0, |c| c.id);
    let http = crate::upstreams::http_server(server_core, 100);
    let echo = crate::upstreams::echo_server(server_core);
    let url = format!("http://{http}/");
    let script =
        std::env::temp_dir().join(format!("zerohop-bench-delay-{}.lua", std::process::id()));
    // wrk waits delay() ms after each response before the next request on that connection.
    std::fs::write(&script, "function delay() return 1 end\n").map_err(|e| e.to_string())?;
    let secs = format!("{}", a.duration.max(1.0) as u64);
    let taskset = |prog: &str| {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(gen_cpu.to_string()).arg(prog);
        c
    };
    let mut rows: Vec<(&str, External, report::Summary)> = Vec::new();
    for round in 0..a.rounds {
        eprintln!(
            "round {}/{}: wrk, then zerohop-bench at wrk's rate",
            round + 1,
            a.rounds
        );
        let out = tool(
            taskset("wrk")
                .args(["-t1", "-c1", "--latency", "-d"])
                .arg(format!("{secs}s"))
                .arg("-s")
                .arg(&script)
                .arg(&url),
        )?;
        let w = parse_wrk(&out).ok_or_else(|| format!("could not read wrk's output:\n{out}"))?;
        let o = ours(
            Proto::Http1,
            http,
            w.rate,
            1,
            a.duration,
            gen_cpu,
            gen::DEFAULT_SPIN,
        );
        rows.push(("wrk (HTTP/1.1)", w, o));

        eprintln!(
            "round {}/{}: h2load --rps, then zerohop-bench h2c",
            round + 1,
            a.rounds
        );
        let out = tool(
            taskset("h2load")
                .args(["-c", "1", "--rps"])
                .arg(a.rps.to_string())
                .arg("-D")
                .arg(&secs)
                .arg(&url),
        )?;
        let h =
            parse_h2load(&out).ok_or_else(|| format!("could not read h2load's output:\n{out}"))?;
        let o = ours(
            Proto::H2c,
            http,
            a.rps,
            1,
            a.duration,
            gen_cpu,
            gen::DEFAULT_SPIN,
        );
        rows.push(("h2load (h2c)", h, o));
    }
    let _ = std::fs::remove_file(&script);

    let mut r = String::new();
    let _ = writeln!(
        r,
        "Generator validation: one connection, {} s runs, {} rounds, built-in server (100 B responses) on another CPU. Latency in us; ratio = zerohop-bench / tool.\n",
        a.duration, a.rounds
    );
    let _ = writeln!(r, "| tool | tool req/s | ours req/s | rate ratio | tool mean | ours mean | mean ratio | tool p50 | ours p50 | tool p99 | ours p99 |");
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let opt = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.1}"));
    for (name, t, o) in &rows {
        let _ = writeln!(
            r,
            "| {name} | {:.1} | {:.1} | {:.3} | {:.1} | {:.1} | {:.2} | {} | {:.1} | {} | {:.1} |",
            t.rate,
            o.achieved_rate,
            o.achieved_rate / t.rate,
            t.mean_us,
            o.latency_us.mean,
            o.latency_us.mean / t.mean_us,
            opt(t.p50_us),
            o.latency_us.p50,
            opt(t.p99_us),
            o.latency_us.p99
        );
    }

    let _ = writeln!(
        r,
        "\nMedian across rounds (ratio = zerohop-bench / tool):\n"
    );
    let _ = writeln!(
        r,
        "| tool | rate ratio | mean ratio | p50 ratio | p99 ratio |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|");
    for name in ["wrk (HTTP/1.1)", "h2load (h2c)"] {
        let of = |f: &dyn Fn(&External, &report::Summary) -> Option<f64>| {
            let mut v: Vec<f64> = rows
                .iter()
                .filter(|x| x.0 == name)
                .filter_map(|(_, t, o)| f(t, o))
                .collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).map_or("—".into(), |m| format!("{m:.3}"))
        };
        let _ = writeln!(
            r,
            "| {name} | {} | {} | {} | {} |",
            of(&|t, o| Some(o.achieved_rate / t.rate)),
            of(&|t, o| Some(o.latency_us.mean / t.mean_us)),
            of(&|t, o| t.p50_us.map(|p| o.latency_us.p50 / p)),
            of(&|t, o| t.p99_us.map(|p| o.latency_us.p99 / p)),
        );
    }

    if !a.ceiling.is_empty() {
        let _ = writeln!(
            r,
            "\nCeiling: one generator thread on one CPU (no spin), 50 connections, against the built-in servers (one thread on the other CPU). Sustained = achieved >= 99% of intended and p99 send wait < 1 ms.\n"
        );
        let _ = writeln!(r, "| protocol | intended /s | achieved /s | p99 us | p99 send wait us | generator CPU | server-side limit? |");
        let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---|");
        for proto in [Proto::Tcp, Proto::Http1, Proto::H2c] {
            let addr = if proto == Proto::Tcp { echo } else { http };
            for &rate in &a.ceiling {
                eprintln!("ceiling: {} at {rate}/s", proto.name());
                let s = ours(
                    proto,
                    addr,
                    rate,
                    50,
                    a.duration.min(5.0),
                    gen_cpu,
                    Duration::ZERO,
                );
                let sustained = s.achieved_rate >= 0.99 * rate && s.send_wait_us.p99 < 1000.0;
                let _ = writeln!(
                    r,
                    "| {} | {rate:.0} | {:.0} | {:.0} | {:.0} | {:.0}% | {} |",
                    proto.name(),
                    s.achieved_rate,
                    s.latency_us.p99,
                    s.send_wait_us.p99,
                    100.0 * s.generator_cpu,
                    if sustained {
                        "sustained"
                    } else if s.generator_cpu < 0.9 {
                        "not sustained; generator below 90% CPU: the server is the limit"
                    } else {
                        "not sustained: the generator is the limit"
                    }
                );
                if !sustained {
                    break;
                }
            }
        }
    }
    if let Some(p) = &a.out {
        std::fs::write(p, &r).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_and_h2load_output() {
        let wrk = "Running 5s test @ http://127.0.0.1:18080/\n  1 threads and 1 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency    53.45us   34.45us   1.64ms   98.19%\n    Req/Sec     0.90k     4.09     0.91k    80.00%\n  Latency Distribution\n     50%   50.00us\n     75%   53.00us\n     90%   56.00us\n     99%    1.02ms\n  4466 requests in 5.00s, 723.98KB read\nRequests/sec:    892.84\nTransfer/sec:    144.43KB\n";
        let w = parse_wrk(wrk).unwrap();
        assert_eq!(w.rate, 892.84);
        assert_eq!(w.mean_us, 53.45);
        assert_eq!(w.p50_us, Some(50.0));
        assert_eq!(w.p99_us, Some(1020.0));
        let h2 = "finished in 5.00s, 998.40 req/s, 121.88KB/s\nrequests: 5000 total\n                     min         max         mean         sd        +/- sd\ntime for request:       19us       717us        77us       113us    84.80%\n";
        let h = parse_h2load(h2).unwrap();
        assert_eq!(h.rate, 998.40);
        assert_eq!(h.mean_us, 77.0);
        assert_eq!(parse_time("2.00s"), Some(2e6));
        assert!(parse_wrk("garbage").is_none());
    }
}
