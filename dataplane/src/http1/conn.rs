//! The HTTP/1.1 connection manager: one downstream connection, request after request.
//!
//! Per request: read the head (idle timeout before its first byte, `request_headers_timeout`
//! after it), refuse anything whose framing is ambiguous, route it, then either answer
//! locally (direct response, redirect, errors) or forward it: an upstream connection from the
//! shard's pool (or a new one), the head rewritten from the received bytes (hop-by-hop
//! headers dropped, header edits, `x-forwarded-*`, `x-request-id`), the body streamed as it
//! arrives (Content-Length bodies by splice once large, chunked bodies validated chunk by
//! chunk and passed through as sent) or, with the buffer filter, read whole first; then the
//! response the same way back. The upstream connection returns to the pool only after a
//! complete, delimited exchange. A `101 Switching Protocols` answer to an Upgrade request
//! turns the connection into a tunnel.
//!
//! Heads and small bodies move as io_uring operations (`net::ring`); larger bodies, tunnels
//! and rare replies use the readiness-then-syscall path of `net::pump`.

use std::borrow::Cow;
use std::cell::Cell;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use monoio::time::Sleep;
use zerohop_proto::stats::Counter;
use zerohop_proto::{HttpManager, Redirect};

use super::chunked::{ChunkError, ChunkedDecoder};
use super::head::{self, Framing, HeadError, Header, Limits, RequestHead};
use crate::l4::{ActiveGuard, Tracked};
use crate::net::pump::{copy_exact, recv_into, send_all, Ctx, End};
use crate::net::ring;
use crate::net::sys;
use crate::route::{apply_edits, Action, HeaderList, Request as RouteRequest, Route, RouteTable};
use crate::shard::listeners::BoundListener;
use crate::shard::{config::ShardConfig, Shard};

/// Serves one downstream connection accepted on HTTP listener `index` of `cfg`.
///
/// Each request is routed with the newest generation that still has this listener, as
/// Envoy routes each new stream with the current route configuration and cluster
/// membership: once a generation is applied (and control has acknowledged it to the xDS
/// server), no request that starts afterwards reaches an endpoint it removed. A
/// connection whose listener a generation removed (or made a TCP proxy) keeps the
/// configuration it had, as a draining connection.
pub async fn serve(
    shard: Rc<Shard>,
    mut cfg: Rc<ShardConfig>,
    mut index: usize,
    listener: Rc<BoundListener>,
    mut down: TcpStream,
) {
    let _active = ActiveGuard::enter(&shard);
    let _ = down.set_nodelay(true);
    // Only the downstream socket is registered for the drain deadline: upstream connections
    // change per request (idle ones belong to the shard's pool), and shutting the downstream
    // one ends whatever exchange is in flight.
    let _tracked = Tracked::new(&listener, [down.as_raw_fd(), down.as_raw_fd()]);
    // x-forwarded-for's entry for this client, made once: as Envoy, the host's own address
    // for a loopback peer.
    let peer_ip = down.peer_addr().ok().map(|p| match p.ip().to_canonical() {
        ip if ip.is_loopback() => local_address().to_string(),
        ip => ip.to_string(),
    });
    let mut buf = Vec::with_capacity(4096);
    let mut head = Vec::new();
    let mut timer = Box::pin(monoio::time::sleep_until(far_future().into()));
    let mut last = Instant::now();
    let mut follow = true;
    loop {
        let Some((hcm, table)) = cfg.http(index) else {
            return;
        };
        let mut conn = Conn {
            shard: &shard,
            cfg: &cfg,
            hcm,
            table,
            listener: &listener,
            down: &mut down,
            peer_ip: peer_ip.as_deref(),
            head: std::mem::take(&mut head),
            timer,
            buf,
            last: Cell::new(last),
            follow,
        };
        loop {
            match conn.one_request().await {
                Next::Again => {}
                Next::Close => return,
                Next::Reconfigure => break,
            }
        }
        (buf, head, last) = (
            std::mem::take(&mut conn.buf),
            std::mem::take(&mut conn.head),
            conn.last.get(),
        );
        timer = conn.timer;
        let next = shard.config();
        match listener.index_in(&next).filter(|&i| next.http(i).is_some()) {
            Some(i) => (cfg, index) = (next, i),
            None => follow = false,
        }
    }
}

struct Conn<'a> {
    shard: &'a Shard,
    cfg: &'a ShardConfig,
    hcm: &'a HttpManager,
    table: &'a RouteTable,
    listener: &'a BoundListener,
    down: &'a mut TcpStream,
    peer_ip: Option<&'a str>,
    /// Bytes read from downstream and not yet consumed (the next head, or body bytes).
    buf: Vec<u8>,
    /// The allocation a request head is copied into (kept between requests).
    head: Vec<u8>,
    /// The one timer every wait of this connection moves to its own deadline.
    timer: Pin<Box<Sleep>>,
    last: Cell<Instant>,
    /// Whether requests move to newer generations (false once the listener left them).
    follow: bool,
}

/// A request head, copied out of the read buffer: the bytes as received (header names
/// lower-cased in place) and where each part is.
struct Req {
    raw: Vec<u8>,
    method: Range<usize>,
    /// The path without the query; empty for an absolute-form target without one ("/").
    path: Range<usize>,
    query: Option<Range<usize>>,
    /// The Host header, or an absolute-form target's authority (empty for HTTP/1.0 without).
    host: Range<usize>,
    /// Every header but Host, in order, hop-by-hop ones included (routing may look at them).
    headers: Vec<Header>,
    framing: Framing,
    /// The client wants the connection closed after this exchange.
    close: bool,
    expect_continue: bool,
    /// The `Upgrade` value when the client asked to switch protocols.
    upgrade: Option<Range<usize>>,
    /// The values of its `Connection` header(s): hop-by-hop header names among their tokens.
    connection: Vec<Range<usize>>,
}

impl Req {
    /// A part that `take_request` checked is UTF-8.
    fn text(&self, r: &Range<usize>) -> &str {
        std::str::from_utf8(&self.raw[r.clone()]).unwrap_or_default()
    }

    fn method(&self) -> &[u8] {
        &self.raw[self.method.clone()]
    }

    fn path(&self) -> &str {
        match self.text(&self.path) {
            "" => "/",
            p => p,
        }
    }

    fn query(&self) -> Option<&str> {
        self.query.as_ref().map(|q| self.text(q))
    }

    fn host(&self) -> &str {
        self.text(&self.host)
    }

    /// The first value of a header (by lower-case name), if it is UTF-8.
    fn header(&self, name: &str) -> Option<&str> {
        let h = self
            .headers
            .iter()
            .find(|h| &self.raw[h.name.clone()] == name.as_bytes())?;
        std::str::from_utf8(&self.raw[h.value.clone()]).ok()
    }

    /// Whether the client's `Connection` header names `name` (to be dropped as hop-by-hop).
    fn named(&self, name: &[u8]) -> bool {
        has_token(&self.raw, &self.connection, name)
    }
}

/// The host's address for `x-forwarded-for` (see [`sys::local_address`]), looked up once.
fn local_address() -> std::net::IpAddr {
    static LOCAL: std::sync::OnceLock<std::net::IpAddr> = std::sync::OnceLock::new();
    *LOCAL.get_or_init(sys::local_address)
}

/// How often a connection waiting for its next request checks whether its listener drains.
const DRAIN_CHECK: Duration = Duration::from_secs(1);

/// A deadline that never comes (a day away, checked again when it does).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(24 * 3600)
}

/// Bytes read at a time into a head buffer.
const READ_CHUNK: usize = 16 * 1024;

/// Bodies up to this size are read whole and sent with their head.
const SMALL_BODY: u64 = 64 * 1024;

/// Headers that describe one hop (RFC 9110 section 7.6.1), never forwarded as such.
const HOP_BY_HOP: &[&[u8]] = &[
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
];

/// The comma-separated tokens of a header value, trimmed (compare them case-insensitively).
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Whether any token of the header values at `ranges` (in `raw`) is `token`.
fn has_token(raw: &[u8], ranges: &[Range<usize>], token: &[u8]) -> bool {
    ranges
        .iter()
        .any(|r| tokens(&raw[r.clone()]).any(|t| t.eq_ignore_ascii_case(token)))
}

/// What a connection does after one request.
enum Next {
    Again,
    Close,
    /// A newer generation applies: serve the request already read with it.
    Reconfigure,
}

enum ReadHead {
    Head(RequestHead),
    /// The client closed or went idle between requests: close quietly.
    Closed,
    Refuse(u16, &'static str),
}

/// Why forwarding failed, and what the client is told (if nothing was sent yet).
enum Fail {
    /// Answer with this status and body, then close.
    Reply(u16, &'static str),
    /// The downstream side went away (or sent a broken body): just close.
    Abort,
}

enum BodyEnd {
    Done,
    /// `stream_idle_timeout`, `request_timeout` or the route timeout passed.
    TimedOut,
    /// The source ended early, reset, or sent a malformed chunk.
    Source(Option<ChunkError>),
    /// The sink refused bytes.
    Sink,
}

impl Conn<'_> {
    fn limits(&self) -> Limits {
        Limits {
            max_head_bytes: self.hcm.max_request_headers_bytes as usize,
            max_headers: self.hcm.max_headers_count as usize,
        }
    }

    fn draining(&self) -> bool {
        self.listener.stop_accepting.fired()
    }

    fn ctx(&self, bytes: Counter) -> Ctx<'_> {
        Ctx {
            pools: &self.shard.pools,
            stats: self.shard.stats,
            last_activity: &self.last,
            bytes,
        }
    }

    /// Serves one request; false when the connection is done.
    /// Reads the next request head and serves the request. Stops before serving when a
    /// newer generation was applied meanwhile (the head stays in the buffer, to be served
    /// with it).
    async fn one_request(&mut self) -> Next {
        let head = match self.read_head().await {
            ReadHead::Head(h) => h,
            ReadHead::Closed => return Next::Close,
            ReadHead::Refuse(status, why) => {
                self.shard.stats.inc(if status == 408 {
                    Counter::DownstreamRqHeadersTimeout
                } else {
                    Counter::DownstreamRqMalformed
                });
                log::debug!("{}: refused a request: {status} {why}", self.listener.name);
                self.local_reply(status, why, &[], true).await;
                return Next::Close;
            }
        };
        if self.follow && self.shard.generation() != self.cfg.generation {
            return Next::Reconfigure;
        }
        match self.serve_request(head).await {
            true => Next::Again,
            false => Next::Close,
        }
    }

    async fn serve_request(&mut self, head: RequestHead) -> bool {
        self.shard.stats.inc(Counter::DownstreamRqTotal);
        let req = match self.take_request(head) {
            Ok(r) => r,
            Err(why) => {
                self.shard.stats.inc(Counter::DownstreamRqMalformed);
                self.local_reply(400, why, &[], true).await;
                return false;
            }
        };
        let headers = |n: &str| req.header(n);
        let route_req = RouteRequest {
            host: req.host(),
            path: req.path(),
            query: req.query(),
            header: &headers,
        };
        // A local answer to a request with a body closes the connection: the body is not read.
        let close_after_local = req.close || req.framing != Framing::Empty || self.draining();
        let Some((_, route)) = self.table.route(&route_req) else {
            self.shard.stats.inc(Counter::RouteNotFound);
            return self.local_reply(404, "", &[], close_after_local).await;
        };
        match &route.action {
            Action::Direct { status, body } => {
                let extra = self.response_edits(route, Vec::new());
                self.local_reply(*status, body, &extra, close_after_local)
                    .await
            }
            Action::Redirect(rd) => {
                let location = redirect_location(rd, route, &req);
                let extra =
                    self.response_edits(route, vec![(b"location", location.into_bytes().into())]);
                self.local_reply(rd.status, "", &extra, close_after_local)
                    .await
            }
            Action::Forward { .. } => {
                let forwarded = self.forward(route, &req).await;
                self.head = req.raw; // its allocation serves the next request
                match forwarded {
                    Ok(keep) => keep,
                    Err(Fail::Reply(status, why)) => {
                        self.local_reply(status, why, &[], true).await;
                        false
                    }
                    Err(Fail::Abort) => false,
                }
            }
        }
    }

    fn response_edits<'r>(&self, route: &'r Route, mut headers: HeaderList<'r>) -> HeaderList<'r> {
        apply_edits(&mut headers, &route.edits, true);
        headers
    }

    async fn read_head(&mut self) -> ReadHead {
        let limits = self.limits();
        // Bytes already buffered (a pipelined request) count as arriving now.
        let mut first_byte: Option<Instant> = None;
        if !self.buf.is_empty() {
            let now = Instant::now();
            self.last.set(now);
            first_byte = Some(now);
        }
        loop {
            match head::parse_request(&self.buf, &limits) {
                Ok(Some(h)) => return ReadHead::Head(h),
                Ok(None) => {}
                Err(HeadError::TooLarge) => {
                    return ReadHead::Refuse(431, "request header fields too large")
                }
                Err(HeadError::Malformed(why)) => return ReadHead::Refuse(400, why),
            }
            // One receive stays pending while the timers are checked in slices: a draining
            // listener closes idle connections promptly, and nothing read is ever dropped
            // (the receive is abandoned only when the connection closes).
            let had = !self.buf.is_empty();
            let (hcm, listener, stats) = (self.hcm, self.listener, self.shard.stats);
            if first_byte.is_none() && listener.stop_accepting.fired() {
                return ReadHead::Closed;
            }
            let op = ring::recv_op(self.down, &mut self.buf, READ_CHUNK);
            let mut op = std::pin::pin!(op);
            // The clock is read only when a timer fires: the next slice ends a second after
            // the last activity, and then a second after each firing.
            let mut slice_end = self.last.get() + DRAIN_CHECK;
            let (r, v) = loop {
                // Before the first byte, the idle timeout; after it, the headers timeout.
                let deadline = match first_byte {
                    None => hcm.idle_timeout.map(|d| self.last.get() + d),
                    Some(t) => hcm.request_headers_timeout.map(|d| t + d),
                };
                let wake = match (first_byte, deadline) {
                    (None, Some(d)) => d.min(slice_end),
                    (None, None) => slice_end,
                    (Some(_), Some(d)) => d,
                    (Some(_), None) => far_future(),
                };
                if let Some(done) = ring::until(op.as_mut(), self.timer.as_mut(), wake).await {
                    break done;
                }
                let now = Instant::now();
                if deadline.is_some_and(|d| d <= now) {
                    if first_byte.is_none() {
                        stats.inc(Counter::IdleTimeout);
                        return ReadHead::Closed;
                    }
                    return ReadHead::Refuse(408, "request header read timeout");
                }
                if first_byte.is_none() && listener.stop_accepting.fired() {
                    return ReadHead::Closed;
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
                        log::debug!("{}: client closed mid-head", listener.name);
                    }
                    return ReadHead::Closed;
                }
            }
        }
    }

    /// Copies the request head out of the buffer (into the connection's head allocation)
    /// and consumes it there.
    fn take_request(&mut self, h: RequestHead) -> Result<Req, &'static str> {
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
                b"host" if host_header.is_some() => return Err("more than one Host header"),
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
            _ if h.minor_version == 0 => 0..0,
            _ => return Err("missing Host header"),
        };
        if std::str::from_utf8(&raw[host.clone()]).is_err() {
            return Err("Host header is not UTF-8");
        }
        headers.retain(|x| &raw[x.name.clone()] != b"host");
        let (path, query) = match raw[path_and_query.clone()].iter().position(|&b| b == b'?') {
            Some(i) => (
                path_and_query.start..path_and_query.start + i,
                Some(path_and_query.start + i + 1..path_and_query.end),
            ),
            None => (path_and_query, None),
        };
        // HTTP/1.0 clients get one request per connection.
        let close = h.minor_version == 0 || has_token(&raw, &connection, b"close");
        let upgrade = if has_token(&raw, &connection, b"upgrade") {
            headers
                .iter()
                .find(|x| &raw[x.name.clone()] == b"upgrade")
                .map(|x| x.value.clone())
        } else {
            None
        };
        Ok(Req {
            raw,
            method: h.method,
            path,
            query,
            host,
            headers,
            framing: h.framing,
            close,
            expect_continue,
            upgrade,
            connection,
        })
    }

    /// The request's headers as sent upstream, before route edits, in order: the client's
    /// end-to-end ones (hop-by-hop headers and any named in `Connection` dropped), then what
    /// the connection manager adds. `x-forwarded-for` / `-proto` as Envoy: with
    /// `use_remote_address` the peer is appended to the first `x-forwarded-for` (or added)
    /// and the scheme set; without, they pass through, the scheme added if absent. An
    /// `x-request-id` is made in `request_id` when asked for and absent.
    fn request_headers<'r>(
        &'r self,
        req: &'r Req,
        request_id: &'r mut [u8; 36],
        mut emit: impl FnMut(&'r [u8], Cow<'r, [u8]>),
    ) {
        let raw = &req.raw[..];
        let remote = self.hcm.use_remote_address;
        let peer = self.peer_ip.filter(|_| remote);
        let (mut xff_seen, mut xfp_seen, mut id_seen) = (false, false, false);
        for h in &req.headers {
            let n = &raw[h.name.clone()];
            let v = &raw[h.value.clone()];
            let hop = HOP_BY_HOP.contains(&n)
                || n == b"content-length"
                || (req.expect_continue && n == b"expect")
                || (!req.connection.is_empty() && req.named(n));
            if hop {
                continue;
            }
            match n {
                b"x-forwarded-for" if !xff_seen => {
                    xff_seen = true;
                    if let Some(ip) = peer {
                        // Envoy's separator.
                        let mut joined = Vec::with_capacity(v.len() + 1 + ip.len());
                        joined.extend_from_slice(v);
                        joined.push(b',');
                        joined.extend_from_slice(ip.as_bytes());
                        emit(n, Cow::Owned(joined));
                        continue;
                    }
                }
                b"x-forwarded-proto" => {
                    xfp_seen = true;
                    if remote {
                        continue;
                    }
                }
                b"x-request-id" => id_seen = true,
                _ => {}
            }
            emit(n, Cow::Borrowed(v));
        }
        if let (Some(ip), false) = (peer, xff_seen) {
            emit(b"x-forwarded-for", Cow::Borrowed(ip.as_bytes()));
        }
        if remote || !xfp_seen {
            emit(b"x-forwarded-proto", Cow::Borrowed(b"http"));
        }
        if self.hcm.generate_request_id && !id_seen {
            write_request_id(&self.shard.rng, request_id);
            let id: &'r [u8; 36] = request_id;
            emit(b"x-request-id", Cow::Borrowed(id));
        }
    }

    /// The upstream request head, written straight from the request's bytes.
    fn upstream_head(&self, route: &Route, req: &Req, framing: Framing) -> Vec<u8> {
        let Action::Forward { forward, .. } = &route.action else {
            unreachable!("forward() is called for forwarding routes")
        };
        let raw = &req.raw[..];
        let mut out = self.shard.pools.take_vec();
        out.reserve(raw.len() + 128);
        out.extend_from_slice(req.method());
        out.push(b' ');
        let rewritten = if route.rewrites_path() {
            route.rewrite_path(req.path(), req.query())
        } else {
            None
        };
        match rewritten {
            Some(p) => out.extend_from_slice(p.as_bytes()),
            None => {
                match &raw[req.path.clone()] {
                    b"" => out.push(b'/'),
                    p => out.extend_from_slice(p),
                }
                if let Some(q) = &req.query {
                    out.push(b'?');
                    out.extend_from_slice(&raw[q.clone()]);
                }
            }
        }
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        match &forward.host_rewrite {
            Some(h) => out.extend_from_slice(h.as_bytes()),
            None => out.extend_from_slice(&raw[req.host.clone()]),
        }
        out.extend_from_slice(b"\r\n");
        let mut request_id = [0u8; 36];
        if route.edits_requests {
            let mut headers: HeaderList = Vec::with_capacity(req.headers.len() + 3);
            self.request_headers(req, &mut request_id, |n, v| headers.push((n, v)));
            apply_edits(&mut headers, &route.edits, false);
            write_headers(&mut out, &headers);
        } else {
            // Nothing to edit: straight into the head, no list.
            self.request_headers(req, &mut request_id, |n, v| write_header(&mut out, n, &v));
        }
        write_framing(&mut out, framing);
        if let Some(u) = &req.upgrade {
            out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
            out.extend_from_slice(&raw[u.clone()]);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    fn payload_too_large(&self) -> Fail {
        self.shard.stats.inc(Counter::DownstreamRqTooLarge);
        Fail::Reply(413, "Payload Too Large")
    }

    /// Reads the whole request body for the buffer filter, under `request_timeout` and
    /// `stream_idle_timeout`: a Content-Length body as sent, a chunked one decoded (its
    /// trailers dropped). 413 once it passes `max` bytes.
    async fn buffer_body(&mut self, req: &Req, max: u32) -> Result<Vec<u8>, Fail> {
        let deadline = self.hcm.request_timeout.map(|t| Instant::now() + t);
        let mut buf = std::mem::take(&mut self.buf);
        let read = {
            let read = read_body(self.down, &mut buf, req.framing, u64::from(max), &self.last);
            self.within(read, deadline)
                .await
                .unwrap_or(Err(BodyEnd::TimedOut))
        };
        self.buf = buf;
        match read {
            Ok(body) => Ok(body),
            Err(BodyEnd::Sink) => Err(self.payload_too_large()),
            Err(BodyEnd::Source(Some(_))) => {
                self.shard.stats.inc(Counter::DownstreamRqMalformed);
                Err(Fail::Reply(400, "malformed chunked body"))
            }
            Err(BodyEnd::Source(None)) => Err(Fail::Abort),
            Err(BodyEnd::TimedOut | BodyEnd::Done) => Err(Fail::Reply(408, "request timeout")),
        }
    }

    async fn connect(
        &self,
        cluster: &zerohop_proto::Cluster,
        addr: SocketAddr,
    ) -> Result<TcpStream, Fail> {
        crate::net::connect_upstream(self.shard.stats, &self.listener.name, cluster, addr)
            .await
            .ok_or(Fail::Reply(
                502,
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            ))
    }

    /// Forwards `req`; `Ok(keep_alive)` once the response has been relayed.
    async fn forward(&mut self, route: &Route, req: &Req) -> Result<bool, Fail> {
        let Action::Forward { forward, pick, .. } = &route.action else {
            unreachable!("called for forwarding routes")
        };
        let stats = self.shard.stats;
        let (cluster, endpoint) = self.cfg.pick_among(&forward.targets, pick, &self.shard.rng);
        let Some(addr) = endpoint else {
            stats.inc(Counter::UpstreamCxNoHealthyUpstream);
            return Err(Fail::Reply(503, "no healthy upstream"));
        };
        let too_large = |n: u64| {
            self.hcm
                .max_request_bytes
                .is_some_and(|max| n > u64::from(max))
        };
        if let Framing::Length(n) = req.framing {
            if too_large(n) {
                // Refused before the body is asked for (no 100 Continue) or read.
                return Err(self.payload_too_large());
            }
        }
        if req.expect_continue && req.framing != Framing::Empty {
            // Answered here (Envoy's default): the client sends the body at once.
            if send_all(self.down, b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
            {
                return Err(Fail::Abort);
            }
        }
        // The buffer filter: the whole body before anything goes upstream, sent with a
        // content-length (chunked framing decoded).
        let buffered = match self.hcm.max_request_bytes {
            Some(max) if req.framing != Framing::Empty => Some(self.buffer_body(req, max).await?),
            _ => None,
        };
        let framing = match &buffered {
            Some(b) => Framing::Length(b.len() as u64),
            None => req.framing,
        };
        // The exchange's clock: when its head finished arriving (read then), for the route
        // timeout's start and the pool's stamps.
        let now = self.last.get();
        let mut head = self.upstream_head(route, req, framing);
        // A small body that has already arrived whole goes out with the head, in one send.
        // (Only a bodiless request is ever sent twice, so the head is built once.)
        let mut body_sent = req.framing == Framing::Empty;
        if let Some(body) = buffered {
            head.extend_from_slice(&body);
            body_sent = true;
        } else if let Framing::Length(n) = req.framing {
            if self.buf.len() as u64 >= n && n <= SMALL_BODY {
                head.extend_from_slice(&self.buf[..n as usize]);
                self.buf.drain(..n as usize);
                body_sent = true;
            }
        }
        // A pooled connection the upstream closed a moment ago fails before any byte of a
        // response: that (bodiless) request is sent again once, on a new connection.
        let mut attempt = 0;
        let (up, served, mut ubuf, mut resp, deadline) = loop {
            attempt += 1;
            let pooled = self.shard.upstreams.checkout(addr, now);
            let reused = pooled.is_some();
            let (mut up, served) = match pooled {
                Some(p) => {
                    stats.inc(Counter::UpstreamCxReused);
                    p
                }
                None => (self.connect(cluster, addr).await?, 0),
            };
            stats.inc(Counter::UpstreamRqTotal);
            let sent;
            (sent, head) = ring::send(&mut up, head).await;
            if sent.is_err() {
                if reused && attempt == 1 && req.framing == Framing::Empty {
                    continue;
                }
                stats.inc(Counter::UpstreamRqReset);
                return Err(Fail::Reply(
                    502,
                    "upstream connect error or disconnect/reset before headers",
                ));
            }
            let body = if body_sent {
                BodyEnd::Done
            } else {
                let deadline = self.hcm.request_timeout.map(|t| Instant::now() + t);
                let mut buf = std::mem::take(&mut self.buf);
                let r = {
                    let relay = send_body(self, req, &up, &mut buf, &self.last);
                    self.timed(relay, deadline).await
                };
                self.buf = buf;
                r
            };
            match body {
                BodyEnd::Done => {}
                BodyEnd::Source(Some(_)) => {
                    stats.inc(Counter::DownstreamRqMalformed);
                    return Err(Fail::Reply(400, "malformed chunked body"));
                }
                BodyEnd::Source(None) => return Err(Fail::Abort),
                BodyEnd::TimedOut => return Err(Fail::Reply(408, "request timeout")),
                BodyEnd::Sink => {
                    stats.inc(Counter::UpstreamRqReset);
                    return Err(Fail::Reply(
                        502,
                        "upstream connect error or disconnect/reset before headers",
                    ));
                }
            }
            let deadline = forward.timeout.map(|t| now + t);
            let mut ubuf = self.shard.pools.vec();
            match self
                .read_response_head(
                    &mut up,
                    &mut ubuf,
                    req,
                    deadline,
                    cluster.http.max_headers_count,
                )
                .await
            {
                Ok(resp) => break (up, served + 1, ubuf, resp, deadline),
                Err(Fail::Reply(502, _))
                    if reused
                        && attempt == 1
                        && ubuf.is_empty()
                        && req.framing == Framing::Empty =>
                {
                    continue
                }
                Err(f) => return Err(f),
            }
        };
        self.shard.pools.give_vec(head);

        // 101 to an Upgrade request: relay the answer, then tunnel.
        if resp.status == 101 && req.upgrade.is_some() {
            let out = self.downstream_head(route, &resp, &ubuf[..resp.len], false, true);
            stats.inc(Counter::UpgradesTotal);
            self.count_status(101);
            if send_all(self.down, &out).await.is_err()
                || send_all(self.down, &ubuf[resp.len..]).await.is_err()
                || send_all(&up, &self.buf).await.is_err()
            {
                return Ok(false);
            }
            self.buf.clear();
            crate::l4::proxy(self.shard, self.down, &up, self.hcm.stream_idle_timeout).await;
            return Ok(false);
        }

        let close = req.close || self.draining() || resp.framing == Framing::UntilClose;
        let mut out = self.downstream_head(route, &resp, &ubuf[..resp.len], close, false);
        self.count_status(resp.status);
        ubuf.drain(..resp.len);
        // A small body (up to 64 KiB) is read whole and goes out with the head, in one send.
        if let Framing::Length(n) = resp.framing {
            while (ubuf.len() as u64) < n && n <= SMALL_BODY {
                let want = n as usize - ubuf.len();
                let until = deadline.unwrap_or_else(far_future);
                match monoio::time::timeout_at(until.into(), recv_into(&up, &mut ubuf, false, want))
                    .await
                {
                    Ok(Ok(m)) if m > 0 => {}
                    Ok(_) => {
                        stats.inc(Counter::UpstreamRqReset);
                        return Err(Fail::Reply(
                            502,
                            "upstream reset before the response body completed",
                        ));
                    }
                    Err(_) => {
                        stats.inc(Counter::UpstreamRqTimeout);
                        return Err(Fail::Reply(504, "upstream request timeout"));
                    }
                }
            }
            if ubuf.len() as u64 >= n && n <= SMALL_BODY {
                out.extend_from_slice(&ubuf[..n as usize]);
                ubuf.drain(..n as usize);
                resp.framing = Framing::Empty;
            }
        }
        let out_len = out.len() as u64;
        let (sent, out) = ring::send(self.down, out).await;
        self.shard.pools.give_vec(out);
        if sent.is_err() {
            return Ok(false);
        }
        self.shard.stats.add(Counter::DownstreamCxTxBytes, out_len);
        // The route timeout runs until the whole response has been relayed, as Envoy's does.
        let body = match resp.framing {
            Framing::Empty => BodyEnd::Done,
            Framing::Length(n) => {
                let relay =
                    self.relay_length(&up, &mut ubuf, self.down, n, Counter::DownstreamCxTxBytes);
                self.timed(relay, deadline).await
            }
            Framing::Chunked => {
                let relay = relay_chunked(&up, &mut ubuf, self.down, &self.last);
                self.timed(relay, deadline).await
            }
            Framing::UntilClose => {
                if send_all(self.down, &ubuf).await.is_err() {
                    return Ok(false);
                }
                let ctx = self.ctx(Counter::DownstreamCxTxBytes);
                crate::net::pump::pump(&up, self.down, &ctx).await;
                return Ok(false);
            }
        };
        match body {
            BodyEnd::Done => {
                let upstream_close = resp.close;
                let spent = cluster
                    .http
                    .max_requests_per_connection
                    .is_some_and(|max| served >= max);
                if !upstream_close && !spent && ubuf.is_empty() {
                    let idle_timeout = cluster.http.idle_timeout;
                    self.shard
                        .upstreams
                        .checkin(addr, up, now, served, idle_timeout);
                }
                Ok(!close)
            }
            BodyEnd::Source(_) | BodyEnd::TimedOut => {
                // Too late for a status: the client sees the connection reset.
                self.shard.stats.inc(if matches!(body, BodyEnd::TimedOut) {
                    Counter::UpstreamRqTimeout
                } else {
                    Counter::UpstreamRqReset
                });
                let _ = sys::set_linger_zero(self.down.as_raw_fd());
                Ok(false)
            }
            BodyEnd::Sink => Ok(false),
        }
    }

    /// Runs a body relay under the stream idle timeout (no bytes either way for that long)
    /// and an overall `deadline`; either one ends it as `TimedOut`.
    async fn timed(
        &self,
        relay: impl std::future::Future<Output = BodyEnd>,
        deadline: Option<Instant>,
    ) -> BodyEnd {
        self.within(relay, deadline)
            .await
            .unwrap_or(BodyEnd::TimedOut)
    }

    /// `work`'s output, or `None` when the stream idle timeout or `deadline` passed first.
    async fn within<T>(
        &self,
        work: impl std::future::Future<Output = T>,
        deadline: Option<Instant>,
    ) -> Option<T> {
        let idle = crate::l4::idle_timeout(&self.last, self.hcm.stream_idle_timeout);
        let overall = async {
            match deadline {
                Some(d) => monoio::time::sleep(d.saturating_duration_since(Instant::now())).await,
                None => std::future::pending().await,
            }
        };
        monoio::select! {
            r = work => Some(r),
            _ = idle => None,
            _ = overall => None,
        }
    }

    fn count_status(&self, status: u16) {
        self.shard.stats.inc(match status {
            100..=199 => Counter::DownstreamRq1xx,
            200..=299 => Counter::DownstreamRq2xx,
            300..=399 => Counter::DownstreamRq3xx,
            400..=499 => Counter::DownstreamRq4xx,
            _ => Counter::DownstreamRq5xx,
        });
    }

    /// `n` bytes from `buf` (consumed) and then from `from`.
    async fn relay_length(
        &self,
        from: &TcpStream,
        buf: &mut Vec<u8>,
        to: &TcpStream,
        n: u64,
        counter: Counter,
    ) -> BodyEnd {
        let have = (buf.len() as u64).min(n) as usize;
        if send_all(to, &buf[..have]).await.is_err() {
            return BodyEnd::Sink;
        }
        buf.drain(..have);
        let ctx = self.ctx(counter);
        match copy_exact(from, to, n - have as u64, &ctx).await {
            End::Eof => BodyEnd::Done,
            End::SourceReset => BodyEnd::Source(None),
            End::SinkReset => BodyEnd::Sink,
        }
    }

    async fn read_response_head(
        &mut self,
        up: &mut TcpStream,
        ubuf: &mut Vec<u8>,
        req: &Req,
        deadline: Option<Instant>,
        max_headers: u32,
    ) -> Result<Resp, Fail> {
        let stats = self.shard.stats;
        let limits = Limits {
            max_head_bytes: 64 * 1024,
            max_headers: max_headers as usize,
        };
        loop {
            match head::parse_response(ubuf, &limits, req.method()) {
                Ok(Some(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                    // 1xx interim responses (100-continue was answered here): dropped.
                    ubuf.drain(..h.len);
                    continue;
                }
                Ok(Some(h)) => {
                    for x in &h.headers {
                        ubuf[x.name.clone()].make_ascii_lowercase();
                    }
                    let connection: Vec<Range<usize>> = h
                        .headers
                        .iter()
                        .filter(|x| &ubuf[x.name.clone()] == b"connection")
                        .map(|x| x.value.clone())
                        .collect();
                    let close = h.minor_version == 0 || has_token(ubuf, &connection, b"close");
                    return Ok(Resp {
                        status: h.status,
                        framing: h.framing,
                        len: h.len,
                        close,
                        connection,
                        headers: h.headers,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    stats.inc(Counter::UpstreamRespMalformed);
                    log::debug!("{}: malformed upstream response: {e:?}", self.listener.name);
                    return Err(Fail::Reply(502, "upstream sent a malformed response"));
                }
            }
            match ring::recv(up, ubuf, READ_CHUNK, deadline, self.timer.as_mut()).await {
                ring::Recv::Read(_) => {}
                ring::Recv::TimedOut => {
                    stats.inc(Counter::UpstreamRqTimeout);
                    return Err(Fail::Reply(504, "upstream request timeout"));
                }
                ring::Recv::Closed | ring::Recv::Failed(_) => {
                    stats.inc(Counter::UpstreamRqReset);
                    return Err(Fail::Reply(502, "upstream connect error or disconnect/reset before headers. reset reason: connection termination"));
                }
            }
        }
    }

    /// The response head sent downstream: hop-by-hop headers dropped, edits applied.
    /// `raw` is the head as received, header names lower-cased.
    fn downstream_head(
        &self,
        route: &Route,
        resp: &Resp,
        raw: &[u8],
        close: bool,
        upgrade: bool,
    ) -> Vec<u8> {
        let reason = reason_phrase(raw).unwrap_or(default_reason(resp.status).as_bytes());
        let mut out = self.shard.pools.take_vec();
        out.reserve(raw.len() + 64);
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(&mut out, u64::from(resp.status));
        out.push(b' ');
        out.extend_from_slice(reason);
        out.extend_from_slice(b"\r\n");
        let kept = resp.headers.iter().filter_map(|h| {
            let n = &raw[h.name.clone()];
            let keep = n != b"content-length"
                && ((upgrade && n == b"upgrade")
                    || (!HOP_BY_HOP.contains(&n)
                        && (resp.connection.is_empty() || !has_token(raw, &resp.connection, n))));
            keep.then(|| (n, &raw[h.value.clone()]))
        });
        if route.edits_responses {
            let mut headers: HeaderList = kept.map(|(n, v)| (n, Cow::Borrowed(v))).collect();
            apply_edits(&mut headers, &route.edits, true);
            write_headers(&mut out, &headers);
        } else {
            for (n, v) in kept {
                write_header(&mut out, n, v);
            }
        }
        match resp.framing {
            Framing::Empty => {
                // Keep a bodiless response's declared length (HEAD, 304): forwarded as sent.
                if let Some(h) = resp
                    .headers
                    .iter()
                    .find(|h| &raw[h.name.clone()] == b"content-length")
                {
                    out.extend_from_slice(b"content-length: ");
                    out.extend_from_slice(&raw[h.value.clone()]);
                    out.extend_from_slice(b"\r\n");
                }
            }
            framing => write_framing(&mut out, framing),
        }
        if upgrade {
            out.extend_from_slice(b"connection: upgrade\r\n");
        } else if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// A response zerohop makes itself. Returns whether the connection stays open.
    async fn local_reply(
        &self,
        status: u16,
        body: &str,
        extra: &[(&[u8], Cow<'_, [u8]>)],
        close: bool,
    ) -> bool {
        let close = close || self.draining();
        let mut out = Vec::with_capacity(128 + body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(&mut out, u64::from(status));
        out.push(b' ');
        out.extend_from_slice(default_reason(status).as_bytes());
        out.extend_from_slice(b"\r\n");
        if !body.is_empty() {
            out.extend_from_slice(b"content-type: text/plain\r\n");
        }
        write_framing(&mut out, Framing::Length(body.len() as u64));
        write_headers(&mut out, extra);
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body.as_bytes());
        self.count_status(status);
        let ok = send_all(self.down, &out).await.is_ok();
        ok && !close
    }
}

struct Resp {
    status: u16,
    framing: Framing,
    len: usize,
    close: bool,
    /// The values of its `Connection` header(s).
    connection: Vec<Range<usize>>,
    /// Names lower-cased in place.
    headers: Vec<Header>,
}

/// The request body, from `buf` and then the downstream socket, to `up`.
async fn send_body(
    conn: &Conn<'_>,
    req: &Req,
    up: &TcpStream,
    buf: &mut Vec<u8>,
    last: &Cell<Instant>,
) -> BodyEnd {
    match req.framing {
        Framing::Empty | Framing::UntilClose => BodyEnd::Done,
        Framing::Length(n) => {
            conn.relay_length(conn.down, buf, up, n, Counter::DownstreamCxRxBytes)
                .await
        }
        Framing::Chunked => relay_chunked(conn.down, buf, up, last).await,
    }
}

/// A whole request body, from `buf` and then `from` (what follows it stays in `buf`).
/// `Err(Sink)` when it passes `max` bytes.
async fn read_body(
    from: &TcpStream,
    buf: &mut Vec<u8>,
    framing: Framing,
    max: u64,
    last: &Cell<Instant>,
) -> Result<Vec<u8>, BodyEnd> {
    let mut dec = ChunkedDecoder::default();
    let mut body = Vec::new();
    loop {
        match framing {
            Framing::Length(n) if buf.len() as u64 >= n => {
                let rest = buf.split_off(n as usize);
                return Ok(std::mem::replace(buf, rest));
            }
            Framing::Chunked => {
                let mut at = 0;
                while !dec.is_done() {
                    match dec.decode(&buf[at..]) {
                        Ok(step) if step.consumed == 0 && step.payload.is_none() => break,
                        Ok(step) => {
                            if let Some(p) = step.payload {
                                if (body.len() + p.len()) as u64 > max {
                                    return Err(BodyEnd::Sink);
                                }
                                body.extend_from_slice(&buf[at + p.start..at + p.end]);
                            }
                            at += step.consumed;
                        }
                        Err(e) => return Err(BodyEnd::Source(Some(e))),
                    }
                }
                buf.drain(..at);
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

/// A chunked body from `buf` and then `from`, validated and passed on as sent.
async fn relay_chunked(
    from: &TcpStream,
    buf: &mut Vec<u8>,
    to: &TcpStream,
    last: &Cell<Instant>,
) -> BodyEnd {
    let mut dec = ChunkedDecoder::default();
    loop {
        let mut at = 0;
        let mut bad = None;
        while !dec.is_done() {
            match dec.decode(&buf[at..]) {
                Ok(step) if step.consumed == 0 && step.payload.is_none() => break,
                Ok(step) => at += step.consumed,
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        // What validated so far goes on; nothing after a malformed line does.
        if send_all(to, &buf[..at]).await.is_err() {
            return BodyEnd::Sink;
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

/// The reason phrase of a status line, if it has one.
fn reason_phrase(raw: &[u8]) -> Option<&[u8]> {
    let line = raw.split(|&b| b == b'\r').next()?;
    let mut parts = line.splitn(3, |&b| b == b' ');
    parts.next()?;
    parts.next()?;
    let reason = parts.next()?;
    (!reason.is_empty()).then_some(reason)
}

/// A `name: value` line.
fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `name: value` lines.
fn write_headers(out: &mut Vec<u8>, headers: &[(&[u8], Cow<'_, [u8]>)]) {
    for (n, v) in headers {
        write_header(out, n, v);
    }
}

/// The header that delimits a body framed as `framing` (none for the others).
fn write_framing(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {}
    }
}

/// `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn default_reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// `Location` for a redirect: each part from the action, or else from the request.
fn redirect_location(rd: &Redirect, route: &Route, req: &Req) -> String {
    let scheme = rd.scheme.as_deref().unwrap_or("http");
    // Host and port of the request (an IPv6 literal keeps its brackets).
    let (req_host, req_port) = match req.host().rsplit_once(':') {
        Some((h, p))
            if !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            (h, Some(p))
        }
        _ => (req.host(), None),
    };
    let host = rd.host.as_deref().unwrap_or(req_host);
    let port = match (rd.port, req_port) {
        (Some(p), _) => Some(p.to_string()),
        // A new scheme or host drops the request's port (Envoy).
        (None, Some(p)) if rd.scheme.is_none() && rd.host.is_none() => Some(p.to_owned()),
        _ => None,
    };
    let path = if let Some(p) = &rd.path {
        p.clone()
    } else if let Some(pr) = &rd.prefix_rewrite {
        route.replace_prefix(req.path(), pr)
    } else {
        req.path().to_owned()
    };
    let mut loc = format!("{scheme}://{host}");
    if let Some(p) = port {
        loc.push(':');
        loc.push_str(&p);
    }
    loc.push_str(&path);
    if !rd.strip_query && rd.path.as_deref().is_none_or(|p| !p.contains('?')) {
        if let Some(q) = req.query() {
            loc.push('?');
            loc.push_str(q);
        }
    }
    loc
}

/// A random (version 4) UUID from the shard's generator, in its text form.
fn write_request_id(rng: &crate::cluster::Rng, out: &mut [u8; 36]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (a, b) = (rng.next_u64(), rng.next_u64());
    let a = (a & !0xf000) | 0x4000; // version 4
    let b = (b & !(0xc << 60)) | (0x8 << 60); // variant 10
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    let mut o = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[usize::from(byte >> 4)];
        out[o + 1] = HEX[usize::from(byte & 0xf)];
        o += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_is_a_version_4_uuid() {
        let rng = crate::cluster::Rng::new(7);
        let mut id = [0u8; 36];
        write_request_id(&rng, &mut id);
        let text = std::str::from_utf8(&id).unwrap();
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit())));
        assert!(groups[2].starts_with('4'), "version 4: {text}");
        assert!(
            matches!(&groups[3][..1], "8" | "9" | "a" | "b"),
            "variant 10: {text}"
        );
        let mut other = [0u8; 36];
        write_request_id(&rng, &mut other);
        assert_ne!(id, other);
    }

    #[test]
    fn decimal_and_tokens() {
        let mut out = Vec::new();
        for n in [0, 7, 10, 100, u64::MAX] {
            out.clear();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        let raw = b"keep-alive, Upgrade ,,x-a";
        let t: Vec<&[u8]> = tokens(raw).collect();
        assert_eq!(t, [&b"keep-alive"[..], b"Upgrade", b"x-a"]);
        // Two header values: "keep-alive, Upgrade " and ",x-a".
        let values = [0..20, 21..raw.len()];
        assert!(has_token(raw, &values, b"upgrade"));
        assert!(has_token(raw, &values, b"x-a"));
        assert!(!has_token(raw, &values, b"close"));
    }
}
