//! tcp_proxy end to end: real sockets on 127.0.0.1, the real zerohop + zerohop-control.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;
use zerohop_proto::stats::Counter;

const GIB_BLOCKS: u64 = (1 << 30) / BLOCK as u64;

/// Upstream: hashes what it receives until EOF, answers with `len:u64 crc:u32`, closes.
fn hashing_upstream() -> std::net::SocketAddr {
    upstream(|mut s| {
        let (n, crc) = drain_stream(&mut s);
        let mut reply = n.to_le_bytes().to_vec();
        reply.extend_from_slice(&crc.to_le_bytes());
        let _ = s.write_all(&reply);
    })
}

/// Upstream: sends `blocks` blocks of stream 42, then closes.
fn source_upstream(blocks: u64) -> std::net::SocketAddr {
    upstream(move |mut s| {
        send_stream(&mut s, 42, blocks);
    })
}

fn upload(proxy: &Proxy, blocks: u64) {
    let mut c = TcpStream::connect(proxy.addr("front")).unwrap();
    let sent = send_stream(&mut c, 7, blocks);
    half_close(&c);
    let mut reply = [0u8; 12];
    c.read_exact(&mut reply).unwrap();
    assert_eq!(
        u64::from_le_bytes(reply[..8].try_into().unwrap()),
        blocks * BLOCK as u64,
        "bytes upstream got"
    );
    assert_eq!(
        u32::from_le_bytes(reply[8..].try_into().unwrap()),
        sent,
        "checksum upstream computed"
    );
}

fn download(proxy: &Proxy, blocks: u64) {
    let mut c = TcpStream::connect(proxy.addr("front")).unwrap();
    let (n, crc) = drain_stream(&mut c);
    let mut expect = crc32fast::Hasher::new();
    let mut buf = Box::new([0u8; BLOCK]);
    for i in 0..blocks {
        block(42, i, &mut buf);
        expect.update(&buf[..]);
    }
    assert_eq!(n, blocks * BLOCK as u64);
    assert_eq!(crc, expect.finalize());
}

#[test]
fn one_gib_each_way_arrives_intact_and_is_spliced() {
    let up = hashing_upstream();
    let proxy = Proxy::start(&tcp_proxy_config(&[up], "", "1s"));
    upload(&proxy, GIB_BLOCKS);
    let proxy_dl = Proxy::start(&tcp_proxy_config(&[source_upstream(GIB_BLOCKS)], "", "1s"));
    download(&proxy_dl, GIB_BLOCKS);
    // Bulk bytes went through splice(2), not through user-space buffers.
    for p in [&proxy, &proxy_dl] {
        let spliced = p.total(Counter::BytesSpliced);
        assert!(spliced > (1 << 30) * 9 / 10, "spliced only {spliced} bytes");
    }
}

#[test]
fn bulk_transfer_on_the_epoll_driver() {
    let opts = Opts {
        driver: "epoll",
        ..Opts::default()
    };
    let proxy = Proxy::start_with(
        &tcp_proxy_config(&[hashing_upstream()], "", "1s"),
        opts.clone(),
    );
    assert!(
        proxy.wait_log("epoll driver", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    upload(&proxy, 1024);
    let proxy = Proxy::start_with(&tcp_proxy_config(&[source_upstream(1024)], "", "1s"), opts);
    download(&proxy, 1024);
}

#[test]
fn half_close_is_forwarded_both_ways() {
    // Client half-closes first: upstream sees EOF, still answers, client reads it.
    let up = upstream(|mut s| {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"ping");
        s.write_all(b"pong after your FIN").unwrap();
    });
    let proxy = Proxy::start(&tcp_proxy_config(&[up], "", "1s"));
    let mut c = TcpStream::connect(proxy.addr("front")).unwrap();
    c.write_all(b"ping").unwrap();
    half_close(&c);
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "pong after your FIN");

    // Upstream half-closes first: client sees EOF, can still send, upstream receives it.
    let up = upstream(|mut s| {
        s.write_all(b"hello").unwrap();
        half_close(&s);
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&[0]).ok(); // write side closed: must fail or be dropped, never reach client
        assert_eq!(got, b"still talking after your FIN");
    });
    let proxy = Proxy::start(&tcp_proxy_config(&[up], "", "1s"));
    let mut c = TcpStream::connect(proxy.addr("front")).unwrap();
    let mut hello = [0u8; 5];
    c.read_exact(&mut hello).unwrap();
    let mut rest = Vec::new();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        c.read_to_end(&mut rest).unwrap(),
        0,
        "EOF forwarded to the client"
    );
    c.write_all(b"still talking after your FIN").unwrap();
    half_close(&c);
    assert_eq!(
        proxy.wait_counter(Counter::DownstreamCxRxBytes, 28, Duration::from_secs(5)),
        28
    );
}

#[test]
fn refused_upstream_closes_the_client_promptly() {
    let proxy = Proxy::start(&tcp_proxy_config(&[refused_port()], "", "1s"));
    let mut c = TcpStream::connect(proxy.addr("front")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let t = Instant::now();
    let r = c.read(&mut [0u8; 16]);
    assert!(
        matches!(r, Ok(0)) || matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "{r:?}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "closed after {:?}",
        t.elapsed()
    );
    assert_eq!(
        proxy.wait_counter(Counter::UpstreamCxConnectFail, 1, Duration::from_secs(2)),
        1
    );
}

#[test]
fn connect_timeout_to_an_endpoint_that_never_answers() {
    // A listener with backlog 0 that never accepts: once its queue is full the kernel drops
    // further SYNs, so a connect hangs as it would towards a black-holed host.
    let blackhole =
        zerohop::net::sys::reuseport_listener("127.0.0.1:0".parse().unwrap(), 0).unwrap();
    let addr = blackhole.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket_with_timeout(addr, Duration::from_millis(200));
        fillers.extend(s);
    }
    let proxy = Proxy::start(&tcp_proxy_config(&[addr], "", "0.3s"));
    let mut c = TcpStream::connect(proxy.addr("front")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let r = c.read(&mut [0u8; 16]);
    let took = t.elapsed();
    assert!(matches!(r, Ok(0)), "{r:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "closed after {took:?}"
    );
    assert_eq!(
        proxy.wait_counter(Counter::UpstreamCxConnectTimeout, 1, Duration::from_secs(2)),
        1
    );
    drop(blackhole);
}

fn socket_with_timeout(addr: std::net::SocketAddr, t: Duration) -> Option<TcpStream> {
    TcpStream::connect_timeout(&addr, t).ok()
}

#[test]
fn upstream_reset_is_forwarded_as_a_reset() {
    let up = upstream(|s| {
        let mut s = s;
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        zerohop::net::sys::set_linger_zero(std::os::fd::AsRawFd::as_raw_fd(&s)).unwrap();
        drop(s); // RST
    });
    let proxy = Proxy::start(&tcp_proxy_config(&[up], "", "1s"));
    let mut c = TcpStream::connect(proxy.addr("front")).unwrap();
    c.write_all(b"boom").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = c.read(&mut [0u8; 16]);
    assert!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "expected a reset, got {r:?}"
    );
    assert_eq!(
        proxy.wait_counter(Counter::ResetForwarded, 1, Duration::from_secs(2)),
        1
    );
}

#[test]
fn idle_timeout_closes_both_sides() {
    let (tx, rx) = std::sync::mpsc::channel();
    let up = upstream(move |mut s| {
        let t = Instant::now();
        let r = s.read(&mut [0u8; 16]);
        let _ = tx.send((r.map_err(|e| e.kind()), t.elapsed()));
    });
    let proxy = Proxy::start(&tcp_proxy_config(
        &[up],
        "          idle_timeout: 0.3s",
        "1s",
    ));
    let mut c = TcpStream::connect(proxy.addr("front")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    assert!(matches!(c.read(&mut [0u8; 16]), Ok(0)));
    assert!(
        t.elapsed() >= Duration::from_millis(250) && t.elapsed() < Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
    let (r, _) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(r, Ok(0), "upstream side closed too");
    assert_eq!(proxy.total(Counter::IdleTimeout), 1);
}

#[test]
fn five_thousand_concurrent_echoing_connections() {
    const N: usize = 5000;
    // Envoy's default circuit breakers allow 1,024 connections to a cluster: raised, as for
    // Envoy.
    let yaml = tcp_proxy_config(&[echo_upstream()], "", "5s").replace(
        "    type: STATIC\n",
        "    type: STATIC\n    circuit_breakers: { thresholds: [ { max_connections: 100000 } ] }\n",
    );
    let proxy = Proxy::start_with(
        &yaml,
        Opts {
            shards: 2,
            ..Opts::default()
        },
    );
    let front = proxy.addr("front");
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    let echoed = rt.block_on(async move {
        use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
        let mut conns = Vec::with_capacity(N);
        for _ in 0..N {
            conns.push(monoio::net::TcpStream::connect_addr(front).await.unwrap());
        }
        // All N open at once; each exchanges a message of its own.
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                monoio::spawn(async move {
                    let msg = format!("connection {i:05} says hello").into_bytes();
                    let (r, msg) = s.write_all(msg).await;
                    r.unwrap();
                    let (r, got) = s.read_exact(vec![0u8; msg.len()]).await;
                    r.unwrap();
                    assert_eq!(got, msg);
                    s
                })
            })
            .collect();
        let mut open = Vec::with_capacity(N);
        for t in tasks {
            open.push(t.await);
        }
        open
    });
    assert_eq!(echoed.len(), N);
    assert_eq!(
        proxy.total(Counter::DownstreamCxActive),
        N as u64,
        "all connections open at once"
    );
    drop(echoed);
    drop(rt);
    assert_eq!(proxy.total(Counter::DownstreamCxTotal), N as u64);
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.total(Counter::DownstreamCxActive) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        proxy.total(Counter::DownstreamCxActive),
        0,
        "every close propagated"
    );
}

#[test]
fn both_shards_accept_connections() {
    let proxy = Proxy::start_with(
        &tcp_proxy_config(&[echo_upstream()], "", "1s"),
        Opts {
            shards: 2,
            ..Opts::default()
        },
    );
    for _ in 0..200 {
        let mut c = TcpStream::connect(proxy.addr("front")).unwrap();
        c.write_all(b"x").unwrap();
        c.read_exact(&mut [0u8; 1]).unwrap();
    }
    proxy.wait_counter(Counter::DownstreamCxTotal, 200, Duration::from_secs(2));
    let per_shard: Vec<u64> = proxy
        .counters()
        .iter()
        .map(|s| s[Counter::DownstreamCxTotal.index()])
        .collect();
    assert_eq!(per_shard.len(), 2);
    assert_eq!(per_shard.iter().sum::<u64>(), 200);
    assert!(
        per_shard.iter().all(|&n| n > 0),
        "SO_REUSEPORT spreads accepts over both shards: {per_shard:?}"
    );
}

#[test]
fn round_robin_alternates_between_endpoints() {
    let named = |name: &'static [u8]| upstream(move |mut s| s.write_all(name).unwrap());
    let proxy = Proxy::start(&tcp_proxy_config(&[named(b"A"), named(b"B")], "", "1s"));
    let order: String = (0..6)
        .map(|_| {
            let mut who = String::new();
            TcpStream::connect(proxy.addr("front"))
                .unwrap()
                .read_to_string(&mut who)
                .unwrap();
            who
        })
        .collect();
    assert_eq!(order, "ABABAB");
}
