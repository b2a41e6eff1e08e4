//! `envoy.filters.network.tcp_proxy`: one accepted connection, end to end.
//!
//! Pick a cluster and endpoint, connect within `connect_timeout`, then join the two sockets
//! ([`tunnel`](crate::net::tunnel)) until both directions have ended, `idle_timeout` closing
//! both.

use std::os::fd::AsRawFd;

use zerohop_proto::stats::Counter;

use crate::config::Terminal;
use crate::conn::{Accepted, Tracked};
use crate::net::tunnel::tunnel;
use crate::shard::config::ShardConfig;
use crate::shard::listeners::BoundListener;
use crate::shard::Shard;
use crate::upstream::hosts::Outcome;

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
    stats.count_n(
        tcp.proxy.stats,
        zerohop_proto::stats::TcpStat::DownstreamCxTotal,
        1,
    );
    let cluster = gen.pick_target(&tcp.proxy.targets, &tcp.pick, &shard.rng);
    // Hosts that are out (ejected, failing health checks) are passed over, as for HTTP.
    let Some((addr, (index, _))) = shard.upstreams.pick_request(cluster, &shard.rng, None) else {
        stats.inc(Counter::UpstreamCxNoHealthyUpstream);
        log::debug!(
            "{}: cluster {} has no endpoint",
            listener.name,
            cluster.cluster.name
        );
        return;
    };
    // Envoy's tcp_proxy counts against the cluster's connection breaker too, and closes the
    // client when it is full (`upstream_cx_overflow`, flag UO).
    let _held = match shard.upstreams.connection_slot(stats, cluster) {
        Ok(h) => h,
        Err(e) => {
            log::debug!("{}: cluster {}: {e}", listener.name, cluster.cluster.name);
            return;
        }
    };
    // The connect's result goes to the outlier detector, as Envoy's tcp_proxy reports it.
    let report = |o: Outcome| {
        if let Some(od) = &cluster.hosts {
            od.report(index, o, stats, &shard.rng);
        }
    };
    let up = match crate::upstream::connect::connect(stats, cluster, addr, None).await {
        Ok(up) => {
            report(Outcome::ConnectSucceeded);
            up
        }
        Err(e) => {
            report(match e.kind {
                crate::error::Kind::ConnectTimeout => Outcome::Timeout,
                _ => Outcome::ConnectFailed,
            });
            log::debug!("{}: {e}", listener.name);
            return; // dropping `down` closes the client promptly
        }
    };
    // `down` came from accept4 with SOCK_NONBLOCK.
    let _ = down.tcp().set_nodelay(true);
    // Registered so that a removed listener's drain deadline can end it; forgotten (guard
    // dropped) before `up` and `down` close.
    let _tracked = Tracked::new(listener, [down.as_raw_fd(), up.as_raw_fd()]);
    tunnel(
        &shard.pools,
        shard.stats,
        &down,
        &up,
        tcp.proxy.idle_timeout,
        tcp.proxy.stats,
    )
    .await;
}
