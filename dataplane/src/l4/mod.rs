//! `envoy.filters.network.tcp_proxy`: one accepted connection, end to end.
//!
//! Pick a cluster and endpoint, connect within `connect_timeout`, then run the two
//! [`pump`](crate::net::pump)s until both directions have ended. A FIN is forwarded as a
//! half-close and the other direction keeps flowing; a reset on either side is forwarded as
//! a reset (SO_LINGER 0) to the other and ends both; `idle_timeout` closes both.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use zerohop_proto::stats::Counter;

use crate::net::pump::{pump, Ctx, End};
use crate::net::sys;
use crate::shard::listeners::BoundListener;
use crate::shard::{config::ShardConfig, Shard};

/// Serves one downstream connection accepted on `listener`, which is listener `index` of
/// `cfg`'s snapshot.
pub async fn serve(
    shard: Rc<Shard>,
    cfg: Rc<ShardConfig>,
    index: usize,
    listener: Rc<BoundListener>,
    down: TcpStream,
) {
    let stats = shard.stats;
    let _active = ActiveGuard::enter(&shard);

    let proxy_cfg = cfg.tcp_proxy(index);
    let (cluster, endpoint) = cfg.pick(index, &shard.rng);
    let Some(addr) = endpoint else {
        stats.inc(Counter::UpstreamCxNoHealthyUpstream);
        log::debug!(
            "{}: cluster {} has no endpoint",
            listener.name,
            cluster.name
        );
        return;
    };
    let Some(up) = crate::net::connect_upstream(stats, &listener.name, cluster, addr).await else {
        return; // dropping `down` closes the client promptly
    };
    // `down` came from accept4 with SOCK_NONBLOCK.
    let _ = down.set_nodelay(true);
    // Registered so that a removed listener's drain deadline can end it; forgotten (guard
    // dropped) before `up` and `down` close.
    let _tracked = Tracked::new(&listener, [down.as_raw_fd(), up.as_raw_fd()]);
    proxy(&shard, &down, &up, proxy_cfg.idle_timeout).await;
}

pub(crate) struct Tracked<'a>(&'a BoundListener, usize);

impl<'a> Tracked<'a> {
    pub(crate) fn new(listener: &'a BoundListener, fds: [std::os::fd::RawFd; 2]) -> Self {
        Tracked(listener, listener.track(fds))
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.0.untrack(self.1);
    }
}

/// Runs both directions until both end (or one resets, or `idle` passes with no bytes).
pub(crate) async fn proxy(shard: &Shard, down: &TcpStream, up: &TcpStream, idle: Option<Duration>) {
    let last = Cell::new(Instant::now());
    let ctx = |bytes| Ctx {
        pools: &shard.pools,
        stats: shard.stats,
        last_activity: &last,
        bytes,
    };
    let (rx, tx) = (
        ctx(Counter::DownstreamCxRxBytes),
        ctx(Counter::DownstreamCxTxBytes),
    );
    let mut upstream = pin!(pump(down, up, &rx));
    let mut downstream = pin!(pump(up, down, &tx));
    let mut idle_timer = pin!(idle_timeout(&last, idle));
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        let (end, source, sink) = monoio::select! {
            e = &mut upstream, if !up_done => { up_done = true; (e, down, up) }
            e = &mut downstream, if !down_done => { down_done = true; (e, up, down) }
            _ = &mut idle_timer => {
                shard.stats.inc(Counter::IdleTimeout);
                return; // dropping both streams closes them with FIN
            }
        };
        match end {
            End::Eof => {}
            End::SourceReset => return reset(shard, sink),
            End::SinkReset => return reset(shard, source),
        }
    }
}

/// Makes the close of `s` (when the session drops it) a RST.
fn reset(shard: &Shard, s: &TcpStream) {
    shard.stats.inc(Counter::ResetForwarded);
    let _ = sys::set_linger_zero(s.as_raw_fd());
}

/// Resolves once `idle` has passed since `last` (never when `idle` is `None`).
pub(crate) async fn idle_timeout(last: &Cell<Instant>, idle: Option<Duration>) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    loop {
        let since = last.get().elapsed();
        if since >= idle {
            return;
        }
        monoio::time::sleep(idle - since).await;
    }
}

/// A downstream connection, counted from `enter` until dropped.
pub(crate) struct ActiveGuard<'a>(&'a Shard);

impl<'a> ActiveGuard<'a> {
    pub(crate) fn enter(shard: &'a Shard) -> Self {
        shard.stats.inc(Counter::DownstreamCxTotal);
        shard.stats.inc(Counter::DownstreamCxActive);
        shard.active.set(shard.active.get() + 1);
        ActiveGuard(shard)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.stats.dec(Counter::DownstreamCxActive);
        self.0.active.set(self.0.active.get() - 1);
    }
}
