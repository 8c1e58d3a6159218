//! The loop's clock, real or virtual.
//!
//! asyncio's `loop.time()` is `time.monotonic()`. On Unix the clock is read
//! with the same system call CPython uses (`reactor::clock`), so the two
//! agree exactly. Elsewhere it is anchored once to `time.monotonic()` and
//! advanced with `Instant`, which reads the same OS clock (on Windows,
//! QueryPerformanceCounter).
//!
//! Virtual time (`Loop(virtual_time=True)`): `now()` is the real monotonic
//! time plus an offset. The offset only ever grows (`advance_to`), and the
//! real clock never goes back, so virtual time never goes backwards either;
//! between jumps it flows at real speed. A real clock reads the offset not
//! at all: `now()` costs one predictable branch on `is_virtual`.
//!
//! The loop's statistics read the same clock through `stats_ns` and
//! `stats_pair`, on the loop's thread only: there it is interpolated with
//! the CPU's cycle counter where that is safe (`cycles`), one `rdtsc`
//! instead of one `clock_gettime` per callback, and re-read for real at
//! least every millisecond and after each poll.

mod cycles;

use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(unix))]
use std::time::Instant;

/// A monotonic clock in seconds on `time.monotonic()`'s scale.
#[derive(Debug)]
pub struct Clock {
    /// `time.monotonic()` at the anchor (non-Unix only).
    #[cfg(not(unix))]
    base_secs: f64,
    /// `Instant::now()` at the anchor (non-Unix only).
    #[cfg(not(unix))]
    base: Instant,
    /// Virtual time: `now()` adds `offset`, which `advance_to` grows.
    is_virtual: bool,
    /// Seconds skipped so far (an `f64`'s bits; only written by the loop's
    /// thread, read by any).
    offset: AtomicU64,
    /// The statistics' interpolation (loop's thread only).
    cycles: cycles::Cycles,
}

impl Clock {
    /// A clock; `monotonic_now` is `time.monotonic()` read just before.
    #[allow(unused_variables)]
    pub fn anchored(monotonic_now: f64, is_virtual: bool) -> Self {
        Self {
            #[cfg(not(unix))]
            base_secs: monotonic_now,
            #[cfg(not(unix))]
            base: Instant::now(),
            is_virtual,
            offset: AtomicU64::new(0f64.to_bits()),
            cycles: cycles::Cycles::new(),
        }
    }

    /// The real monotonic time.
    #[inline]
    fn real(&self) -> f64 {
        #[cfg(unix)]
        {
            crate::reactor::clock::monotonic()
        }
        #[cfg(not(unix))]
        {
            self.base_secs + self.base.elapsed().as_secs_f64()
        }
    }

    /// Seconds on `time.monotonic()`'s scale (plus the skipped time).
    #[inline]
    pub fn now(&self) -> f64 {
        let t = self.real();
        if self.is_virtual {
            t + self.offset()
        } else {
            t
        }
    }

    /// Whether this clock can jump.
    #[inline]
    pub fn is_virtual(&self) -> bool {
        self.is_virtual
    }

    /// The seconds skipped so far (0 for a real clock).
    pub fn offset(&self) -> f64 {
        f64::from_bits(self.offset.load(Ordering::Relaxed))
    }

    /// Moves a virtual clock forward so that `now() >= when`; never back.
    /// Returns the seconds skipped.
    pub fn advance_to(&self, when: f64) -> f64 {
        if !self.is_virtual || !when.is_finite() {
            return 0.0;
        }
        let old = self.offset();
        let real = self.real();
        let mut offset = when - real;
        if offset <= old {
            return 0.0;
        }
        // Rounding may leave `real + offset` a hair before `when`.
        while real + offset < when {
            // The next f64 up (`offset > 0` here; `f64::next_up` is newer
            // than the crate's MSRV).
            offset = f64::from_bits(offset.to_bits() + 1);
        }
        self.offset.store(offset.to_bits(), Ordering::Relaxed);
        offset - old
    }
}

impl Clock {
    /// The same clock in whole nanoseconds (for the loop's statistics),
    /// the skipped time included.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        #[cfg(unix)]
        let t = crate::reactor::clock::monotonic_ns();
        #[cfg(not(unix))]
        let t = (self.real() * 1e9) as u64;
        if self.is_virtual {
            t + (self.offset() * 1e9) as u64
        } else {
            t
        }
    }
}

impl Clock {
    /// The real clock in ns, the skipped time not included.
    #[inline(always)]
    fn real_ns(&self) -> u64 {
        #[cfg(unix)]
        {
            crate::reactor::clock::monotonic_ns()
        }
        #[cfg(not(unix))]
        {
            (self.real() * 1e9) as u64
        }
    }

    /// `now_ns()` for the loop's statistics, on the loop's thread only:
    /// interpolated with the cycle counter (`cycles`), so it may lag the
    /// real clock by a few ns, and it never goes back.
    #[inline(always)]
    pub fn stats_ns(&self) -> u64 {
        let t = self.cycles.now_ns(|| self.real_ns());
        if self.is_virtual {
            t + (self.offset() * 1e9) as u64
        } else {
            t
        }
    }

    /// `now_pair()` read for real, for the statistics (loop's thread only):
    /// it also anchors `stats_ns`. The ns are `stats_ns`'s (never before an
    /// earlier one), the seconds are the real clock's (they decide which
    /// timers are due, as `now()` does).
    #[inline]
    pub fn stats_pair(&self) -> (f64, u64) {
        let before = self.cycles.bracket_start();
        let (t, ns) = self.now_pair_real();
        let ns = self.cycles.anchor(before, ns);
        if self.is_virtual {
            let off = self.offset();
            (t + off, ns + (off * 1e9) as u64)
        } else {
            (t, ns)
        }
    }

    /// The real clock as (seconds, ns) from one reading, no skipped time.
    #[inline(always)]
    fn now_pair_real(&self) -> (f64, u64) {
        #[cfg(unix)]
        {
            crate::reactor::clock::monotonic_pair()
        }
        #[cfg(not(unix))]
        {
            let t = self.real();
            (t, (t * 1e9) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic() {
        let c = Clock::anchored(0.0, false);
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }

    #[test]
    fn real_clock_never_jumps() {
        let c = Clock::anchored(0.0, false);
        let a = c.now();
        assert_eq!(c.advance_to(a + 3600.0), 0.0);
        assert!(c.now() < a + 3600.0);
        assert_eq!(c.offset(), 0.0);
    }

    #[test]
    fn virtual_clock_jumps_forward_only() {
        let c = Clock::anchored(0.0, true);
        let a = c.now();
        let target = a + 1e7 + 0.1;
        assert!(c.advance_to(target) > 0.0);
        let b = c.now();
        assert!(b >= target, "{b} < {target}");
        assert_eq!(c.advance_to(a), 0.0, "a jump back is refused");
        assert!(c.now() >= b);
        assert_eq!(c.advance_to(f64::INFINITY), 0.0);
        assert_eq!(c.advance_to(f64::NAN), 0.0);
    }
}
