//! Memory that does not grow without bound: what an idle keep-alive HTTP/1.1 connection
//! holds. (The figure against HAProxy, nginx and Envoy, at 10,000 connections, and the RSS
//! after they close: `zerohop-bench idle-http`.)

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::http::{fixture, upstream};
use support::Proxy;

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

fn settled_rss(pid: u32) -> u64 {
    let mut last = rss(pid);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let now = rss(pid);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// One request on `c`, its response read whole.
fn exchange(c: &mut BufReader<TcpStream>) {
    c.get_mut()
        .write_all(b"GET /exact HTTP/1.1\r\nhost: other\r\n\r\n")
        .unwrap();
    let mut len = 0;
    loop {
        let mut line = String::new();
        c.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).unwrap();
}

/// An idle keep-alive connection holds no 16 KiB receive buffer, nor the state machine of a
/// request it is not serving: 24 KB each before, about 5.6 KB now.
#[test]
fn an_idle_keep_alive_connection_holds_a_few_kilobytes() {
    const N: usize = 2000;
    let (a, b) = (upstream("a"), upstream("b"));
    let proxy = Proxy::start(&fixture(a.addr, b.addr));
    let front = proxy.addr("web");
    // Warm the shard's pools and the upstream connection first.
    exchange(&mut BufReader::new(TcpStream::connect(front).unwrap()));
    let before = settled_rss(proxy.pid());
    let conns: Vec<_> = (0..N)
        .map(|_| {
            let mut c = BufReader::new(TcpStream::connect(front).unwrap());
            exchange(&mut c);
            c
        })
        .collect();
    let idle = settled_rss(proxy.pid());
    let per = idle.saturating_sub(before) / N as u64;
    assert!(per < 10 * 1024, "{per} bytes per idle connection");
    drop(conns);
}
