//! What the connection manager asks of a downstream codec for one stream.
//!
//! The connection manager ([`crate::http::hcm`]) drives a stream through this trait and
//! nothing else: it never sees the codec's buffers, sockets or wire format. A codec
//! implements it for whatever carries one stream (HTTP/1.1: the client connection itself,
//! [`crate::http1::server::ServerConn`]); the stream code is generic over it, so each codec
//! gets its own monomorphized copy and no call goes through a vtable.
//!
//! Request bodies leave, and response bodies arrive, through the upstream's side of the
//! exchange ([`BodySink`], [`BodySource`]): an HTTP/1.1 connection's socket, so that the
//! HTTP/1.1 -> HTTP/1.1 splice stays a direct socket-to-socket path inside the codec's
//! implementation, or an HTTP/2 stream's handles.

use std::borrow::Cow;
use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::net::transport::Sock;
use monoio::time::Sleep;

use crate::http::body::BodyEnd;
use crate::http::hcm::headers::ResponseHeaders;
use crate::http::message::Framing;
use crate::shard::Shard;

/// What the connection does once the response is out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionAfter {
    KeepAlive,
    Close,
    /// The exchange switched protocols (101): the connection becomes a tunnel.
    Upgrade,
}

/// A response head as the connection manager hands it to the codec.
#[derive(Debug)]
pub struct ResponseHead<'a> {
    pub status: u16,
    /// The upstream's reason phrase, if any (a codec without one ignores it).
    pub reason: Option<&'a [u8]>,
    /// The headers, hop-by-hop ones already removed and the route's edits applied.
    pub headers: &'a ResponseHeaders<'a>,
    /// How the body that follows is delimited on the way out.
    pub framing: Framing,
    /// The declared length of a bodiless response (HEAD, 304), forwarded as sent.
    pub content_length: Option<&'a [u8]>,
    pub after: ConnectionAfter,
}

/// Where a request body goes upstream.
#[derive(Debug)]
pub enum BodySink<'a> {
    /// An HTTP/1.1 connection: the body in the request's framing.
    H1(&'a Sock),
    /// An HTTP/2 stream: DATA frames, the client's trailers as HTTP/2 trailers, then the
    /// stream's end.
    H2(&'a mut h2::SendStream<bytes::Bytes>),
}

/// Where the rest of a response body comes from.
#[derive(Debug)]
pub enum BodySource<'a> {
    /// An HTTP/1.1 connection: `buf` holds what was received of the body already, the rest
    /// is on the socket, delimited by `framing`.
    H1 {
        stream: &'a Sock,
        buf: &'a mut Vec<u8>,
        framing: Framing,
    },
    /// An HTTP/2 stream: DATA frames, then perhaps trailers. `framing` is the one the
    /// response head went out with (a declared length, or none).
    H2 {
        recv: &'a mut h2::RecvStream,
        framing: Framing,
    },
}

/// A local reply's body.
#[derive(Clone, Copy, Debug)]
pub enum LocalBody<'a> {
    /// Text, sent with its length (and `content-type: text/plain` when not empty).
    Text(&'a str),
    /// Text the compressor encoded: sent in the codec's framing for a body of unknown
    /// length, as Envoy sends a compressed reply.
    Encoded(&'a [u8]),
    /// The answer to a gRPC request, as Envoy shapes it: `200` with
    /// `content-type: application/grpc`, `grpc-status` and `grpc-message` (the reply's text),
    /// and no body (trailers-only).
    Grpc { status: u8, message: &'a str },
}

/// The gRPC status Envoy answers a gRPC request with for a local reply of HTTP `status`
/// (its `Grpc::Utility::httpToGrpcStatus`).
pub fn grpc_status(status: u16) -> u8 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// The limits one body transfer runs under: the stream idle timeout (no bytes either way
/// for this long) and a deadline, both on the connection's one timer.
#[derive(Debug)]
pub struct Wait<'t> {
    pub timer: Pin<&'t mut Sleep>,
    pub idle: Option<Duration>,
    pub deadline: Option<Instant>,
}

/// One stream's downstream side, as a codec provides it.
// Reason: zerohop's runtime is single-threaded per shard; no future here must be `Send`.
#[allow(async_fn_in_trait)]
pub trait Downstream {
    /// When bytes last moved either way (the stream idle timeout reads it).
    fn last_activity(&self) -> &Cell<Instant>;

    /// `100 Continue`, for a client that waits for it before sending its body.
    async fn send_continue(&mut self) -> io::Result<()>;

    /// The whole request body if it is delimited, at most `max` bytes and already
    /// received with the head (taken out of the codec's buffers); else `None`.
    fn take_received_body(&mut self, framing: Framing, max: u64) -> Option<Vec<u8>>;

    /// Reads the whole request body (decoded: no chunk framing); `Err(Sink)` once it
    /// passes `max` bytes.
    async fn read_body(
        &mut self,
        framing: Framing,
        max: u64,
        wait: Wait<'_>,
    ) -> Result<Vec<u8>, BodyEnd>;

    /// Relays the request body, as it arrives, to `to` (an HTTP/1.1 upstream connection,
    /// written in `framing`, or an HTTP/2 stream); `moved` counts its bytes.
    async fn relay_request_body(
        &mut self,
        shard: &Shard,
        framing: Framing,
        to: BodySink<'_>,
        wait: Wait<'_>,
        moved: &mut u64,
    ) -> BodyEnd;

    /// Sends the response head and `body` (all of a small body, or nothing) in one write.
    /// Returns the bytes sent.
    async fn send_response(
        &mut self,
        shard: &Shard,
        head: &ResponseHead<'_>,
        body: &[u8],
    ) -> io::Result<u64>;

    /// Relays the rest of the response body from `from`; `moved` counts its bytes.
    async fn relay_response_body(
        &mut self,
        shard: &Shard,
        from: BodySource<'_>,
        wait: Wait<'_>,
        moved: &mut u64,
    ) -> BodyEnd;

    /// Relays the rest of the response body from `from` through `enc` (a compressed body:
    /// never spliced), in this codec's framing for a body of unknown length, in writes of at
    /// most `max` encoded bytes.
    async fn relay_encoded_response_body(
        &mut self,
        shard: &Shard,
        from: BodySource<'_>,
        enc: &mut crate::http::filter::compressor::Encoder,
        max: usize,
        wait: Wait<'_>,
        moved: &mut u64,
    ) -> BodyEnd;

    /// Sends a `101` head and `early` (what the upstream sent after it), then tunnels the
    /// connection to `up` until either side ends or nothing moves for `idle`.
    async fn upgrade(
        &mut self,
        shard: &Shard,
        head: &ResponseHead<'_>,
        early: &[u8],
        up: &Sock,
        idle: Option<Duration>,
    ) -> bool;

    /// A response zerohop makes itself. Returns whether it was sent.
    async fn local_reply(
        &mut self,
        status: u16,
        body: LocalBody<'_>,
        extra: &[(&[u8], Cow<'_, [u8]>)],
        close: bool,
    ) -> bool;

    /// Ends the stream abruptly: the client sees a reset, not a clean end of a response
    /// whose body was cut short.
    fn reset(&mut self);

    /// Resolves when the client has gone (closed or reset its side) while the stream waits
    /// for its upstream, the whole request in hand; never, if the codec cannot tell or the
    /// client is still sending. The connection manager then abandons the upstream request,
    /// as Envoy resets a stream whose downstream connection closed.
    async fn closed(&self, shard: &Shard);
}
