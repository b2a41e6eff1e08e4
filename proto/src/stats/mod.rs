//! Statistics the shards keep in shared memory and control reads.
//!
//! Two kinds, both written only by the shard that owns them (a plain relaxed load and
//! store, never a locked instruction) and summed over the shards by control:
//!
//! - [`Counter`]: zerohop's own process-wide counters, one fixed block per shard, shown
//!   under the `zerohop.` prefix (per-shard views, bytes spliced vs copied, config applies).
//! - Envoy's scoped stats ([`scope`]): `listener.<address>.*`, `http.<stat_prefix>.*`,
//!   `cluster.<name>.*`, each a run of words in the shard's stat space whose place
//!   ([`StatScope`]) control assigns by name when it compiles a snapshot, so a counter keeps
//!   its value across generations; histograms are runs of [`hist`] buckets in the same
//!   space; response codes (`upstream_rq_<code>`) go to a small per-shard table
//!   ([`codes`]).

pub mod codes;
mod counter;
pub mod hist;
pub mod scope;

pub use counter::Counter;
pub use scope::{
    ClusterHist, ClusterScope, ClusterStat, HttpHist, HttpScope, HttpStat, ListenerHist,
    ListenerScope, ListenerStat, ScopeKind, ScopedHist, ScopedStat, StatScope, TcpScope, TcpStat,
};
