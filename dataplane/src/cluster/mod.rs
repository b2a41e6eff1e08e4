//! Upstream clusters on a shard: endpoint selection per the cluster's `lb_policy`.

mod lb;

pub use lb::{Balancer, Rng, WeightedPick};
