//! `zerohop-bench idle-http`: the memory an idle keep-alive HTTP/1.1 connection costs each
//! proxy, and whether it is given back once the connections close.
//!
//! For each target in turn (one worker pinned to one CPU, in front of the same upstream):
//! its RSS settled, then N client connections each make one request and stay open, idle;
//! the RSS again, settled; then all close, and the RSS once more. Reported: bytes per idle
//! connection, and the RSS after the close as a multiple of the RSS before.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::procstat;
use crate::targets::{self, Kind, Mode, Tools};

pub const HELP: &str = "\
zerohop-bench idle-http: RSS per idle keep-alive HTTP/1.1 connection, and RSS after they close

USAGE:
    zerohop-bench idle-http [OPTIONS]

OPTIONS:
    -c, --connections N    idle connections [default: 10000]
        --targets LIST     [default: zerohop,haproxy,nginx,envoy]
        --zerohop PATH     [default: next to zerohop-bench]
        --zerohop-baseline PATH
                           another zerohop build, run as the target zerohop-baseline
        --envoy PATH       [default: `envoy` on PATH]
        --out FILE         also write the report to FILE
";

pub struct Args {
    connections: usize,
    targets: Vec<Kind>,
    tools: Tools,
    pub out: Option<std::path::PathBuf>,
}

pub fn parse(args: Vec<std::ffi::OsString>) -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        connections: 10_000,
        targets: targets::LINEUP.to_vec(),
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
            Short('c') | Long("connections") => a.connections = p.value()?.parse()?,
            Long("targets") => a.targets = targets::parse_targets(&p.value()?.string()?)?,
            Long("out") => a.out = Some(p.value()?.into()),
            Short('h') | Long("help") => {
                print!("{HELP}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if a.connections == 0 || a.targets.contains(&Kind::Direct) {
        return Err("--connections must be positive and direct is not a target here".into());
    }
    Ok(a)
}

/// One request on `c`, its response read whole (the body is `Content-Length` delimited).
fn one_request(c: &mut BufReader<TcpStream>) -> std::io::Result<()> {
    c.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")?;
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if c.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            if n.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    c.read_exact(&mut body)
}

/// RSS after it has stopped moving (or 3 s).
fn settled_rss(pid: u32) -> u64 {
    let mut last = procstat::rss_bytes(pid);
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        let now = procstat::rss_bytes(pid);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

struct Figures {
    before: u64,
    idle: u64,
    after: u64,
    opened: usize,
}

fn measure(front: SocketAddr, pid: u32, n: usize) -> Figures {
    let before = settled_rss(pid);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(s) = TcpStream::connect(front) else {
            break;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut c = BufReader::new(s);
        if one_request(&mut c).is_err() {
            break;
        }
        conns.push(c);
    }
    let opened = conns.len();
    let idle = settled_rss(pid);
    drop(conns);
    std::thread::sleep(Duration::from_secs(1));
    let after = settled_rss(pid);
    Figures {
        before,
        idle,
        after,
        opened,
    }
}

/// Lets this process hold `n` client sockets.
fn raise_nofile(n: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let l = getrlimit(Resource::Nofile);
    let want = (n + 1024).min(l.maximum.unwrap_or(u64::MAX));
    if l.current.is_some_and(|c| c < want) {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: l.maximum,
            },
        );
    }
}

pub fn run(a: &Args) -> Result<String, String> {
    crate::hopcost::check_available(&a.targets, Mode::Http, &a.tools)?;
    raise_nofile(a.connections as u64);
    let (proxy_cpu, load_cpu) = targets::cpus();
    let upstream = crate::upstreams::http_server(load_cpu, 100);
    let mut r = String::new();
    let _ = writeln!(
        r,
        "Idle keep-alive HTTP/1.1 connections: {} clients each make one request (100 B response) and stay open. One worker per proxy, pinned; RSS settled before, while idle, and after all closed.\n",
        a.connections
    );
    let _ = writeln!(
        r,
        "| target | connections | RSS before | RSS idle | bytes per idle connection | RSS after close / before |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|");
    let mut per_conn = Vec::new();
    for &k in &a.targets {
        eprint!("\ridle-http: {:<16}", k.name());
        let t = targets::start(k, Mode::Http, upstream, &a.tools, proxy_cpu);
        let pid = t.pid.expect("a proxy target");
        let f = measure(t.front, pid, a.connections);
        drop(t);
        let per = f.idle.saturating_sub(f.before) as f64 / f.opened.max(1) as f64;
        per_conn.push((k, per));
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let _ = writeln!(
            r,
            "| {} | {} | {:.1} MiB | {:.1} MiB | {:.0} | {:.2}x |",
            k.name(),
            f.opened,
            mib(f.before),
            mib(f.idle),
            per,
            f.after as f64 / f.before.max(1) as f64
        );
    }
    eprintln!();
    if let Some(&(_, z)) = per_conn.iter().find(|(k, _)| *k == Kind::Zerohop) {
        let _ = writeln!(r, "\nzerohop's bytes per idle connection against each:\n");
        let _ = writeln!(r, "| target | zerohop / target |");
        let _ = writeln!(r, "|---|---:|");
        for (k, v) in per_conn.iter().filter(|(k, _)| *k != Kind::Zerohop) {
            let _ = writeln!(r, "| {} | {:.2}x |", k.name(), z / v.max(1.0));
        }
    }
    Ok(r)
}
