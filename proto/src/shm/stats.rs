//! The shards' stats in the segment: zerohop's own counter blocks, the stat spaces of
//! Envoy's scoped stats, and the response-code tables (see [`crate::stats`]).

use std::sync::atomic::{AtomicU64, Ordering};

use super::Segment;
use crate::stats::codes::CODE_WORDS;
use crate::stats::Counter;

impl Segment {
    /// The counter block of one shard, indexed by [`Counter::index`].
    pub fn shard_counters(&self, shard: usize) -> &[AtomicU64] {
        assert!(
            shard < self.geometry.shard_capacity as usize,
            "shard index out of range"
        );
        let off = self.geometry.stats_offset() + shard * self.geometry.stats_stride();
        // SAFETY: the block lies inside the validated mapping (total_size <= len), is
        // 8-aligned (offsets are multiples of 64) and holds only atomics.
        unsafe {
            std::slice::from_raw_parts(self.base.add(off) as *const AtomicU64, Counter::ALL.len())
        }
    }

    /// One shard's stat space: Envoy's scoped stats at the words control assigned.
    pub fn shard_space(&self, shard: usize) -> &[AtomicU64] {
        assert!(
            shard < self.geometry.shard_capacity as usize,
            "shard index out of range"
        );
        let off = self.geometry.space_offset() + shard * self.geometry.space_stride();
        // SAFETY: the space lies inside the validated mapping (total_size <= len), is
        // page-aligned and holds only atomics.
        unsafe {
            std::slice::from_raw_parts(
                self.base.add(off) as *const AtomicU64,
                self.geometry.stat_words as usize,
            )
        }
    }

    /// One shard's response-code table ([`crate::stats::codes`]).
    pub fn shard_codes(&self, shard: usize) -> &[AtomicU64] {
        assert!(
            shard < self.geometry.shard_capacity as usize,
            "shard index out of range"
        );
        let off = self.geometry.codes_offset() + shard * CODE_WORDS * 8;
        // SAFETY: the table lies inside the validated mapping (total_size <= len), is
        // 8-aligned (the space before it is whole words) and holds only atomics.
        unsafe { std::slice::from_raw_parts(self.base.add(off) as *const AtomicU64, CODE_WORDS) }
    }

    /// Words of the stat space control has handed out (never more than the space).
    pub fn stat_words_used(&self) -> usize {
        (self.header().stat_words_used.load(Ordering::Acquire) as usize)
            .min(self.geometry.stat_words as usize)
    }

    /// Control raises the high-water mark before it publishes a snapshot using the words.
    pub fn set_stat_words_used(&self, n: usize) {
        self.header()
            .stat_words_used
            .fetch_max(n as u64, Ordering::AcqRel);
    }

    /// A snapshot of every active shard's counters, indexed `[shard][Counter::index()]`.
    pub fn read_counters(&self) -> Vec<Vec<u64>> {
        let base = self.shard_base();
        (0..self.active_shards())
            .map(|s| {
                self.shard_counters(base + s)
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed))
                    .collect()
            })
            .collect()
    }
}
