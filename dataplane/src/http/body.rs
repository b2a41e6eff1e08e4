//! Moving bodies, HTTP/1.1 to HTTP/1.1: the explicit fast path (the HTTP/1.1 codec's
//! [`Downstream`] impl chooses these relays), and a request body streamed from any
//! downstream codec ([`StreamedBody`]).
//!
//! Between two HTTP/1.1 sockets a body needs no codec round trip: a Content-Length body is
//! copied through a pooled buffer, or spliced socket -> pipe -> socket once more than a
//! buffer's worth remains (`net::pump::copy_exact`); a chunked body is validated chunk by
//! chunk (`http1::chunked`) and passed on as sent. These functions take the two sockets and
//! the bytes already read; the stream decides when they apply.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::net::transport::Sock;
use monoio::time::Sleep;
use zerohop_proto::stats::Counter;

use crate::error::{Kind, ProxyError};
use crate::http::downstream::{BodySink, BodySource, Downstream, Wait};
use crate::http::filter::compressor::Encoder;
use crate::http::message::Framing;
use crate::http1::chunked::{ChunkError, ChunkedDecoder};
use crate::http1::server::{far_future, READ_CHUNK};
use crate::net::pump::{copy_exact, recv_into, send_all, Ctx, End};

/// How a body relay ended.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyEnd {
    Done,
    /// `stream_idle_timeout`, `request_timeout` or the route timeout passed.
    TimedOut,
    /// The source ended early, reset, or sent a malformed chunk.
    Source(Option<ChunkError>),
    /// The sink refused bytes.
    Sink,
}

/// `n` bytes from `buf` (consumed) and then from `from`, to `to`.
pub async fn relay_length(
    ctx: &Ctx<'_>,
    from: &Sock,
    buf: &mut Vec<u8>,
    to: &Sock,
    n: u64,
) -> BodyEnd {
    let have = (buf.len() as u64).min(n) as usize;
    if send_all(to, &buf[..have]).await.is_err() {
        return BodyEnd::Sink;
    }
    buf.drain(..have);
    match copy_exact(from, to, n - have as u64, ctx).await {
        End::Eof => BodyEnd::Done,
        End::SourceReset => BodyEnd::Source(None),
        End::SinkReset => BodyEnd::Sink,
    }
}

/// What a chunked relay passes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunks {
    /// The body as sent, chunk framing and trailers included.
    AsSent,
    /// The payload only (trailers dropped), for a peer that cannot take chunks.
    Decoded,
}

/// A chunked body from `buf` and then `from`, validated chunk by chunk and passed on as
/// `chunks` says; `moved` counts the bytes passed on. Nothing after a malformed line goes
/// on.
pub async fn relay_chunked(
    from: &Sock,
    buf: &mut Vec<u8>,
    to: &Sock,
    last: &Cell<Instant>,
    chunks: Chunks,
    moved: &mut u64,
) -> BodyEnd {
    let mut dec = ChunkedDecoder::default();
    loop {
        let mut at = 0;
        let mut bad = None;
        while !dec.is_done() {
            match dec.decode(&buf[at..]) {
                Ok(step) if step.consumed == 0 && step.payload.is_none() => break,
                Ok(step) => {
                    if let (Chunks::Decoded, Some(p)) = (chunks, step.payload) {
                        let payload = &buf[at + p.start..at + p.end];
                        if send_all(to, payload).await.is_err() {
                            return BodyEnd::Sink;
                        }
                        *moved += payload.len() as u64;
                    }
                    at += step.consumed;
                }
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        if chunks == Chunks::AsSent {
            // What validated so far goes on, in one send.
            if send_all(to, &buf[..at]).await.is_err() {
                return BodyEnd::Sink;
            }
            *moved += at as u64;
        }
        if let Some(e) = bad {
            return BodyEnd::Source(Some(e));
        }
        buf.drain(..at);
        if dec.is_done() {
            return BodyEnd::Done;
        }
        match recv_into(from, buf, false, READ_CHUNK).await {
            Ok(0) | Err(_) => return BodyEnd::Source(None),
            Ok(_) => last.set(Instant::now()),
        }
    }
}

/// The rest of a response body, decoded from `framing` (what is in `buf` first, then
/// `from`), handed to `sink` as it arrives: each read's payload, and `true` with the last
/// (possibly empty). A `false` from the sink ends the relay (`Sink`). Nothing is spliced:
/// every byte passes the sink (a compressor, another codec's framing).
pub async fn relay_decoded(
    from: &Sock,
    buf: &mut Vec<u8>,
    framing: Framing,
    last: &Cell<Instant>,
    mut sink: impl AsyncFnMut(&[u8], bool) -> bool,
) -> BodyEnd {
    let mut dec = ChunkedDecoder::default();
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut plain = Vec::new();
    let mut closed = false;
    loop {
        let done = match framing {
            Framing::Empty => true,
            Framing::Length(_) => {
                let take = (buf.len() as u64).min(remaining) as usize;
                plain.extend(buf.drain(..take));
                remaining -= take as u64;
                remaining == 0
            }
            Framing::Chunked => match decode_into(&mut dec, buf, &mut plain, u64::MAX) {
                Ok(()) => dec.is_done(),
                Err(e) => return e,
            },
            Framing::UntilClose => {
                plain.append(buf);
                closed
            }
        };
        if (!plain.is_empty() || done) && !sink(&plain, done).await {
            return BodyEnd::Sink;
        }
        plain.clear();
        if done {
            return BodyEnd::Done;
        }
        match recv_into(from, buf, false, READ_CHUNK).await {
            Ok(0) if framing == Framing::UntilClose => closed = true,
            Ok(0) | Err(_) => return BodyEnd::Source(None),
            Ok(_) => last.set(Instant::now()),
        }
    }
}

/// The rest of a response body from either kind of upstream, decoded, handed to `sink` as
/// [`relay_decoded`] does (an HTTP/2 stream's trailers are dropped).
pub async fn decoded_from(
    from: BodySource<'_>,
    last: &Cell<Instant>,
    sink: impl AsyncFnMut(&[u8], bool) -> bool,
) -> BodyEnd {
    match from {
        BodySource::H1 {
            stream,
            buf,
            framing,
        } => relay_decoded(stream, buf, framing, last, sink).await,
        BodySource::H2 { recv, .. } => crate::http2::body::data_decoded(recv, last, sink).await,
    }
}

/// The rest of a response body, decoded ([`decoded_from`]), through `enc` (compressed and
/// flushed per read), out to `to`: as HTTP/1.1 chunks of at most `max` bytes each, or as it
/// comes (`chunked` false: a client delimited by the connection's end). `moved` counts the
/// bytes sent; the compressor's byte counters are kept here.
#[allow(clippy::too_many_arguments)] // Reason: the two ends, their framings and the encoder.
pub async fn relay_encoded(
    from: BodySource<'_>,
    to: &Sock,
    last: &Cell<Instant>,
    stats: crate::stats::ShardStats,
    enc: &mut Encoder,
    (chunked, max): (bool, usize),
    moved: &mut u64,
) -> BodyEnd {
    let (mut packed, mut out) = (Vec::new(), Vec::new());
    let sink = async |plain: &[u8], done: bool| {
        let Ok(()) = compress(stats, enc, plain, done, &mut packed) else {
            return false;
        };
        match chunked {
            true => {
                crate::http::filter::compressor::chunk_into(&packed, max, &mut out);
                if done {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
            }
            false => out.append(&mut packed),
        }
        if !out.is_empty() && send_all(to, &out).await.is_err() {
            return false;
        }
        *moved += out.len() as u64;
        packed.clear();
        out.clear();
        true
    };
    decoded_from(from, last, sink).await
}

/// `plain` through the encoder into `packed` (flushed; finished when `done`), counted.
pub fn compress(
    stats: crate::stats::ShardStats,
    enc: &mut Encoder,
    plain: &[u8],
    done: bool,
    packed: &mut Vec<u8>,
) -> std::io::Result<()> {
    stats.add(
        Counter::CompressorTotalUncompressedBytes,
        plain.len() as u64,
    );
    let before = packed.len();
    enc.push(plain, done, packed)?;
    stats.add(
        Counter::CompressorTotalCompressedBytes,
        (packed.len() - before) as u64,
    );
    Ok(())
}

/// A whole body, from `buf` and then `from` (what follows it stays in `buf`): a
/// Content-Length body as sent, a chunked one decoded (its trailers dropped). `Err(Sink)`
/// once it passes `max` bytes.
pub async fn read_whole(
    from: &Sock,
    buf: &mut Vec<u8>,
    framing: Framing,
    max: u64,
    last: &Cell<Instant>,
) -> Result<Vec<u8>, BodyEnd> {
    let mut dec = ChunkedDecoder::default();
    let mut body = Vec::new();
    loop {
        match framing {
            Framing::Length(n) if n > max => return Err(BodyEnd::Sink),
            Framing::Length(n) if buf.len() as u64 >= n => {
                let rest = buf.split_off(n as usize);
                return Ok(std::mem::replace(buf, rest));
            }
            Framing::Chunked => {
                decode_into(&mut dec, buf, &mut body, max)?;
                if dec.is_done() {
                    return Ok(body);
                }
            }
            Framing::Length(_) => {}
            Framing::Empty | Framing::UntilClose => return Ok(body),
        }
        match recv_into(from, buf, false, READ_CHUNK).await {
            Ok(0) | Err(_) => return Err(BodyEnd::Source(None)),
            Ok(_) => last.set(Instant::now()),
        }
    }
}

/// Decodes what `buf` holds of a chunked body: the payload appended to `out` (`Err(Sink)`
/// once `out` would pass `max` bytes), the bytes decoded taken out of `buf`.
fn decode_into(
    dec: &mut ChunkedDecoder,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    max: u64,
) -> Result<(), BodyEnd> {
    let mut at = 0;
    while !dec.is_done() {
        match dec.decode(&buf[at..]) {
            Ok(step) if step.consumed == 0 && step.payload.is_none() => break,
            Ok(step) => {
                if let Some(p) = step.payload {
                    if (out.len() + p.len()) as u64 > max {
                        return Err(BodyEnd::Sink);
                    }
                    out.extend_from_slice(&buf[at + p.start..at + p.end]);
                }
                at += step.consumed;
            }
            Err(e) => return Err(BodyEnd::Source(Some(e))),
        }
    }
    buf.drain(..at);
    Ok(())
}

/// `work`'s output, or `None` when no bytes moved for `idle` (the stream idle timeout,
/// measured from `last`) or `deadline` passed first.
///
/// Both limits run on the connection's one `timer`, moved to whichever comes first (and on
/// when bytes moved since): no timer of its own per relay, so no entry of its own in the
/// timer wheel, and a future a fraction of the size.
pub async fn within<T>(
    work: impl Future<Output = T>,
    mut timer: Pin<&mut Sleep>,
    last: &Cell<Instant>,
    idle: Option<Duration>,
    deadline: Option<Instant>,
) -> Option<T> {
    let next = || {
        let idle_end = idle.map(|d| last.get() + d);
        match (idle_end, deadline) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => far_future(),
        }
    };
    let mut work = std::pin::pin!(work);
    timer.as_mut().reset(next().into());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let idle_over = idle.is_some_and(|d| last.get() + d <= now);
            if idle_over || deadline.is_some_and(|d| d <= now) {
                return Poll::Ready(None);
            }
            timer.as_mut().reset(next().into());
        }
        Poll::Pending
    })
    .await
}

/// The counter a body direction adds its bytes to.
pub fn pump_ctx<'a>(
    shard: &'a crate::shard::Shard,
    last: &'a Cell<Instant>,
    bytes: Counter,
) -> Ctx<'a> {
    Ctx {
        pools: &shard.pools,
        stats: shard.stats,
        last_activity: last,
        bytes,
        tcp: None,
        total: Cell::new(0),
    }
}

/// The rest of a request body, still on the client's connection: relayed as it arrives
/// once the upstream is ready for it.
pub struct StreamedBody<'a, D> {
    pub shard: &'a crate::shard::Shard,
    pub down: &'a mut D,
    pub framing: Framing,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
    pub request_timeout: Option<Duration>,
    pub stream_idle_timeout: Option<Duration>,
    /// All of it has been relayed.
    pub done: bool,
}

impl<D> std::fmt::Debug for StreamedBody<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedBody")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl<D: Downstream> StreamedBody<'_, D> {
    /// Relays the body to `to`, an HTTP/1.1 upstream connection, under `request_timeout`
    /// and the stream idle timeout (on the connection's `timer`). Returns the body bytes
    /// relayed.
    pub async fn relay_to(
        &mut self,
        to: BodySink<'_>,
        timer: Pin<&mut Sleep>,
    ) -> Result<u64, ProxyError> {
        let shard = self.shard;
        if self.expect_continue {
            // Answered here (Envoy's default): the client sends the body at once.
            self.expect_continue = false;
            if self.down.send_continue().await.is_err() {
                return Err(Kind::DownstreamClosed.into());
            }
        }
        let wait = Wait {
            timer,
            idle: self.stream_idle_timeout,
            deadline: self.request_timeout.map(|t| Instant::now() + t),
        };
        let mut moved = 0u64;
        let end = self
            .down
            .relay_request_body(shard, self.framing, to, wait, &mut moved)
            .await;
        match end {
            BodyEnd::Done => {
                self.done = true;
                Ok(moved)
            }
            BodyEnd::Source(Some(_)) => {
                shard.stats.inc(Counter::DownstreamRqMalformed);
                Err(Kind::MalformedBody.into())
            }
            BodyEnd::Source(None) => Err(Kind::DownstreamClosed.into()),
            BodyEnd::TimedOut => Err(Kind::RequestTimeout.into()),
            BodyEnd::Sink => {
                shard.stats.inc(Counter::UpstreamRqReset);
                Err(Kind::UpstreamClosed.into())
            }
        }
    }
}

/// Reads what is missing of a small Content-Length response body (at most `small` bytes,
/// starting at `start` in `buf`) into `buf`, before `deadline` (on the connection's
/// `timer`), so that it goes out in the same send as the head. `Ok(false)` for a body that
/// is not small.
pub async fn read_small(
    from: &Sock,
    buf: &mut Vec<u8>,
    start: usize,
    framing: Framing,
    small: u64,
    deadline: Option<Instant>,
    mut timer: Pin<&mut Sleep>,
) -> Result<bool, ProxyError> {
    let Framing::Length(n) = framing else {
        return Ok(false);
    };
    if n > small {
        return Ok(false);
    }
    while ((buf.len() - start) as u64) < n {
        let want = n as usize - (buf.len() - start);
        let until = deadline.unwrap_or_else(far_future);
        let read = std::pin::pin!(recv_into(from, buf, false, want));
        match crate::net::ring::until(read, timer.as_mut(), until).await {
            Some(Ok(m)) if m > 0 => {}
            Some(_) => return Err(Kind::UpstreamClosed.into()),
            None => return Err(Kind::UpstreamTimeout.into()),
        }
    }
    Ok(true)
}
