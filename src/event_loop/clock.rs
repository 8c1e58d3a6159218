//! The loop's clock.
//!
//! asyncio's `loop.time()` is `time.monotonic()`. On Unix the clock is read
//! with the same system call CPython uses (`reactor::clock`), so the two
//! agree exactly. Elsewhere it is anchored once to `time.monotonic()` and
//! advanced with `Instant`, which reads the same OS clock (on Windows,
//! QueryPerformanceCounter).

#[cfg(not(unix))]
use std::time::Instant;

/// A monotonic clock in seconds on `time.monotonic()`'s scale.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// `time.monotonic()` at the anchor (non-Unix only).
    #[cfg(not(unix))]
    base_secs: f64,
    /// `Instant::now()` at the anchor (non-Unix only).
    #[cfg(not(unix))]
    base: Instant,
}

impl Clock {
    /// A clock; `monotonic_now` is `time.monotonic()` read just before.
    #[allow(unused_variables)]
    pub fn anchored(monotonic_now: f64) -> Self {
        Self {
            #[cfg(not(unix))]
            base_secs: monotonic_now,
            #[cfg(not(unix))]
            base: Instant::now(),
        }
    }

    /// Seconds on `time.monotonic()`'s scale.
    #[inline]
    pub fn now(&self) -> f64 {
        #[cfg(unix)]
        {
            crate::reactor::clock::monotonic()
        }
        #[cfg(not(unix))]
        {
            self.base_secs + self.base.elapsed().as_secs_f64()
        }
    }
}

impl Clock {
    /// The same clock in whole nanoseconds (for the loop's statistics).
    #[inline]
    pub fn now_ns(&self) -> u64 {
        #[cfg(unix)]
        {
            crate::reactor::clock::monotonic_ns()
        }
        #[cfg(not(unix))]
        {
            (self.now() * 1e9) as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic() {
        let c = Clock::anchored(0.0);
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }
}
