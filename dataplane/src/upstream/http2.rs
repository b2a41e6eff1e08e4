//! The HTTP/2 client side: a shard's multiplexed connections to each endpoint of an HTTP/2
//! cluster, and the response head of one stream in the codec-neutral shape.
//!
//! A request takes a stream on the first live connection to its endpoint that has room: under
//! the peer's SETTINGS_MAX_CONCURRENT_STREAMS, the cluster's `max_concurrent_streams`, and
//! `max_requests_per_connection` streams in its life; else a new connection is made, under
//! the same connection breaker as HTTP/1.1's (so `max_connections` counts connections, and a
//! request waiting for one is pending). Each connection is driven by a task of its own, which
//! ends it after the cluster's `idle_timeout` with no stream open, and on a missed PING
//! answer (`connection_keepalive`). Nothing is shared with other shards.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use zerohop_proto::stats::Counter;
use zerohop_proto::Http2Options;

use super::breaker::Held;
use super::pool::PoolKey;
use crate::error::{Kind, ProxyError};
use crate::fasthash::FastHash;
use crate::http::message::{Framing, Header, Response};
use crate::stats::ShardStats;

/// How often an idle connection's task looks at its idle time.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// One multiplexed connection, as the pool sees it.
#[derive(Debug)]
pub struct H2Conn {
    send: SendRequest<Bytes>,
    /// Streams open on it now.
    open: Cell<u32>,
    /// Streams it has carried.
    started: Cell<u32>,
    /// Its task ended (closed, GOAWAY, idle): no new stream goes on it.
    dead: Cell<bool>,
    /// When its last stream ended.
    idle_since: Cell<Instant>,
}

/// A stream's place on its connection, until the exchange is over.
#[derive(Debug)]
pub struct StreamSlot(Rc<H2Conn>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let c = &self.0;
        c.open.set(c.open.get() - 1);
        if c.open.get() == 0 {
            c.idle_since.set(Instant::now());
        }
    }
}

/// A stream handed to a request: its connection's sender (ready for one stream), its place,
/// and whether the connection had carried streams before.
#[derive(Debug)]
pub struct H2Stream {
    pub send: SendRequest<Bytes>,
    pub slot: StreamSlot,
    pub reused: bool,
}

/// The connections of a shard, by endpoint, protocol and transport.
#[derive(Debug, Default)]
pub struct H2Pool {
    conns: std::cell::RefCell<HashMap<PoolKey, Vec<Rc<H2Conn>>, FastHash>>,
}

impl H2Pool {
    /// A live connection to `key` with room for one more stream (dead ones are dropped on
    /// the way).
    pub fn find(
        &self,
        key: &PoolKey,
        opts: &Http2Options,
        max_requests: Option<u32>,
    ) -> Option<Rc<H2Conn>> {
        let mut all = self.conns.borrow_mut();
        let list = all.get_mut(key)?;
        list.retain(|c| !c.dead.get());
        list.iter()
            .find(|c| {
                let limit = (c.send.current_max_send_streams() as u64)
                    .min(u64::from(opts.max_concurrent_streams));
                u64::from(c.open.get()) < limit && max_requests.is_none_or(|m| c.started.get() < m)
            })
            .cloned()
    }

    fn add(&self, key: PoolKey, conn: Rc<H2Conn>) {
        self.conns.borrow_mut().entry(key).or_default().push(conn);
    }

    /// Forgets the connections to endpoints `keep` refuses (their tasks end them once their
    /// streams are done) and the dead ones.
    pub fn retain_endpoints(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.conns.borrow_mut().retain(|key, list| {
            let kept = keep(&key.endpoint);
            list.retain(|c| {
                if !kept {
                    c.dead.set(true);
                }
                !c.dead.get()
            });
            !list.is_empty()
        });
    }

    /// Connections held (all endpoints).
    pub fn count(&self) -> usize {
        self.conns.borrow().values().map(Vec::len).sum()
    }
}

impl H2Conn {
    /// Takes a stream on this connection.
    pub fn take(self: &Rc<Self>, reused: bool) -> H2Stream {
        self.open.set(self.open.get() + 1);
        self.started.set(self.started.get() + 1);
        H2Stream {
            send: self.send.clone(),
            slot: StreamSlot(self.clone()),
            reused,
        }
    }
}

/// Makes an HTTP/2 connection on `stream` (connected, counted) and starts its task, which
/// keeps `held` (its place in the connection breaker) until it ends.
pub async fn handshake(
    stats: ShardStats,
    pool: &H2Pool,
    key: PoolKey,
    stream: crate::net::transport::Sock,
    opts: &Http2Options,
    idle_timeout: Option<Duration>,
    held: Held,
) -> Result<Rc<H2Conn>, ProxyError> {
    let io = crate::http2::Io::new(Vec::new(), stream).map_err(|e| {
        log::warn!(
            "HTTP/2 upstream {}: cannot poll the connection: {e}",
            key.endpoint
        );
        ProxyError::from(Kind::ConnectFailed)
    })?;
    let mut builder = h2::client::Builder::new();
    builder
        .enable_push(false)
        .initial_window_size(opts.initial_stream_window_size)
        .initial_connection_window_size(opts.initial_connection_window_size)
        .header_table_size(opts.hpack_table_size)
        .max_send_buffer_size(opts.initial_stream_window_size as usize);
    let (send, mut conn) = builder.handshake::<_, Bytes>(io).await.map_err(|e| {
        stats.inc(Counter::UpstreamCxConnectFail);
        log::debug!("HTTP/2 handshake with {}: {e}", key.endpoint);
        ProxyError::from(Kind::ConnectFailed)
    })?;
    let h2 = Rc::new(H2Conn {
        send,
        open: Cell::new(0),
        started: Cell::new(0),
        dead: Cell::new(false),
        idle_since: Cell::new(Instant::now()),
    });
    pool.add(key, h2.clone());
    let ping = conn.ping_pong();
    let keepalive = opts.keepalive;
    let task = h2.clone();
    monoio::spawn(async move {
        let _held = held;
        let driven = std::pin::pin!(&mut conn);
        let alive = std::pin::pin!(keep_alive(ping, keepalive));
        let idle = std::pin::pin!(idle_out(&task, idle_timeout));
        monoio::select! {
            r = driven => if let Err(e) = r {
                log::debug!("HTTP/2 upstream {} ended: {e}", key.endpoint);
            },
            _ = alive => log::debug!("HTTP/2 upstream {}: no PING answer; closing", key.endpoint),
            _ = idle => {}
        }
        task.dead.set(true);
    });
    Ok(h2)
}

/// Resolves when the connection has no stream open and has had none for `idle_timeout`, or
/// was retired (its endpoint removed).
async fn idle_out(conn: &H2Conn, idle_timeout: Option<Duration>) {
    let check = idle_timeout.map_or(IDLE_CHECK, |t| t.min(IDLE_CHECK));
    loop {
        monoio::time::sleep(check).await;
        if conn.open.get() > 0 {
            continue;
        }
        let idle_over = idle_timeout.is_some_and(|t| conn.idle_since.get().elapsed() >= t);
        if conn.dead.get() || idle_over {
            return;
        }
    }
}

/// Resolves when the peer stopped answering PINGs (never without keepalive).
async fn keep_alive(ping: Option<h2::PingPong>, ka: Option<zerohop_proto::Http2Keepalive>) {
    let (Some(mut ping), Some(ka)) = (ping, ka) else {
        return std::future::pending().await;
    };
    loop {
        monoio::time::sleep(ka.interval).await;
        match monoio::time::timeout(ka.timeout, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
        }
    }
}

/// An HTTP/2 response head laid out as the HTTP/1.1 codec's are (names lower-case, ranges
/// into `buf`). `end_stream`: HEADERS ended the stream; `bodiless`: the request was HEAD (or
/// the status carries no body).
pub fn response_head(
    parts: &http::response::Parts,
    end_stream: bool,
    bodiless: bool,
    buf: &mut Vec<u8>,
) -> Response {
    buf.clear();
    let mut headers = Vec::with_capacity(parts.headers.len());
    let mut length = None;
    for (name, value) in &parts.headers {
        let n = name.as_str().as_bytes();
        let start = buf.len();
        buf.extend_from_slice(n);
        let name = start..buf.len();
        let start = buf.len();
        buf.extend_from_slice(value.as_bytes());
        let value = start..buf.len();
        if n == b"content-length" {
            length = std::str::from_utf8(&buf[value.clone()])
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
        headers.push(Header { name, value });
    }
    let status = parts.status.as_u16();
    let framing = match (
        end_stream || bodiless || status == 204 || status == 304,
        length,
    ) {
        (true, _) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
        // No length: chunked to an HTTP/1.1 client (which carries the trailers too).
        (false, None) => Framing::Chunked,
    };
    Response {
        status,
        reason: None,
        framing,
        len: buf.len(),
        close: false,
        connection: Vec::new(),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads_read_as_http1_ones() {
        let (parts, ()) = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("content-length", "5")
            .body(())
            .unwrap()
            .into_parts();
        let mut buf = Vec::new();
        let r = response_head(&parts, false, false, &mut buf);
        assert_eq!(r.status, 200);
        assert_eq!(r.framing, Framing::Length(5));
        assert_eq!(r.len, buf.len());
        assert_eq!(&buf[r.headers[0].name.clone()], b"content-type");
        assert_eq!(&buf[r.headers[0].value.clone()], b"application/grpc");
        assert_eq!(
            response_head(&parts, true, false, &mut buf).framing,
            Framing::Empty
        );
        assert_eq!(
            response_head(&parts, false, true, &mut buf).framing,
            Framing::Empty
        );
        let (parts, ()) = http::Response::builder()
            .status(200)
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(
            response_head(&parts, false, false, &mut buf).framing,
            Framing::Chunked
        );
    }
}
