//! A new downstream connection, from accept to the filter chain that serves it: the one
//! place that dispatches by listener.
//!
//! The listener's filters run first (`http_inspector`, `tls_inspector`), then the filter
//! chain match picks a chain (`config::ChainSelector`; a listener with one open chain picks
//! it without asking the socket anything); a chain with a TLS transport socket runs the
//! handshake (`tls`), and the chain's terminal filter takes the connection: the tcp_proxy
//! (`l4`) or the HTTP connection manager (`http::hcm`), HTTP/2 when ALPN agreed on `h2`. A
//! connection no chain matches is closed and counted (`no_filter_chain_match`, as Envoy's).

mod guard;
pub mod inspect;

use std::net::SocketAddr;
use std::rc::Rc;

use monoio::net::TcpStream;
use zerohop_proto::stats::{Counter, ListenerStat};
use zerohop_proto::{CodecType, ListenerFilter};

use crate::config::{ConnFacts, Terminal};
use crate::net::transport::Sock;
use crate::shard::config::ShardConfig;
use crate::shard::listeners::BoundListener;
use crate::shard::Shard;
pub use guard::{ActiveGuard, Tracked};

/// What is known about a connection for the filter chain match: what the listener filters
/// detected, and its addresses once asked for (at most once).
#[derive(Clone, Debug)]
pub struct Facts {
    addrs: Option<(SocketAddr, SocketAddr)>,
    pub transport_protocol: &'static str,
    /// The TLS server name (SNI) the tls_inspector or the handshake read.
    pub server_name: Option<String>,
    pub application_protocols: Vec<String>,
    /// The TLS peer certificate's names (`rbac::peer_names`), if the peer sent one.
    pub peer_names: Option<Vec<String>>,
}

impl Default for Facts {
    fn default() -> Facts {
        Facts {
            addrs: None,
            transport_protocol: "raw_buffer",
            server_name: None,
            application_protocols: Vec::new(),
            peer_names: None,
        }
    }
}

impl Facts {
    /// Reads the connection's addresses (two syscalls) if they were not read yet.
    pub fn learn(&mut self, stream: &TcpStream) {
        if self.addrs.is_none() {
            let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
            self.addrs = Some((
                stream.local_addr().unwrap_or(unspecified),
                stream.peer_addr().unwrap_or(unspecified),
            ));
        }
    }

    /// The local (destination) address, if it was learnt.
    pub fn local(&self) -> Option<SocketAddr> {
        self.addrs.map(|(local, _)| local)
    }

    /// The peer (source) address, if it was learnt.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.addrs.map(|(_, peer)| peer)
    }

    /// The facts, as the chain match takes them (addresses unspecified if never learnt).
    pub fn get(&self) -> ConnFacts<'_> {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let (local, peer) = self.addrs.unwrap_or((unspecified, unspecified));
        ConnFacts {
            local,
            peer,
            server_name: self.server_name.as_deref(),
            transport_protocol: self.transport_protocol,
            application_protocols: &self.application_protocols,
        }
    }
}

/// An accepted connection on its way to a terminal filter (plain until its chain's TLS
/// handshake is done).
#[derive(Debug)]
pub struct Accepted {
    pub stream: Sock,
    pub facts: Facts,
    /// Counts the connection as active until it is dropped.
    pub guard: ActiveGuard,
}

/// Starts serving a connection accepted on listener `index` of generation `cfg`. Without
/// listener filters the filter chain is chosen here, at once, and the chain's terminal
/// filter gets the connection as its own task; with them, a task runs them first.
pub fn dispatch(
    shard: &Rc<Shard>,
    cfg: Rc<ShardConfig>,
    index: usize,
    listener: Rc<BoundListener>,
    stream: TcpStream,
) {
    let guard = ActiveGuard::enter(shard, cfg.listeners[index].stats);
    if cfg.listeners[index].listener_filters.is_empty() {
        let accepted = Accepted {
            stream: Sock::Plain(stream),
            facts: Facts::default(),
            guard,
        };
        start(cfg, index, listener, accepted);
    } else {
        monoio::spawn(inspect(cfg, index, listener, stream, guard));
    }
}

/// Runs the listener's filters, then starts the chain they lead to.
async fn inspect(
    cfg: Rc<ShardConfig>,
    index: usize,
    listener: Rc<BoundListener>,
    stream: TcpStream,
    guard: ActiveGuard,
) {
    let plan = &cfg.listeners[index];
    let mut facts = Facts::default();
    for f in &plan.listener_filters {
        match f {
            ListenerFilter::HttpInspector => {
                match inspect::http(&stream, plan.listener_filters_timeout).await {
                    Ok(Some(p)) => facts.application_protocols.push(p.to_owned()),
                    Ok(None) => {}
                    Err(e @ inspect::InspectError::Timeout)
                        if plan.continue_on_listener_filters_timeout =>
                    {
                        pre_cx_timeout(&guard, &e)
                    }
                    Err(e) => {
                        pre_cx_timeout(&guard, &e);
                        log::debug!(
                            "{}: listener filter http_inspector: {e:?}; closing",
                            listener.name
                        );
                        return;
                    }
                }
            }
            ListenerFilter::TlsInspector => {
                match inspect::tls(&stream, plan.listener_filters_timeout).await {
                    Ok(Some(hello)) => {
                        facts.transport_protocol = "tls";
                        facts.server_name = hello.server_name;
                        facts.application_protocols = hello.alpn;
                    }
                    Ok(None) => {}
                    Err(e @ inspect::InspectError::Timeout)
                        if plan.continue_on_listener_filters_timeout =>
                    {
                        pre_cx_timeout(&guard, &e)
                    }
                    Err(e) => {
                        pre_cx_timeout(&guard, &e);
                        log::debug!(
                            "{}: listener filter tls_inspector: {e:?}; closing",
                            listener.name
                        );
                        return;
                    }
                }
            }
        }
    }
    start(
        cfg.clone(),
        index,
        listener,
        Accepted {
            stream: Sock::Plain(stream),
            facts,
            guard,
        },
    );
}

/// A listener filter that ran out of time: Envoy's `downstream_pre_cx_timeout`.
fn pre_cx_timeout(guard: &ActiveGuard, e: &inspect::InspectError) {
    if matches!(e, inspect::InspectError::Timeout) {
        guard
            .shard()
            .stats
            .count(guard.scope(), ListenerStat::DownstreamPreCxTimeout);
    }
}

/// Chooses the connection's filter chain and spawns its terminal filter on it.
fn start(cfg: Rc<ShardConfig>, index: usize, listener: Rc<BoundListener>, mut a: Accepted) {
    let plan = &cfg.listeners[index];
    if plan.selector.needs_facts() {
        a.facts.learn(a.stream.tcp());
    }
    let Some(chain) = plan.selector.select(&a.facts.get()) else {
        let stats = a.guard.shard().stats;
        stats.inc(Counter::NoFilterChainMatch);
        stats.count(a.guard.scope(), ListenerStat::NoFilterChainMatch);
        log::debug!(
            "{}: no filter chain matches a connection; closing",
            listener.name
        );
        return;
    };
    // The chain's network local rate limits, in order: a connection without a token is
    // closed before the terminal filter sees it (Envoy's "no further filter iteration").
    for limit in &plan.chains[chain].limits {
        let bucket = crate::ratelimit::buckets();
        if limit.enabled
            && bucket
                .take(&limit.bucket, std::time::Instant::now())
                .is_err()
        {
            a.guard
                .shard()
                .stats
                .inc(Counter::LocalRateLimitRateLimited);
            log::debug!(
                "{}: local rate limit {}: closing a connection",
                listener.name,
                limit.stat_prefix
            );
            return;
        }
    }
    match plan.chains[chain].tls.clone() {
        Some(tls) => {
            monoio::spawn(terminate(cfg, index, chain, listener, a, tls));
        }
        None => serve(cfg, index, chain, listener, a),
    }
}

/// Whether every network RBAC filter allows the connection (shadow rules counted).
fn network_rbac(filters: &[zerohop_proto::NetworkRbac], a: &Accepted) -> bool {
    let facts = a.facts.get();
    let s = crate::rbac::Subject {
        peer: Some(facts.peer.ip()),
        xff: None,
        local: Some(facts.local),
        sni: facts.server_name,
        peer_names: a.facts.peer_names.as_deref(),
        request: None,
    };
    let stats = a.guard.shard().stats;
    for f in filters {
        if let Some(shadow) = &f.shadow {
            stats.inc(match crate::rbac::evaluate(shadow, &s).allowed {
                true => Counter::NetworkRbacShadowAllowed,
                false => Counter::NetworkRbacShadowDenied,
            });
        }
        if let Some(rules) = &f.rules {
            if !crate::rbac::evaluate(rules, &s).allowed {
                stats.inc(Counter::NetworkRbacDenied);
                return false;
            }
            stats.inc(Counter::NetworkRbacAllowed);
        }
    }
    true
}

/// Runs the TLS handshake of a chain with a TLS transport socket, then serves the chain.
/// The handshake is bounded by the terminal filter's first wait (the connection manager's
/// request-headers or idle timeout, the tcp_proxy's idle timeout).
async fn terminate(
    cfg: Rc<ShardConfig>,
    index: usize,
    chain: usize,
    listener: Rc<BoundListener>,
    mut a: Accepted,
    config: std::sync::Arc<rustls::ServerConfig>,
) {
    let Sock::Plain(tcp) = a.stream else {
        return; // a connection is accepted plain; nothing terminates TLS twice
    };
    let limit = match &cfg.listeners[index].chains[chain].terminal {
        Terminal::Tcp(t) => t.proxy.idle_timeout,
        Terminal::Http(h) => h.manager.request_headers_timeout.or(h.manager.idle_timeout),
    };
    let stats = a.guard.shard().stats;
    let conn = match rustls::ServerConnection::new(config) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("{}: TLS: {e}", listener.name);
            return;
        }
    };
    let deadline = limit.map(|d| std::time::Instant::now() + d);
    let done = crate::tls::TlsStream::handshake(tcp, conn, deadline).await;
    crate::tls::count_handshake(stats, false, a.guard.scope(), done.as_ref());
    match done {
        Ok(s) => {
            if a.facts.server_name.is_none() {
                a.facts.server_name = s.server_name();
            }
            a.facts.peer_names = s
                .peer_certificates()
                .and_then(|c| c.first().map(|leaf| crate::rbac::peer_names(leaf)));
            a.stream = Sock::Tls(Box::new(s));
            serve(cfg, index, chain, listener, a);
        }
        Err(e) => log::debug!("{}: TLS handshake failed: {e}", listener.name),
    }
}

/// Spawns the chain's terminal filter on the connection, once its network RBAC filters
/// allow it.
fn serve(
    cfg: Rc<ShardConfig>,
    index: usize,
    chain: usize,
    listener: Rc<BoundListener>,
    mut a: Accepted,
) {
    let plan = &cfg.listeners[index].chains[chain];
    if !plan.rbac.is_empty() {
        a.facts.learn(a.stream.tcp());
        if !network_rbac(&plan.rbac, &a) {
            log::debug!("{}: RBAC denied a connection; closing", listener.name);
            return;
        }
    }
    match &plan.terminal {
        Terminal::Tcp(_) => {
            monoio::spawn(crate::l4::serve(cfg, index, chain, listener, a));
        }
        // The codec: HTTP/2 when TLS agreed on it by ALPN, else by `codec_type` (`AUTO`
        // starts as HTTP/1.1 and hands a connection that opens with the HTTP/2 preface to
        // the HTTP/2 codec).
        Terminal::Http(http) => {
            let alpn_h2 = match &a.stream {
                Sock::Tls(t) => t.alpn().is_some_and(|p| p == b"h2"),
                Sock::Plain(_) => false,
            };
            let http = http.clone();
            match http.manager.codec {
                CodecType::Auto | CodecType::Http2 if alpn_h2 => {
                    monoio::spawn(crate::http2::conn::serve(cfg, listener, http, a));
                }
                CodecType::Auto | CodecType::Http1 => {
                    monoio::spawn(crate::http1::conn::serve(cfg, listener, http, a));
                }
                CodecType::Http2 => {
                    monoio::spawn(crate::http2::conn::serve(cfg, listener, http, a));
                }
            }
        }
    }
}
