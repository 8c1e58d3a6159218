//! The lag histogram of loop statistics (`stats`): a fixed array of
//! log-spaced buckets of nanosecond values, four per power of two, so a
//! percentile is known within ±12 %, with the sum and the maximum.
//!
//! Invariants: written only by the loop's thread (relaxed load + store, no
//! read-modify-write), read from any (`loop.stats()` from an exporter's
//! thread); a reader may see a sample counted in one field and not yet in
//! another, never a torn value.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Histogram buckets: 0 for the value 0, then four per power of two up to
/// 2^63, and the last for 2^63 and above.
const BUCKETS: usize = 256;
/// `key(1)`, less one: bucket 1 holds the value 1.
const KEY_OFFSET: u64 = (1023 << 2) - 1;

/// A relaxed single-writer counter.
#[inline]
pub(crate) fn bump(c: &AtomicU64, by: u64) {
    c.store(c.load(Relaxed).wrapping_add(by), Relaxed);
}

/// A fixed-size histogram of nanosecond values with log buckets.
pub(crate) struct Histogram {
    /// Counts per bucket (`bucket_of`).
    counts: [AtomicU64; BUCKETS],
    /// The largest value seen.
    pub(crate) max: AtomicU64,
    /// Their sum.
    pub(crate) sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            max: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
}

/// The bucket of `v`: its `f64`'s exponent and two top mantissa bits
/// (four buckets per power of two), less `KEY_OFFSET`. The signed
/// conversion is one instruction; a value of 2^63 or more is negative as
/// an `i64` and lands in the last bucket, like a value too large. Below
/// 2^53 the conversion is exact, so a bucket is exactly `bucket_range`.
#[inline]
fn bucket_of(v: u64) -> usize {
    let key = ((v as i64 as f64).to_bits() >> 50).saturating_sub(KEY_OFFSET);
    key.min(BUCKETS as u64 - 1) as usize
}

/// The values bucket `i` holds, as floats: `[low, high)` (a bucket may
/// hold no whole number at all).
fn bucket_range(i: usize) -> (f64, f64) {
    match i {
        0 => (0.0, 1.0),
        _ if i == BUCKETS - 1 => (9_223_372_036_854_775_808.0, f64::INFINITY),
        _ => {
            let key = i as u64 + KEY_OFFSET;
            (f64::from_bits(key << 50), f64::from_bits((key + 1) << 50))
        }
    }
}

impl Histogram {
    /// Counts `v`. A 0 (a callback of a group, see `stats`) touches its
    /// bucket only: it adds nothing to the sum and is never the maximum.
    #[inline(always)]
    pub(crate) fn record(&self, v: u64) {
        if v == 0 {
            bump(&self.counts[0], 1);
            return;
        }
        bump(&self.counts[bucket_of(v)], 1);
        bump(&self.sum, v);
        if v > self.max.load(Relaxed) {
            self.max.store(v, Relaxed);
        }
    }

    /// How many values (the sum of the buckets: one counter less to bump).
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The `q` quantile (0..1): the middle of the bucket it falls in,
    /// capped at the maximum seen.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        if rank == total {
            return self.max.load(Relaxed);
        }
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Relaxed);
            if seen >= rank {
                let (lo, hi) = bucket_range(i);
                return (((lo + hi) / 2.0) as u64).min(self.max.load(Relaxed));
            }
        }
        self.max.load(Relaxed)
    }

    pub(crate) fn clear(&self) {
        for c in &self.counts {
            c.store(0, Relaxed);
        }
        self.max.store(0, Relaxed);
        self.sum.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_exact_below_2_pow_53() {
        let mut expect_low = 0.0;
        for i in 0..BUCKETS - 1 {
            let (lo, hi) = bucket_range(i);
            assert_eq!(lo, expect_low, "bucket {i}");
            assert!(hi > lo);
            expect_low = hi;
            // The whole numbers it holds map to it.
            let (first, last) = (lo.ceil(), hi.ceil() - 1.0);
            if first <= last && last < 9_007_199_254_740_992.0 {
                assert_eq!(bucket_of(first as u64), i, "{first}");
                assert_eq!(bucket_of(last as u64), i, "{last}");
            }
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 1);
        assert_eq!(bucket_of(3), bucket_of(2) + 2);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_of(1 << 63), BUCKETS - 1);
        assert!(bucket_of((1 << 63) - 1) < BUCKETS - 1);
    }

    #[test]
    fn quantiles_within_a_bucket() {
        let h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.13, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.13, "{p99}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        h.clear();
        assert_eq!(h.quantile(0.5), 0);
    }
}
