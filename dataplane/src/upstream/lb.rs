//! Load balancers, split in two: the immutable [`LbTable`] a generation holds for each
//! cluster (built once per process, off the shards), and the mutable [`LbState`] each
//! shard keeps per cluster slot (no shared state: the policies hold per shard, as with
//! Envoy's per-worker load balancers).

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
#[derive(Debug, PartialEq, Eq)]
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

/// How one cluster's endpoints are chosen: what a generation holds.
#[derive(Debug, PartialEq, Eq)]
pub enum LbTable {
    /// All weights equal: a plain rotating index.
    RoundRobin {
        len: usize,
    },
    /// Smooth weighted round robin (as nginx): each pick adds every weight to its running
    /// score and takes the highest, then lowers it by the total. Picks interleave in
    /// proportion to weight. O(endpoints) per pick, per connection, not per byte.
    WeightedRoundRobin {
        weights: Vec<i64>,
        total: i64,
    },
    Random(WeightedPick),
    /// `RING_HASH`: (hash, endpoint) sorted by hash ([`hash::ring`]).
    RingHash(Vec<(u64, u32)>),
    /// `MAGLEV`: the endpoint of each table entry ([`hash::maglev`]).
    Maglev(Vec<u32>),
}

impl LbTable {
    pub fn new(policy: LbPolicy, endpoints: &[Endpoint]) -> LbTable {
        let weights = || endpoints.iter().map(|e| e.weight);
        match policy {
            LbPolicy::Random => LbTable::Random(WeightedPick::new(weights())),
            LbPolicy::RingHash {
                min_ring_size,
                max_ring_size,
            } => LbTable::RingHash(hash::ring(endpoints, min_ring_size, max_ring_size)),
            LbPolicy::Maglev { table_size } => LbTable::Maglev(hash::maglev(endpoints, table_size)),
            LbPolicy::RoundRobin if endpoints.windows(2).all(|w| w[0].weight == w[1].weight) => {
                LbTable::RoundRobin {
                    len: endpoints.len(),
                }
            }
            LbPolicy::RoundRobin => {
                let weights: Vec<i64> = weights().map(i64::from).collect();
                let total = weights.iter().sum();
                LbTable::WeightedRoundRobin { weights, total }
            }
        }
    }
}

/// One shard's state for one cluster slot.
#[derive(Debug, Default)]
pub struct LbState {
    /// The `lb_version` the scores were made for.
    version: u64,
    /// The round-robin position; carried over whatever the version (taken modulo the
    /// endpoint count), so a new generation does not restart every rotation at the first
    /// endpoint.
    next: usize,
    /// Weighted round robin's running scores, kept only while the endpoints are the same.
    scores: Vec<i64>,
}

impl LbState {
    /// The index of the next endpoint, or `None` for a cluster without endpoints. A hashing
    /// table takes the request's `hash` (a random one without).
    pub fn pick(
        &mut self,
        table: &LbTable,
        version: u64,
        rng: &Rng,
        hash: Option<u64>,
    ) -> Option<usize> {
        if self.version != version {
            self.version = version;
            self.scores.clear();
        }
        match table {
            LbTable::RoundRobin { len: 0 } => None,
            LbTable::RoundRobin { len } => {
                let i = self.next % len;
                self.next = if i + 1 == *len { 0 } else { i + 1 };
                Some(i)
            }
            LbTable::WeightedRoundRobin { weights, total } => {
                if self.scores.len() != weights.len() {
                    self.scores = vec![0; weights.len()];
                }
                let scores = &mut self.scores;
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
            LbTable::Random(w) => w.pick(rng),
            LbTable::RingHash(ring) => {
                hash::ring_pick(ring, hash.unwrap_or_else(|| rng.next_u64()))
            }
            LbTable::Maglev(table) => {
                let h = hash.unwrap_or_else(|| rng.next_u64());
                let len = table.len() as u64;
                (len > 0).then(|| table[(h % len) as usize] as usize)
            }
        }
    }
}

/// A shard's load-balancing state for every cluster slot.
#[derive(Debug, Default)]
pub struct LbStates(RefCell<Vec<LbState>>);

impl LbStates {
    /// Picks an endpoint of the cluster in `slot` (its table and version from the
    /// generation in use).
    pub fn pick(
        &self,
        slot: u32,
        table: &LbTable,
        version: u64,
        rng: &Rng,
        hash: Option<u64>,
    ) -> Option<usize> {
        let mut states = self.0.borrow_mut();
        let slot = slot as usize;
        if slot >= states.len() {
            states.resize_with(slot + 1, LbState::default);
        }
        states[slot].pick(table, version, rng, hash)
    }

    /// Whether `table` picks by the request's hash.
    pub fn hashes(table: &LbTable) -> bool {
        matches!(table, LbTable::RingHash(_) | LbTable::Maglev(_))
    }
}

pub mod hash;

#[cfg(test)]
mod tests;
