//! The monotonic clock, read exactly as CPython's `time.monotonic()` reads it,
//! so that `loop.time()` and `time.monotonic()` are one clock.

/// Seconds of the clock behind `time.monotonic()`.
#[cfg(unix)]
pub fn monotonic() -> f64 {
    let ts = monotonic_timespec();
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The same clock in whole nanoseconds.
#[cfg(unix)]
#[inline]
pub fn monotonic_ns() -> u64 {
    let ts = monotonic_timespec();
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Both from one reading: (seconds as `monotonic()`, ns as `monotonic_ns()`).
#[cfg(unix)]
#[inline]
pub fn monotonic_pair() -> (f64, u64) {
    let ts = monotonic_timespec();
    (
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9,
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64,
    )
}

#[cfg(unix)]
#[inline]
fn monotonic_timespec() -> libc::timespec {
    // CPython: clock_gettime(CLOCK_MONOTONIC) on Linux and the BSDs; on
    // macOS mach_absolute_time(), which CLOCK_UPTIME_RAW reads in ns.
    #[cfg(target_vendor = "apple")]
    const CLOCK: libc::clockid_t = libc::CLOCK_UPTIME_RAW;
    #[cfg(not(target_vendor = "apple"))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is supported
    // on every platform this branch compiles for, so the call cannot fail.
    unsafe { libc::clock_gettime(CLOCK, &mut ts) };
    ts
}
