//! The loop's clock.
//!
//! asyncio's `loop.time()` is `time.monotonic()`. Rust's `Instant` reads the
//! same OS clock on every platform CPython supports (CLOCK_MONOTONIC on Linux,
//! mach absolute time on macOS, QueryPerformanceCounter on Windows), so the
//! clock is anchored once to `time.monotonic()` and then advanced with
//! `Instant`: `now()` needs no call into Python and agrees with
//! `time.monotonic()` to within the anchor's rounding (well under 1 µs).

use std::time::Instant;

/// A monotonic clock in seconds on `time.monotonic()`'s scale.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// `time.monotonic()` at the anchor.
    base_secs: f64,
    /// `Instant::now()` at the anchor.
    base: Instant,
}

impl Clock {
    /// A clock anchored at `monotonic_now`, the value of `time.monotonic()`
    /// read just before this call.
    pub fn anchored(monotonic_now: f64) -> Self {
        Self {
            base_secs: monotonic_now,
            base: Instant::now(),
        }
    }

    /// Seconds on `time.monotonic()`'s scale.
    #[inline]
    pub fn now(&self) -> f64 {
        self.base_secs + self.base.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_anchored() {
        let c = Clock::anchored(100.0);
        let a = c.now();
        let b = c.now();
        assert!(a >= 100.0 && a < 101.0);
        assert!(b >= a);
    }
}
