//! A configuration generation as the shards use it, built once per process, off the shard
//! threads.
//!
//! The data plane's config thread (`app::generations`) decodes each snapshot control
//! publishes and builds a [`Generation`] from it: per listener the compiled filter chain
//! selector and each chain's terminal filter (the tcp_proxy's weighted cluster pick, or the
//! HTTP connection manager's settings, filter list and route table, regexes compiled); per
//! cluster its load-balancing table. What did not change since the previous generation
//! (a route table, a cluster) is reused by content rather than built again. The finished,
//! immutable generation goes to the shards through [`Latest`]; a shard's own work per
//! generation is to take the `Arc` and acknowledge it.
//!
//! Mutable per-shard state that must outlive a generation (round-robin positions, pooled
//! connections) lives on the shard, keyed by the stable slot a cluster keeps across
//! generations ([`ClusterPlan::slot`]).

mod build;
mod chain;
mod latest;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use zerohop_proto::{Cluster, HttpManager, ListenerFilter, TcpProxy, WeightedCluster};

use crate::route::RouteTable;
use crate::upstream::lb::{LbTable, WeightedPick};

pub use build::Slots;
pub use chain::{ChainSelector, ConnFacts};
pub use latest::{Graveyard, Latest};

/// One generation, ready to serve.
#[derive(Debug)]
pub struct Generation {
    pub number: u64,
    /// Indexed like the snapshot's listeners.
    pub listeners: Vec<ListenerPlan>,
    /// Indexed by `ClusterId`.
    pub clusters: Vec<Arc<ClusterPlan>>,
    by_name: HashMap<String, usize>,
    /// Every cluster's endpoints: a shard closes its idle connections to any other (a host
    /// that EDS or DNS removed), as Envoy drains a removed host's pools.
    endpoints: std::collections::HashSet<std::net::SocketAddr, crate::fasthash::FastHash>,
    /// The clusters whose outlier detection has success-rate or failure-percentage
    /// detectors (swept by shard 0).
    sweeps: Vec<usize>,
}

impl Generation {
    /// See [`Generation::sweeps`]'s field.
    pub fn sweeps(&self) -> &[usize] {
        &self.sweeps
    }

    /// The generation a shard holds before the first one arrives.
    pub fn empty() -> Generation {
        Generation {
            number: 0,
            listeners: Vec::new(),
            clusters: Vec::new(),
            by_name: HashMap::new(),
            endpoints: Default::default(),
            sweeps: Vec::new(),
        }
    }

    /// True when some cluster of this generation has `endpoint`.
    pub fn has_endpoint(&self, endpoint: &std::net::SocketAddr) -> bool {
        self.endpoints.contains(endpoint)
    }

    /// The index of the listener called `name`.
    pub fn listener_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// True when `other` binds a different set of listeners (by name and address).
    pub fn listeners_differ(&self, other: &Generation) -> bool {
        self.listeners.len() != other.listeners.len()
            || self.listeners.iter().any(|l| {
                other
                    .listener_index(&l.name)
                    .is_none_or(|i| other.listeners[i].address != l.address)
            })
    }

    /// Picks one of `targets` by weight.
    pub fn pick_target(
        &self,
        targets: &[WeightedCluster],
        pick: &WeightedPick,
        rng: &crate::upstream::lb::Rng,
    ) -> &Arc<ClusterPlan> {
        let t = pick.pick(rng).unwrap_or(0);
        &self.clusters[targets[t].cluster.index()]
    }
}

/// A listener: how its connections find their filter chain, and the chains.
#[derive(Debug)]
pub struct ListenerPlan {
    pub name: String,
    pub address: SocketAddr,
    pub listener_filters: Vec<ListenerFilter>,
    pub listener_filters_timeout: Option<Duration>,
    pub continue_on_listener_filters_timeout: bool,
    pub selector: ChainSelector,
    /// `filter_chains` in order, then the default chain (if any).
    pub chains: Vec<Arc<ChainPlan>>,
    /// `listener.<address>.*` in the shards' stat space.
    pub stats: zerohop_proto::StatScope,
}

#[derive(Debug)]
pub struct ChainPlan {
    pub name: String,
    /// `envoy.filters.network.local_ratelimit` filters before the terminal one.
    pub limits: Vec<zerohop_proto::NetworkRateLimit>,
    /// `envoy.filters.network.rbac` filters, checked once the connection's TLS handshake
    /// (if any) is done, before the terminal filter takes it.
    pub rbac: Vec<zerohop_proto::NetworkRbac>,
    pub terminal: Terminal,
    /// `transport_socket` TLS: the server configuration its connections' handshakes use
    /// (shared by the shards; kept across generations while the context is unchanged, so
    /// session tickets and cached sessions stay valid).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// A filter chain's terminal network filter, compiled.
#[derive(Debug)]
pub enum Terminal {
    Tcp(TcpPlan),
    Http(Arc<HttpPlan>),
}

#[derive(Debug)]
pub struct TcpPlan {
    pub proxy: TcpProxy,
    pub pick: WeightedPick,
}

/// The HTTP connection manager: its settings and filters (`route_config` moved out into
/// the compiled table), and the route table.
#[derive(Debug)]
pub struct HttpPlan {
    pub manager: HttpManager,
    pub routes: Arc<RouteTable>,
    /// A filter (RBAC) or the access log reads the connection's addresses: learnt once per
    /// connection.
    pub needs_addresses: bool,
}

/// A cluster, its stable slot and its load-balancing table.
#[derive(Debug)]
pub struct ClusterPlan {
    pub cluster: Cluster,
    /// Stable across generations while a cluster of this name exists: the index of its
    /// per-shard state (round-robin position, scores).
    pub slot: u32,
    /// Changes whenever the policy or the endpoints do: per-shard state made for another
    /// version starts over (the round-robin position alone carries over).
    pub lb_version: u64,
    pub lb: LbTable,
    /// This shard's share of the cluster's circuit-breaker thresholds (every shard's is the
    /// same: the process's divided evenly, see `upstream::breaker::share`).
    pub breakers: zerohop_proto::CircuitBreakers,
    /// Which hosts are out (ejected, failing health checks, unhealthy by EDS), shared by
    /// every shard, when anything can put one out.
    pub hosts: Option<std::sync::Arc<crate::upstream::hosts::Hosts>>,
    /// `transport_socket` TLS: the client configuration (its session cache shared by the
    /// shards) and the SNI sent.
    pub tls: Option<UpstreamTlsPlan>,
}

impl ClusterPlan {
    /// Where what this shard holds of the cluster is counted (`cluster.<name>.*`).
    pub fn charge(&self, stats: crate::stats::ShardStats) -> crate::upstream::breaker::Charge {
        crate::upstream::breaker::Charge {
            stats,
            scope: self.cluster.stats,
        }
    }
}

#[derive(Debug)]
pub struct UpstreamTlsPlan {
    pub config: Arc<rustls::ClientConfig>,
    /// The SNI, or `None` (then the endpoint's IP stands in as rustls' server name; IP
    /// names are never sent).
    pub sni: Option<rustls_pki_types::ServerName<'static>>,
    /// Identifies the context in pool keys: connections made with one context are never
    /// handed to a request that needs another. It is the context as configured
    /// (`UpstreamTls::pool_id`): a rotated secret keeps the pooled connections in use.
    pub id: u64,
}
