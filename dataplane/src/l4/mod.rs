//! `envoy.filters.network.tcp_proxy`: one accepted connection, end to end.
//!
//! Pick a cluster and endpoint, connect within `connect_timeout`, then join the two sockets
//! ([`tunnel`](crate::net::tunnel)) until both directions have ended, `idle_timeout` closing
//! both.

use std::os::fd::AsRawFd;

use zerohop_proto::stats::Counter;

use crate::config::Terminal;
use crate::conn::{Accepted, Tracked};
use crate::http::info::ResponseFlags;
use crate::net::tunnel::tunnel;
use crate::shard::config::ShardConfig;
use crate::shard::listeners::BoundListener;
use crate::shard::Shard;
use crate::upstream::hosts::Outcome as HostOutcome;
use zerohop_proto::accesslog::{Record, RecordKind};

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
        facts,
    } = accepted;
    let shard: &Shard = guard.shard();
    let spec = &tcp.proxy.access_log;
    if !spec.enabled() {
        proxy(&gen, tcp, &listener, &down, shard, &mut Outcome::default()).await;
        return;
    }
    let started = std::time::Instant::now();
    let mut outcome = Outcome::default();
    proxy(&gen, tcp, &listener, &down, shard, &mut outcome).await;
    let mut facts = facts;
    facts.learn(down.tcp());
    let log = &shard.log;
    log.push(&Record {
        kind: RecordKind::Tcp,
        flags: outcome.flags.bits(),
        log_id: spec.id,
        start_unix_ns: log.unix_ns(started),
        duration_ns: started.elapsed().as_nanos() as u64,
        bytes_received: outcome.bytes.0,
        bytes_sent: outcome.bytes.1,
        connection_id: log.connection_id(),
        downstream_remote: facts.peer(),
        downstream_local: facts.local(),
        upstream_host: outcome.host,
        upstream_local: outcome.local,
        upstream_cluster: outcome.cluster,
        sni: facts.server_name.as_deref().unwrap_or(""),
        ..Record::default()
    });
}

/// What a tcp_proxy connection's access log records.
#[derive(Debug, Default)]
struct Outcome<'g> {
    flags: ResponseFlags,
    cluster: &'g str,
    host: Option<std::net::SocketAddr>,
    local: Option<std::net::SocketAddr>,
    /// Bytes from the client, and to it.
    bytes: (u64, u64),
}

async fn proxy<'g>(
    gen: &'g ShardConfig,
    tcp: &'g crate::config::TcpPlan,
    listener: &BoundListener,
    down: &crate::net::transport::Sock,
    shard: &Shard,
    out: &mut Outcome<'g>,
) {
    let stats = shard.stats;
    stats.count_n(
        tcp.proxy.stats,
        zerohop_proto::stats::TcpStat::DownstreamCxTotal,
        1,
    );
    let cluster = gen.pick_target(&tcp.proxy.targets, &tcp.pick, &shard.rng);
    out.cluster = &cluster.cluster.name;
    // Hosts that are out (ejected, failing health checks) are passed over, as for HTTP.
    let Some((addr, (index, _))) = shard.upstreams.pick_request(cluster, &shard.rng, None) else {
        stats.inc(Counter::UpstreamCxNoHealthyUpstream);
        out.flags.insert(ResponseFlags::NO_HEALTHY_UPSTREAM);
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
            out.flags.insert(ResponseFlags::UPSTREAM_OVERFLOW);
            return;
        }
    };
    // The connect's result goes to the outlier detector, as Envoy's tcp_proxy reports it.
    out.host = Some(addr);
    let report = |o: HostOutcome| {
        if let Some(od) = &cluster.hosts {
            od.report(index, o, stats, &shard.rng);
        }
    };
    let up = match crate::upstream::connect::connect(stats, cluster, addr, None).await {
        Ok(up) => {
            report(HostOutcome::ConnectSucceeded);
            up
        }
        Err(e) => {
            report(match e.kind {
                crate::error::Kind::ConnectTimeout => HostOutcome::Timeout,
                _ => HostOutcome::ConnectFailed,
            });
            // Envoy's tcp_proxy has made its `max_connect_attempts` (1) by then.
            out.flags.insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
            out.flags
                .insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
            log::debug!("{}: {e}", listener.name);
            return; // dropping `down` closes the client promptly
        }
    };
    // `down` came from accept4 with SOCK_NONBLOCK.
    let _ = down.tcp().set_nodelay(true);
    // Registered so that a removed listener's drain deadline can end it; forgotten (guard
    // dropped) before `up` and `down` close.
    let _tracked = Tracked::new(listener, [down.as_raw_fd(), up.as_raw_fd()]);
    if tcp.proxy.access_log.enabled() {
        out.local = up.tcp().local_addr().ok();
    }
    out.bytes = tunnel(
        &shard.pools,
        shard.stats,
        down,
        &up,
        tcp.proxy.idle_timeout,
        tcp.proxy.stats,
    )
    .await;
}
