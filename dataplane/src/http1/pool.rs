//! A shard's idle upstream HTTP/1.1 connections, by endpoint. Nothing is shared with other
//! shards; a connection goes back only after a complete, delimited exchange.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::fasthash::FastHash;
use crate::net::sys;

/// Idle connections kept per endpoint; beyond this they are closed.
pub const MAX_IDLE_PER_ENDPOINT: usize = 64;
/// An idle connection older than this is closed instead of reused (Envoy's upstream
/// `idle_timeout` default is 1 h; upstreams usually close sooner, which `checkout` notices).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// A connection idle for less than this is reused without a liveness check (a syscall):
/// upstreams close idle connections after seconds, not microseconds, and a request without
/// a body that meets a just-closed connection is sent again on a new one.
const CHECK_AFTER: Duration = Duration::from_millis(200);

/// Idle connections to one endpoint, most recently used last, with the time each went idle.
type Idle = Vec<(TcpStream, Instant)>;

#[derive(Debug, Default)]
pub struct UpstreamPool {
    idle: RefCell<HashMap<SocketAddr, Idle, FastHash>>,
}

impl UpstreamPool {
    /// The most recently used idle connection to `addr` that is still open (`now`: the
    /// caller's clock reading).
    pub fn checkout(&self, addr: SocketAddr, now: Instant) -> Option<TcpStream> {
        let mut idle = self.idle.borrow_mut();
        let conns = idle.get_mut(&addr)?;
        while let Some((s, since)) = conns.pop() {
            let idle = now.saturating_duration_since(since);
            if idle < CHECK_AFTER || (idle < IDLE_TIMEOUT && sys::idle_alive(s.as_raw_fd())) {
                return Some(s);
            }
        }
        None
    }

    /// Keeps `s` for reuse, idle since `since` (an earlier stamp only makes the liveness
    /// check come sooner).
    pub fn checkin(&self, addr: SocketAddr, s: TcpStream, since: Instant) {
        let mut idle = self.idle.borrow_mut();
        let conns = idle.entry(addr).or_default();
        if conns.len() < MAX_IDLE_PER_ENDPOINT {
            conns.push((s, since));
        }
    }

    /// Idle connections held (all endpoints).
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}
