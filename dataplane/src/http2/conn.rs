//! The HTTP/2 connection shell: one client connection, many concurrent streams.
//!
//! `h2` owns the framing, HPACK, flow control and the protocol's own defences (the reset
//! flood rule of CVE-2023-44487, CONTINUATION floods, header-list limits). This task drives
//! the connection (every frame in and out passes through its `accept`), and each request
//! becomes a task of its own on the shard, served by the codec-neutral connection manager
//! through an [`H2Stream`]: streams are independent, one slow upstream holds only its own
//! stream's window. Around them the shell keeps the connection manager's connection-level
//! rules: the idle timeout with no stream open, GOAWAY when the listener drains, PING
//! keepalive, and the generation each new stream is served with.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::Reason;
use zerohop_proto::stats::Counter;
use zerohop_proto::Http2Keepalive;

use super::downstream::H2Stream;
use super::head::{self, Refused};
use super::io::Io;
use crate::config::HttpPlan;
use crate::conn::{Accepted, Tracked};
use crate::error::Kind;
use crate::http::downstream::{Downstream, LocalBody};
use crate::http::hcm::Connection;
use crate::http1::server::far_future;
use crate::net::transport::Sock;
use crate::shard::config::ShardConfig;
use crate::shard::listeners::BoundListener;
use crate::shard::Shard;

/// Streams a client may open and reset before their requests were taken, per connection,
/// before the connection is closed (ENHANCE_YOUR_CALM): `h2`'s guard against the rapid
/// reset attack, at Envoy's figure.
const MAX_PENDING_RESETS: usize = 500;

/// Serves one downstream connection of a `codec_type: HTTP2` connection manager.
pub async fn serve(
    cfg: Rc<ShardConfig>,
    listener: Rc<BoundListener>,
    http: Arc<HttpPlan>,
    accepted: Accepted,
) {
    let (conn, stream, guard) = Connection::accept(cfg, &listener, http, accepted);
    // The downstream socket is shut at the drain deadline, whatever its streams are doing.
    let fd = stream.as_raw_fd();
    let _tracked = Tracked::new(&listener, [fd, fd]);
    guard.codec(true);
    run(guard.shard(), conn, stream, Vec::new()).await;
}

/// Serves `stream` as HTTP/2 for `conn`; `early` is what was read of it already (the start
/// of the preface, found by `codec_type: AUTO`).
pub async fn run(shard: &Rc<Shard>, mut conn: Connection, stream: Sock, early: Vec<u8>) {
    conn.learn(stream.tcp());
    conn.set_h2();
    let io = match Io::new(early, stream) {
        Ok(io) => io,
        Err(e) => {
            log::warn!("HTTP/2: cannot poll the connection: {e}");
            return;
        }
    };
    let hcm = conn.manager();
    let o = &hcm.http2;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(o.max_concurrent_streams)
        .initial_window_size(o.initial_stream_window_size)
        .initial_connection_window_size(o.initial_connection_window_size)
        .header_table_size(o.hpack_table_size)
        .max_header_list_size(hcm.max_request_headers_bytes)
        // What a stream may hold queued beyond the client's window: a client that stops
        // reading (a zero window) keeps this much per stream, and its upstream waits.
        .max_send_buffer_size(o.initial_stream_window_size as usize)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS);
    let (keepalive, idle_timeout) = (o.keepalive, hcm.idle_timeout);
    // The preface and SETTINGS within the request-headers timeout (else the idle timeout).
    let limit = hcm
        .request_headers_timeout
        .or(idle_timeout)
        .unwrap_or(Duration::from_secs(3600));
    let mut h2 = match monoio::time::timeout(limit, builder.handshake::<_, Bytes>(io)).await {
        Ok(Ok(h2)) => h2,
        Ok(Err(e)) => {
            shard.stats.inc(Counter::DownstreamRqMalformed);
            log::debug!("HTTP/2 handshake failed: {e}");
            return;
        }
        Err(_) => {
            shard.stats.inc(Counter::DownstreamRqHeadersTimeout);
            return;
        }
    };
    let mut conn = Rc::new(conn);
    let streams = Rc::new(Streams {
        open: Cell::new(0),
        last_end: Cell::new(Instant::now()),
    });
    let mut ping = h2.ping_pong();
    let mut alive = std::pin::pin!(keep_alive(ping.as_mut(), keepalive, shard));
    let listener = conn.listener().clone();
    let mut drain = std::pin::pin!(listener.stop_accepting.wait());
    let mut idle = std::pin::pin!(monoio::time::sleep_until(far_future().into()));
    let mut closing = false;
    loop {
        let idle_end = idle_timeout.map(|d| streams.last_end.get() + d);
        if let Some(end) = idle_end.filter(|_| streams.open.get() == 0 && !closing) {
            idle.as_mut().reset(end.into());
        }
        let event = monoio::select! {
            biased;
            next = h2.accept() => Event::Accepted(next),
            _ = &mut drain, if !closing => Event::Drain,
            _ = &mut idle, if !closing && idle_end.is_some() => Event::Idle,
            _ = &mut alive => Event::Dead,
        };
        match event {
            Event::Accepted(Some(Ok((req, respond)))) => {
                if conn.stale(shard) {
                    let mut next = (*conn).clone();
                    next.begin_stream(shard, None);
                    conn = Rc::new(next);
                }
                streams.open.set(streams.open.get() + 1);
                let stream = StreamTask {
                    shard: shard.clone(),
                    conn: conn.clone(),
                    streams: streams.clone(),
                };
                monoio::spawn(stream.serve(req, respond));
            }
            Event::Accepted(Some(Err(e))) => {
                // The client's own GOAWAY, or its socket: an ordinary end. Anything else
                // is the codec refusing what the client sent (a flood, a protocol error).
                if e.is_io() || (e.is_go_away() && e.is_remote()) {
                    log::debug!("HTTP/2 connection ended: {e}");
                } else {
                    shard.stats.inc(Counter::DownstreamRqMalformed);
                    log::debug!("HTTP/2 connection error: {e}");
                }
                break;
            }
            Event::Accepted(None) => break,
            // GOAWAY: the streams open finish, no new ones; the listener's drain deadline
            // bounds them (its tracked sockets are shut then).
            Event::Drain => {
                closing = true;
                h2.graceful_shutdown();
            }
            Event::Idle => {
                let over =
                    idle_timeout.is_some_and(|d| streams.last_end.get() + d <= Instant::now());
                if streams.open.get() == 0 && over {
                    shard.stats.inc(Counter::IdleTimeout);
                    closing = true;
                    h2.graceful_shutdown();
                }
            }
            Event::Dead => {
                h2.abrupt_shutdown(Reason::NO_ERROR);
                log::debug!("HTTP/2 keepalive: no PING answer; closing");
                break;
            }
        }
    }
}

enum Event<T> {
    Accepted(Option<Result<T, h2::Error>>),
    Drain,
    Idle,
    Dead,
}

/// The connection's streams in flight, for its idle timeout.
#[derive(Debug)]
struct Streams {
    open: Cell<u32>,
    /// When the last stream ended (or the connection began).
    last_end: Cell<Instant>,
}

/// Resolves only when the client stopped answering PINGs (never without keepalive).
async fn keep_alive(ping: Option<&mut h2::PingPong>, ka: Option<Http2Keepalive>, shard: &Shard) {
    let (Some(ping), Some(ka)) = (ping, ka) else {
        return std::future::pending().await;
    };
    loop {
        // Envoy's default jitter: up to 15% of the interval on top.
        let jitter = ka
            .interval
            .mul_f64((shard.rng.next_u64() % 1000) as f64 / 1000.0 * 0.15);
        monoio::time::sleep(ka.interval + jitter).await;
        match monoio::time::timeout(ka.timeout, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
        }
    }
}

/// One stream's task.
struct StreamTask {
    shard: Rc<Shard>,
    conn: Rc<Connection>,
    streams: Rc<Streams>,
}

impl StreamTask {
    async fn serve(
        self,
        req: http::Request<h2::RecvStream>,
        respond: h2::server::SendResponse<Bytes>,
    ) {
        let started = Instant::now();
        let (shard, conn) = (&self.shard, &self.conn);
        let (parts, body) = req.into_parts();
        let end_stream = body.is_end_stream();
        let mut down = H2Stream::new(respond, body);
        let hcm = conn.manager();
        let request = match head::request(&parts, end_stream, hcm.max_headers_count as usize) {
            Ok(r) => r,
            Err(Refused::Connect) => {
                // As Envoy answers a CONNECT no upgrade config enables.
                let e = Kind::MalformedRequest("CONNECT is not supported").into();
                conn.refused(shard, &e);
                let date = shard.http_date();
                let extra = crate::http::hcm::headers::local_headers(hcm, &date);
                down.local_reply(403, LocalBody::Text(""), &extra, false)
                    .await;
                return;
            }
            Err(why) => {
                let e = Kind::MalformedRequest(match why {
                    Refused::TooManyHeaders => "too many headers",
                    Refused::InvalidContentLength => "invalid content-length",
                    _ => "invalid header field",
                })
                .into();
                conn.refused(shard, &e);
                down.refuse(Reason::PROTOCOL_ERROR);
                return;
            }
        };
        let mut timer = std::pin::pin!(monoio::time::sleep_until(far_future().into()));
        // Boxed: the stream's state machine is several KiB; inline, spawning each stream's
        // task would copy all of it.
        Box::pin(conn.serve(shard, &mut down, timer.as_mut(), &request, started)).await;
        if !down.answered() {
            down.reset();
        }
    }
}

impl Drop for StreamTask {
    fn drop(&mut self) {
        self.streams.open.set(self.streams.open.get() - 1);
        self.streams.last_end.set(Instant::now());
    }
}
