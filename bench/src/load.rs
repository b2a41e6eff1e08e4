//! The closed-loop drivers of the L4 benchmark (request/response exchanges at full speed, bulk
//! streams, idle connections). All of it runs on the load CPU, away from the proxy's.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Pins the calling thread to `core` (if any).
pub fn pin(core: Option<core_affinity::CoreId>) {
    if let Some(c) = core {
        core_affinity::set_for_current(c);
    }
}

pub fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("epoll runtime")
}

/// Closed-loop request/response exchanges of `size` bytes over `conns` persistent
/// connections for `duration`. Returns the number of completed exchanges.
pub fn exchanges(
    front: SocketAddr,
    conns: usize,
    size: usize,
    duration: Duration,
    core: Option<core_affinity::CoreId>,
) -> u64 {
    std::thread::spawn(move || {
        pin(core);
        runtime().block_on(async move {
            use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
            let done = Rc::new(Cell::new(0u64));
            let mut streams = Vec::new();
            for _ in 0..conns {
                let s = monoio::net::TcpStream::connect_addr(front)
                    .await
                    .expect("connect");
                let _ = s.set_nodelay(true);
                streams.push(s);
            }
            let deadline = Instant::now() + duration;
            let tasks: Vec<_> = streams
                .into_iter()
                .map(|mut s| {
                    let done = done.clone();
                    monoio::spawn(async move {
                        let (mut out, mut back) = (vec![7u8; size], vec![0u8; size]);
                        while Instant::now() < deadline {
                            let (r, o) = s.write_all(out).await;
                            out = o;
                            r.expect("write");
                            let (r, b) = s.read_exact(back).await;
                            back = b;
                            r.expect("read");
                            done.set(done.get() + 1);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            done.get()
        })
    })
    .join()
    .expect("exchange driver")
}

/// `conns` connections each writing as fast as they can for `duration`. Returns bytes sent.
pub fn bulk(
    front: SocketAddr,
    conns: usize,
    duration: Duration,
    core: Option<core_affinity::CoreId>,
) -> u64 {
    let deadline = Instant::now() + duration;
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            std::thread::spawn(move || {
                pin(core);
                let mut s = TcpStream::connect(front).expect("connect");
                let buf = vec![0x5au8; 256 * 1024];
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    s.write_all(&buf).expect("write");
                    sent += buf.len() as u64;
                }
                sent
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("bulk writer"))
        .sum()
}

/// Opens `n` connections and completes one small exchange on each, so every one is fully
/// proxied (upstream connected), then leaves them idle.
pub fn idle_connections(front: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(front).expect("connect");
            s.write_all(b"x").unwrap();
            s.read_exact(&mut [0u8; 1]).unwrap();
            s
        })
        .collect()
}
