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

/// A request's hash, and which selection attempt this is (0 first; a retry whose host
/// predicate refused the last pick asks again with 1, 2, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashKey {
    pub hash: u64,
    pub attempt: u32,
}

impl HashKey {
    pub fn new(hash: u64) -> HashKey {
        HashKey { hash, attempt: 0 }
    }
}

/// The ring entry for `key`: the first whose hash is at least its hash (else the first),
/// then, for a later attempt, that many entries further on (Envoy's ring skips the host
/// a predicate refused this way).
pub fn ring_pick(ring: &[(u64, u32)], key: HashKey) -> Option<usize> {
    if ring.is_empty() {
        return None;
    }
    let i = ring.partition_point(|&(h, _)| h < key.hash) % ring.len();
    let i = (i + key.attempt as usize) % ring.len();
    Some(ring[i].1 as usize)
}

/// The Maglev entry for `key`: `hash % size`, the hash varied for a later attempt (all its
/// high bits flipped, as Envoy's).
pub fn maglev_pick(table: &[u32], key: HashKey) -> Option<usize> {
    if table.is_empty() {
        return None;
    }
    let mut h = key.hash;
    if key.attempt > 0 {
        h ^= (!0u64).wrapping_sub(u64::from(key.attempt)).wrapping_add(1);
    }
    Some(table[(h % table.len() as u64) as usize] as usize)
}

/// Envoy's weighted Maglev table of `size` (a prime) entries, each an endpoint index.
pub fn maglev(endpoints: &[Endpoint], size: u64) -> Vec<u32> {
    if endpoints.is_empty() {
        return Vec::new();
    }
    struct Build {
        index: u32,
        offset: u64,
        skip: u64,
        weight: f64,
        target: f64,
        next: u64,
    }
    let total: f64 = endpoints.iter().map(|e| f64::from(e.weight)).sum();
    // Envoy fills the table in the order of the hosts' keys (their address text), so that
    // the table does not depend on the order hosts arrive in.
    let mut keyed: Vec<(String, usize)> = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| (e.address.to_string(), i))
        .collect();
    keyed.sort();
    let mut entries: Vec<Build> = keyed
        .iter()
        .map(|(key, i)| Build {
            index: *i as u32,
            offset: xxh64(key.as_bytes(), 0) % size,
            skip: xxh64(key.as_bytes(), 1) % (size - 1) + 1,
            weight: f64::from(endpoints[*i].weight) / total,
            target: 0.0,
            next: 0,
        })
        .collect();
    let max_weight = entries.iter().map(|e| e.weight).fold(0.0, f64::max);
    let mut table = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    let mut iteration = 1u64;
    while filled < size {
        for e in entries.iter_mut() {
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
            table[c as usize] = e.index;
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
            .map(|i| Endpoint::new(([10, 0, 0, 1], 8000 + i).into(), weight(i)))
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
        let at = |h| HashKey::new(h);
        assert_eq!(ring_pick(&r, at(5)), Some(0));
        assert_eq!(ring_pick(&r, at(10)), Some(0));
        assert_eq!(ring_pick(&r, at(11)), Some(1));
        assert_eq!(ring_pick(&r, at(31)), Some(0), "wraps");
        assert_eq!(ring_pick(&[], at(1)), None);
        // Later attempts walk on round the ring.
        let again = |h, attempt| HashKey { hash: h, attempt };
        assert_eq!(ring_pick(&r, again(11, 1)), Some(2));
        assert_eq!(ring_pick(&r, again(11, 2)), Some(0));
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
