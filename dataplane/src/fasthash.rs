//! A fast hasher for the shards' lookup tables whose keys come from configuration (virtual
//! host domains, upstream endpoints). Requests only look keys up, never insert them, so the
//! flooding that SipHash guards against cannot happen; what remains is its cost, paid on
//! every request (two or three lookups each).

use std::hash::{BuildHasherDefault, Hasher};

/// `HashMap<K, V, FastHash>`.
pub type FastHash = BuildHasherDefault<FastHasher>;

/// Multiply-rotate over 8-byte words (the scheme of rustc's FxHasher).
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher {
    hash: u64,
}

const K: u64 = 0x517c_c1b7_2722_0a95;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::FastHash;

    #[test]
    fn keys_find_their_values() {
        let mut m: HashMap<String, usize, FastHash> = HashMap::default();
        let keys: Vec<String> = (0..1000).map(|i| format!("host-{i}.example.com")).collect();
        for (i, k) in keys.iter().enumerate() {
            m.insert(k.clone(), i);
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(m.get(k.as_str()), Some(&i));
        }
        assert_eq!(m.get("host-1000.example.com"), None);
        // Keys that differ only past the first word, or only in length, stay apart.
        let mut n: HashMap<&[u8], u8, FastHash> = HashMap::default();
        n.insert(b"abcdefgh1", 1);
        n.insert(b"abcdefgh2", 2);
        n.insert(b"abcdefgh", 3);
        n.insert(b"abcdefgh\0", 4);
        assert_eq!(
            [&b"abcdefgh1"[..], b"abcdefgh2", b"abcdefgh", b"abcdefgh\0"].map(|k| n[k]),
            [1, 2, 3, 4]
        );
    }
}
