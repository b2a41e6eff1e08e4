//! A shard's view of one snapshot generation: the decoded [`Snapshot`] plus the tables the
//! connection path indexes (balancers by `ClusterId`; per listener, the tcp_proxy's cluster
//! choice or the HTTP route table). Built once per generation per shard; connections hold the
//! `Rc` they started with until they end.

use std::collections::HashMap;
use std::net::SocketAddr;

use zerohop_proto::{Cluster, HttpManager, NetworkFilter, Snapshot, TcpProxy, WeightedCluster};

use crate::cluster::{Balancer, Rng, WeightedPick};
use crate::route::RouteTable;

/// What a listener's connections are served with.
#[derive(Debug)]
pub enum Tables {
    Tcp(WeightedPick),
    Http(RouteTable),
}

#[derive(Debug)]
pub struct ShardConfig {
    pub generation: u64,
    pub snapshot: Snapshot,
    /// Indexed by `ClusterId`.
    balancers: Vec<Balancer>,
    /// Indexed like `snapshot.listeners`.
    tables: Vec<Tables>,
}

impl ShardConfig {
    /// Builds the tables for `snapshot`. Load-balancer state is carried over from
    /// `previous` by cluster name (and, for weighted round robin, by endpoint list), so a
    /// new generation does not restart every rotation at the first endpoint. Fails only on a
    /// regex control should have refused (the snapshot is then refused like a corrupt one).
    pub fn build(
        generation: u64,
        snapshot: Snapshot,
        previous: Option<&ShardConfig>,
    ) -> Result<ShardConfig, String> {
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
        let tables = snapshot
            .listeners
            .iter()
            .map(|l| match &l.filter {
                NetworkFilter::TcpProxy(tp) => Ok(Tables::Tcp(weights(&tp.targets))),
                NetworkFilter::Http(h) => {
                    RouteTable::build(&h.route_config, |f| weights(&f.targets))
                        .map(Tables::Http)
                        .map_err(|e| format!("listener {}: {e}", l.name))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(ShardConfig {
            generation,
            snapshot,
            balancers,
            tables,
        })
    }

    pub fn empty() -> ShardConfig {
        ShardConfig {
            generation: 0,
            snapshot: Snapshot::default(),
            balancers: Vec::new(),
            tables: Vec::new(),
        }
    }

    pub fn tables(&self, listener: usize) -> &Tables {
        &self.tables[listener]
    }

    pub fn tcp_proxy(&self, listener: usize) -> &TcpProxy {
        match &self.snapshot.listeners[listener].filter {
            NetworkFilter::TcpProxy(tp) => tp,
            NetworkFilter::Http(_) => unreachable!("listener {listener} is not a tcp_proxy"),
        }
    }

    pub fn http(&self, listener: usize) -> Option<(&HttpManager, &RouteTable)> {
        match (
            &self.snapshot.listeners[listener].filter,
            &self.tables[listener],
        ) {
            (NetworkFilter::Http(h), Tables::Http(t)) => Some((h, t)),
            _ => None,
        }
    }

    /// Picks listener `listener`'s tcp_proxy target cluster (weighted) and an endpoint in it.
    pub fn pick(&self, listener: usize, rng: &Rng) -> (&Cluster, Option<SocketAddr>) {
        let Tables::Tcp(pick) = &self.tables[listener] else {
            unreachable!("listener {listener} is not a tcp_proxy");
        };
        self.pick_among(&self.tcp_proxy(listener).targets, pick, rng)
    }

    /// Picks one of `targets` by weight, and an endpoint of that cluster.
    pub fn pick_among(
        &self,
        targets: &[WeightedCluster],
        pick: &WeightedPick,
        rng: &Rng,
    ) -> (&Cluster, Option<SocketAddr>) {
        let t = pick.pick(rng).unwrap_or(0);
        let id = targets[t].cluster.index();
        let cluster = &self.snapshot.clusters[id];
        let endpoint = self.balancers[id]
            .pick(rng)
            .map(|i| cluster.endpoints[i].address);
        (cluster, endpoint)
    }
}

fn weights(targets: &[WeightedCluster]) -> WeightedPick {
    WeightedPick::new(targets.iter().map(|t| t.weight))
}
