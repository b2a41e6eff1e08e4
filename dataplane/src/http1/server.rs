//! The I/O shell of the HTTP/1.1 codec on the downstream side: one client connection, its
//! read buffer and the allocation request heads are copied into. Waits take the
//! connection's one timer (owned by the connection manager), moved to each deadline.
//!
//! [`ServerConn::read_request`] receives through the ring (`net::ring`) under the idle and
//! request-headers timeouts, hands the bytes to the sans-I/O parser (`head`), and turns the
//! parsed head into the codec-neutral [`Request`]. Responses go out through the ring too
//! ([`ServerConn::send`]); bodies use the readiness path of `net::pump` (the HTTP/1.1
//! fast path in `http::body`). What the connection manager asks of it per stream is in
//! `downstream` (the [`crate::http::downstream::Downstream`] impl).

use std::cell::Cell;
use std::pin::Pin;
use std::time::{Duration, Instant};

use monoio::time::Sleep;
use zerohop_proto::stats::Counter;

use super::head::{self, HeadError, Limits, RequestHead};
use crate::error::{Kind, ProxyError};
use crate::http::downstream::ResponseHead;
use crate::http::message::{has_token, Request, Version};
use crate::net::ring;
use crate::net::transport::{Sock, Transport};
use crate::stats::ShardStats;
use zerohop_proto::Http1Options;

/// Bytes read at a time into a head buffer.
pub const READ_CHUNK: usize = 16 * 1024;
/// The first read of a request head, pending while the connection is idle: an idle
/// keep-alive connection holds no more buffer than this (most heads fit; a larger one goes
/// on in `READ_CHUNK` reads). A 16 KiB buffer pending on every idle connection was 24 KB of
/// RSS per idle connection (`zerohop-bench idle-http`).
pub const IDLE_READ: usize = 1024;

/// How often a connection waiting for its next request checks whether its listener drains.
const DRAIN_CHECK: Duration = Duration::from_secs(1);

/// A deadline that never comes (a day away, checked again when it does).
pub fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(24 * 3600)
}

/// What a wait for the next request ended with, when it did not end in an error.
#[derive(Debug)]
pub enum Incoming {
    Request(Request),
    /// The client closed between requests (or the listener drains): close quietly.
    Closed,
    /// No request began within the idle timeout.
    Idle,
}

#[derive(Debug)]
pub struct ServerConn {
    /// Plain TCP (heads received and sent through the ring) or TLS (through rustls, on
    /// readiness).
    pub stream: Sock,
    /// Bytes read and not yet consumed (the next head, or body bytes).
    pub buf: Vec<u8>,
    /// The allocation a request head is copied into (handed back between requests).
    pub head: Vec<u8>,
    /// The last time bytes moved either way (the stream idle timeout reads it).
    pub last: Cell<Instant>,
    /// The protocol of the request being served: what its responses are written in.
    pub version: Version,
    /// Its place in the shard's hang-up watch, taken the first time a request waits.
    pub hangup: std::cell::OnceCell<Option<std::rc::Rc<crate::net::hangup::Slot>>>,
}

impl ServerConn {
    pub fn new(stream: Sock) -> ServerConn {
        ServerConn {
            stream,
            buf: Vec::new(),
            head: Vec::new(),
            last: Cell::new(Instant::now()),
            version: Version::Http11,
            hangup: std::cell::OnceCell::new(),
        }
    }

    /// Waits for the next request head: before its first byte under `idle_timeout` (and
    /// closing quietly once `draining` says so), after it under `headers_timeout`, on the
    /// connection's `timer`.
    #[allow(clippy::too_many_arguments)] // Reason: the timeouts and signals one wait obeys.
    pub async fn read_request(
        &mut self,
        mut timer: Pin<&mut Sleep>,
        limits: &Limits,
        options: &Http1Options,
        idle_timeout: Option<Duration>,
        headers_timeout: Option<Duration>,
        draining: impl Fn() -> bool,
        stats: ShardStats,
    ) -> Result<Incoming, ProxyError> {
        // Bytes already buffered (a pipelined request) count as arriving now.
        let mut first_byte: Option<Instant> = None;
        if !self.buf.is_empty() {
            let now = Instant::now();
            self.last.set(now);
            first_byte = Some(now);
        }
        loop {
            match head::parse_request(&self.buf, limits) {
                Ok(Some(h)) => return self.take_request(h, options).map(Incoming::Request),
                Ok(None) => {}
                Err(HeadError::TooLarge) => return Err(Kind::HeadersTooLarge.into()),
                Err(HeadError::Malformed(why)) => return Err(Kind::MalformedRequest(why).into()),
                Err(HeadError::UnsupportedTransferCoding) => {
                    return Err(Kind::UnsupportedTransferCoding.into())
                }
            }
            // One receive stays pending while the timers are checked in slices: a draining
            // listener closes idle connections promptly, and nothing read is ever dropped
            // (the receive is abandoned only when the connection closes).
            let had = !self.buf.is_empty();
            if first_byte.is_none() && draining() {
                return Ok(Incoming::Closed);
            }
            let want = match self.buf.is_empty() {
                true => {
                    if self.buf.capacity() > 4 * IDLE_READ {
                        // A large body or head went through: do not idle on its buffer.
                        self.buf = Vec::new();
                    }
                    IDLE_READ
                }
                false => READ_CHUNK,
            };
            let op = self.stream.recv_op(&mut self.buf, want);
            let mut op = std::pin::pin!(op);
            // The clock is read only when a timer fires: the next slice ends a second after
            // the last activity, and then a second after each firing.
            let mut slice_end = self.last.get() + DRAIN_CHECK;
            let (r, v) = loop {
                // Before the first byte, the idle timeout; after it, the headers timeout.
                let deadline = match first_byte {
                    None => idle_timeout.map(|d| self.last.get() + d),
                    Some(t) => headers_timeout.map(|d| t + d),
                };
                let wake = match (first_byte, deadline) {
                    (None, Some(d)) => d.min(slice_end),
                    (None, None) => slice_end,
                    (Some(_), Some(d)) => d,
                    (Some(_), None) => far_future(),
                };
                if let Some(done) = ring::until(op.as_mut(), timer.as_mut(), wake).await {
                    break done;
                }
                let now = Instant::now();
                if deadline.is_some_and(|d| d <= now) {
                    if first_byte.is_none() {
                        return Ok(Incoming::Idle);
                    }
                    return Err(Kind::RequestHeadersTimeout.into());
                }
                if first_byte.is_none() && draining() {
                    return Ok(Incoming::Closed);
                }
                slice_end = now + DRAIN_CHECK;
            };
            self.buf = v;
            match ring::outcome(r) {
                ring::Recv::Read(n) => {
                    stats.add(Counter::DownstreamCxRxBytes, n as u64);
                    let now = Instant::now();
                    self.last.set(now);
                    first_byte.get_or_insert(now);
                }
                _ => {
                    if had {
                        log::debug!("client closed mid-head");
                    }
                    return Ok(Incoming::Closed);
                }
            }
        }
    }

    /// Copies the request head out of the buffer (into the connection's head allocation),
    /// consumes it there, and reads what the layers above need from it.
    fn take_request(
        &mut self,
        h: RequestHead,
        options: &Http1Options,
    ) -> Result<Request, ProxyError> {
        let malformed = |why| ProxyError::new(Kind::MalformedRequest(why));
        if h.minor_version == 0 && !options.accept_http_10 {
            self.buf.drain(..h.len);
            self.version = Version::Http11;
            return Err(Kind::Http10NotAccepted.into());
        }
        self.version = match h.minor_version {
            0 => Version::Http10,
            _ => Version::Http11,
        };
        let mut raw = std::mem::take(&mut self.head);
        raw.clear();
        raw.extend_from_slice(&self.buf[..h.len]);
        self.buf.drain(..h.len);
        let mut headers = h.headers;
        for x in &headers {
            raw[x.name.clone()].make_ascii_lowercase();
        }
        // The target is UTF-8 (httparse checks); absolute-form's authority replaces Host
        // (RFC 9112 section 3.2.2).
        let target = h.target;
        let t = &raw[target.clone()];
        let scheme = [&b"http://"[..], b"https://"]
            .into_iter()
            .find(|p| t.len() >= p.len() && t[..p.len()].eq_ignore_ascii_case(p));
        let (authority, path_and_query) = match scheme {
            Some(p) => {
                let rest = target.start + p.len();
                let slash = raw[rest..target.end]
                    .iter()
                    .position(|&b| b == b'/')
                    .map_or(target.end, |i| rest + i);
                (Some(rest..slash), slash..target.end)
            }
            None => (None, target),
        };
        let mut host_header = None;
        let mut connection = Vec::new();
        let mut expect_continue = false;
        for x in &headers {
            match &raw[x.name.clone()] {
                b"host" if host_header.is_some() => {
                    return Err(malformed("more than one Host header"))
                }
                b"host" => host_header = Some(x.value.clone()),
                b"connection" => connection.push(x.value.clone()),
                b"expect" => {
                    expect_continue |= raw[x.value.clone()].eq_ignore_ascii_case(b"100-continue")
                }
                _ => {}
            }
        }
        let host = match authority.or(host_header) {
            Some(r) if !r.is_empty() => r,
            _ if h.minor_version == 0 => match &options.default_host_for_http_10 {
                // Appended to the head's bytes, so that it routes and goes upstream as if sent.
                Some(d) => {
                    let start = raw.len();
                    raw.extend_from_slice(d.as_bytes());
                    start..raw.len()
                }
                None => return Err(malformed("missing Host header")),
            },
            _ => return Err(malformed("missing Host header")),
        };
        if std::str::from_utf8(&raw[host.clone()]).is_err() {
            return Err(malformed("Host header is not UTF-8"));
        }
        headers.retain(|x| &raw[x.name.clone()] != b"host");
        let (path, query) = match raw[path_and_query.clone()].iter().position(|&b| b == b'?') {
            Some(i) => (
                path_and_query.start..path_and_query.start + i,
                Some(path_and_query.start + i + 1..path_and_query.end),
            ),
            None => (path_and_query, None),
        };
        // HTTP/1.0 keeps the connection only when asked to (`keep-alive`), HTTP/1.1 unless
        // asked not to (RFC 9112 section 9.3).
        let close = match h.minor_version {
            0 => !has_token(&raw, &connection, b"keep-alive"),
            _ => has_token(&raw, &connection, b"close"),
        };
        // `h2c` is no upgrade here, as in Envoy's codec: the request is served as HTTP/1.1
        // (its Upgrade and HTTP2-Settings headers are hop-by-hop, dropped on the way).
        let upgrade = if has_token(&raw, &connection, b"upgrade") {
            headers
                .iter()
                .find(|x| &raw[x.name.clone()] == b"upgrade")
                .map(|x| x.value.clone())
                .filter(|v| !raw[v.clone()].trim_ascii().eq_ignore_ascii_case(b"h2c"))
        } else {
            None
        };
        Ok(Request {
            raw,
            method: h.method,
            path,
            query,
            host,
            headers,
            framing: h.framing,
            version: match h.minor_version {
                0 => Version::Http10,
                _ => Version::Http11,
            },
            close,
            expect_continue,
            upgrade,
            connection,
        })
    }

    /// A relayed response's head, written into `out` in the request's protocol version
    /// (see [`super::encode::response_head`]).
    pub fn response_head(&self, out: &mut Vec<u8>, head: &ResponseHead<'_>) {
        super::encode::response_head(
            out,
            self.version,
            head.status,
            head.reason,
            head.headers,
            head.framing,
            head.content_length,
            head.after,
        );
    }

    /// Sends all of `out` (through the ring on a plain connection) and gives the buffer
    /// back.
    pub async fn send(&mut self, out: Vec<u8>) -> (std::io::Result<()>, Vec<u8>) {
        self.stream.send(out).await
    }

    /// Sends `bytes` on the readiness path (rare replies, body remainders).
    pub async fn send_all(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.send_all(bytes).await
    }
}
