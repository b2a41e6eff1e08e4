//! The HTTP/1.1 connection manager: one downstream connection, request after request.
//!
//! Per request: read the head (idle timeout before its first byte, `request_headers_timeout`
//! after it), refuse anything whose framing is ambiguous, route it, then either answer
//! locally (direct response, redirect, errors) or forward it: an upstream connection from the
//! shard's pool (or a new one), the head rewritten (hop-by-hop headers dropped, header edits,
//! `x-forwarded-*`, `x-request-id`), the body streamed as it arrives (Content-Length bodies
//! by splice once large, chunked bodies validated chunk by chunk and passed through as sent),
//! then the response the same way back. The upstream connection returns to the pool only
//! after a complete, delimited exchange. A `101 Switching Protocols` answer to an Upgrade
//! request turns the connection into a tunnel.

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use zerohop_proto::stats::Counter;
use zerohop_proto::{HttpManager, Redirect};

use super::chunked::{ChunkError, ChunkedDecoder};
use super::head::{self, Framing, HeadError, Limits, RequestHead};
use crate::l4::{ActiveGuard, Tracked};
use crate::net::pump::{copy_exact, recv_into, send_all, Ctx, End};
use crate::net::sys;
use crate::route::{apply_edits, Action, Request as RouteRequest, Route, RouteTable};
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
    down: TcpStream,
) {
    let _active = ActiveGuard::enter(&shard);
    let _ = down.set_nodelay(true);
    // Only the downstream socket is registered for the drain deadline: upstream connections
    // change per request (idle ones belong to the shard's pool), and shutting the downstream
    // one ends whatever exchange is in flight.
    let _tracked = Tracked::new(&listener, [down.as_raw_fd(), down.as_raw_fd()]);
    let peer = down.peer_addr().ok();
    let mut buf = Vec::with_capacity(4096);
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
            down: &down,
            peer,
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
        (buf, last) = (std::mem::take(&mut conn.buf), conn.last.get());
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
    down: &'a TcpStream,
    peer: Option<SocketAddr>,
    /// Bytes read from downstream and not yet consumed (the next head, or body bytes).
    buf: Vec<u8>,
    last: Cell<Instant>,
    /// Whether requests move to newer generations (false once the listener left them).
    follow: bool,
}

/// A request, copied out of the read buffer.
struct Req {
    method: String,
    path: String,
    query: Option<String>,
    host: String,
    /// Lower-case names, in order, hop-by-hop ones included (routing may look at them).
    headers: Vec<(String, String)>,
    framing: Framing,
    /// The client wants the connection closed after this exchange.
    close: bool,
    expect_continue: bool,
    /// The `Upgrade` value when the client asked to switch protocols.
    upgrade: Option<String>,
    /// The tokens of its `Connection` header(s), lower-case: hop-by-hop header names among them.
    connection: Vec<String>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Bytes read at a time into a head buffer.
const READ_CHUNK: usize = 16 * 1024;

/// Bodies up to this size are read whole and sent with their head.
const SMALL_BODY: u64 = 64 * 1024;

/// Headers that describe one hop (RFC 9110 section 7.6.1), never forwarded as such.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn tokens(v: &str) -> impl Iterator<Item = String> + '_ {
    v.split(',')
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
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
        let req = match self.take_request(&head) {
            Ok(r) => r,
            Err(why) => {
                self.shard.stats.inc(Counter::DownstreamRqMalformed);
                self.local_reply(400, why, &[], true).await;
                return false;
            }
        };
        let headers = |n: &str| req.header(n);
        let route_req = RouteRequest {
            host: &req.host,
            path: &req.path,
            query: req.query.as_deref(),
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
                let extra = self.response_edits(route, vec![("location".to_owned(), location)]);
                self.local_reply(rd.status, "", &extra, close_after_local)
                    .await
            }
            Action::Forward { .. } => match self.forward(route, req).await {
                Ok(keep) => keep,
                Err(Fail::Reply(status, why)) => {
                    self.local_reply(status, why, &[], true).await;
                    false
                }
                Err(Fail::Abort) => false,
            },
        }
    }

    fn response_edits(
        &self,
        route: &Route,
        mut headers: Vec<(String, String)>,
    ) -> Vec<(String, String)> {
        apply_edits(&mut headers, &route.edits, true);
        headers
    }

    async fn read_head(&mut self) -> ReadHead {
        let limits = self.limits();
        let mut first_byte: Option<Instant> = (!self.buf.is_empty()).then(Instant::now);
        loop {
            match head::parse_request(&self.buf, &limits) {
                Ok(Some(h)) => return ReadHead::Head(h),
                Ok(None) => {}
                Err(HeadError::TooLarge) => {
                    return ReadHead::Refuse(431, "request header fields too large")
                }
                Err(HeadError::Malformed(why)) => return ReadHead::Refuse(400, why),
            }
            // Wait for more: before the first byte, the idle timeout (checked in slices, so
            // a draining listener closes idle connections promptly); after it, the headers
            // timeout.
            let deadline = match first_byte {
                None => {
                    if self.draining() {
                        return ReadHead::Closed;
                    }
                    self.hcm.idle_timeout.map(|d| self.last.get() + d)
                }
                Some(t) => self.hcm.request_headers_timeout.map(|d| t + d),
            };
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                if first_byte.is_none() {
                    self.shard.stats.inc(Counter::IdleTimeout);
                    return ReadHead::Closed;
                }
                return ReadHead::Refuse(408, "request header read timeout");
            }
            let mut wait = deadline.map_or(Duration::from_secs(1), |d| d - now);
            if first_byte.is_none() {
                wait = wait.min(Duration::from_secs(1));
            }
            // Right after a response nothing can have arrived: wait for readiness first.
            let wait_first = self.buf.is_empty();
            match monoio::time::timeout(
                wait,
                recv_into(self.down, &mut self.buf, wait_first, READ_CHUNK),
            )
            .await
            {
                Err(_) => continue, // re-check the deadline and the drain
                Ok(Ok(0)) | Ok(Err(_)) => {
                    if !self.buf.is_empty() {
                        log::debug!("{}: client closed mid-head", self.listener.name);
                    }
                    return ReadHead::Closed;
                }
                Ok(Ok(n)) => {
                    self.shard.stats.add(Counter::DownstreamCxRxBytes, n as u64);
                    let now = Instant::now();
                    self.last.set(now);
                    first_byte.get_or_insert(now);
                }
            }
        }
    }

    /// Copies the request out of the buffer and consumes its head.
    fn take_request(&mut self, h: &RequestHead) -> Result<Req, &'static str> {
        let b = &self.buf;
        let text = |r: &std::ops::Range<usize>| String::from_utf8_lossy(&b[r.clone()]).into_owned();
        let method = text(&h.method);
        let target = text(&h.target);
        let mut headers: Vec<(String, String)> = h
            .headers
            .iter()
            .map(|x| {
                let mut name = text(&x.name);
                name.make_ascii_lowercase();
                (name, text(&x.value))
            })
            .collect();
        let (mut host, path_and_query) = if let Some(rest) = target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("https://"))
        {
            // absolute-form: its authority replaces Host (RFC 9112 section 3.2.2).
            let i = rest.find('/').unwrap_or(rest.len());
            (
                Some(rest[..i].to_owned()),
                if i < rest.len() {
                    rest[i..].to_owned()
                } else {
                    "/".to_owned()
                },
            )
        } else {
            (None, target)
        };
        let hosts: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n == "host")
            .map(|(_, v)| v.as_str())
            .collect();
        if hosts.len() > 1 {
            return Err("more than one Host header");
        }
        if host.is_none() {
            host = hosts.first().map(|h| h.to_string());
        }
        let host = match host {
            Some(h) if !h.is_empty() => h,
            _ if h.minor_version == 0 => String::new(),
            _ => return Err("missing Host header"),
        };
        headers.retain(|(n, _)| n != "host");
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path_and_query, None),
        };
        let connection: Vec<String> = headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| tokens(v).collect::<Vec<_>>())
            .collect();
        // HTTP/1.0 clients get one request per connection.
        let close = h.minor_version == 0 || connection.iter().any(|t| t == "close");
        let upgrade = if connection.iter().any(|t| t == "upgrade") {
            headers
                .iter()
                .find(|(n, _)| n == "upgrade")
                .map(|(_, v)| v.clone())
        } else {
            None
        };
        let expect_continue = headers
            .iter()
            .any(|(n, v)| n == "expect" && v.eq_ignore_ascii_case("100-continue"));
        let framing = h.framing;
        self.buf.drain(..h.len);
        Ok(Req {
            method,
            path,
            query,
            host,
            headers,
            framing,
            close,
            expect_continue,
            upgrade,
            connection,
        })
    }

    /// The upstream request head.
    fn upstream_head(&self, route: &Route, req: &Req) -> Vec<u8> {
        let Action::Forward { forward, .. } = &route.action else {
            unreachable!("forward() is called for forwarding routes")
        };
        let path = route
            .rewrite_path(&req.path, req.query.as_deref())
            .unwrap_or_else(|| match &req.query {
                Some(q) => format!("{}?{q}", req.path),
                None => req.path.clone(),
            });
        // Drop hop-by-hop headers, and any the client named in Connection.
        let named = &req.connection;
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .filter(|(n, _)| {
                !HOP_BY_HOP.contains(&n.as_str()) && !named.contains(n) && n != "content-length"
            })
            .filter(|(n, _)| !(req.expect_continue && n == "expect"))
            .cloned()
            .collect();
        // x-forwarded-for / -proto, as Envoy: with use_remote_address the peer is appended and
        // the scheme set; without, they pass through (the scheme added if absent).
        if self.hcm.use_remote_address {
            if let Some(peer) = self.peer {
                let ip = peer.ip().to_string();
                match headers.iter_mut().find(|(n, _)| n == "x-forwarded-for") {
                    Some((_, v)) => *v = format!("{v},{ip}"), // Envoy's separator
                    None => headers.push(("x-forwarded-for".into(), ip)),
                }
            }
            headers.retain(|(n, _)| n != "x-forwarded-proto");
            headers.push(("x-forwarded-proto".into(), "http".into()));
        } else if !headers.iter().any(|(n, _)| n == "x-forwarded-proto") {
            headers.push(("x-forwarded-proto".into(), "http".into()));
        }
        if self.hcm.generate_request_id && !headers.iter().any(|(n, _)| n == "x-request-id") {
            headers.push(("x-request-id".into(), request_id(&self.shard.rng)));
        }
        apply_edits(&mut headers, &route.edits, false);
        let host = forward.host_rewrite.as_deref().unwrap_or(&req.host);

        let mut out = Vec::with_capacity(256 + headers.len() * 32);
        out.extend_from_slice(
            format!("{} {path} HTTP/1.1\r\nhost: {host}\r\n", req.method).as_bytes(),
        );
        for (n, v) in &headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match req.framing {
            Framing::Length(n) => {
                out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes())
            }
            Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            Framing::Empty | Framing::UntilClose => {}
        }
        if let Some(u) = &req.upgrade {
            out.extend_from_slice(format!("connection: upgrade\r\nupgrade: {u}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
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
    async fn forward(&mut self, route: &Route, req: Req) -> Result<bool, Fail> {
        let Action::Forward { forward, pick, .. } = &route.action else {
            unreachable!("called for forwarding routes")
        };
        let stats = self.shard.stats;
        let (cluster, endpoint) = self.cfg.pick_among(&forward.targets, pick, &self.shard.rng);
        let Some(addr) = endpoint else {
            stats.inc(Counter::UpstreamCxNoHealthyUpstream);
            return Err(Fail::Reply(503, "no healthy upstream"));
        };
        let mut head = self.upstream_head(route, &req);
        // A small body that has already arrived whole goes out with the head, in one send.
        // (Only a bodiless request is ever sent twice, so the head is built once.)
        let mut body_sent = false;
        if let Framing::Length(n) = req.framing {
            if self.buf.len() as u64 >= n && n <= SMALL_BODY {
                head.extend_from_slice(&self.buf[..n as usize]);
                self.buf.drain(..n as usize);
                body_sent = true;
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
        // A pooled connection the upstream closed a moment ago fails before any byte of a
        // response: that (bodiless) request is sent again once, on a new connection.
        let mut attempt = 0;
        let (up, mut ubuf, mut resp, deadline) = loop {
            attempt += 1;
            let pooled = self.shard.upstreams.checkout(addr);
            let reused = pooled.is_some();
            let up = match pooled {
                Some(s) => {
                    stats.inc(Counter::UpstreamCxReused);
                    s
                }
                None => self.connect(cluster, addr).await?,
            };
            stats.inc(Counter::UpstreamRqTotal);
            if send_all(&up, &head).await.is_err() {
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
                    let relay = send_body(self, &req, &up, &mut buf, &self.last);
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
            let deadline = forward.timeout.map(|t| Instant::now() + t);
            let mut ubuf = Vec::with_capacity(4096);
            match self
                .read_response_head(&up, &mut ubuf, &req, deadline)
                .await
            {
                Ok(resp) => break (up, ubuf, resp, deadline),
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
                let wait = deadline.map_or(Duration::from_secs(24 * 3600), |d| {
                    d.saturating_duration_since(Instant::now())
                });
                match monoio::time::timeout(wait, recv_into(&up, &mut ubuf, false, want)).await {
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
        if send_all(self.down, &out).await.is_err() {
            return Ok(false);
        }
        self.shard
            .stats
            .add(Counter::DownstreamCxTxBytes, out.len() as u64);
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
                if !upstream_close && ubuf.is_empty() {
                    self.shard.upstreams.checkin(addr, up);
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
        let idle = crate::l4::idle_timeout(&self.last, self.hcm.stream_idle_timeout);
        let overall = async {
            match deadline {
                Some(d) => monoio::time::sleep(d.saturating_duration_since(Instant::now())).await,
                None => std::future::pending().await,
            }
        };
        monoio::select! {
            r = relay => r,
            _ = idle => BodyEnd::TimedOut,
            _ = overall => BodyEnd::TimedOut,
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
        &self,
        up: &TcpStream,
        ubuf: &mut Vec<u8>,
        req: &Req,
        deadline: Option<Instant>,
    ) -> Result<Resp, Fail> {
        let stats = self.shard.stats;
        let limits = Limits {
            max_head_bytes: 64 * 1024,
            max_headers: 200,
        };
        loop {
            match head::parse_response(ubuf, &limits, req.method.as_bytes()) {
                Ok(Some(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                    // 1xx interim responses (100-continue was answered here): dropped.
                    ubuf.drain(..h.len);
                    continue;
                }
                Ok(Some(h)) => {
                    let connection: Vec<String> = h
                        .headers
                        .iter()
                        .filter(|x| ubuf[x.name.clone()].eq_ignore_ascii_case(b"connection"))
                        .flat_map(|x| {
                            tokens(&String::from_utf8_lossy(&ubuf[x.value.clone()]))
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    let close = h.minor_version == 0 || connection.iter().any(|t| t == "close");
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
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(w) => w,
                    None => {
                        stats.inc(Counter::UpstreamRqTimeout);
                        return Err(Fail::Reply(504, "upstream request timeout"));
                    }
                },
                None => Duration::from_secs(24 * 3600),
            };
            match monoio::time::timeout(wait, recv_into(up, ubuf, true, READ_CHUNK)).await {
                Err(_) => {
                    stats.inc(Counter::UpstreamRqTimeout);
                    return Err(Fail::Reply(504, "upstream request timeout"));
                }
                Ok(Ok(0)) | Ok(Err(_)) => {
                    stats.inc(Counter::UpstreamRqReset);
                    return Err(Fail::Reply(502, "upstream connect error or disconnect/reset before headers. reset reason: connection termination"));
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The response head sent downstream: hop-by-hop headers dropped, edits applied.
    fn downstream_head(
        &self,
        route: &Route,
        resp: &Resp,
        raw: &[u8],
        close: bool,
        upgrade: bool,
    ) -> Vec<u8> {
        let text =
            |r: &std::ops::Range<usize>| String::from_utf8_lossy(&raw[r.clone()]).into_owned();
        let named = &resp.connection;
        let mut headers: Vec<(String, String)> = resp
            .headers
            .iter()
            .map(|h| {
                let mut name = text(&h.name);
                name.make_ascii_lowercase();
                (name, text(&h.value))
            })
            .filter(|(n, _)| {
                n != "content-length"
                    && ((upgrade && n == "upgrade")
                        || (!HOP_BY_HOP.contains(&n.as_str()) && !named.contains(n)))
            })
            .collect();
        apply_edits(&mut headers, &route.edits, true);
        let reason = reason_phrase(raw).unwrap_or_else(|| default_reason(resp.status).to_owned());
        let mut out = Vec::with_capacity(raw.len() + 64);
        out.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", resp.status).as_bytes());
        for (n, v) in &headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        match resp.framing {
            Framing::Length(n) => {
                out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes())
            }
            Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            Framing::Empty => {
                // Keep a bodiless response's declared length (HEAD, 304): forwarded as sent.
                if let Some(h) = resp
                    .headers
                    .iter()
                    .find(|h| raw[h.name.clone()].eq_ignore_ascii_case(b"content-length"))
                {
                    out.extend_from_slice(
                        format!("content-length: {}\r\n", text(&h.value)).as_bytes(),
                    );
                }
            }
            Framing::UntilClose => {}
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
        extra: &[(String, String)],
        close: bool,
    ) -> bool {
        let close = close || self.draining();
        let mut out = format!("HTTP/1.1 {status} {}\r\n", default_reason(status));
        if !body.is_empty() {
            out.push_str("content-type: text/plain\r\n");
        }
        out.push_str(&format!("content-length: {}\r\n", body.len()));
        for (n, v) in extra {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        if close {
            out.push_str("connection: close\r\n");
        }
        out.push_str("\r\n");
        out.push_str(body);
        self.count_status(status);
        let ok = send_all(self.down, out.as_bytes()).await.is_ok();
        ok && !close
    }
}

struct Resp {
    status: u16,
    framing: Framing,
    len: usize,
    close: bool,
    /// The tokens of its `Connection` header(s), lower-case.
    connection: Vec<String>,
    headers: Vec<head::Header>,
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
fn reason_phrase(raw: &[u8]) -> Option<String> {
    let line = raw.split(|&b| b == b'\r').next()?;
    let mut parts = line.splitn(3, |&b| b == b' ');
    parts.next()?;
    parts.next()?;
    let reason = parts.next()?;
    (!reason.is_empty()).then(|| String::from_utf8_lossy(reason).into_owned())
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
    let (req_host, req_port) = match req.host.rsplit_once(':') {
        Some((h, p))
            if !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            (h, Some(p))
        }
        _ => (req.host.as_str(), None),
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
        route.replace_prefix(&req.path, pr)
    } else {
        req.path.clone()
    };
    let mut loc = format!("{scheme}://{host}");
    if let Some(p) = port {
        loc.push(':');
        loc.push_str(&p);
    }
    loc.push_str(&path);
    if !rd.strip_query && rd.path.as_deref().is_none_or(|p| !p.contains('?')) {
        if let Some(q) = &req.query {
            loc.push('?');
            loc.push_str(q);
        }
    }
    loc
}

/// A random (version 4) UUID from the shard's generator.
fn request_id(rng: &crate::cluster::Rng) -> String {
    let (a, b) = (rng.next_u64(), rng.next_u64());
    let a = (a & !0xf000) | 0x4000; // version 4
    let b = (b & !(0xc << 60)) | (0x8 << 60); // variant 10
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}
