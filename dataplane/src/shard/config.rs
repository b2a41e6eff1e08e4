//! A shard's view of one snapshot generation: the decoded [`Snapshot`] plus the tables the
//! connection path indexes (balancers by `ClusterId`, cluster choice by listener index).
//! Built once per generation per shard; connections hold the `Rc` they started with until
//! they end.

use std::collections::HashMap;

use zerohop_proto::{Cluster, NetworkFilter, Snapshot, TcpProxy};

use crate::cluster::{Balancer, Rng, WeightedPick};

#[derive(Debug)]
pub struct ShardConfig {
    pub generation: u64,
    pub snapshot: Snapshot,
    /// Indexed by `ClusterId`.
    balancers: Vec<Balancer>,
    /// Indexed like `snapshot.listeners`: the weighted choice among its tcp_proxy targets.
    targets: Vec<WeightedPick>,
}

impl ShardConfig {
    /// Builds the tables for `snapshot`. Load-balancer state is carried over from
    /// `previous` by cluster name (and, for weighted round robin, by endpoint list), so a
    /// new generation does not restart every rotation at the first endpoint.
    pub fn build(
        generation: u64,
        snapshot: Snapshot,
        previous: Option<&ShardConfig>,
    ) -> ShardConfig {
        let old: HashMap<&str, usize> = previous
            .map(|p| {
                p.snapshot
                    .clusters
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name.as_str(), i))
                    .collect()
            })
            .unwrap_or_default();
        let balancers = snapshot
            .clusters
            .iter()
            .map(|c| {
                let prev = previous
                    .zip(old.get(c.name.as_str()))
                    .map(|(p, &i)| (&p.balancers[i], p.snapshot.clusters[i].endpoints.as_slice()));
                Balancer::carried(c.lb_policy, &c.endpoints, prev)
            })
            .collect();
        let targets = snapshot
            .listeners
            .iter()
            .map(|l| {
                let NetworkFilter::TcpProxy(tp) = &l.filter;
                WeightedPick::new(tp.targets.iter().map(|t| t.weight))
            })
            .collect();
        ShardConfig {
            generation,
            snapshot,
            balancers,
            targets,
        }
    }

    pub fn tcp_proxy(&self, listener: usize) -> &TcpProxy {
        let NetworkFilter::TcpProxy(tp) = &self.snapshot.listeners[listener].filter;
        tp
    }

    /// Picks listener `listener`'s target cluster (weighted) and an endpoint in it.
    pub fn pick(&self, listener: usize, rng: &Rng) -> (&Cluster, Option<std::net::SocketAddr>) {
        let t = self.targets[listener].pick(rng).unwrap_or(0);
        let id = self.tcp_proxy(listener).targets[t].cluster.index();
        let cluster = &self.snapshot.clusters[id];
        let endpoint = self.balancers[id]
            .pick(rng)
            .map(|i| cluster.endpoints[i].address);
        (cluster, endpoint)
    }
}
