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
use zerohop_proto::stats::Counter;

use super::pump::{pump, Ctx, End};
use super::{sys, Pools};
use crate::stats::ShardStats;

/// Runs both directions until both end (or one resets, or `idle` passes with no bytes).
pub async fn tunnel(
    pools: &Pools,
    stats: ShardStats,
    down: &Sock,
    up: &Sock,
    idle: Option<Duration>,
) {
    let last = Cell::new(Instant::now());
    let ctx = |bytes| Ctx {
        pools,
        stats,
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
                stats.inc(Counter::IdleTimeout);
                return; // dropping both streams closes them with FIN
            }
        };
        match end {
            End::Eof => {}
            End::SourceReset => return reset(stats, sink),
            End::SinkReset => return reset(stats, source),
        }
    }
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
