//! One access-log ring per shard: the shard pushes whole records (see
//! [`crate::accesslog`]), control drains them. Single producer, single consumer, across
//! processes:
//!
//! ```text
//! 0     tail     bytes ever pushed (written by the shard, Release)
//! 64    head     bytes ever drained (written by control, Release)
//! 128   dropped  records the shard could not push (ring full)
//! 256   data     `Geometry::log_bytes` bytes (512 KiB by default: about 2,000 records
//!                of a typical format's fields), indexed by position mod the size
//! ```
//!
//! A push never waits: when the record does not fit in what control has not drained yet, it
//! is dropped and counted. Both sides treat the other's position as untrusted: a producer
//! that finds `tail - head` beyond the ring's size drops (until control repairs it), and
//! control, finding the same, skips to `tail` and counts the bytes lost.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Segment;

/// The ring's control words, before its data.
pub(super) const RING_CONTROL: usize = 256;

/// A shard's view (producer) or control's view (consumer) of one ring.
#[derive(Clone, Copy)]
pub struct LogRing<'a> {
    tail: &'a AtomicU64,
    head: &'a AtomicU64,
    dropped: &'a AtomicU64,
    data: *mut u8,
    /// Bytes of `data` (a power of two).
    size: usize,
}

impl std::fmt::Debug for LogRing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogRing")
            .field("tail", &self.tail.load(Ordering::Relaxed))
            .field("head", &self.head.load(Ordering::Relaxed))
            .finish()
    }
}

// SAFETY: the ring's words are atomics; its data bytes are written only by the one producer
// in the range it owns (past `tail`, before `head + size`) and read by the one consumer in
// the range published to it (between `head` and `tail`), ordered by `tail`'s and `head`'s
// Release stores and Acquire loads.
unsafe impl Send for LogRing<'_> {}
// SAFETY: as above.
unsafe impl Sync for LogRing<'_> {}

/// What one drain found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Bytes copied out (whole records, as pushed).
    pub bytes: usize,
    /// Bytes skipped because the positions were not sane.
    pub lost: u64,
}

impl LogRing<'_> {
    /// Pushes one record; false (and counted in `dropped`) when it does not fit.
    pub fn push(&self, record: &[u8]) -> bool {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        let used = tail.wrapping_sub(head);
        if used > self.size as u64
            || record.len() as u64 > self.size as u64 - used
            || record.is_empty()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let at = (tail % self.size as u64) as usize;
        let first = record.len().min(self.size - at);
        // SAFETY: `at + first <= size` and `record.len() - first <= at`, both
        // within the data area of this ring in the mapping. The bytes written are past
        // `tail` and within `head + size`: the consumer reads none of them until
        // the Release store of the new tail below.
        unsafe {
            std::ptr::copy_nonoverlapping(record.as_ptr(), self.data.add(at), first);
            std::ptr::copy_nonoverlapping(
                record.as_ptr().add(first),
                self.data,
                record.len() - first,
            );
        }
        self.tail
            .store(tail.wrapping_add(record.len() as u64), Ordering::Release);
        true
    }

    /// Records the shard has dropped since the ring was made.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Copies every pushed byte not yet drained onto `out` and releases it to the producer.
    pub fn drain(&self, out: &mut Vec<u8>) -> Drained {
        let tail = self.tail.load(Ordering::Acquire);
        let head = self.head.load(Ordering::Relaxed);
        let n = tail.wrapping_sub(head);
        if n == 0 {
            return Drained::default();
        }
        if n > self.size as u64 {
            // Not positions this consumer and a sane producer could have left.
            self.head.store(tail, Ordering::Release);
            return Drained { bytes: 0, lost: n };
        }
        let n = n as usize;
        let at = (head % self.size as u64) as usize;
        let first = n.min(self.size - at);
        let start = out.len();
        out.resize(start + n, 0);
        // SAFETY: the ranges lie inside the ring's data area (as in `push`); the producer
        // published them with its Release store of `tail` (loaded with Acquire above) and
        // writes none of them again until `head` moves past them below.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.add(at), out.as_mut_ptr().add(start), first);
            std::ptr::copy_nonoverlapping(
                self.data,
                out.as_mut_ptr().add(start + first),
                n - first,
            );
        }
        self.head.store(tail, Ordering::Release);
        Drained { bytes: n, lost: 0 }
    }
}

impl Segment {
    /// One shard line's access-log ring.
    pub fn shard_log(&self, shard: usize) -> LogRing<'_> {
        assert!(
            shard < self.geometry.shard_capacity as usize,
            "shard index out of range"
        );
        let off = self.geometry.logs_offset() + shard * self.geometry.log_stride();
        // SAFETY: the ring lies inside the validated mapping (total_size <= len) and is
        // page-aligned; its first three words are atomics (valid for any bit pattern), and
        // its data area is only ever accessed as described on `LogRing`.
        unsafe {
            let base = self.base.add(off);
            LogRing {
                tail: &*(base as *const AtomicU64),
                head: &*(base.add(64) as *const AtomicU64),
                dropped: &*(base.add(128) as *const AtomicU64),
                data: base.add(RING_CONTROL),
                size: self.geometry.log_bytes as usize,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::Geometry;

    fn seg() -> Segment {
        Segment::new_in_memory(Geometry {
            shard_capacity: 2,
            slot_size: 4096,
            health_slots: 64,
            stat_words: 512,
            log_bytes: 64 << 10,
            ..Geometry::default()
        })
        .unwrap()
    }

    #[test]
    fn records_come_out_as_pushed_across_the_wrap() {
        let seg = seg();
        let ring = seg.shard_log(1);
        let rec: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        // Enough rounds to wrap the ring several times.
        for round in 0..2000 {
            assert!(ring.push(&rec[..(round % 900) + 1]));
            out.clear();
            let d = ring.drain(&mut out);
            assert_eq!(d.bytes, (round % 900) + 1);
            assert_eq!(out, rec[..(round % 900) + 1]);
        }
        assert_eq!(ring.dropped(), 0);
        // The other shard's ring is untouched.
        assert_eq!(seg.shard_log(0).drain(&mut out), Drained::default());
    }

    #[test]
    fn a_full_ring_drops_and_counts_and_a_drain_makes_room() {
        let seg = seg();
        let ring = seg.shard_log(0);
        let rec = vec![7u8; 4096];
        let fits = ring.size / rec.len();
        for _ in 0..fits {
            assert!(ring.push(&rec));
        }
        assert!(!ring.push(&rec));
        assert!(!ring.push(&[1]));
        assert_eq!(ring.dropped(), 2);
        let mut out = Vec::new();
        assert_eq!(ring.drain(&mut out).bytes, ring.size);
        assert!(ring.push(&rec));
    }

    #[test]
    fn insane_positions_are_skipped_not_trusted() {
        let seg = seg();
        let ring = seg.shard_log(0);
        // A stray write over the producer's position.
        ring.tail.store(u64::MAX / 3, Ordering::Relaxed);
        assert!(
            !ring.push(b"x"),
            "the producer drops while positions are insane"
        );
        let mut out = Vec::new();
        let d = ring.drain(&mut out);
        assert!(d.lost > 0 && out.is_empty());
        assert!(ring.push(b"x"), "control repaired the positions");
        assert_eq!(ring.drain(&mut out).bytes, 1);
    }
}
