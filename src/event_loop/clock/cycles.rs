//! The statistics' clock: the CPU's cycle counter scaled to the real
//! monotonic clock, so timing a callback costs one `rdtsc` (a few ns)
//! instead of one `clock_gettime` (58-97 ns through the vDSO on a KVM
//! guest).
//!
//! Design. A reading is `base_ns + (counter - base_tsc) * scale`: the
//! counter interpolates between two readings of the real clock (anchors).
//! - The scale (ns per cycle, as a 32.32 fixed-point `mult`) is measured
//!   between two anchors at least `FIRST_CAL_NS` (2 ms) apart, then again
//!   over windows of about `RECAL_NS` (1 s). Until it is known, and on a
//!   machine where it cannot be used, every reading is a real one.
//! - The interpolation runs at most `ANCHOR_NS` (1 ms) from its anchor:
//!   past it (or when the counter went back: the wrapped difference is
//!   huge) the reading is taken from the real clock and becomes the new
//!   anchor (`reanchor`). The loop also anchors on every real reading it
//!   takes anyway (`anchor`, after each poll). So the error is the scale's
//!   over at most 1 ms, plus the few ns between `clock_gettime` and the
//!   counter reading that follows it, which makes interpolated readings
//!   lag the real clock rather than lead it.
//! - A real reading that calibrates is bracketed by two counter readings
//!   (when a calibration is due, the next real reading is; the others are
//!   followed by one only, the new anchor's); a bracket wider
//!   than 1/1000 of a calibration window (the thread was preempted between
//!   them) is not used to calibrate, so one preemption cannot skew the
//!   scale by more than 0.2 %.
//! - The counter is used only on x86-64 Linux when the kernel's own
//!   clocksource is `tsc` (`/sys/devices/system/clocksource/clocksource0/
//!   current_clocksource`): the kernel then vouches that the counter runs
//!   at a constant rate and is synchronized between CPUs. Elsewhere every
//!   reading is a real one.
//!
//! Invariants:
//! - Only the loop's thread reads this clock (`Clock::stats_ns`,
//!   `Clock::stats_pair`): the fields are relaxed atomics only so that the
//!   `Clock` stays `Sync`; other threads read the real clock.
//! - Readings never go back across an anchor: a new anchor is the later of
//!   the real reading and the interpolation at that moment.
//! - `limit` is 0 exactly when there is no scale, so the fast path is one
//!   compare: `(counter - base_tsc) < limit`; with it, `d * mult` cannot
//!   overflow (`d < limit` is about 1 ms of cycles, `mult` < 2^40).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How far (ns) a reading may be interpolated from its anchor.
const ANCHOR_NS: u64 = 1_000_000;
/// The first scale is measured over at least this (ns).
const FIRST_CAL_NS: u64 = 2_000_000;
/// Then it is measured again over windows of about this (ns).
const RECAL_NS: u64 = 1_000_000_000;
/// Scales outside (ns per cycle × 2^32) are refused: below 0.01 ns per
/// cycle (100 GHz) or above 100 (10 MHz).
const MULT_RANGE: (u64, u64) = (1 << 32 >> 7, 100 << 32);

/// The CPU's cycle counter, or None where it is not used.
#[inline(always)]
fn counter() -> u64 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        // SAFETY: rdtsc exists on every x86-64 CPU and has no
        // preconditions; no fence: the reading may move by a few
        // instructions, which is below what the stats resolve.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        0
    }
}

/// Whether the counter may be used here (read once per process).
fn usable() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *USABLE.get_or_init(|| {
            std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .is_ok_and(|s| s.trim() == "tsc")
        })
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// The cycle-counter clock's state (see the module docs).
#[derive(Debug)]
pub(crate) struct Cycles {
    /// The counter may be used (`usable`).
    on: bool,
    /// The counter right after the anchor's real reading.
    base_tsc: AtomicU64,
    /// The anchor, ns on the real clock.
    base_ns: AtomicU64,
    /// Cycles an interpolation may run from the anchor (about `ANCHOR_NS`);
    /// 0 while there is no scale.
    limit: AtomicU64,
    /// ns per cycle × 2^32 (0: none yet).
    mult: AtomicU64,
    /// The calibration window's start: counter (middle of its bracket)...
    cal_tsc: AtomicU64,
    /// ...and real ns (0: no start yet).
    cal_ns: AtomicU64,
    /// A real reading from this one on (ns) calls `calibrate` (0: the
    /// next one does, bracketed: `bracket_start`): an anchor tests only
    /// this.
    cal_due: AtomicU64,
}

impl Cycles {
    pub(crate) fn new() -> Self {
        Self {
            on: usable(),
            base_tsc: AtomicU64::new(0),
            base_ns: AtomicU64::new(0),
            limit: AtomicU64::new(0),
            mult: AtomicU64::new(0),
            cal_tsc: AtomicU64::new(0),
            cal_ns: AtomicU64::new(0),
            cal_due: AtomicU64::new(0),
        }
    }

    /// Before a real reading: the counter if a calibration waits for a
    /// bracketed reading (`cal_due` 0), else 0 (one counter read less).
    #[inline(always)]
    pub(crate) fn bracket_start(&self) -> u64 {
        if self.on && self.cal_due.load(Relaxed) == 0 {
            counter()
        } else {
            0
        }
    }

    /// Whether readings come from the counter once it is calibrated.
    #[cfg(test)]
    pub(crate) fn uses_counter(&self) -> bool {
        self.on
    }

    /// ns on the real clock's scale; `real` reads the real clock (ns).
    #[inline(always)]
    pub(crate) fn now_ns(&self, real: impl Fn() -> u64) -> u64 {
        if !self.on {
            return real();
        }
        let t = counter();
        let d = t.wrapping_sub(self.base_tsc.load(Relaxed));
        if d < self.limit.load(Relaxed) {
            return self.base_ns.load(Relaxed) + ((d * self.mult.load(Relaxed)) >> 32);
        }
        self.reanchor(t, real)
    }

    /// The slow path: a real reading, which becomes the anchor.
    #[cold]
    #[inline(never)]
    fn reanchor(&self, before: u64, real: impl Fn() -> u64) -> u64 {
        let ns = real();
        self.anchor(before, ns)
    }

    /// Anchors at `ns`, a real reading taken after the counter read
    /// `before` (0: not read, see `bracket_start`); returns the reading to use (never before an earlier one).
    pub(crate) fn anchor(&self, before: u64, ns: u64) -> u64 {
        if !self.on {
            return ns;
        }
        let after = counter();
        // The interpolation now, if it is valid: a reading never goes back.
        let d = after.wrapping_sub(self.base_tsc.load(Relaxed));
        let mult = self.mult.load(Relaxed);
        let mut now = ns;
        if mult != 0 && d < 4 * self.limit.load(Relaxed) {
            now = now.max(self.base_ns.load(Relaxed) + ((d * mult) >> 32));
        }
        self.base_tsc.store(after, Relaxed);
        self.base_ns.store(now, Relaxed);
        if ns >= self.cal_due.load(Relaxed) {
            if before == 0 {
                // Not bracketed: the next real reading will be.
                self.cal_due.store(0, Relaxed);
            } else {
                self.calibrate(before, after, ns);
            }
        }
        now
    }

    /// Measures the scale when the window is long enough (see the module
    /// docs); `before..after` brackets the real reading `ns`.
    #[cold]
    #[inline(never)]
    fn calibrate(&self, before: u64, after: u64, ns: u64) {
        let bracket = after.wrapping_sub(before);
        let mid = before.wrapping_add(bracket / 2);
        let (cal_ns, cal_tsc) = (self.cal_ns.load(Relaxed), self.cal_tsc.load(Relaxed));
        let restart = |s: &Self| {
            s.cal_ns.store(ns, Relaxed);
            s.cal_tsc.store(mid, Relaxed);
            let window = if s.mult.load(Relaxed) != 0 {
                RECAL_NS
            } else {
                FIRST_CAL_NS
            };
            s.cal_due.store(ns.saturating_add(window), Relaxed);
        };
        if cal_ns == 0 || ns < cal_ns || mid <= cal_tsc || after < before {
            return restart(self);
        }
        let window_ns = ns - cal_ns;
        let have = self.mult.load(Relaxed) != 0;
        if window_ns < if have { RECAL_NS } else { FIRST_CAL_NS } {
            return;
        }
        let window_tsc = mid - cal_tsc;
        if bracket > window_tsc / 1000 {
            // Preempted between the readings: try again from here.
            return restart(self);
        }
        let mult = ((window_ns as u128) << 32) / window_tsc as u128;
        if let Ok(mult) = u64::try_from(mult) {
            if (MULT_RANGE.0..MULT_RANGE.1).contains(&mult) {
                self.mult.store(mult, Relaxed);
                let limit = ((ANCHOR_NS as u128) << 32) / mult as u128;
                self.limit.store(limit as u64, Relaxed);
            }
        }
        restart(self);
    }

    /// The scale in ns per cycle (0: none).
    #[cfg(test)]
    fn ns_per_cycle(&self) -> f64 {
        self.mult.load(Relaxed) as f64 / (1u64 << 32) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::clock::monotonic_ns;

    #[test]
    fn tracks_the_real_clock() {
        let c = Cycles::new();
        let start = monotonic_ns();
        let mut last = 0;
        // Past the first calibration, then readings stay close to the
        // real clock and never go back.
        while monotonic_ns() - start < 20_000_000 {
            let before = monotonic_ns();
            let x = c.now_ns(monotonic_ns);
            let after = monotonic_ns();
            assert!(x >= last, "{x} < {last}");
            last = x;
            // Within 50 µs of the real clock (a preempted thread aside,
            // the error is a few ns).
            assert!(
                x + 50_000 >= before && x <= after + 50_000,
                "{before} {x} {after}"
            );
        }
        if c.uses_counter() {
            let s = c.ns_per_cycle();
            assert!(s > 0.01 && s < 100.0, "{s}");
        }
    }

    #[test]
    fn a_skewed_reading_is_not_a_scale() {
        // Anchors fed by hand: a counter at 1 GHz (1 ns per cycle).
        let c = Cycles {
            on: true,
            ..Cycles::new()
        };
        c.calibrate(1_000_000, 1_000_010, 1_000_000);
        // A 2 ms window whose bracket is far too wide: refused.
        c.calibrate(3_000_000, 3_100_000, 3_050_000);
        assert_eq!(c.mult.load(Relaxed), 0);
        c.calibrate(5_050_000, 5_050_010, 5_050_005);
        assert_eq!(c.ns_per_cycle(), 1.0);
        assert_eq!(c.limit.load(Relaxed), ANCHOR_NS);
    }
}
