//! Random draws for jitter (DNS refresh, health-check intervals): the standard library's
//! randomly keyed SipHash, nothing to seed or share.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A uniformly random u64.
pub fn u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// A uniformly random duration in `[0, d)` (microsecond steps).
pub fn below(d: Duration) -> Duration {
    let micros = d.as_micros() as u64;
    if micros == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(u64() % micros)
}
