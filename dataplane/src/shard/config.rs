//! A shard's view of one snapshot generation: the decoded [`Snapshot`] plus the tables the
//! request path indexes (balancers by `ClusterId`, routes by bound-listener slot). Built once
//! per generation per shard; connections hold the `Rc` they started with until they end.

use zerohop_proto::{Cluster, NetworkFilter, Snapshot, TcpProxy};

use crate::cluster::{Balancer, WeightedPick};

#[derive(Debug)]
pub struct ShardConfig {
    pub generation: u64,
    pub snapshot: Snapshot,
    /// Indexed by `ClusterId`.
    balancers: Vec<Balancer>,
    /// Indexed by the shard's bound-listener slot; `None` when the listener bound at start
    /// is absent from this generation (its connections are then closed on accept).
    routes: Vec<Option<Route>>,
}

#[derive(Debug)]
struct Route {
    listener: usize,
    targets: WeightedPick,
}

/// What a new connection on one listener slot resolves to.
#[derive(Debug)]
pub struct TcpRoute<'a> {
    pub listener_name: &'a str,
    pub proxy: &'a TcpProxy,
    targets: &'a WeightedPick,
}

impl ShardConfig {
    /// `bound` names the listeners whose sockets this shard holds, by slot.
    pub fn build(generation: u64, snapshot: Snapshot, bound: &[String]) -> ShardConfig {
        let balancers = snapshot
            .clusters
            .iter()
            .map(|c| Balancer::new(c.lb_policy, &c.endpoints))
            .collect();
        let routes = bound
            .iter()
            .map(|name| {
                let listener = snapshot.listeners.iter().position(|l| &l.name == name)?;
                let NetworkFilter::TcpProxy(tp) = &snapshot.listeners[listener].filter;
                Some(Route {
                    listener,
                    targets: WeightedPick::new(tp.targets.iter().map(|t| t.weight)),
                })
            })
            .collect();
        ShardConfig {
            generation,
            snapshot,
            balancers,
            routes,
        }
    }

    pub fn route(&self, slot: usize) -> Option<TcpRoute<'_>> {
        let r = self.routes.get(slot)?.as_ref()?;
        let l = &self.snapshot.listeners[r.listener];
        let NetworkFilter::TcpProxy(proxy) = &l.filter;
        Some(TcpRoute {
            listener_name: &l.name,
            proxy,
            targets: &r.targets,
        })
    }

    /// Picks the target cluster (weighted) and an endpoint in it.
    pub fn pick(
        &self,
        route: &TcpRoute<'_>,
        rng: &crate::cluster::Rng,
    ) -> (&Cluster, Option<std::net::SocketAddr>) {
        let t = route.targets.pick(rng).unwrap_or(0);
        let id = route.proxy.targets[t].cluster.index();
        let cluster = &self.snapshot.clusters[id];
        let endpoint = self.balancers[id]
            .pick(rng)
            .map(|i| cluster.endpoints[i].address);
        (cluster, endpoint)
    }
}
