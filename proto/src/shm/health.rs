//! The host health table: how control's active health checks reach every shard without a
//! configuration generation.
//!
//! Control gives each health-checked host a slot ([`crate::Endpoint::health_slot`]), writes
//! the slot's verdict byte (1: the host failed its checks) before it publishes a snapshot
//! naming the slot, and again whenever a check changes it, then bumps the header's
//! `health_epoch`. The data plane's config thread reads the bytes of the generation's slots
//! when the epoch moves and sets its per-host flags, which every shard reads at each pick.
//! The second byte per slot goes the other way: the data plane sets it once the host's
//! cluster has had traffic, which is when Envoy leaves `no_traffic_interval` for `interval`.
//! A byte is written by one side only; a slot out of range reads as healthy and ignores
//! writes (slots come from an untrusted snapshot).

use std::sync::atomic::{AtomicU8, Ordering};

use super::Segment;

const VERDICT: usize = 0;
const TRAFFIC: usize = 1;

impl Segment {
    /// One of the table's two byte arrays.
    fn health_bytes(&self, which: usize) -> &[AtomicU8] {
        let n = self.geometry.health_slots as usize;
        let off = self.geometry.health_offset() + which * n;
        // SAFETY: both arrays lie inside the validated mapping (total_size covers them and
        // total_size <= len), bytes need no alignment, and they hold only atomics.
        unsafe { std::slice::from_raw_parts(self.base.add(off) as *const AtomicU8, n) }
    }

    /// Control: records whether the host in `slot` failed its active health checks.
    /// [`Segment::bump_health_epoch`] tells the data plane once a batch is written.
    pub fn set_host_failed(&self, slot: u32, failed: bool) {
        if let Some(b) = self.health_bytes(VERDICT).get(slot as usize) {
            b.store(u8::from(failed), Ordering::Release);
        }
    }

    /// Whether the host in `slot` failed its active health checks.
    pub fn host_failed(&self, slot: u32) -> bool {
        self.health_bytes(VERDICT)
            .get(slot as usize)
            .is_some_and(|b| b.load(Ordering::Acquire) != 0)
    }

    pub fn bump_health_epoch(&self) {
        self.header().health_epoch.fetch_add(1, Ordering::Release);
    }

    pub fn health_epoch(&self) -> u64 {
        self.header().health_epoch.load(Ordering::Acquire)
    }

    /// The data plane: the cluster of the host in `slot` has had traffic.
    pub fn mark_traffic(&self, slot: u32) {
        if let Some(b) = self.health_bytes(TRAFFIC).get(slot as usize) {
            if b.load(Ordering::Relaxed) == 0 {
                b.store(1, Ordering::Relaxed);
            }
        }
    }

    /// Control: whether the data plane has marked `slot` (see [`Segment::mark_traffic`]).
    pub fn traffic(&self, slot: u32) -> bool {
        self.health_bytes(TRAFFIC)
            .get(slot as usize)
            .is_some_and(|b| b.load(Ordering::Relaxed) != 0)
    }

    /// Control: a slot starts over for a new host (no traffic seen).
    pub fn clear_traffic(&self, slot: u32) {
        if let Some(b) = self.health_bytes(TRAFFIC).get(slot as usize) {
            b.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Geometry;
    use super::*;

    #[test]
    fn verdicts_and_traffic_marks_cross_and_out_of_range_slots_are_inert() {
        let seg = Segment::new_in_memory(Geometry {
            slot_count: 2,
            slot_size: 4096,
            shard_capacity: 2,
            health_slots: 64,
            stat_words: 512,
            log_bytes: 4096,
        })
        .unwrap();
        assert!(!seg.host_failed(7));
        let epoch = seg.health_epoch();
        seg.set_host_failed(7, true);
        seg.bump_health_epoch();
        assert!(seg.host_failed(7) && !seg.host_failed(8));
        assert_eq!(seg.health_epoch(), epoch + 1);
        seg.set_host_failed(7, false);
        assert!(!seg.host_failed(7));
        seg.mark_traffic(3);
        assert!(seg.traffic(3) && !seg.traffic(7));
        seg.clear_traffic(3);
        assert!(!seg.traffic(3));
        let out = 64;
        seg.set_host_failed(out, true);
        seg.mark_traffic(out);
        assert!(!seg.host_failed(out) && !seg.traffic(out));
    }
}
