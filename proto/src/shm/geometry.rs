//! The segment's geometry: sizes fixed when it is created, and where each region lies.

use super::*;

/// Geometry fixed when the segment is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub slot_count: u32,
    pub slot_size: u64,
    pub shard_capacity: u32,
    /// Hosts the health table holds (at most [`HEALTH_SLOTS`]).
    pub health_slots: u32,
    /// Words of each shard's stat space (at most [`MAX_STAT_WORDS`], a multiple of 512).
    pub stat_words: u32,
    /// Bytes of each shard's access-log ring (a power of two, 4 KiB to 64 MiB).
    pub log_bytes: u32,
}

impl Default for Geometry {
    /// Two 64 MiB slots: room for ~10,000 clusters with 100,000 endpoints. The file is sparse
    /// (tmpfs), so only the pages a snapshot touches take memory.
    fn default() -> Self {
        Geometry {
            slot_count: 2,
            slot_size: 64 << 20,
            shard_capacity: MAX_SHARDS as u32,
            health_slots: HEALTH_SLOTS as u32,
            stat_words: 1 << 20,
            log_bytes: 512 << 10,
        }
    }
}

impl Geometry {
    pub(super) fn acks_offset(&self) -> usize {
        HEADER_SIZE
    }
    pub(super) fn slots_offset(&self) -> usize {
        round_up(HEADER_SIZE + self.shard_capacity as usize * ACK_LINE, PAGE)
    }
    pub(super) fn slot_offset(&self, slot: usize) -> usize {
        self.slots_offset() + slot * self.slot_size as usize
    }
    pub(super) fn stats_stride(&self) -> usize {
        round_up(Counter::ALL.len() * 8, ACK_LINE)
    }
    pub(super) fn stats_offset(&self) -> usize {
        self.slot_offset(self.slot_count as usize)
    }
    pub(super) fn space_offset(&self) -> usize {
        round_up(
            self.stats_offset() + self.shard_capacity as usize * self.stats_stride(),
            PAGE,
        )
    }
    pub(super) fn space_stride(&self) -> usize {
        self.stat_words as usize * 8
    }
    pub(super) fn codes_offset(&self) -> usize {
        self.space_offset() + self.shard_capacity as usize * self.space_stride()
    }
    pub(super) fn health_offset(&self) -> usize {
        round_up(
            self.codes_offset() + self.shard_capacity as usize * CODE_WORDS * 8,
            PAGE,
        )
    }
    pub(super) fn log_stride(&self) -> usize {
        logring::RING_CONTROL + self.log_bytes as usize
    }
    pub(super) fn logs_offset(&self) -> usize {
        round_up(
            self.health_offset() + round_up(2 * self.health_slots as usize, 8),
            PAGE,
        )
    }
    pub(super) fn total_size(&self) -> usize {
        self.logs_offset() + self.shard_capacity as usize * self.log_stride()
    }
    pub(super) fn check(&self) -> Result<(), AttachError> {
        if !(2..=MAX_SLOTS as u32).contains(&self.slot_count) {
            return Err(AttachError::Layout("slot_count must be 2..=8"));
        }
        if !(1..=MAX_SHARDS as u32).contains(&self.shard_capacity) {
            return Err(AttachError::Layout("shard_capacity must be 1..=256"));
        }
        if self.stat_words > MAX_STAT_WORDS || !self.stat_words.is_multiple_of(512) {
            return Err(AttachError::Layout(
                "stat_words must be a multiple of 512 up to 16777216",
            ));
        }
        if !self.log_bytes.is_power_of_two() || !(4096..=64 << 20).contains(&self.log_bytes) {
            return Err(AttachError::Layout(
                "log_bytes must be a power of two from 4096 to 67108864",
            ));
        }
        if self.health_slots as usize > HEALTH_SLOTS {
            return Err(AttachError::Layout("health_slots must be at most 131072"));
        }
        if self.slot_size == 0
            || self.slot_size > MAX_SLOT_SIZE
            || !self.slot_size.is_multiple_of(8)
        {
            return Err(AttachError::Layout(
                "slot_size must be a multiple of 8 up to 1 GiB",
            ));
        }
        Ok(())
    }
}
