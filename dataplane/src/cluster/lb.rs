//! Load balancers. Each shard has its own instance per cluster (no shared state), so the
//! policies hold per shard, as with Envoy's per-worker load balancers.

use std::cell::{Cell, RefCell};

use zerohop_proto::{Endpoint, LbPolicy};

/// A shard-local xorshift64* generator: fast, and good enough to spread load.
#[derive(Debug)]
pub struct Rng(Cell<u64>);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(Cell::new(seed | 1))
    }

    pub fn next_u64(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift (no modulo bias worth the name).
    pub fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Weighted random choice over fixed weights, by binary search of the cumulative sums.
#[derive(Debug)]
pub struct WeightedPick {
    cumulative: Vec<u64>,
}

impl WeightedPick {
    pub fn new(weights: impl IntoIterator<Item = u32>) -> WeightedPick {
        let mut sum = 0u64;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                sum += u64::from(w);
                sum
            })
            .collect();
        WeightedPick { cumulative }
    }

    pub fn pick(&self, rng: &Rng) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if self.cumulative.len() == 1 {
            return Some(0);
        }
        let r = rng.below(total);
        Some(self.cumulative.partition_point(|&c| c <= r))
    }
}

/// Chooses an endpoint index of one cluster.
#[derive(Debug)]
pub enum Balancer {
    /// All weights equal: a plain rotating index.
    RoundRobin {
        next: Cell<usize>,
        len: usize,
    },
    /// Smooth weighted round robin (as nginx): each pick adds every weight to its running
    /// score and takes the highest, then lowers it by the total. Picks interleave in
    /// proportion to weight. O(endpoints) per pick, per connection, not per byte.
    WeightedRoundRobin {
        weights: Vec<i64>,
        scores: RefCell<Vec<i64>>,
        total: i64,
    },
    Random(WeightedPick),
}

impl Balancer {
    pub fn new(policy: LbPolicy, endpoints: &[Endpoint]) -> Balancer {
        let weights = || endpoints.iter().map(|e| e.weight);
        match policy {
            LbPolicy::Random => Balancer::Random(WeightedPick::new(weights())),
            LbPolicy::RoundRobin if endpoints.windows(2).all(|w| w[0].weight == w[1].weight) => {
                Balancer::RoundRobin {
                    next: Cell::new(0),
                    len: endpoints.len(),
                }
            }
            LbPolicy::RoundRobin => {
                let weights: Vec<i64> = weights().map(i64::from).collect();
                let total = weights.iter().sum();
                Balancer::WeightedRoundRobin {
                    scores: RefCell::new(vec![0; weights.len()]),
                    weights,
                    total,
                }
            }
        }
    }

    /// A balancer for a new generation of a cluster, continuing `previous` (the old
    /// balancer and the endpoints it balanced) where that makes sense: the rotation point of
    /// round robin, and the running scores of weighted round robin if the endpoints are the
    /// same. Random has no state.
    pub fn carried(
        policy: LbPolicy,
        endpoints: &[Endpoint],
        previous: Option<(&Balancer, &[Endpoint])>,
    ) -> Balancer {
        let b = Balancer::new(policy, endpoints);
        match (&b, previous) {
            (
                Balancer::RoundRobin { next, len },
                Some((Balancer::RoundRobin { next: old, .. }, _)),
            ) if *len > 0 => {
                next.set(old.get() % len);
            }
            (
                Balancer::WeightedRoundRobin { scores, .. },
                Some((Balancer::WeightedRoundRobin { scores: old, .. }, prev)),
            ) if prev == endpoints => {
                scores.borrow_mut().clone_from(&old.borrow());
            }
            _ => {}
        }
        b
    }

    /// The index of the next endpoint, or `None` for a cluster without endpoints.
    pub fn pick(&self, rng: &Rng) -> Option<usize> {
        match self {
            Balancer::RoundRobin { len: 0, .. } => None,
            Balancer::RoundRobin { next, len } => {
                let i = next.get();
                next.set(if i + 1 == *len { 0 } else { i + 1 });
                Some(i)
            }
            Balancer::WeightedRoundRobin {
                weights,
                scores,
                total,
            } => {
                let mut scores = scores.borrow_mut();
                let mut best = 0;
                for i in 0..scores.len() {
                    scores[i] += weights[i];
                    if scores[i] > scores[best] {
                        best = i;
                    }
                }
                scores[best] -= total;
                Some(best)
            }
            Balancer::Random(w) => w.pick(rng),
        }
    }
}

#[cfg(test)]
mod tests;
