//! A shard's idle upstream connections, keyed by what makes two connections
//! interchangeable: the endpoint, the protocol spoken on it and the transport socket (plain,
//! or the TLS context it was made with). Nothing is shared with other
//! shards; a connection goes back only after a complete, delimited exchange, and not at all
//! once it has served the cluster's `max_requests_per_connection`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::net::transport::Sock;

use super::breaker::Held;
use crate::fasthash::FastHash;
use crate::net::sys;

/// The protocol a pooled connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    Http2,
}

/// What a pooled connection can be reused for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub endpoint: SocketAddr,
    pub protocol: Protocol,
    /// 0: plain TCP; else the TLS context's id (`config::UpstreamTlsPlan::id`).
    pub transport: u64,
}

/// Idle connections kept per endpoint; beyond this they are closed. Envoy keeps every idle
/// connection (its `max_connections` breaker, 1,024 by default, bounds them): a cap well
/// under the concurrency an HTTP/2 client brings (many streams, each on its own HTTP/1.1
/// upstream connection) made the pool close and reopen connections on every request.
pub const MAX_IDLE_PER_ENDPOINT: usize = 1024;
/// A connection idle for less than this is reused without a liveness check (a syscall):
/// upstreams close idle connections after seconds, not microseconds, and a request without
/// a body that meets a just-closed connection is sent again on a new one.
const CHECK_AFTER: Duration = Duration::from_millis(200);

/// An idle connection.
#[derive(Debug)]
struct Idle {
    stream: Sock,
    since: Instant,
    /// Requests it has served.
    served: u32,
    /// When the cluster's `idle_timeout` closes it (`None`: never).
    expires: Option<Instant>,
    /// Its place in its cluster's connection breaker, given back when it closes.
    held: Held,
}

#[derive(Debug, Default)]
pub struct UpstreamPool {
    /// Per endpoint, most recently used last.
    idle: RefCell<HashMap<PoolKey, Vec<Idle>, FastHash>>,
}

impl UpstreamPool {
    /// The most recently used idle connection for `key` that is still open and within its
    /// idle timeout, with the requests it has served (`now`: the caller's clock reading).
    pub fn checkout(&self, key: &PoolKey, now: Instant) -> Option<(Sock, u32, Held)> {
        let mut idle = self.idle.borrow_mut();
        let conns = idle.get_mut(key)?;
        while let Some(c) = conns.pop() {
            if c.expires.is_some_and(|e| e <= now) {
                continue;
            }
            let quiet = now.saturating_duration_since(c.since);
            if quiet < CHECK_AFTER || sys::idle_alive(c.stream.as_raw_fd()) {
                return Some((c.stream, c.served, c.held));
            }
        }
        None
    }

    /// Keeps `stream` for reuse, idle since `since` (an earlier stamp only makes the liveness
    /// check come sooner), having served `served` requests; `idle_timeout` is its cluster's.
    pub fn checkin(
        &self,
        key: PoolKey,
        stream: Sock,
        since: Instant,
        served: u32,
        idle_timeout: Option<Duration>,
        held: Held,
    ) {
        let mut idle = self.idle.borrow_mut();
        let conns = idle.entry(key).or_default();
        if conns.len() < MAX_IDLE_PER_ENDPOINT {
            conns.push(Idle {
                stream,
                since,
                served,
                expires: idle_timeout.map(|t| since + t),
                held,
            });
        }
    }

    /// Closes the idle connections whose idle timeout has passed, and those to endpoints
    /// `keep` refuses (a connection to a removed host that came back from a request still
    /// running when its generation was replaced). The shard calls this about once a second,
    /// so an idle upstream connection does not outlive either by more.
    pub fn sweep(&self, now: Instant, keep: impl Fn(&SocketAddr) -> bool) {
        let mut idle = self.idle.borrow_mut();
        idle.retain(|key, conns| {
            conns.retain(|c| c.expires.is_none_or(|e| e > now));
            !conns.is_empty() && keep(&key.endpoint)
        });
    }

    /// Closes the idle connections to endpoints `keep` refuses (hosts the new generation no
    /// longer has).
    pub fn retain_endpoints(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.idle.borrow_mut().retain(|key, _| keep(&key.endpoint));
    }

    /// Idle connections held (all endpoints).
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}
