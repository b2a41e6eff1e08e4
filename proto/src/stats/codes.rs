//! Per-shard counts by response code (`cluster.<name>.upstream_rq_<code>`), which Envoy
//! creates as codes are seen: a fixed open-addressing table in the shard's part of the
//! segment, keyed by scope and code, written only by its shard.
//!
//! An entry is two words: the key (`scope << 16 | code`, never 0 because a code is at
//! least 100) and the count. A shard claims an empty entry by storing the key, then counts
//! into it; control reads every entry and sums by key across shards. When the probe
//! sequence of a new key finds no room, [`add`] says so and the shard counts the miss
//! (`zerohop.stats_code_overflow`); the class counter (`upstream_rq_5xx`) is kept anyway.

use std::sync::atomic::{AtomicU64, Ordering};

use super::StatScope;

/// Entries per shard (a power of two): 64 KiB.
pub const CODE_ENTRIES: usize = 4096;
/// Words per shard.
pub const CODE_WORDS: usize = 2 * CODE_ENTRIES;
const PROBES: usize = 64;

fn key(scope: StatScope, code: u16) -> u64 {
    (u64::from(scope.0) << 16) | u64::from(code)
}

fn home(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize & (CODE_ENTRIES - 1)
}

/// Adds `n` to `(scope, code)` in one shard's table; false when the table has no room for
/// a new key. Only the owning shard calls this.
#[inline]
pub fn add(table: &[AtomicU64], scope: StatScope, code: u16, n: u64) -> bool {
    if scope.is_none() || code < 100 || table.len() < CODE_WORDS {
        return true;
    }
    let k = key(scope, code);
    let mut i = home(k);
    for _ in 0..PROBES {
        let slot = &table[2 * i];
        match slot.load(Ordering::Relaxed) {
            0 => {
                slot.store(k, Ordering::Release);
                table[2 * i + 1].store(n, Ordering::Relaxed);
                return true;
            }
            found if found == k => {
                let c = &table[2 * i + 1];
                c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
                return true;
            }
            _ => i = (i + 1) & (CODE_ENTRIES - 1),
        }
    }
    false
}

/// Every `(scope, code, count)` of one shard's table.
pub fn read(table: &[AtomicU64]) -> impl Iterator<Item = (StatScope, u16, u64)> + '_ {
    table.chunks_exact(2).filter_map(|e| {
        let k = e[0].load(Ordering::Acquire);
        (k != 0).then(|| {
            (
                StatScope((k >> 16) as u32),
                k as u16,
                e[1].load(Ordering::Relaxed),
            )
        })
    })
}

/// Zeroes the counts of `scope` (control, when it gives a freed scope's words to another
/// name).
pub fn clear_scope(table: &[AtomicU64], scope: StatScope) {
    for e in table.chunks_exact(2) {
        if (e[0].load(Ordering::Acquire) >> 16) as u32 == scope.0 {
            e[1].store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_scope_and_code_and_reports_a_full_table() {
        let table: Vec<AtomicU64> = (0..CODE_WORDS).map(|_| AtomicU64::new(0)).collect();
        assert!(add(&table, StatScope(0), 200, 1));
        assert!(add(&table, StatScope(0), 200, 2));
        assert!(add(&table, StatScope(40), 503, 1));
        assert!(add(&table, StatScope::NONE, 503, 1));
        let mut got: Vec<_> = read(&table).collect();
        got.sort();
        assert_eq!(got, vec![(StatScope(0), 200, 3), (StatScope(40), 503, 1)]);
        clear_scope(&table, StatScope(40));
        assert!(read(&table).any(|e| e == (StatScope(40), 503, 0)));
        // Fill it: every key after the table is full is refused, none is lost silently.
        let mut refused = 0;
        for s in 1..3000u32 {
            for code in [201u16, 202] {
                if !add(&table, StatScope(s * 100), code, 1) {
                    refused += 1;
                }
            }
        }
        let stored = read(&table).count();
        assert_eq!(stored + refused, 2 + 2 * 2999);
        assert!(stored <= CODE_ENTRIES);
    }
}
