//! Load balancers, split in two: the immutable [`LbTable`] a generation holds for each
//! cluster (built once per process, off the shards), and the mutable [`LbState`] each
//! shard keeps per cluster slot (no shared state: the policies hold per shard, as with
//! Envoy's per-worker load balancers).

use std::cell::{Cell, RefCell};
use std::collections::BinaryHeap;
use std::rc::Rc;

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
#[derive(Debug, PartialEq)]
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
    /// `LEAST_REQUEST`, by this shard's requests in flight to each endpoint (Envoy counts
    /// them per host for the process; a shard sees its own). Equal weights: the fewest of
    /// `choice_count` random picks (Envoy's power of two choices). Otherwise each endpoint
    /// weighs `weight / (active + 1) ^ bias` in Envoy's earliest-deadline-first scheduler.
    LeastRequest {
        choice_count: u32,
        len: usize,
        /// `None`: all weights equal.
        weights: Option<Vec<f64>>,
        bias: f64,
    },
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
            LbPolicy::LeastRequest {
                choice_count,
                active_request_bias,
            } => {
                let equal = endpoints.windows(2).all(|w| w[0].weight == w[1].weight);
                LbTable::LeastRequest {
                    choice_count,
                    len: endpoints.len(),
                    weights: (!equal).then(|| weights().map(f64::from).collect()),
                    bias: f64::from_bits(active_request_bias),
                }
            }
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
#[derive(Debug)]
pub struct LbState {
    /// The `lb_version` the scores were made for.
    version: u64,
    /// The round-robin position; carried over whatever the version (taken modulo the
    /// endpoint count), so a new generation does not restart every rotation at the first
    /// endpoint.
    next: usize,
    /// Weighted round robin's running scores, kept only while the endpoints are the same.
    scores: Vec<i64>,
    /// Least request: requests in flight per endpoint (shared with their [`Active`] guards)
    /// and the weighted pick's running scores.
    active: Rc<[Cell<u32>]>,
    /// Weighted least request's scheduler: deadlines by endpoint, the current time, and an
    /// insertion count that breaks ties in order.
    edf: BinaryHeap<Due>,
    edf_now: f64,
    edf_seq: u64,
}

/// An endpoint's next deadline in the scheduler (a min-heap by deadline, then insertion).
#[derive(Debug)]
struct Due(f64, u64, usize);

impl PartialEq for Due {
    fn eq(&self, other: &Due) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Due) -> std::cmp::Ordering {
        // Reversed: BinaryHeap pops the greatest, the scheduler wants the earliest.
        other.0.total_cmp(&self.0).then(other.1.cmp(&self.1))
    }
}

impl Default for LbState {
    fn default() -> LbState {
        LbState {
            version: 0,
            next: 0,
            scores: Vec::new(),
            active: Rc::from(Vec::new()),
            edf: BinaryHeap::new(),
            edf_now: 0.0,
            edf_seq: 0,
        }
    }
}

/// A request in flight to an endpoint of a least-request cluster: counted until dropped.
#[derive(Debug)]
pub struct Active(Rc<[Cell<u32>]>, usize);

impl Drop for Active {
    fn drop(&mut self) {
        let c = &self.0[self.1];
        c.set(c.get().saturating_sub(1));
    }
}

impl LbState {
    /// The index of the next endpoint, or `None` for a cluster without endpoints. A hashing
    /// table takes the request's `hash` (a random one without).
    pub fn pick(
        &mut self,
        table: &LbTable,
        version: u64,
        rng: &Rng,
        hash: Option<HashKey>,
    ) -> Option<usize> {
        if self.version != version {
            self.version = version;
            self.scores.clear();
            self.edf.clear();
            self.active = Rc::from(Vec::new());
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
                hash::ring_pick(ring, hash.unwrap_or_else(|| HashKey::new(rng.next_u64())))
            }
            LbTable::Maglev(table) => {
                hash::maglev_pick(table, hash.unwrap_or_else(|| HashKey::new(rng.next_u64())))
            }
            LbTable::LeastRequest {
                choice_count,
                len,
                weights,
                bias,
            } => self.least_request(*choice_count, *len, weights.as_deref(), *bias, rng),
        }
    }

    /// `n` endpoints of a least-request table, the first pick's in-flight counts made.
    fn least_request(
        &mut self,
        choices: u32,
        n: usize,
        weights: Option<&[f64]>,
        bias: f64,
        rng: &Rng,
    ) -> Option<usize> {
        if n == 0 {
            return None;
        }
        if self.active.len() != n {
            self.active = (0..n).map(|_| Cell::new(0)).collect();
        }
        let Some(weights) = weights else {
            return self.fewest_of(choices, rng);
        };
        let weight_of = |i: usize| {
            let active = f64::from(self.active[i].get()) + 1.0;
            let w = if bias == 1.0 {
                weights[i] / active
            } else if bias == 0.0 {
                weights[i]
            } else {
                weights[i] / active.powf(bias)
            };
            w.max(f64::MIN_POSITIVE)
        };
        // Envoy's earliest-deadline-first scheduler: each endpoint is due at 1 / its weight
        // after the last pick's time; the one due first is picked, its weight recomputed
        // from its requests in flight and its next deadline set. O(log n) a pick.
        if self.edf.len() != n {
            self.edf.clear();
            self.edf_now = 0.0;
            for i in 0..n {
                self.edf.push(Due(1.0 / weight_of(i), i as u64, i));
            }
            self.edf_seq = n as u64;
        }
        let Due(deadline, _, best) = self.edf.pop()?;
        self.edf_now = deadline;
        self.edf.push(Due(
            self.edf_now + 1.0 / weight_of(best),
            self.edf_seq,
            best,
        ));
        self.edf_seq += 1;
        Some(best)
    }

    /// The endpoint with the fewest requests in flight among `choices` random ones (the
    /// first drawn on a tie), as Envoy's unweighted least request.
    fn fewest_of(&mut self, choices: u32, rng: &Rng) -> Option<usize> {
        let n = self.active.len();
        if n == 0 {
            return None;
        }
        let mut best = rng.below(n as u64) as usize;
        for _ in 1..choices {
            let other = rng.below(n as u64) as usize;
            if self.active[other].get() < self.active[best].get() {
                best = other;
            }
        }
        Some(best)
    }

    /// Counts a request in flight to endpoint `i` (of a least-request table).
    pub fn track(&self, i: usize) -> Option<Active> {
        if i >= self.active.len() {
            return None;
        }
        let c = &self.active[i];
        c.set(c.get() + 1);
        Some(Active(self.active.clone(), i))
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
        hash: Option<HashKey>,
    ) -> Option<usize> {
        let mut states = self.0.borrow_mut();
        let slot = slot as usize;
        if slot >= states.len() {
            states.resize_with(slot + 1, LbState::default);
        }
        states[slot].pick(table, version, rng, hash)
    }

    /// Counts a request in flight to endpoint `i` of the cluster in `slot` (least request
    /// only; `None` otherwise).
    pub fn track(&self, slot: u32, table: &LbTable, i: usize) -> Option<Active> {
        // Decided by the table before the state is borrowed: other policies pay nothing.
        if !matches!(table, LbTable::LeastRequest { .. }) {
            return None;
        }
        self.0.borrow().get(slot as usize)?.track(i)
    }

    /// Whether `table` picks by the request's hash.
    pub fn hashes(table: &LbTable) -> bool {
        matches!(table, LbTable::RingHash(_) | LbTable::Maglev(_))
    }
}

pub mod hash;

use hash::HashKey;

#[cfg(test)]
mod tests;
