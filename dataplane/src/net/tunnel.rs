//! Two sockets joined both ways until both directions end: a tcp_proxy connection, or an
//! HTTP connection after `101 Switching Protocols`.
//!
//! A FIN on one side is forwarded as a half-close and the other direction keeps flowing; a
//! reset on either side is forwarded as a reset (SO_LINGER 0) to the other and ends both;
//! `idle` with no bytes either way closes both.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::time::{Duration, Instant};

use crate::net::transport::Sock;
use zerohop_proto::stats::{Counter, TcpStat};
use zerohop_proto::StatScope;

use super::pump::{pump, Ctx, End};
use super::{sys, Pools};
use crate::stats::ShardStats;

/// Runs both directions until both end (or one resets, or `idle` passes with no bytes);
/// returns the bytes moved from `down` and to it. A tcp_proxy's bytes and idle timeouts
/// count in its `tcp.<stat_prefix>.*` (`tcp`; an upgraded HTTP connection has none).
pub async fn tunnel(
    pools: &Pools,
    stats: ShardStats,
    down: &Sock,
    up: &Sock,
    idle: Option<Duration>,
    tcp: StatScope,
) -> (u64, u64) {
    let last = Cell::new(Instant::now());
    let ctx = |bytes, scoped| Ctx {
        pools,
        stats,
        last_activity: &last,
        bytes,
        tcp: (!tcp.is_none()).then_some((tcp, scoped)),
        total: Cell::new(0),
    };
    let (rx, tx) = (
        ctx(
            Counter::DownstreamCxRxBytes,
            TcpStat::DownstreamCxRxBytesTotal,
        ),
        ctx(
            Counter::DownstreamCxTxBytes,
            TcpStat::DownstreamCxTxBytesTotal,
        ),
    );
    let mut upstream = pin!(pump(down, up, &rx));
    let mut downstream = pin!(pump(up, down, &tx));
    let mut idle_timer = pin!(idle_timeout(&last, idle));
    let (mut up_done, mut down_done) = (false, false);
    let moved = || (rx.total.get(), tx.total.get());
    while !(up_done && down_done) {
        let (end, source, sink) = monoio::select! {
            e = &mut upstream, if !up_done => { up_done = true; (e, down, up) }
            e = &mut downstream, if !down_done => { down_done = true; (e, up, down) }
            _ = &mut idle_timer => {
                stats.inc(Counter::IdleTimeout);
                stats.count_n(tcp, TcpStat::IdleTimeout, 1);
                return moved(); // dropping both streams closes them with FIN
            }
        };
        match end {
            End::Eof => {}
            End::SourceReset => {
                reset(stats, sink);
                return moved();
            }
            End::SinkReset => {
                reset(stats, source);
                return moved();
            }
        }
    }
    moved()
}

/// Makes the close of `s` (when its owner drops it) a RST.
fn reset(stats: ShardStats, s: &Sock) {
    stats.inc(Counter::ResetForwarded);
    let _ = sys::set_linger_zero(s.as_raw_fd());
}

/// Resolves once `idle` has passed since `last` (never when `idle` is `None`).
async fn idle_timeout(last: &Cell<Instant>, idle: Option<Duration>) {
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
