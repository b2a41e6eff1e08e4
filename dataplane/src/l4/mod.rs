//! `envoy.filters.network.tcp_proxy`: one accepted connection, end to end.
//!
//! Pick a cluster and endpoint, connect within `connect_timeout`, then run the two
//! [`pump`](crate::net::pump)s until both directions have ended. A FIN is forwarded as a
//! half-close and the other direction keeps flowing; a reset on either side is forwarded as
//! a reset (SO_LINGER 0) to the other and ends both; `idle_timeout` closes both.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use zerohop_proto::stats::Counter;

use crate::config::Terminal;
use crate::conn::{Accepted, Tracked};
use crate::net::pump::{pump, Ctx, End};
use crate::net::sys;
use crate::shard::config::ShardConfig;
use crate::shard::listeners::BoundListener;
use crate::shard::Shard;

/// Serves one downstream connection accepted on listener `index` of `gen`, whose filter
/// chain `chain` ends in a tcp_proxy.
pub async fn serve(
    gen: std::rc::Rc<ShardConfig>,
    index: usize,
    chain: usize,
    listener: std::rc::Rc<BoundListener>,
    accepted: Accepted,
) {
    let Terminal::Tcp(tcp) = &gen.listeners[index].chains[chain].terminal else {
        unreachable!("dispatched to the tcp_proxy of a tcp_proxy chain")
    };
    let Accepted {
        stream: down,
        guard,
        ..
    } = accepted;
    let shard: &Shard = guard.shard();
    let listener: &BoundListener = &listener;
    let stats = shard.stats;
    let cluster = gen.pick_target(&tcp.proxy.targets, &tcp.pick, &shard.rng);
    let Some(addr) = shard.upstreams.pick(cluster, &shard.rng) else {
        stats.inc(Counter::UpstreamCxNoHealthyUpstream);
        log::debug!(
            "{}: cluster {} has no endpoint",
            listener.name,
            cluster.cluster.name
        );
        return;
    };
    let up = match crate::upstream::connect::connect(stats, &cluster.cluster, addr).await {
        Ok(up) => up,
        Err(e) => {
            log::debug!("{}: {e}", listener.name);
            return; // dropping `down` closes the client promptly
        }
    };
    // `down` came from accept4 with SOCK_NONBLOCK.
    let _ = down.set_nodelay(true);
    // Registered so that a removed listener's drain deadline can end it; forgotten (guard
    // dropped) before `up` and `down` close.
    let _tracked = Tracked::new(listener, [down.as_raw_fd(), up.as_raw_fd()]);
    proxy(shard, &down, &up, tcp.proxy.idle_timeout).await;
}

/// Runs both directions until both end (or one resets, or `idle` passes with no bytes).
pub async fn proxy(shard: &Shard, down: &TcpStream, up: &TcpStream, idle: Option<Duration>) {
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
pub async fn idle_timeout(last: &Cell<Instant>, idle: Option<Duration>) {
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
