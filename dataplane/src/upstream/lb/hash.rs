//! The hashing load balancers, built as Envoy builds them so that a key picks the host
//! Envoy's would: `RING_HASH` (a ring of XXH64 hashes of `address_i`, sized from the
//! weights between the minimum and maximum ring size; a key takes the first entry at or
//! after its hash, wrapping) and `MAGLEV` (Envoy's weighted Maglev table: each host's
//! permutation from the XXH64 of its address with seeds 0 and 1; a key takes
//! `table[hash % size]`). Both tables are built once per generation, off the shards.

use xxhash_rust::xxh64::xxh64;
use zerohop_proto::Endpoint;

/// Envoy's ring: (hash, endpoint index), sorted by hash.
pub fn ring(endpoints: &[Endpoint], min_size: u64, max_size: u64) -> Vec<(u64, u32)> {
    if endpoints.is_empty() {
        return Vec::new();
    }
    let total: f64 = endpoints.iter().map(|e| f64::from(e.weight)).sum();
    let weights: Vec<f64> = endpoints
        .iter()
        .map(|e| f64::from(e.weight) / total)
        .collect();
    let min_weight = weights.iter().copied().fold(f64::INFINITY, f64::min);
    let scale = ((min_weight * min_size as f64).ceil() / min_weight).min(max_size as f64);
    let mut ring = Vec::with_capacity(scale.ceil() as usize);
    let (mut current, mut target) = (0.0f64, 0.0f64);
    for (index, (e, w)) in endpoints.iter().zip(&weights).enumerate() {
        let address = e.address.to_string();
        target += scale * w;
        let mut i = 0u64;
        while current < target {
            let key = format!("{address}_{i}");
            ring.push((xxh64(key.as_bytes(), 0), index as u32));
            i += 1;
            current += 1.0;
        }
    }
    ring.sort_by_key(|&(h, _)| h);
    ring
}

/// The ring entry for `hash`: the first whose hash is at least it, else the first.
pub fn ring_pick(ring: &[(u64, u32)], hash: u64) -> Option<usize> {
    let i = ring.partition_point(|&(h, _)| h < hash);
    ring.get(i).or(ring.first()).map(|&(_, e)| e as usize)
}

/// Envoy's weighted Maglev table of `size` (a prime) entries, each an endpoint index.
pub fn maglev(endpoints: &[Endpoint], size: u64) -> Vec<u32> {
    if endpoints.is_empty() {
        return Vec::new();
    }
    struct Build {
        offset: u64,
        skip: u64,
        weight: f64,
        target: f64,
        next: u64,
    }
    let total: f64 = endpoints.iter().map(|e| f64::from(e.weight)).sum();
    let mut entries: Vec<Build> = endpoints
        .iter()
        .map(|e| {
            let key = e.address.to_string();
            Build {
                offset: xxh64(key.as_bytes(), 0) % size,
                skip: xxh64(key.as_bytes(), 1) % (size - 1) + 1,
                weight: f64::from(e.weight) / total,
                target: 0.0,
                next: 0,
            }
        })
        .collect();
    let max_weight = entries.iter().map(|e| e.weight).fold(0.0, f64::max);
    let mut table = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    let mut iteration = 1u64;
    while filled < size {
        for (i, e) in entries.iter_mut().enumerate() {
            if filled >= size {
                break;
            }
            if (iteration as f64) * e.weight < e.target {
                continue;
            }
            e.target += max_weight;
            let mut c = (e.offset + e.skip * e.next) % size;
            while table[c as usize] != u32::MAX {
                e.next += 1;
                c = (e.offset + e.skip * e.next) % size;
            }
            table[c as usize] = i as u32;
            e.next += 1;
            filled += 1;
        }
        iteration += 1;
    }
    table
}

/// XXH64 of a key, seed 0, as Envoy's `HashUtil::xxHash64`.
pub fn hash_key(parts: &[&[u8]]) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for p in parts {
        h.update(p);
    }
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: u16, weight: impl Fn(u16) -> u32) -> Vec<Endpoint> {
        (0..n)
            .map(|i| Endpoint {
                address: ([10, 0, 0, 1], 8000 + i).into(),
                weight: weight(i),
            })
            .collect()
    }

    #[test]
    fn the_ring_is_sized_from_the_weights_and_sorted() {
        let r = ring(&endpoints(3, |_| 1), 1024, 8 << 20);
        // ceil(1/3 * 1024) / (1/3) = 342 * 3 = 1026 entries.
        assert_eq!(r.len(), 1026);
        assert!(r.windows(2).all(|w| w[0].0 <= w[1].0));
        let weighted = ring(&endpoints(2, |i| if i == 0 { 3 } else { 1 }), 1024, 8 << 20);
        let first = weighted.iter().filter(|e| e.1 == 0).count();
        assert_eq!(first, 3 * (weighted.len() - first));
        assert_eq!(ring(&endpoints(3, |_| 1), 1024, 16).len(), 16, "capped");
    }

    #[test]
    fn a_key_takes_the_next_entry_round_the_ring() {
        let r = vec![(10, 0), (20, 1), (30, 2)];
        assert_eq!(ring_pick(&r, 5), Some(0));
        assert_eq!(ring_pick(&r, 10), Some(0));
        assert_eq!(ring_pick(&r, 11), Some(1));
        assert_eq!(ring_pick(&r, 31), Some(0), "wraps");
        assert_eq!(ring_pick(&[], 1), None);
    }

    #[test]
    fn the_maglev_table_is_full_and_shares_by_weight() {
        let t = maglev(&endpoints(4, |_| 1), 65537);
        assert!(t.iter().all(|&e| e < 4));
        let mut counts = [0usize; 4];
        for &e in &t {
            counts[e as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| c.abs_diff(65537 / 4) <= 1),
            "{counts:?}"
        );
        let w = maglev(&endpoints(2, |i| if i == 0 { 2 } else { 1 }), 65537);
        let zero = w.iter().filter(|&&e| e == 0).count();
        assert!(zero.abs_diff(65537 * 2 / 3) <= 2, "{zero}");
    }

    #[test]
    fn hashing_is_xxh64_seed_zero() {
        // XXH64 of the empty input, seed 0.
        assert_eq!(hash_key(&[]), 0xEF46_DB37_51D8_E999);
        assert_eq!(hash_key(&[b"ab", b"c"]), xxh64(b"abc", 0));
    }
}
