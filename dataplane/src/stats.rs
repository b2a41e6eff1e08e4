//! A shard's handle on its own counter block in shared memory.

use std::sync::atomic::{AtomicU64, Ordering};

use zerohop_proto::stats::Counter;

/// Only the owning shard writes its block, so an update is a relaxed load and store (no
/// locked read-modify-write); control only reads.
#[derive(Clone, Copy, Debug)]
pub struct ShardStats(&'static [AtomicU64]);

impl ShardStats {
    pub fn new(block: &'static [AtomicU64]) -> Self {
        ShardStats(block)
    }

    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        let a = &self.0[c.index()];
        a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// The counter's value (this shard's block only).
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c.index()].load(Ordering::Relaxed)
    }

    #[inline]
    pub fn inc(&self, c: Counter) {
        self.add(c, 1);
    }

    #[inline]
    pub fn dec(&self, c: Counter) {
        let a = &self.0[c.index()];
        a.store(
            a.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
    }
}
