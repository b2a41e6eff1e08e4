//! Histograms as Envoy's default `histogram_bucket_settings` present them.
//!
//! A histogram is [`HIST_WORDS`] words of a shard's stat space: one count per bucket of
//! [`BOUNDS`] (Envoy's default `supportedBuckets`, milliseconds), one for values past the
//! last bound, and the sum of the recorded values. Envoy records integer milliseconds into
//! a log-linear histogram and prints, for each bound `b`, the values whose bin lies wholly
//! at or below `b`: for an integer value `v` that is `v < b` (every bound is a bin edge),
//! which is how [`bucket`] files a value, so the Prometheus `_bucket` series are Envoy's
//! exactly. The quantiles `/stats` prints are interpolated within these buckets (as
//! Prometheus's `histogram_quantile` does), not read from Envoy's finer bins.

/// Envoy's default histogram bucket bounds (`le`), in the histogram's unit.
pub const BOUNDS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Buckets, the overflow bucket, and the sum.
pub const HIST_WORDS: usize = BOUNDS.len() + 2;

/// The word of the sum within a histogram.
pub const SUM: usize = BOUNDS.len() + 1;

/// The bucket a value goes to: the first bound it is below, or the overflow bucket.
#[inline]
pub fn bucket(v: u64) -> usize {
    // Integer bounds past the first; a branch-light scan over 19 constants.
    const INT: [u64; 18] = [
        1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
        1800000, 3600000,
    ];
    if v == 0 {
        return 0;
    }
    1 + INT.iter().take_while(|&&b| v >= b).count()
}

/// The quantiles Envoy's `/stats` prints.
pub const QUANTILES: [f64; 10] = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0];

/// A histogram summed over the shards: per-bucket counts (not cumulative) and the sum.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Merged {
    pub buckets: [u64; BOUNDS.len() + 1],
    pub sum: u64,
}

impl Merged {
    /// Adds one shard's words.
    pub fn add(&mut self, words: &[u64]) {
        for (b, w) in self.buckets.iter_mut().zip(words) {
            *b += w;
        }
        self.sum += words.get(SUM).copied().unwrap_or(0);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Cumulative counts at each bound, as Prometheus `_bucket{le=...}`.
    pub fn cumulative(&self) -> [u64; BOUNDS.len()] {
        let mut out = [0; BOUNDS.len()];
        let mut run = 0;
        for (i, o) in out.iter_mut().enumerate() {
            run += self.buckets[i];
            *o = run;
        }
        out
    }

    /// The `q` quantile, linearly interpolated within its bucket (the overflow bucket
    /// answers its lower bound); `None` when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (below + n) as f64 >= rank {
                let lo = if i == 0 { 0.0 } else { BOUNDS[i - 1] };
                let Some(&hi) = BOUNDS.get(i) else {
                    return Some(lo);
                };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lo + (hi - lo) * within);
            }
            below += n;
        }
        BOUNDS.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_go_below_the_first_bound_they_are_under() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 2); // 1 < 5 (Envoy's bin [1.0, 1.1) is not wholly <= 1)
        assert_eq!(bucket(4), 2);
        assert_eq!(bucket(5), 3);
        assert_eq!(bucket(24), 4);
        assert_eq!(bucket(25), 5);
        assert_eq!(bucket(29_999), 13);
        assert_eq!(bucket(3_599_999), 18);
        assert_eq!(bucket(3_600_000), 19);
        assert_eq!(bucket(u64::MAX), 19);
        for v in [0u64, 1, 2, 7, 99, 100, 101, 2_499, 60_000, 1_800_001] {
            let b = bucket(v);
            if b < BOUNDS.len() {
                assert!((v as f64) < BOUNDS[b], "{v}");
            }
            if b > 0 {
                assert!((v as f64) >= BOUNDS[b - 1], "{v}");
            }
        }
    }

    #[test]
    fn merged_counts_quantiles_and_cumulative_buckets() {
        let mut m = Merged::default();
        assert_eq!(m.quantile(0.5), None);
        let mut shard = vec![0u64; HIST_WORDS];
        for v in [0u64, 3, 3, 7, 7, 7, 40, 40_000] {
            shard[bucket(v)] += 1;
            shard[SUM] += v;
        }
        m.add(&shard);
        m.add(&shard);
        assert_eq!(m.count(), 16);
        assert_eq!(m.sum, 2 * 40_067);
        let c = m.cumulative();
        assert_eq!(c[0], 2); // <= 0.5
        assert_eq!(c[1], 2); // <= 1
        assert_eq!(c[2], 6); // <= 5
        assert_eq!(c[3], 12); // <= 10
        assert_eq!(c[5], 14); // <= 50
        assert_eq!(c[18], 16);
        let p50 = m.quantile(0.5).unwrap();
        assert!((5.0..=10.0).contains(&p50), "{p50}");
        assert_eq!(m.quantile(1.0), Some(60000.0));
        assert_eq!(m.quantile(0.0), Some(0.0));
    }
}
