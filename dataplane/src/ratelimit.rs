//! Token buckets shared by every shard: the local rate limits' (HTTP and network), one per
//! filter or route for the whole process, as Envoy's are shared by its workers.
//!
//! The buckets live in one table of atomics ([`Buckets`]), found by the id control gave
//! the bucket (from where it is configured and what it says, so that it keeps its tokens
//! across generations while both stay the same). A bucket fills continuously, at
//! `tokens_per_fill` per `fill_interval`, up to `max_tokens`, as Envoy 1.40's atomic token
//! bucket: its one word is the instant at which it would have been empty, and a take is
//! one compare-and-swap moving that instant forward by one token's time. No lock, no
//! allocation on the request path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use zerohop_proto::TokenBucket;

/// Buckets the table holds; beyond that (distinct buckets over the process's life) the
/// least recently filled of a probe window is taken over.
const TABLE: usize = 4096;
const PROBES: usize = 8;

/// A bucket's slot: its id (0: free), and the instant (ns since the table's start, plus
/// [`OFFSET`]) at which the bucket would have been empty; 0 until first used (full).
#[derive(Debug, Default)]
struct Slot {
    id: AtomicU64,
    empty_at: AtomicU64,
}

/// Keeps "full" instants (before the first use) above 0.
const OFFSET: u64 = 1 << 62;

/// Every bucket of the process.
#[derive(Debug)]
pub struct Buckets {
    epoch: Instant,
    slots: Box<[Slot]>,
}

/// The process's table.
pub fn buckets() -> &'static Buckets {
    static B: OnceLock<Buckets> = OnceLock::new();
    B.get_or_init(|| Buckets::new(TABLE))
}

impl Buckets {
    fn new(n: usize) -> Buckets {
        Buckets {
            epoch: Instant::now(),
            slots: (0..n).map(|_| Slot::default()).collect(),
        }
    }

    /// The slot of bucket `id`: its own, else a free one claimed, else the probe window's
    /// first taken over (it starts full).
    fn slot(&self, id: u64) -> &Slot {
        let n = self.slots.len();
        let home = (id as usize) % n;
        for k in 0..PROBES {
            let s = &self.slots[(home + k) % n];
            match s.id.load(Ordering::Acquire) {
                x if x == id => return s,
                0 => match s
                    .id
                    .compare_exchange(0, id, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return s,
                    Err(x) if x == id => return s,
                    Err(_) => continue,
                },
                _ => continue,
            }
        }
        let s = &self.slots[home];
        if s.id.swap(id, Ordering::AcqRel) != id {
            s.empty_at.store(0, Ordering::Release);
        }
        s
    }

    /// Takes a token from `bucket` at `now`; without one, Envoy's retry-after: one token's
    /// time.
    pub fn take(&self, bucket: &TokenBucket, now: Instant) -> Result<(), Duration> {
        let slot = self.slot(bucket.id);
        let now = now.saturating_duration_since(self.epoch).as_nanos() as u64 + OFFSET;
        let interval = bucket.fill_interval.as_nanos().max(1);
        // One token's time, and the time that fills the whole bucket.
        let token = (interval / u128::from(bucket.tokens_per_fill.max(1))).max(1) as u64;
        let full = token.saturating_mul(u64::from(bucket.max_tokens));
        let mut word = slot.empty_at.load(Ordering::Acquire);
        loop {
            // Never more than full: an older empty instant counts as `now - full`.
            let empty_at = match word {
                0 => now - full,
                w => w.max(now - full),
            };
            if now.saturating_sub(empty_at) < token {
                return Err(Duration::from_nanos(token));
            }
            match slot.empty_at.compare_exchange_weak(
                word,
                empty_at + token,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(w) => word = w,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(id: u64, max: u32, per_fill: u32, ms: u64) -> TokenBucket {
        TokenBucket {
            id,
            max_tokens: max,
            tokens_per_fill: per_fill,
            fill_interval: Duration::from_millis(ms),
        }
    }

    #[test]
    fn a_bucket_empties_and_fills_continuously() {
        let b = Buckets::new(16);
        let t0 = b.epoch + Duration::from_secs(5);
        // 3 tokens, 2 a second: one every 500 ms.
        let tb = bucket(7, 3, 2, 1000);
        for _ in 0..3 {
            assert_eq!(b.take(&tb, t0), Ok(()));
        }
        assert_eq!(
            b.take(&tb, t0 + Duration::from_millis(400)),
            Err(Duration::from_millis(500))
        );
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(b.take(&tb, t1), Ok(()));
        assert!(b.take(&tb, t1).is_err());
        // Long after: full (3), not more.
        let t9 = t0 + Duration::from_secs(9);
        for _ in 0..3 {
            assert_eq!(b.take(&tb, t9), Ok(()));
        }
        assert!(b.take(&tb, t9).is_err());
        // Another id is another bucket.
        assert_eq!(b.take(&bucket(8, 1, 1, 1000), t9), Ok(()));
    }

    #[test]
    fn colliding_ids_probe_and_a_full_window_is_taken_over() {
        let b = Buckets::new(4);
        let t = b.epoch + Duration::from_secs(1);
        // Ids 4, 8, 12, 16 all start at slot 0; four fit the table.
        for id in [4u64, 8, 12, 16] {
            assert_eq!(b.take(&bucket(id, 1, 1, 1000), t), Ok(()));
        }
        for id in [4u64, 8, 12, 16] {
            assert!(
                b.take(&bucket(id, 1, 1, 1000), t).is_err(),
                "bucket {id} is empty"
            );
        }
        // A fifth takes slot 0 over and starts full.
        assert_eq!(b.take(&bucket(20, 1, 1, 1000), t), Ok(()));
    }

    #[test]
    fn shards_share_a_bucket() {
        let b = std::sync::Arc::new(Buckets::new(64));
        let tb = bucket(3, 1000, 1, 60_000);
        let now = Instant::now();
        let taken: usize = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..400).filter(|_| b.take(&tb, now).is_ok()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(taken, 1000, "exactly the bucket's tokens, across threads");
    }
}
