//! A shard's handle on its stats in shared memory: zerohop's own counter block, and its
//! stat space and code table for Envoy's scoped stats (`listener.*`, `http.*`, `cluster.*`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use zerohop_proto::stats::hist::{bucket, SUM};
use zerohop_proto::stats::{codes, ClusterStat, Counter, ScopedHist, ScopedStat, StatScope};

/// One shard's blocks: written only by that shard.
#[derive(Debug)]
pub struct Blocks {
    pub counters: &'static [AtomicU64],
    pub space: &'static [AtomicU64],
    pub codes: &'static [AtomicU64],
}

impl Blocks {
    /// One shard line's blocks in the segment.
    pub fn of(seg: &'static zerohop_proto::shm::Segment, line: usize) -> Blocks {
        Blocks {
            counters: seg.shard_counters(line),
            space: seg.shard_space(line),
            codes: seg.shard_codes(line),
        }
    }

    /// Blocks of the process's own memory (tests, tools, a shard without a segment).
    pub fn detached(counters: &'static [AtomicU64]) -> Blocks {
        Blocks {
            counters,
            space: &[],
            codes: &[],
        }
    }
}

/// Only the owning shard writes its blocks, so an update is a relaxed load and store (no
/// locked read-modify-write); control only reads. A scope the snapshot gave no place
/// ([`StatScope::NONE`], or beyond the space) is not counted.
#[derive(Clone, Copy, Debug)]
pub struct ShardStats(&'static Blocks);

#[inline]
fn bump(a: &AtomicU64, n: u64) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

#[inline]
fn drop_one(a: &AtomicU64) {
    a.store(
        a.load(Ordering::Relaxed).saturating_sub(1),
        Ordering::Relaxed,
    );
}

/// Whole milliseconds since `since`, as Envoy records durations.
#[inline]
pub fn ms_since(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

impl ShardStats {
    pub fn new(blocks: Blocks) -> Self {
        ShardStats(Box::leak(Box::new(blocks)))
    }

    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        bump(&self.0.counters[c.index()], n);
    }

    /// The counter's value (this shard's block only).
    pub fn get(&self, c: Counter) -> u64 {
        self.0.counters[c.index()].load(Ordering::Relaxed)
    }

    #[inline]
    pub fn inc(&self, c: Counter) {
        self.add(c, 1);
    }

    #[inline]
    pub fn dec(&self, c: Counter) {
        drop_one(&self.0.counters[c.index()]);
    }

    #[inline]
    fn word(&self, scope: StatScope, word: usize) -> Option<&'static AtomicU64> {
        self.0.space.get((scope.0 as usize).wrapping_add(word))
    }

    #[inline]
    fn record(&self, scope: StatScope, first: usize, ms: u64) {
        if scope.is_none() {
            return;
        }
        if let (Some(b), Some(sum)) = (
            self.word(scope, first + bucket(ms)),
            self.word(scope, first + SUM),
        ) {
            bump(b, 1);
            bump(sum, ms);
        }
    }

    /// Adds `n` to stat `s` of `scope` (`listener.*`, `http.*`, `cluster.*`, `tcp.*`).
    #[inline]
    pub fn count_n<S: ScopedStat>(&self, scope: StatScope, s: S, n: u64) {
        if let Some(w) = self.scoped(scope, s.word()) {
            bump(w, n);
        }
    }

    #[inline]
    pub fn count<S: ScopedStat>(&self, scope: StatScope, s: S) {
        self.count_n(scope, s, 1);
    }

    /// Takes one from gauge `s` of `scope`.
    #[inline]
    pub fn uncount<S: ScopedStat>(&self, scope: StatScope, s: S) {
        if let Some(w) = self.scoped(scope, s.word()) {
            drop_one(w);
        }
    }

    /// Records `ms` in histogram `h` of `scope`.
    #[inline]
    pub fn record_ms<H: ScopedHist>(&self, scope: StatScope, h: H, ms: u64) {
        self.record(scope, h.word(), ms);
    }

    /// A response code charged to a cluster, as Envoy's router does: `upstream_rq_<code>`,
    /// its class and `upstream_rq_completed`.
    pub fn cluster_code(&self, scope: StatScope, code: u16) {
        if scope.is_none() {
            return;
        }
        if let Some(class) = zerohop_proto::stats::scope::cluster_class(code) {
            self.count(scope, class);
        }
        self.count(scope, ClusterStat::UpstreamRqCompleted);
        if !codes::add(self.0.codes, scope, code, 1) {
            self.inc(Counter::StatsCodeOverflow);
        }
    }

    #[inline]
    fn scoped(&self, scope: StatScope, word: usize) -> Option<&'static AtomicU64> {
        if scope.is_none() {
            return None;
        }
        self.word(scope, word)
    }
}
