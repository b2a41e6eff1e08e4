//! Building a [`Generation`] from a decoded snapshot, reusing what the previous one built.
//!
//! Runs on the config thread (or at start-up), never on a shard. The builder remembers the
//! previous generation's clusters by name and its route tables by route configuration name:
//! a cluster whose config is unchanged keeps its plan (`Arc` cloned), one whose endpoints
//! and policy are unchanged keeps its load-balancing version (so shards keep their weighted
//! round-robin scores), and a route table whose route configuration and filter list are
//! unchanged is not compiled again (its regexes included).

use std::collections::HashMap;
use std::sync::Arc;

use zerohop_proto::{Cluster, HttpFilter, NetworkFilter, Snapshot};

use super::{
    ChainPlan, ChainSelector, ClusterPlan, Generation, HttpPlan, ListenerPlan, TcpPlan, Terminal,
};
use crate::route::RouteTable;
use crate::upstream::lb::{LbTable, WeightedPick};

/// What the config thread keeps between generations.
#[derive(Debug, Default)]
pub struct Slots {
    /// The newest generation's clusters by name.
    clusters: HashMap<String, Arc<ClusterPlan>>,
    /// Slots of clusters that are gone, for the next new ones.
    free: Vec<u32>,
    next_slot: u32,
    next_version: u64,
    /// The newest generation's route tables by route configuration name.
    tables: HashMap<String, Vec<Arc<RouteTable>>>,
    /// Shards in the process (0 taken as 1): each enforces its share of a cluster's
    /// circuit-breaker thresholds.
    shards: usize,
    /// The newest generation's downstream TLS configurations by context.
    tls: HashMap<zerohop_proto::DownstreamTls, Arc<rustls::ServerConfig>>,
}

impl Slots {
    /// For a process of `shards` shards.
    pub fn for_shards(shards: usize) -> Slots {
        Slots {
            shards,
            ..Slots::default()
        }
    }

    /// Builds generation `number`. On error nothing is remembered: the next build starts
    /// from the last good generation.
    pub fn build(&mut self, number: u64, snapshot: Snapshot) -> Result<Generation, String> {
        let Snapshot {
            listeners,
            clusters,
        } = snapshot;
        let mut free = self.free.clone();
        let mut next_slot = self.next_slot;
        let mut next_version = self.next_version;
        let mut version = || {
            next_version += 1;
            next_version
        };
        let mut plans = Vec::with_capacity(clusters.len());
        let mut by_name = HashMap::with_capacity(clusters.len());
        for c in clusters {
            let plan = match self.clusters.get(&c.name) {
                Some(old) if old.cluster == c => old.clone(),
                Some(old) => {
                    let same_lb = old.cluster.lb_policy == c.lb_policy
                        && old.cluster.endpoints == c.endpoints;
                    let lb_version = if same_lb { old.lb_version } else { version() };
                    Arc::new(plan(c, old.slot, lb_version, self.shards)?)
                }
                None => {
                    let slot = free.pop().unwrap_or_else(|| {
                        next_slot += 1;
                        next_slot - 1
                    });
                    Arc::new(plan(c, slot, version(), self.shards)?)
                }
            };
            by_name.insert(plan.cluster.name.clone(), plan.clone());
            plans.push(plan);
        }
        // Slots of clusters this generation drops are free again (a new cluster taking one
        // gets a new version, so no shard state is carried into it).
        for (name, old) in &self.clusters {
            if !by_name.contains_key(name) {
                free.push(old.slot);
            }
        }

        let mut tables: HashMap<String, Vec<Arc<RouteTable>>> = HashMap::new();
        let mut tls = HashMap::new();
        let mut listener_plans = Vec::with_capacity(listeners.len());
        let mut listener_index = HashMap::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            let selector = ChainSelector::new(
                l.filter_chains.iter().map(|c| &c.matcher),
                l.default_filter_chain.is_some(),
            );
            let mut chains = Vec::new();
            for chain in l.filter_chains.into_iter().chain(l.default_filter_chain) {
                let mut filters = chain.filters;
                let terminal = match filters.pop() {
                    Some(NetworkFilter::TcpProxy(proxy)) => Terminal::Tcp(TcpPlan {
                        pick: WeightedPick::new(proxy.targets.iter().map(|t| t.weight)),
                        proxy,
                    }),
                    Some(NetworkFilter::Http(mut manager)) => {
                        let rc = std::mem::take(&mut manager.route_config);
                        let routes = self.table(rc, &manager.http_filters, &mut tables)?;
                        let needs_addresses =
                            manager.http_filters.iter().any(|f| {
                                matches!(f.config, zerohop_proto::HttpFilterConfig::Rbac(_))
                            }) || manager.access_log.enabled();
                        Terminal::Http(Arc::new(HttpPlan {
                            manager,
                            routes,
                            needs_addresses,
                        }))
                    }
                    Some(NetworkFilter::LocalRateLimit(_) | NetworkFilter::Rbac(_)) | None => {
                        return Err(format!(
                            "listener {}: a chain without a terminal filter",
                            l.name
                        ))
                    }
                };
                let mut limits = Vec::new();
                let mut rbac = Vec::new();
                for f in filters {
                    match f {
                        NetworkFilter::LocalRateLimit(l) => limits.push(l),
                        NetworkFilter::Rbac(r) => rbac.push(r),
                        NetworkFilter::TcpProxy(_) | NetworkFilter::Http(_) => {}
                    }
                }
                let server = match chain.tls {
                    Some(t) => Some(self.server_tls(t, &mut tls).map_err(|e| {
                        format!(
                            "listener {} filter chain {:?}: transport_socket: {e}",
                            l.name, chain.name
                        )
                    })?),
                    None => None,
                };
                chains.push(Arc::new(ChainPlan {
                    name: chain.name,
                    limits,
                    rbac,
                    terminal,
                    tls: server,
                }));
            }
            listener_index.insert(l.name.clone(), i);
            listener_plans.push(ListenerPlan {
                name: l.name,
                address: l.address,
                listener_filters: l.listener_filters,
                listener_filters_timeout: l.listener_filters_timeout,
                continue_on_listener_filters_timeout: l.continue_on_listener_filters_timeout,
                selector,
                chains,
                stats: l.stats,
            });
        }

        self.clusters = by_name;
        self.free = free;
        self.next_slot = next_slot;
        self.next_version = next_version;
        self.tables = tables;
        self.tls = tls;
        let endpoints = plans
            .iter()
            .flat_map(|p| p.cluster.endpoints.iter().map(|e| e.address))
            .collect();
        let sweeps = plans
            .iter()
            .enumerate()
            .filter(|(_, p)| p.hosts.as_ref().is_some_and(|h| h.sweeps()))
            .map(|(i, _)| i)
            .collect();
        Ok(Generation {
            number,
            listeners: listener_plans,
            clusters: plans,
            by_name: listener_index,
            endpoints,
            sweeps,
        })
    }

    /// The server configuration of `t`: the previous generation's if it had the same
    /// context, else a new one.
    fn server_tls(
        &self,
        t: zerohop_proto::DownstreamTls,
        made: &mut HashMap<zerohop_proto::DownstreamTls, Arc<rustls::ServerConfig>>,
    ) -> Result<Arc<rustls::ServerConfig>, String> {
        if let Some(c) = made.get(&t).or_else(|| self.tls.get(&t)) {
            let c = c.clone();
            made.insert(t, c.clone());
            return Ok(c);
        }
        let c = crate::tls::server_config(&t)?;
        made.insert(t, c.clone());
        Ok(c)
    }

    /// The route table for `rc` under `filters`: the previous generation's if it compiled
    /// the same, else a new one. Either way remembered in `tables` for the next generation.
    fn table(
        &self,
        rc: zerohop_proto::RouteConfig,
        filters: &[HttpFilter],
        tables: &mut HashMap<String, Vec<Arc<RouteTable>>>,
    ) -> Result<Arc<RouteTable>, String> {
        let same = |t: &&Arc<RouteTable>| t.compiled_from(&rc, filters);
        let found = tables
            .get(&rc.name)
            .and_then(|v| v.iter().find(same))
            .or_else(|| self.tables.get(&rc.name).and_then(|v| v.iter().find(same)))
            .cloned();
        let table = match found {
            Some(t) => t,
            None => Arc::new(
                RouteTable::build(rc, filters).map_err(|e| format!("route configuration: {e}"))?,
            ),
        };
        let entry = tables.entry(table.name().to_owned()).or_default();
        if !entry.iter().any(|t| Arc::ptr_eq(t, &table)) {
            entry.push(table.clone());
        }
        Ok(table)
    }
}

fn plan(
    cluster: Cluster,
    slot: u32,
    lb_version: u64,
    shards: usize,
) -> Result<ClusterPlan, String> {
    let tls = match &cluster.transport {
        zerohop_proto::TransportSocket::RawBuffer => None,
        zerohop_proto::TransportSocket::Tls(t) => {
            let fail = |e| format!("cluster {}: transport_socket: {e}", cluster.name);
            let sni = match &t.sni {
                Some(s) => Some(
                    rustls_pki_types::ServerName::try_from(s.clone())
                        .map_err(|e| fail(format!("sni: {e}")))?,
                ),
                None => None,
            };
            // Non-zero: 0 is plain TCP's pool.
            let id = t.pool_id | 1;
            let mut config = crate::tls::client_config(t).map_err(fail)?;
            // `auto_sni`: each connection names the request's host (none for an address).
            if cluster
                .protocol
                .common()
                .auto_sni
                .as_ref()
                .is_some_and(|a| a.sni)
            {
                let mut c = (*config).clone();
                c.enable_sni = true;
                config = std::sync::Arc::new(c);
            }
            Some(super::UpstreamTlsPlan { config, sni, id })
        }
    };
    Ok(ClusterPlan {
        tls,
        lb: LbTable::new(cluster.lb_policy, &cluster.endpoints),
        breakers: crate::upstream::breaker::share(&cluster.circuit_breakers, shards),
        hosts: crate::upstream::hosts::Hosts::for_cluster(&cluster).map(std::sync::Arc::new),
        cluster,
        slot,
        lb_version,
    })
}

#[cfg(test)]
mod tests;
