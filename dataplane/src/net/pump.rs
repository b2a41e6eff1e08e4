//! One direction of a proxied TCP connection: readiness from the ring, then non-blocking
//! copies (small messages) or splices through a pipe (bulk), until EOF or a reset.

use std::cell::Cell;
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::time::Instant;

use zerohop_proto::stats::Counter;

use super::transport::{Sock, Transport};
use super::{sys, Pipe, Pools, BUF_SIZE};
use crate::stats::ShardStats;

/// How a direction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The source sent FIN; it was forwarded as a half-close (shutdown SHUT_WR) to the sink.
    Eof,
    /// The source reset (or errored): the caller resets the sink.
    SourceReset,
    /// The sink refused bytes (reset or gone): the caller resets the source.
    SinkReset,
}

/// What a pump needs from its connection and shard.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub pools: &'a Pools,
    pub stats: ShardStats,
    /// Updated on every transfer; the idle timer reads it.
    pub last_activity: &'a Cell<Instant>,
    /// Which byte counter this direction adds to.
    pub bytes: Counter,
    /// A tcp_proxy's `tcp.<stat_prefix>.downstream_cx_{rx,tx}_bytes_total` too.
    pub tcp: Option<(zerohop_proto::StatScope, zerohop_proto::stats::TcpStat)>,
    /// Bytes this direction moved (a tcp_proxy's access log reads it).
    pub total: Cell<u64>,
}

enum Step {
    /// Bytes moved; `more` when the source probably has more (the read filled its buffer).
    Moved {
        more: bool,
    },
    WouldBlock,
    End(End),
}

/// Moves bytes from `from` to `to` until `from` ends.
pub async fn pump(from: &Sock, to: &Sock, ctx: &Ctx<'_>) -> End {
    let mut pipe: Option<Pipe> = None;
    let mut ready = false;
    let end = loop {
        if !ready && from.readable().await.is_err() {
            break End::SourceReset;
        }
        let step = match &pipe {
            Some(p) => splice_once(from, to, p, ctx).await,
            None => copy_once(from, to, ctx, &mut pipe).await,
        };
        match step {
            Step::Moved { more } => ready = more,
            Step::WouldBlock => ready = false,
            Step::End(e) => break e,
        }
    };
    if end == End::Eof {
        let _ = to.shutdown_write();
        if let Some(p) = pipe {
            ctx.pools.give_pipe(p); // empty: every splice in was spliced out
        }
    }
    end
}

async fn copy_once(from: &Sock, to: &Sock, ctx: &Ctx<'_>, pipe: &mut Option<Pipe>) -> Step {
    let mut buf = ctx.pools.take_buffer();
    let step = match from.try_recv(&mut buf) {
        Ok(0) => Step::End(End::Eof),
        Ok(n) => {
            ctx.moved(n, Counter::BytesCopied);
            match send_all(to, &buf[..n]).await {
                Ok(()) => {
                    if n == BUF_SIZE && splices(from, to) {
                        // A full buffer means bulk: move the rest of this direction by splice.
                        *pipe = ctx.pools.take_pipe();
                    }
                    Step::Moved {
                        more: n == BUF_SIZE,
                    }
                }
                Err(_) => Step::End(End::SinkReset),
            }
        }
        Err(e) => read_error(e),
    };
    ctx.pools.give_buffer(buf);
    step
}

/// Whether bytes may go from `from` to `to` by splice: both plain sockets (TLS bytes must
/// pass through rustls).
fn splices(from: &Sock, to: &Sock) -> bool {
    from.plain().is_some() && to.plain().is_some()
}

async fn splice_once(from: &Sock, to: &Sock, pipe: &Pipe, ctx: &Ctx<'_>) -> Step {
    let n = match sys::splice(from.as_raw_fd(), pipe.write.as_raw_fd(), pipe.capacity) {
        Ok(0) => return Step::End(End::Eof),
        Ok(n) => n,
        Err(e) => return read_error(e),
    };
    ctx.moved(n, Counter::BytesSpliced);
    let mut left = n;
    while left > 0 {
        match sys::splice(pipe.read.as_raw_fd(), to.as_raw_fd(), left) {
            Ok(m) => left -= m,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if to.tcp().writable(false).await.is_err() {
                    return Step::End(End::SinkReset);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Step::End(End::SinkReset),
        }
    }
    Step::Moved {
        more: n == pipe.capacity,
    }
}

fn read_error(e: io::Error) -> Step {
    match e.kind() {
        ErrorKind::WouldBlock => Step::WouldBlock,
        ErrorKind::Interrupted => Step::Moved { more: true },
        _ => Step::End(End::SourceReset),
    }
}

/// Writes all of `buf` (readiness from the ring, non-blocking sends).
pub async fn send_all(to: &Sock, buf: &[u8]) -> io::Result<()> {
    to.send_all(buf).await
}

impl Ctx<'_> {
    fn moved(&self, n: usize, how: Counter) {
        self.last_activity.set(Instant::now());
        self.stats.add(self.bytes, n as u64);
        self.stats.add(how, n as u64);
        self.total.set(self.total.get() + n as u64);
        if let Some((scope, stat)) = self.tcp {
            self.stats.count_n(scope, stat, n as u64);
        }
    }
}

/// Appends what `from` has (at most `max` bytes) to `buf`. `wait_first` waits for readiness before the first
/// read, for when nothing can have arrived yet (a request just sent, a response just
/// relayed): it saves a read that would fail. `Ok(0)` at end of stream.
pub async fn recv_into(
    from: &Sock,
    buf: &mut Vec<u8>,
    wait_first: bool,
    max: usize,
) -> io::Result<usize> {
    if wait_first {
        from.readable().await?;
    }
    loop {
        match from.try_recv_spare(buf, max) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => from.readable().await?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Moves exactly `n` bytes from `from` to `to`: through a pooled buffer, or by splice(2)
/// through a pooled pipe when more than a buffer's worth remains.
pub async fn copy_exact(from: &Sock, to: &Sock, mut n: u64, ctx: &Ctx<'_>) -> End {
    let mut pipe: Option<Pipe> = None;
    let end = loop {
        if n == 0 {
            break End::Eof;
        }
        if from.readable().await.is_err() {
            break End::SourceReset;
        }
        if pipe.is_none() && n > BUF_SIZE as u64 && splices(from, to) {
            pipe = ctx.pools.take_pipe();
        }
        let moved = match &pipe {
            Some(p) => splice_at_most(from, to, p, n, ctx).await,
            None => copy_at_most(from, to, n, ctx).await,
        };
        match moved {
            Ok(m) => n -= m as u64,
            Err(e) => break e,
        }
    };
    if let Some(p) = pipe {
        if end == End::Eof {
            ctx.pools.give_pipe(p); // empty: every splice in was spliced out
        }
    }
    if end == End::Eof && n > 0 {
        return End::SourceReset;
    }
    end
}

async fn copy_at_most(from: &Sock, to: &Sock, n: u64, ctx: &Ctx<'_>) -> Result<usize, End> {
    let mut buf = ctx.pools.take_buffer();
    let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
    let r = match from.try_recv(&mut buf[..want]) {
        Ok(0) => Err(End::SourceReset), // ended before the promised length
        Ok(m) => {
            ctx.moved(m, Counter::BytesCopied);
            match send_all(to, &buf[..m]).await {
                Ok(()) => Ok(m),
                Err(_) => Err(End::SinkReset),
            }
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => Ok(0),
        Err(_) => Err(End::SourceReset),
    };
    ctx.pools.give_buffer(buf);
    r
}

async fn splice_at_most(
    from: &Sock,
    to: &Sock,
    pipe: &Pipe,
    n: u64,
    ctx: &Ctx<'_>,
) -> Result<usize, End> {
    let want = pipe.capacity.min(usize::try_from(n).unwrap_or(usize::MAX));
    let m = match sys::splice(from.as_raw_fd(), pipe.write.as_raw_fd(), want) {
        Ok(0) => return Err(End::SourceReset),
        Ok(m) => m,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
            return Ok(0)
        }
        Err(_) => return Err(End::SourceReset),
    };
    ctx.moved(m, Counter::BytesSpliced);
    let mut left = m;
    while left > 0 {
        match sys::splice(pipe.read.as_raw_fd(), to.as_raw_fd(), left) {
            Ok(k) => left -= k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if to.tcp().writable(false).await.is_err() {
                    return Err(End::SinkReset);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(End::SinkReset),
        }
    }
    Ok(m)
}
