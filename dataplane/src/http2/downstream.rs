//! The HTTP/2 codec's side of a stream: [`Downstream`] for one stream of a client
//! connection, on `h2`'s stream handles.
//!
//! Bodies cross between DATA frames and the HTTP/1.1 upstream's framing here: a request's
//! DATA goes upstream as sent (a declared length) or as chunks (no length; its trailers as
//! chunked trailers), each frame's flow-control window released only once the upstream has
//! taken its bytes, so a slow upstream slows only its own stream. A response body is decoded
//! from the upstream's framing and sent as DATA within the stream's send window.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::io;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::net::transport::Sock;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use zerohop_proto::stats::Counter;

use super::body::{self, release, send_data};
use super::head;
use crate::http::body::{within, BodyEnd};
use crate::http::downstream::{BodySink, BodySource, Downstream, LocalBody, ResponseHead, Wait};
use crate::http::message::Framing;
use crate::shard::Shard;

/// One HTTP/2 stream as the connection manager serves it.
#[derive(Debug)]
pub struct H2Stream {
    /// Shared with [`Downstream::closed`], which watches it for the client's reset.
    respond: RefCell<SendResponse<Bytes>>,
    body: RecvStream,
    /// DATA received (by [`Downstream::take_received_body`]'s look) and not yet consumed.
    early: Vec<Bytes>,
    /// The response's DATA side, once its head is out.
    send: Option<SendStream<Bytes>>,
    /// The response has ended (END_STREAM sent).
    finished: bool,
    last: Cell<Instant>,
}

impl H2Stream {
    pub fn new(respond: SendResponse<Bytes>, body: RecvStream) -> H2Stream {
        H2Stream {
            respond: RefCell::new(respond),
            body,
            early: Vec::new(),
            send: None,
            finished: false,
            last: Cell::new(Instant::now()),
        }
    }

    /// Whether a response (or a reset) went out.
    pub fn answered(&self) -> bool {
        self.send.is_some() || self.finished
    }

    /// Refuses the stream (a request head the codec will not pass on).
    pub fn refuse(&mut self, reason: Reason) {
        self.respond.get_mut().send_reset(reason);
        self.finished = true;
    }
}

impl Downstream for H2Stream {
    fn last_activity(&self) -> &Cell<Instant> {
        &self.last
    }

    async fn send_continue(&mut self) -> io::Result<()> {
        let mut interim = http::Response::new(());
        *interim.status_mut() = http::StatusCode::CONTINUE;
        self.respond
            .get_mut()
            .send_informational(interim)
            .map_err(io::Error::other)
    }

    /// What DATA has arrived already is taken without waiting; it is the whole body when
    /// the stream has ended within `max` bytes. Only a declared length qualifies: a body
    /// without one streams (chunked to an HTTP/1.1 upstream, as Envoy's), whenever its
    /// DATA happens to arrive.
    fn take_received_body(&mut self, framing: Framing, max: u64) -> Option<Vec<u8>> {
        if !matches!(framing, Framing::Length(n) if n <= max) {
            return None;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut ended = false;
        loop {
            match self.body.poll_data(&mut cx) {
                Poll::Ready(Some(Ok(b))) => self.early.push(b),
                Poll::Ready(None) => {
                    ended = true;
                    break;
                }
                Poll::Ready(Some(Err(_))) | Poll::Pending => break,
            }
        }
        let len: usize = self.early.iter().map(Bytes::len).sum();
        if !ended || !self.body.is_end_stream() || len as u64 > max {
            return None;
        }
        let mut whole = Vec::with_capacity(len);
        for b in self.early.drain(..) {
            whole.extend_from_slice(&b);
        }
        release(&mut self.body, len);
        Some(whole)
    }

    async fn read_body(
        &mut self,
        _framing: Framing,
        max: u64,
        wait: Wait<'_>,
    ) -> Result<Vec<u8>, BodyEnd> {
        let (recv, early, last) = (&mut self.body, &mut self.early, &self.last);
        let read = async {
            let mut whole = Vec::new();
            while let Some(chunk) = body::next_data(recv, early).await {
                let chunk = chunk.map_err(|()| BodyEnd::Source(None))?;
                last.set(Instant::now());
                if (whole.len() + chunk.len()) as u64 > max {
                    return Err(BodyEnd::Sink);
                }
                whole.extend_from_slice(&chunk);
                release(recv, chunk.len());
            }
            Ok(whole)
        };
        within(read, wait.timer, last, wait.idle, wait.deadline)
            .await
            .unwrap_or(Err(BodyEnd::TimedOut))
    }

    async fn relay_request_body(
        &mut self,
        shard: &Shard,
        framing: Framing,
        to: BodySink<'_>,
        wait: Wait<'_>,
        moved: &mut u64,
    ) -> BodyEnd {
        let (recv, early, last) = (&mut self.body, &mut self.early, &self.last);
        let relay = async {
            match to {
                BodySink::H1(to) => {
                    let mut out = shard.pools.take_vec();
                    let chunked = framing == Framing::Chunked;
                    let end =
                        body::data_to_h1(recv, early, to, chunked, last, moved, &mut out).await;
                    shard.pools.give_vec(out);
                    end
                }
                BodySink::H2(send) => body::data_to_data(recv, early, send, last, moved).await,
            }
        };
        within(relay, wait.timer, last, wait.idle, wait.deadline)
            .await
            .unwrap_or(BodyEnd::TimedOut)
    }

    async fn send_response(
        &mut self,
        _shard: &Shard,
        head: &ResponseHead<'_>,
        body: &[u8],
    ) -> io::Result<u64> {
        let resp = head::response(head);
        let bodiless = head.framing == Framing::Empty && body.is_empty();
        let whole = matches!(head.framing, Framing::Length(n) if n == body.len() as u64);
        let mut send = self
            .respond
            .get_mut()
            .send_response(resp, bodiless)
            .map_err(io::Error::other)?;
        self.last.set(Instant::now());
        if !body.is_empty() {
            send_data(&mut send, Bytes::copy_from_slice(body), whole)
                .await
                .map_err(|()| io::Error::from(io::ErrorKind::ConnectionReset))?;
        }
        self.finished = bodiless || whole;
        self.send = Some(send);
        Ok(body.len() as u64)
    }

    async fn relay_response_body(
        &mut self,
        shard: &Shard,
        from: BodySource<'_>,
        wait: Wait<'_>,
        moved: &mut u64,
    ) -> BodyEnd {
        if self.finished {
            return BodyEnd::Done;
        }
        let Some(send) = self.send.as_mut() else {
            return BodyEnd::Sink;
        };
        let last = &self.last;
        let relay = async {
            match from {
                BodySource::H1 {
                    stream,
                    buf,
                    framing,
                } => body::h1_to_data(stream, buf, framing, send, last, moved).await,
                BodySource::H2 { recv, .. } => {
                    body::data_to_data(recv, &mut Vec::new(), send, last, moved).await
                }
            }
        };
        let end = within(relay, wait.timer, last, wait.idle, wait.deadline)
            .await
            .unwrap_or(BodyEnd::TimedOut);
        shard.stats.add(Counter::DownstreamCxTxBytes, *moved);
        self.finished = end == BodyEnd::Done;
        end
    }

    async fn relay_encoded_response_body(
        &mut self,
        shard: &Shard,
        from: BodySource<'_>,
        enc: &mut crate::http::filter::compressor::Encoder,
        _max: usize,
        wait: Wait<'_>,
        moved: &mut u64,
    ) -> BodyEnd {
        let Some(send) = self.send.as_mut() else {
            return BodyEnd::Sink;
        };
        let (last, stats) = (&self.last, shard.stats);
        let mut packed = Vec::new();
        let sink = async |plain: &[u8], done: bool| {
            if crate::http::body::compress(stats, enc, plain, done, &mut packed).is_err() {
                return false;
            }
            let out = Bytes::from(std::mem::take(&mut packed));
            *moved += out.len() as u64;
            last.set(Instant::now());
            body::send_data(send, out, done).await.is_ok()
        };
        let relay = crate::http::body::decoded_from(from, last, sink);
        let end = within(relay, wait.timer, last, wait.idle, wait.deadline)
            .await
            .unwrap_or(BodyEnd::TimedOut);
        self.finished = end == BodyEnd::Done;
        end
    }

    /// HTTP/2 has no `Upgrade` (a request never asks for one here).
    async fn upgrade(
        &mut self,
        _shard: &Shard,
        _head: &ResponseHead<'_>,
        _early: &[u8],
        _up: &Sock,
        _idle: Option<Duration>,
    ) -> bool {
        self.reset();
        false
    }

    async fn local_reply(
        &mut self,
        status: u16,
        body: LocalBody<'_>,
        extra: &[(&[u8], Cow<'_, [u8]>)],
        _close: bool,
    ) -> bool {
        if self.answered() {
            self.reset();
            return false;
        }
        let (resp, body) = head::local_response(status, body, extra);
        let empty = body.is_empty();
        let Ok(mut send) = self.respond.get_mut().send_response(resp, empty) else {
            return false;
        };
        let sent = empty || send_data(&mut send, body, true).await.is_ok();
        self.finished = true;
        self.send = Some(send);
        sent
    }

    fn reset(&mut self) {
        match &mut self.send {
            Some(s) => s.send_reset(Reason::INTERNAL_ERROR),
            None => self.respond.get_mut().send_reset(Reason::INTERNAL_ERROR),
        }
        self.finished = true;
    }

    /// The client reset the stream (or its connection went away).
    async fn closed(&self, _shard: &Shard) {
        let _ = std::future::poll_fn(|cx| self.respond.borrow_mut().poll_reset(cx)).await;
    }
}
