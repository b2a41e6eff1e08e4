//! The HTTP connection manager: the codec-neutral half of a downstream HTTP connection.
//!
//! A codec's connection shell (HTTP/1.1: [`crate::http1::conn`]) reads request heads and
//! owns the socket; for each request it asks the [`Connection`] here to serve one
//! [`Stream`] through the codec's [`Downstream`] side. Per connection the manager keeps what
//! outlives one stream: the client's address for `x-forwarded-for`, the configuration the
//! connection is served with. Each stream is served with the
//! newest generation that still routes this listener's connection to an HTTP connection
//! manager (re-running the filter chain match), as Envoy routes each new stream with the
//! current route configuration: once a generation is applied (and control has acknowledged
//! it to the xDS server), no request that starts afterwards reaches an endpoint it removed.
//! A connection whose listener a generation removed (or whose chain is no longer HTTP)
//! keeps the configuration it had, as a draining connection.

pub mod access;
pub mod headers;
pub mod path;
mod stream;
pub mod trace;

use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use monoio::net::TcpStream;

use crate::net::transport::Sock;
use monoio::time::Sleep;
use zerohop_proto::stats::{Counter, HttpHist, HttpStat};
use zerohop_proto::HttpManager;

use crate::config::{HttpPlan, Terminal};
use crate::conn::Facts;
use crate::error::{Kind, ProxyError};
use crate::http::downstream::Downstream;
use crate::http::info::StreamInfo;
use crate::http::message::Request;
use crate::shard::config::ShardConfig;
use crate::shard::listeners::BoundListener;
use crate::shard::Shard;
pub use stream::{count_status, decimal, Stream};

/// What one downstream HTTP connection keeps across its streams, whatever its codec.
/// Cloned by a multiplexing codec when a new generation applies to its next streams.
#[derive(Clone, Debug)]
pub struct Connection {
    cfg: Rc<ShardConfig>,
    listener: Rc<BoundListener>,
    http: Arc<HttpPlan>,
    facts: Facts,
    /// Whether new streams still follow new generations (false once the listener or its
    /// HTTP chain is gone: the connection drains on what it had).
    follow: bool,
    /// `x-forwarded-for`'s entry for this client.
    peer_ip: Option<String>,
    /// The client's own address (`x-envoy-external-address`).
    peer: Option<std::net::IpAddr>,
    /// The connection is TLS.
    tls: bool,
    /// The codec is HTTP/2 (`downstream_rq_http2_total`).
    h2: bool,
    /// `%CONNECTION_ID%`, numbered at its first logged stream (0: not yet).
    id: std::cell::Cell<u64>,
}

impl Connection {
    /// Takes on `accepted`, a connection accepted on `listener` whose chain ends in `http`
    /// (of generation `cfg`), for a codec shell: the socket set for small writes (no Nagle
    /// delay), the connection's state, and its place among the shard's active connections.
    pub fn accept(
        cfg: Rc<ShardConfig>,
        listener: &Rc<BoundListener>,
        http: Arc<HttpPlan>,
        accepted: crate::conn::Accepted,
    ) -> (Connection, Sock, crate::conn::ActiveGuard) {
        let crate::conn::Accepted {
            stream,
            facts,
            guard,
        } = accepted;
        let _ = stream.tcp().set_nodelay(true);
        let peer = stream.tcp().peer_addr().ok();
        let rbac = http.needs_addresses;
        let scope = http.manager.stats;
        let mut conn = Connection::new(cfg, listener.clone(), http, facts, peer);
        conn.tls = matches!(stream, Sock::Tls(_));
        guard.http(scope, conn.tls);
        if rbac {
            // Destination address and port, for RBAC's permissions.
            conn.facts.learn(stream.tcp());
        }
        (conn, stream, guard)
    }

    /// Takes on a connection accepted on `listener` whose chain ends in `http`, of
    /// generation `cfg`.
    pub fn new(
        cfg: Rc<ShardConfig>,
        listener: Rc<BoundListener>,
        http: Arc<HttpPlan>,
        facts: Facts,
        peer: Option<SocketAddr>,
    ) -> Connection {
        // x-forwarded-for's entry for this client, made once: as Envoy, the host's own
        // address for a loopback peer.
        let peer_ip = peer.map(|p| match p.ip().to_canonical() {
            ip if ip.is_loopback() => headers::local_address().to_string(),
            ip => ip.to_string(),
        });
        Connection {
            cfg,
            listener,
            http,
            facts,
            follow: true,
            peer_ip,
            peer: peer.map(|p| p.ip().to_canonical()),
            tls: false,
            h2: false,
            id: std::cell::Cell::new(0),
        }
    }

    /// The connection speaks HTTP/2 (its streams count as `downstream_rq_http2_total`).
    pub fn set_h2(&mut self) {
        self.h2 = true;
    }

    /// The connection manager's settings the codec needs (limits, timeouts).
    pub fn manager(&self) -> &HttpManager {
        &self.http.manager
    }

    /// The listener drains: no new requests are waited for.
    pub fn draining(&self) -> bool {
        self.listener.stop_accepting.fired()
    }

    /// A request the codec refused (malformed, too large, too slow): counted and logged.
    /// Returns the local reply the client gets, if any.
    pub fn refused(&self, shard: &Shard, e: &ProxyError) -> Option<(u16, &'static str)> {
        shard.stats.inc(Counter::DownstreamRqTotal);
        shard.stats.inc(match e.kind {
            Kind::RequestHeadersTimeout => Counter::DownstreamRqHeadersTimeout,
            _ => Counter::DownstreamRqMalformed,
        });
        let scope = self.http.manager.stats;
        self.request_stats(shard, scope);
        if e.kind == Kind::RequestHeadersTimeout {
            shard
                .stats
                .count(scope, HttpStat::DownstreamRqHeaderTimeout);
        }
        log::debug!("{}: refused a request: {e}", self.listener.name);
        let reply = e.local_reply();
        if let Some((status, _)) = reply {
            count_status(shard, status);
            self.response_stats(shard, scope, status);
        }
        shard.stats.uncount(scope, HttpStat::DownstreamRqActive);
        reply
    }

    /// A request begins: `downstream_rq_total`, by protocol, and `downstream_rq_active`.
    fn request_stats(&self, shard: &Shard, scope: zerohop_proto::StatScope) {
        let stats = shard.stats;
        stats.count(scope, HttpStat::DownstreamRqTotal);
        stats.count(
            scope,
            match self.h2 {
                true => HttpStat::DownstreamRqHttp2Total,
                false => HttpStat::DownstreamRqHttp1Total,
            },
        );
        stats.count(scope, HttpStat::DownstreamRqActive);
    }

    /// A response went out: `downstream_rq_<N>xx` and `downstream_rq_completed`.
    fn response_stats(&self, shard: &Shard, scope: zerohop_proto::StatScope, status: u16) {
        if let Some(class) = zerohop_proto::stats::scope::http_class(status) {
            shard.stats.count(scope, class);
        }
        shard.stats.count(scope, HttpStat::DownstreamRqCompleted);
    }

    /// The listener the connection was accepted on.
    pub fn listener(&self) -> &Rc<BoundListener> {
        &self.listener
    }

    /// Reads the connection's addresses now, for a codec that gives up its socket (a
    /// filter chain match in a later generation may need them).
    pub fn learn(&mut self, socket: &TcpStream) {
        self.facts.learn(socket);
    }

    /// Whether a newer generation than this connection's may apply to its next stream.
    pub fn stale(&self, shard: &Shard) -> bool {
        self.follow && shard.generation() != self.cfg.number
    }

    /// A stream begins: it is served with the newest generation that still sends this
    /// connection to an HTTP connection manager. `socket` gives the connection's addresses
    /// if a chain match needs them and they were not [learnt](Self::learn).
    pub fn begin_stream(&mut self, shard: &Shard, socket: Option<&TcpStream>) {
        if self.stale(shard) {
            let next = shard.config();
            match follow_listener(&next, &self.listener, &mut self.facts, socket) {
                Some(h) => (self.cfg, self.http) = (next, h),
                None => self.follow = false,
            }
        }
    }

    /// Serves `req` (whose head arrived at `started`) through `down`; returns whether the
    /// connection stays open for another stream.
    pub async fn serve<D: Downstream>(
        &self,
        shard: &Rc<Shard>,
        down: &mut D,
        timer: Pin<&mut Sleep>,
        req: &Request,
        started: Instant,
    ) -> bool {
        let mut info = StreamInfo::new(started, req.raw.len());
        info.request_captured = !self.http.manager.access_log.enabled();
        let scope = self.http.manager.stats;
        self.request_stats(shard, scope);
        let keep = Stream {
            shard,
            gen: &self.cfg,
            cfg: &self.cfg,
            http: &self.http,
            down,
            timer,
            peer_ip: self.peer_ip.as_deref(),
            peer: self.peer,
            tls: self.tls,
            facts: &self.facts,
            draining: &self.listener.stop_accepting,
            request: req,
            trace: None,
        }
        .serve(req, &mut info)
        .await;
        let stats = shard.stats;
        stats.uncount(scope, HttpStat::DownstreamRqActive);
        if let Some(code) = info.response_code {
            self.response_stats(shard, scope, code);
            stats.record_ms(
                scope,
                HttpHist::DownstreamRqTime,
                crate::stats::ms_since(started),
            );
        }
        stats.count_n(
            scope,
            HttpStat::DownstreamCxRxBytesTotal,
            info.bytes_received,
        );
        stats.count_n(scope, HttpStat::DownstreamCxTxBytesTotal, info.bytes_sent);
        let spec = &self.http.manager.access_log;
        if spec.enabled() && (spec.every_stream || info.span.is_some_and(|s| s.sampled())) {
            self.log_stream(shard, req, &mut info, spec);
        }
        log::trace!(
            "{} {} -> {:?} {} {}",
            String::from_utf8_lossy(req.method()),
            req.path(),
            info.response_code,
            info.response_code_details,
            info.flags.short_names()
        );
        keep
    }
}

/// The connection manager this connection's listener has in `next`, if the listener is
/// still there and its chain for this connection is still an HTTP one.
fn follow_listener(
    next: &ShardConfig,
    listener: &BoundListener,
    facts: &mut Facts,
    stream: Option<&TcpStream>,
) -> Option<Arc<HttpPlan>> {
    let index = listener.index_in(next)?;
    let plan = &next.listeners[index];
    if let Some(stream) = stream.filter(|_| plan.selector.needs_facts()) {
        facts.learn(stream);
    }
    let chain = plan.selector.select(&facts.get())?;
    match &plan.chains[chain].terminal {
        Terminal::Http(h) => Some(h.clone()),
        Terminal::Tcp(_) => None,
    }
}

/// Whether an upgrade to `token` (the request's `Upgrade` value) may be forwarded, as
/// Envoy decides it: a route's `upgrade_configs` entry for the type decides; without one,
/// the connection manager's (enabled unless it says otherwise); a type neither names is
/// refused (the caller answers 403).
pub fn upgrade_allowed(
    token: &[u8],
    route: &[zerohop_proto::UpgradeConfig],
    manager: &[zerohop_proto::UpgradeConfig],
) -> bool {
    let find = |list: &[zerohop_proto::UpgradeConfig]| {
        list.iter()
            .find(|u| {
                u.upgrade_type
                    .as_bytes()
                    .eq_ignore_ascii_case(token.trim_ascii())
            })
            .map(|u| u.enabled)
    };
    find(route).or_else(|| find(manager)).unwrap_or(false)
}

#[cfg(test)]
mod upgrade_tests {
    use super::upgrade_allowed;
    use zerohop_proto::UpgradeConfig;

    fn u(t: &str, enabled: bool) -> UpgradeConfig {
        UpgradeConfig {
            upgrade_type: t.into(),
            enabled,
        }
    }

    #[test]
    fn the_route_decides_then_the_manager_then_no() {
        let hcm = [u("websocket", true), u("spdy/3", false)];
        assert!(upgrade_allowed(b"WebSocket", &[], &hcm));
        assert!(!upgrade_allowed(b"spdy/3", &[], &hcm));
        assert!(!upgrade_allowed(b"other", &[], &hcm));
        assert!(!upgrade_allowed(
            b"websocket",
            &[u("websocket", false)],
            &hcm
        ));
        assert!(upgrade_allowed(b"spdy/3", &[u("spdy/3", true)], &hcm));
        assert!(upgrade_allowed(b"other", &[u("other", true)], &[]));
    }
}
