//! The compiled configuration that control hands the data plane.
//!
//! Everything here is already validated and resolved: listeners refer to clusters by
//! [`ClusterId`] (an index into [`Snapshot::clusters`]), durations are [`Duration`]s and
//! addresses are [`SocketAddr`]s. Names survive only for logs and stats.

use std::net::SocketAddr;
use std::time::Duration;

/// Index of a cluster in [`Snapshot::clusters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(pub u32);

impl ClusterId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One immutable configuration generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// Envoy `Listener.name`; unique within a snapshot.
    pub name: String,
    pub address: SocketAddr,
    pub filter: NetworkFilter,
}

/// The terminal network filter of a listener's (single) filter chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkFilter {
    TcpProxy(TcpProxy),
}

/// `envoy.filters.network.tcp_proxy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpProxy {
    pub stat_prefix: String,
    /// At least one; a single `cluster` compiles to one target of weight 1.
    pub targets: Vec<WeightedCluster>,
    /// `None` disables the idle timeout (Envoy: an explicit `0s`). Envoy's default is 1 h.
    pub idle_timeout: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightedCluster {
    pub cluster: ClusterId,
    /// Always >= 1.
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Envoy `Cluster.name`; unique within a snapshot.
    pub name: String,
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    /// May be empty: connections then fail with "no healthy upstream".
    pub endpoints: Vec<Endpoint>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// `load_balancing_weight`, always >= 1 (Envoy's default is 1).
    pub weight: u32,
}
