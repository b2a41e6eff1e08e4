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

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use monoio::net::TcpStream;
use zerohop_proto::stats::Counter;

use super::head;
use crate::http::body::{self, within, BodyEnd};
use crate::http::downstream::{Downstream, LocalBody, ResponseHead, Wait};
use crate::http::message::Framing;
use crate::net::pump;
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

/// The next DATA frame's bytes of `body`, after what was looked at already.
async fn next_data(body: &mut RecvStream, early: &mut Vec<Bytes>) -> Option<Result<Bytes, ()>> {
    if !early.is_empty() {
        return Some(Ok(early.remove(0)));
    }
    std::future::poll_fn(|cx| body.poll_data(cx))
        .await
        .map(|r| r.map_err(|_| ()))
}

/// Gives the peer back `n` bytes of window: they have left zerohop.
fn release(body: &mut RecvStream, n: usize) {
    let _ = body.flow_control().release_capacity(n);
}

/// Sends `data` as DATA frames within the stream's send window, ending the stream after it
/// when `end`. `Err` once the stream is gone (reset, or the connection closed).
pub async fn send_data(send: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<(), ()> {
    if data.is_empty() {
        return match end {
            true => send.send_data(data, true).map_err(|_| ()),
            false => Ok(()),
        };
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = std::future::poll_fn(|cx| send.poll_capacity(cx)).await;
        let n = match granted {
            Some(Ok(n)) => n.min(data.len()),
            Some(Err(_)) | None => return Err(()),
        };
        if n == 0 {
            continue;
        }
        let chunk = data.split_to(n);
        send.send_data(chunk, end && data.is_empty())
            .map_err(|_| ())?;
    }
    Ok(())
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
    /// the stream has ended within `max` bytes.
    fn take_received_body(&mut self, framing: Framing, max: u64) -> Option<Vec<u8>> {
        if framing == Framing::Empty {
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
        let (body, early, last) = (&mut self.body, &mut self.early, &self.last);
        let read = async {
            let mut whole = Vec::new();
            while let Some(chunk) = next_data(body, early).await {
                let chunk = chunk.map_err(|()| BodyEnd::Source(None))?;
                last.set(Instant::now());
                if (whole.len() + chunk.len()) as u64 > max {
                    return Err(BodyEnd::Sink);
                }
                whole.extend_from_slice(&chunk);
                release(body, chunk.len());
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
        to: &TcpStream,
        wait: Wait<'_>,
        moved: &mut u64,
    ) -> BodyEnd {
        let (body, early, last) = (&mut self.body, &mut self.early, &self.last);
        let chunked = framing == Framing::Chunked;
        let relay = async {
            let mut out = shard.pools.take_vec();
            let end = 'relay: {
                while let Some(chunk) = next_data(body, early).await {
                    let Ok(chunk) = chunk else {
                        break 'relay BodyEnd::Source(None);
                    };
                    last.set(Instant::now());
                    if chunk.is_empty() {
                        continue;
                    }
                    out.clear();
                    if chunked {
                        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    }
                    out.extend_from_slice(&chunk);
                    if chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                    if pump::send_all(to, &out).await.is_err() {
                        break 'relay BodyEnd::Sink;
                    }
                    release(body, chunk.len());
                    *moved += chunk.len() as u64;
                }
                if chunked {
                    out.clear();
                    out.extend_from_slice(b"0\r\n");
                    let trailers = std::future::poll_fn(|cx| body.poll_trailers(cx)).await;
                    if let Ok(Some(map)) = trailers {
                        for (n, v) in &map {
                            crate::http1::encode::write_header(
                                &mut out,
                                n.as_str().as_bytes(),
                                v.as_bytes(),
                            );
                        }
                    }
                    out.extend_from_slice(b"\r\n");
                    if pump::send_all(to, &out).await.is_err() {
                        break 'relay BodyEnd::Sink;
                    }
                }
                BodyEnd::Done
            };
            shard.pools.give_vec(out);
            end
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
        from: &TcpStream,
        buf: &mut Vec<u8>,
        framing: Framing,
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
        let sink = async |plain: &[u8], done: bool| {
            let ok = send_data(send, Bytes::copy_from_slice(plain), done)
                .await
                .is_ok();
            *moved += plain.len() as u64;
            last.set(Instant::now());
            ok
        };
        let relay = body::relay_decoded(from, buf, framing, last, sink);
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
        from: &TcpStream,
        buf: &mut Vec<u8>,
        framing: Framing,
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
            if body::compress(stats, enc, plain, done, &mut packed).is_err() {
                return false;
            }
            let out = Bytes::from(std::mem::take(&mut packed));
            *moved += out.len() as u64;
            last.set(Instant::now());
            send_data(send, out, done).await.is_ok()
        };
        let relay = body::relay_decoded(from, buf, framing, last, sink);
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
        _up: &TcpStream,
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
