//! The HTTP connection manager: one downstream connection, request after request.
//!
//! It drives the codec (HTTP/1.1's [`ServerConn`]) for each request head, then hands the
//! request to a [`Stream`]. Per connection it owns what outlives one request: the codec's
//! buffers and timer, the client's address for `x-forwarded-for`, and which generation the
//! connection is served with. Each request is served with the newest generation that still
//! routes this listener's connection to an HTTP connection manager (re-running the filter
//! chain match), as Envoy routes each new stream with the current route configuration: once
//! a generation is applied (and control has acknowledged it to the xDS server), no request
//! that starts afterwards reaches an endpoint it removed. A connection whose listener a
//! generation removed (or whose chain is no longer HTTP) keeps the configuration it had, as
//! a draining connection.

pub mod headers;
mod stream;

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;

use zerohop_proto::stats::Counter;

use crate::config::{HttpPlan, Terminal};
use crate::conn::{Accepted, Tracked};
use crate::error::Kind;
use crate::http::info::StreamInfo;
use crate::http1::head::Limits;
use crate::http1::server::{far_future, Incoming, ServerConn};
use crate::shard::config::ShardConfig;
use crate::shard::listeners::BoundListener;
use crate::shard::Shard;
pub use stream::{count_status, Stream};

/// Serves one downstream connection whose filter chain ends in the connection manager
/// `http`, of generation `cfg`.
pub async fn serve(
    mut cfg: Rc<ShardConfig>,
    listener: Rc<BoundListener>,
    mut http: Arc<HttpPlan>,
    accepted: Accepted,
) {
    let Accepted {
        stream,
        mut facts,
        guard,
    } = accepted;
    let shard: &Shard = guard.shard();
    let _ = stream.set_nodelay(true);
    // Only the downstream socket is registered for the drain deadline: upstream connections
    // change per request (idle ones belong to the shard's pool), and shutting the downstream
    // one ends whatever exchange is in flight.
    let fd = stream.as_raw_fd();
    let _tracked = Tracked::new(&listener, [fd, fd]);
    // x-forwarded-for's entry for this client, made once: as Envoy, the host's own address
    // for a loopback peer.
    let peer_ip = stream
        .peer_addr()
        .ok()
        .map(|p| match p.ip().to_canonical() {
            ip if ip.is_loopback() => headers::local_address().to_string(),
            ip => ip.to_string(),
        });
    let mut down = ServerConn::new(stream);
    // The one timer every wait of this connection moves to its own deadline: usually a
    // cheap extension of an entry already in the timer wheel.
    let mut timer = std::pin::pin!(monoio::time::sleep_until(far_future().into()));
    let mut follow = true;
    loop {
        let hcm = &http.manager;
        let limits = Limits {
            max_head_bytes: hcm.max_request_headers_bytes as usize,
            max_headers: hcm.max_headers_count as usize,
        };
        let draining = || listener.stop_accepting.fired();
        let incoming = down
            .read_request(
                timer.as_mut(),
                &limits,
                &hcm.http1,
                hcm.idle_timeout,
                hcm.request_headers_timeout,
                draining,
                shard.stats,
            )
            .await;
        let req = match incoming {
            Ok(Incoming::Request(r)) => r,
            Ok(Incoming::Closed) => return,
            Ok(Incoming::Idle) => {
                shard.stats.inc(Counter::IdleTimeout);
                return;
            }
            Err(e) => {
                shard.stats.inc(Counter::DownstreamRqTotal);
                shard.stats.inc(match e.kind {
                    Kind::RequestHeadersTimeout => Counter::DownstreamRqHeadersTimeout,
                    _ => Counter::DownstreamRqMalformed,
                });
                log::debug!("{}: refused a request: {e}", listener.name);
                if let Some((status, why)) = e.local_reply() {
                    count_status(shard, status);
                    down.local_reply(status, why, &[], true).await;
                }
                return;
            }
        };
        if follow && shard.generation() != cfg.number {
            let next = shard.config();
            match follow_listener(&next, &listener, &mut facts, &down.stream) {
                Some(h) => (cfg, http) = (next, h),
                None => follow = false,
            }
        }
        let mut info = StreamInfo::new(down.last.get(), req.raw.len());
        let keep = Stream {
            shard,
            gen: &cfg,
            http: &http,
            down: &mut down,
            timer: timer.as_mut(),
            peer_ip: peer_ip.as_deref(),
            draining: &listener.stop_accepting,
        }
        .serve(&req, &mut info)
        .await;
        log::trace!(
            "{} {} -> {:?} {} {}",
            String::from_utf8_lossy(req.method()),
            req.path(),
            info.response_code,
            info.response_code_details,
            info.flags.short_names()
        );
        down.head = req.raw; // its allocation serves the next request
        if !keep {
            return;
        }
    }
}

/// The connection manager this connection's listener has in `next`, if the listener is
/// still there and its chain for this connection is still an HTTP one.
fn follow_listener(
    next: &ShardConfig,
    listener: &BoundListener,
    facts: &mut crate::conn::Facts,
    stream: &monoio::net::TcpStream,
) -> Option<Arc<HttpPlan>> {
    let index = listener.index_in(next)?;
    let plan = &next.listeners[index];
    if plan.selector.needs_facts() {
        facts.learn(stream);
    }
    let chain = plan.selector.select(&facts.get())?;
    match &plan.chains[chain].terminal {
        Terminal::Http(h) => Some(h.clone()),
        Terminal::Tcp(_) => None,
    }
}
