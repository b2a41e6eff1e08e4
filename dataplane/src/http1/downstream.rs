//! The HTTP/1.1 codec's side of a stream: [`Downstream`] for a client connection.
//!
//! This is where the HTTP/1.1 -> HTTP/1.1 fast path is chosen, explicitly: bodies move
//! between the two sockets through `http::body`'s relays (a pooled buffer, or splice once
//! more than a buffer's worth remains), never through decoded chunks; response heads go out
//! through the ring in one send with a small body.

use std::borrow::Cow;
use std::cell::Cell;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::net::transport::Sock;
use zerohop_proto::stats::Counter;

use super::server::ServerConn;
use crate::http::body::{self, pump_ctx, within, BodyEnd, Chunks};
use crate::http::downstream::{BodySink, BodySource, Downstream, LocalBody, ResponseHead, Wait};
use crate::http::message::{Framing, Version};
use crate::net::pump::{self, End};
use crate::net::sys;
use crate::shard::Shard;

impl Downstream for ServerConn {
    fn last_activity(&self) -> &Cell<Instant> {
        &self.last
    }

    async fn send_continue(&mut self) -> io::Result<()> {
        self.send_all(b"HTTP/1.1 100 Continue\r\n\r\n").await
    }

    fn take_received_body(&mut self, framing: Framing, max: u64) -> Option<Vec<u8>> {
        match framing {
            Framing::Length(n) if n <= max && self.buf.len() as u64 >= n => {
                let rest = self.buf.split_off(n as usize);
                Some(std::mem::replace(&mut self.buf, rest))
            }
            _ => None,
        }
    }

    async fn read_body(
        &mut self,
        framing: Framing,
        max: u64,
        wait: Wait<'_>,
    ) -> Result<Vec<u8>, BodyEnd> {
        let mut buf = std::mem::take(&mut self.buf);
        let read = body::read_whole(&self.stream, &mut buf, framing, max, &self.last);
        let read = within(read, wait.timer, &self.last, wait.idle, wait.deadline)
            .await
            .unwrap_or(Err(BodyEnd::TimedOut));
        self.buf = buf;
        read
    }

    async fn relay_request_body(
        &mut self,
        shard: &Shard,
        framing: Framing,
        to: BodySink<'_>,
        wait: Wait<'_>,
        moved: &mut u64,
    ) -> BodyEnd {
        let mut buf = std::mem::take(&mut self.buf);
        let (from, last) = (&self.stream, &self.last);
        let relay = async {
            let to = match to {
                BodySink::H1(to) => to,
                // To an HTTP/2 stream: decoded, as DATA. Boxed, as every relay to or from an
                // HTTP/2 stream here: the HTTP/1.1 path's futures keep their size.
                BodySink::H2(send) => {
                    let relay =
                        crate::http2::body::h1_to_data(from, &mut buf, framing, send, last, moved);
                    return Box::pin(relay).await;
                }
            };
            match framing {
                Framing::Length(n) => {
                    *moved = n;
                    let ctx = pump_ctx(shard, last, Counter::DownstreamCxRxBytes);
                    body::relay_length(&ctx, from, &mut buf, to, n).await
                }
                Framing::Chunked => {
                    body::relay_chunked(from, &mut buf, to, last, Chunks::AsSent, moved).await
                }
                Framing::Empty | Framing::UntilClose => BodyEnd::Done,
            }
        };
        let end = within(relay, wait.timer, last, wait.idle, wait.deadline)
            .await
            .unwrap_or(BodyEnd::TimedOut);
        self.buf = buf;
        end
    }

    async fn send_response(
        &mut self,
        shard: &Shard,
        head: &ResponseHead<'_>,
        body: &[u8],
    ) -> io::Result<u64> {
        let mut out = shard.pools.take_vec();
        // The received head, rewritten, stays close to its size.
        out.reserve(head.headers.raw.len() + 64 + body.len());
        self.response_head(&mut out, head);
        out.extend_from_slice(body);
        let len = out.len() as u64;
        let (sent, out) = self.send(out).await;
        shard.pools.give_vec(out);
        sent.map(|()| len)
    }

    async fn relay_response_body(
        &mut self,
        shard: &Shard,
        from: BodySource<'_>,
        wait: Wait<'_>,
        moved: &mut u64,
    ) -> BodyEnd {
        let (to, last) = (&self.stream, &self.last);
        let Wait {
            timer,
            idle,
            deadline,
        } = wait;
        let (from, buf, framing) = match from {
            BodySource::H1 {
                stream,
                buf,
                framing,
            } => (stream, buf, framing),
            // From an HTTP/2 stream: its DATA as sent (a declared length), or as chunks with
            // its trailers; to an HTTP/1.0 client, as sent (delimited by the close).
            BodySource::H2 { recv, framing } => {
                let chunked = framing == Framing::Chunked && self.version != Version::Http10;
                let (mut out, mut early) = (shard.pools.take_vec(), Vec::new());
                let relay = crate::http2::body::data_to_h1(
                    recv, &mut early, to, chunked, last, moved, &mut out,
                );
                let end = Box::pin(within(relay, timer, last, idle, deadline))
                    .await
                    .unwrap_or(BodyEnd::TimedOut);
                shard.pools.give_vec(out);
                return end;
            }
        };
        match framing {
            Framing::Empty => BodyEnd::Done,
            Framing::Length(n) => {
                *moved += n;
                let ctx = pump_ctx(shard, last, Counter::DownstreamCxTxBytes);
                let relay = body::relay_length(&ctx, from, buf, to, n);
                within(relay, timer, last, idle, deadline)
                    .await
                    .unwrap_or(BodyEnd::TimedOut)
            }
            Framing::Chunked => {
                // An HTTP/1.0 client cannot take chunks: it gets the payload, delimited by
                // the connection's end.
                let chunks = match self.version {
                    Version::Http10 => Chunks::Decoded,
                    Version::Http11 | Version::Http2 => Chunks::AsSent,
                };
                let relay = body::relay_chunked(from, buf, to, last, chunks, moved);
                within(relay, timer, last, idle, deadline)
                    .await
                    .unwrap_or(BodyEnd::TimedOut)
            }
            Framing::UntilClose => {
                if pump::send_all(to, buf).await.is_err() {
                    return BodyEnd::Sink;
                }
                buf.clear();
                let ctx = pump_ctx(shard, last, Counter::DownstreamCxTxBytes);
                match pump::pump(from, to, &ctx).await {
                    End::Eof => BodyEnd::Done,
                    End::SourceReset => BodyEnd::Source(None),
                    End::SinkReset => BodyEnd::Sink,
                }
            }
        }
    }

    async fn relay_encoded_response_body(
        &mut self,
        shard: &Shard,
        from: BodySource<'_>,
        enc: &mut crate::http::filter::compressor::Encoder,
        max: usize,
        wait: Wait<'_>,
        moved: &mut u64,
    ) -> BodyEnd {
        let (to, last) = (&self.stream, &self.last);
        // HTTP/1.1: chunks; an HTTP/1.0 client: the bytes, delimited by the close.
        let chunked = self.version == Version::Http11;
        let relay = body::relay_encoded(from, to, last, shard.stats, enc, (chunked, max), moved);
        within(relay, wait.timer, last, wait.idle, wait.deadline)
            .await
            .unwrap_or(BodyEnd::TimedOut)
    }

    async fn upgrade(
        &mut self,
        shard: &Shard,
        head: &ResponseHead<'_>,
        early: &[u8],
        up: &Sock,
        idle: Option<Duration>,
    ) -> bool {
        let mut out = shard.pools.take_vec();
        self.response_head(&mut out, head);
        // The head, what the upstream sent after it, and what the client sent after its
        // request, before either side's bytes are pumped.
        let ok = self.send_all(&out).await.is_ok()
            && self.send_all(early).await.is_ok()
            && pump::send_all(up, &self.buf).await.is_ok();
        shard.pools.give_vec(out);
        if ok {
            self.buf.clear();
            // Boxed: a tunnel's pumps and idle timer are rare on this path.
            let tunnel = crate::net::tunnel::tunnel(
                &shard.pools,
                shard.stats,
                &self.stream,
                up,
                idle,
                zerohop_proto::StatScope::NONE,
            );
            Box::pin(tunnel).await;
        }
        ok
    }

    async fn local_reply(
        &mut self,
        status: u16,
        body: LocalBody<'_>,
        extra: &[(&[u8], Cow<'_, [u8]>)],
        close: bool,
    ) -> bool {
        let out = super::encode::local_response(self.version, status, body, extra, close);
        self.send_all(&out).await.is_ok()
    }

    fn reset(&mut self) {
        let _ = sys::set_linger_zero(self.stream.as_raw_fd());
    }

    /// The client's hang-up, through the shard's watch ([`crate::net::hangup`]); the
    /// connection joins it the first time one of its requests waits. HTTP/1.1 connections do
    /// not half-close here, as in Envoy: a client's FIN ends the connection.
    async fn closed(&self, shard: &Shard) {
        let slot = self.hangup.get_or_init(|| {
            shard
                .hangups
                .as_ref()
                .and_then(|h| h.watch(self.stream.as_raw_fd()))
        });
        match slot {
            Some(slot) => slot.hung_up().await,
            None => std::future::pending().await,
        }
    }
}
