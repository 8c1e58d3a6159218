//! Loop statistics (`loop.stats()`) and the loop's half of the blocking-call
//! detector.
//!
//! What is measured, once stats are on (`loop.enable_stats(True)`, or a
//! blocking threshold is set):
//! - lag: how late a callback starts. A timer: the start minus its deadline
//!   (`when()`). A callback queued with `call_soon` on the running loop's
//!   thread (a future's done callback too): the start minus the loop's last
//!   clock reading when it was queued (the start of the callback or poll
//!   that queued it), which spares a reading per `call_soon`. Queued from
//!   another thread or before the loop runs: minus a reading taken then. An
//!   `add_reader`/`add_writer` callback or a native transport/server: the
//!   start minus the end of the poll that reported the fd. Kept in a fixed
//!   log-bucket histogram of nanoseconds (`Histogram`: four buckets per
//!   power of two, so a percentile is known within ±12 %), with sum and max.
//! - duration: from one callback's start to the reading taken right after
//!   it, which is the next one's start (one reading per callback). An
//!   iteration that skips the poll with callbacks already queued takes the
//!   previous iteration's last reading as its clock (`after_poll`,
//!   `carry`), so a chain of `call_soon` callbacks reads the clock once per
//!   callback, as the loop does without stats; one with nothing queued (a
//!   timer due, a virtual jump) reads it, or a due timer would stay unseen.
//!   The clock is `Clock::now` (virtual time included). Durations are
//!   summed as busy time, poll waits and virtual jumps as idle time.
//! - slow callbacks: the `SLOW_KEEP` longest of at least `SLOW_MIN_NS`,
//!   described by the Python half (`Loop._stats_describe`: qualified name and
//!   file:line) only when a callback is longer than the shortest one kept,
//!   so describing is rare.
//!
//! Cost: with stats off the loop tests one flag per iteration (then runs
//! `run_ready::<false>`, the loop as it was) and one per `call_soon`.
//!
//! Invariants:
//! - Counters and the histogram are written only by the loop's thread and
//!   read from any (`stats()` may be called from an exporter's thread): they
//!   are relaxed atomics updated with load + store (no read-modify-write).
//!   `enable_stats` from another thread may reset `last`/`carry` meanwhile;
//!   the worst outcome is one stale lag sample.
//! - `slow` is the only lock; it is taken with no Python code running and
//!   never held across a call into Python.
//! - The watchdog (`python/oxloop/_stats.py`) reads `cur_seq`/`cur_start`
//!   without a lock: `cur_start` is 0 whenever no callback runs, and the
//!   watchdog checks both again after sampling the stack.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::LoopCore;

/// How many slow callbacks are kept.
pub(crate) const SLOW_KEEP: usize = 10;
/// Shorter callbacks are never slow ones (ns): describing one costs a call
/// into Python, which a loop of microsecond callbacks should not pay.
const SLOW_MIN_NS: u64 = 100_000;
/// Histogram buckets: values 0..3 exactly, then four per power of two.
const BUCKETS: usize = 256;

/// A relaxed single-writer counter.
#[inline]
fn bump(c: &AtomicU64, by: u64) {
    c.store(c.load(Relaxed).wrapping_add(by), Relaxed);
}

/// Seconds to whole nanoseconds (negative and NaN give 0).
#[inline]
fn nanos(secs: f64) -> u64 {
    (secs * 1e9) as u64
}

/// A fixed-size histogram of nanosecond values with log buckets.
pub(crate) struct Histogram {
    /// Counts per bucket (`bucket_of`).
    counts: [AtomicU64; BUCKETS],
    /// The largest value seen.
    max: AtomicU64,
    /// Their sum.
    sum: AtomicU64,
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

/// The bucket of `v`: exact below 4, else 4 per power of two.
#[inline]
fn bucket_of(v: u64) -> usize {
    if v < 4 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as usize; // >= 2
    let sub = ((v >> (e - 2)) & 3) as usize;
    (e - 1) * 4 + sub
}

/// The values bucket `i` holds: `[low, high)`.
fn bucket_range(i: usize) -> (u64, u64) {
    if i < 4 {
        return (i as u64, i as u64 + 1);
    }
    let e = i / 4 + 1;
    let sub = (i % 4) as u64;
    ((4 + sub) << (e - 2), (5 + sub) << (e - 2))
}

impl Histogram {
    #[inline]
    pub(crate) fn record(&self, v: u64) {
        bump(&self.counts[bucket_of(v)], 1);
        bump(&self.sum, v);
        if v > self.max.load(Relaxed) {
            self.max.store(v, Relaxed);
        }
    }

    /// The `q` quantile (0..1): the middle of the bucket it falls in,
    /// capped at the maximum seen.
    /// How many values (the sum of the buckets: one counter less to bump).
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

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
                return (lo + (hi - lo) / 2).min(self.max.load(Relaxed));
            }
        }
        self.max.load(Relaxed)
    }

    fn clear(&self) {
        for c in &self.counts {
            c.store(0, Relaxed);
        }
        self.max.store(0, Relaxed);
        self.sum.store(0, Relaxed);
    }
}

/// One of the slowest callbacks.
#[derive(Clone)]
pub(crate) struct SlowEntry {
    /// How long it ran, in seconds.
    pub(crate) seconds: f64,
    /// "callback", "task" or "io".
    pub(crate) kind: String,
    /// Qualified name (a task: its coroutine's).
    pub(crate) name: String,
    /// "file:line" (a task: where its coroutine is suspended now), or "".
    pub(crate) location: String,
}

/// Everything `loop.stats()` reports that the core measures.
#[derive(Default)]
pub(crate) struct LoopStats {
    /// Clock readings are taken (stats on, or a blocking threshold set).
    pub(crate) on: AtomicBool,
    /// `enable_stats(True)` was called (reported as `enabled`).
    pub(crate) enabled: AtomicBool,
    /// Lag, in ns.
    pub(crate) lag: Histogram,
    /// Iterations while on.
    pub(crate) iterations: AtomicU64,
    /// Time in callbacks, ns.
    pub(crate) busy_ns: AtomicU64,
    /// Time blocked in the poll, ns.
    pub(crate) idle_ns: AtomicU64,
    /// Callbacks that went past the blocking threshold.
    pub(crate) blocked: AtomicU64,
    /// A callback not longer than this (ns) is not a slow one:
    /// `SLOW_MIN_NS`, then the shortest kept once `SLOW_KEEP` are kept.
    pub(crate) slow_floor: AtomicU64,
    /// The slowest callbacks, longest first.
    pub(crate) slow: Mutex<Vec<SlowEntry>>,
    /// The blocking threshold in ns (0: no detector).
    pub(crate) blocking_ns: AtomicU64,
    /// Number of the callback running now (the watchdog's key).
    pub(crate) cur_seq: AtomicU64,
    /// Its start (ns); 0 when no callback runs.
    pub(crate) cur_start: AtomicU64,
    /// The loop's last clock reading (ns), the stamp of a `call_soon` made
    /// on the loop's thread.
    pub(crate) last: AtomicU64,
    /// The end of the last iteration's callbacks (ns), for the next
    /// iteration to use as its clock if it skips the poll; 0 if it may not
    /// (the loop stopped or an error left it since).
    pub(crate) carry: AtomicU64,
    /// The loop thread's `threading.get_ident()`.
    pub(crate) thread_ident: AtomicU64,
    /// Bytes stream transports received (always counted).
    pub(crate) bytes_in: AtomicU64,
    /// Bytes stream transports sent (always counted).
    pub(crate) bytes_out: AtomicU64,
}

/// What the loop knows about the callback it is about to run.
#[derive(Clone, Copy)]
pub(crate) struct Started {
    /// Its start, ns on the loop's clock.
    pub(crate) at: u64,
    /// The watchdog's number for it (0 if no detector).
    pub(crate) seq: u64,
}

impl Started {
    /// The placeholder when stats are off (never read).
    pub(crate) const NONE: Started = Started { at: 0, seq: 0 };
}

impl LoopStats {
    pub(crate) fn new() -> Self {
        let s = Self::default();
        s.slow_floor.store(SLOW_MIN_NS, Relaxed);
        s
    }

    /// Whether clock readings are taken (one predictable branch).
    #[inline(always)]
    pub(crate) fn timing(&self) -> bool {
        self.on.load(Relaxed)
    }

    /// Before readings (re)start: no reading from an earlier period is
    /// reused, for a `call_soon` stamp or as an iteration's clock.
    fn fresh_start(&self, lp: &LoopCore) {
        if !self.on.load(Relaxed) {
            self.last.store(lp.clock.now_ns(), Relaxed);
            self.carry.store(0, Relaxed);
        }
    }

    /// Turns readings on or off from `enable_stats` / the threshold.
    fn sync_on(&self) {
        let on = self.enabled.load(Relaxed) || self.blocking_ns.load(Relaxed) > 0;
        self.on.store(on, Relaxed);
    }

    /// The loop's last clock reading, ns.
    #[inline]
    pub(crate) fn last_ns(&self) -> u64 {
        self.last.load(Relaxed)
    }

    /// Bookkeeping before a callback that is `lag` ns late starts at `at`.
    #[inline]
    pub(crate) fn begin(&self, at: u64, lag: u64) -> Started {
        self.lag.record(lag);
        let mut seq = 0;
        if self.blocking_ns.load(Relaxed) > 0 {
            seq = self.cur_seq.load(Relaxed) + 1;
            self.cur_seq.store(seq, Relaxed);
            self.cur_start.store(at, Relaxed);
        }
        Started { at, seq }
    }

    /// Bookkeeping after it ended at `end`; true if it needs a closer look
    /// (`LoopCore::after_timed`): it may be among the slowest, or it went
    /// past the blocking threshold.
    #[inline]
    pub(crate) fn end(&self, s: &Started, end: u64) -> bool {
        let took = end.saturating_sub(s.at);
        self.last.store(end, Relaxed);
        bump(&self.busy_ns, took);
        if s.seq != 0 {
            self.cur_start.store(0, Relaxed);
        }
        took > self.slow_floor.load(Relaxed)
            || (s.seq != 0 && took >= self.blocking_ns.load(Relaxed))
    }

    /// Keeps `e` if it is among the `SLOW_KEEP` slowest.
    pub(crate) fn add_slow(&self, e: SlowEntry) {
        let mut slow = self.slow.lock();
        let at = slow
            .iter()
            .position(|x| x.seconds < e.seconds)
            .unwrap_or(slow.len());
        if at < SLOW_KEEP {
            slow.insert(at, e);
            slow.truncate(SLOW_KEEP);
        }
        if slow.len() == SLOW_KEEP {
            let floor = nanos(slow[SLOW_KEEP - 1].seconds).max(SLOW_MIN_NS);
            self.slow_floor.store(floor, Relaxed);
        }
    }

    /// Forgets what was measured (not the settings, nor the byte totals).
    fn reset(&self) {
        self.lag.clear();
        for c in [
            &self.iterations,
            &self.busy_ns,
            &self.idle_ns,
            &self.blocked,
        ] {
            c.store(0, Relaxed);
        }
        self.slow_floor.store(SLOW_MIN_NS, Relaxed);
        let old = std::mem::take(&mut *self.slow.lock());
        drop(old);
    }
}

impl LoopStats {
    /// The iteration's clock, in seconds and ns (the start of its first
    /// callback). An iteration that skipped the poll (`polled` false) with
    /// callbacks already queued (`before > 0`), right after one that ran
    /// callbacks, takes that one's last reading (so a chain of `call_soon`
    /// callbacks costs one reading per callback, as without stats); else the
    /// clock is read: with nothing queued the poll was skipped because a
    /// timer is due by the clock (or the virtual clock jumped to it), and
    /// an older reading would not see it due, nor would the next iteration
    /// (the loop would spin). After a poll or a virtual jump (`polled`):
    /// counts the wait (from the last reading; a jump's skipped time is
    /// idle time) and stamps the `add_reader`/`add_writer` handles the poll
    /// queued (`ready[before..after]`) as ready now; a handle that
    /// `call_soon_threadsafe` queued meanwhile keeps its own stamp.
    pub(crate) fn after_poll(
        &self,
        lp: &LoopCore,
        polled: bool,
        before: usize,
        after: usize,
    ) -> (f64, u64) {
        bump(&self.iterations, 1);
        let carried = self.carry.load(Relaxed);
        self.carry.store(0, Relaxed);
        if !polled && before > 0 && carried != 0 {
            return (carried as f64 * 1e-9, carried);
        }
        // `now()` itself decides which timers are due, so a virtual clock
        // that jumped exactly to a deadline sees it due.
        let secs = lp.clock.now();
        let now = nanos(secs);
        self.last.store(now, Relaxed);
        if polled {
            // The wait began at the previous iteration's last reading.
            let since = if carried != 0 { carried } else { now };
            bump(&self.idle_ns, now - since.min(now));
            if after > before {
                let st = lp.state.lock();
                for h in st.ready.range(before..after.min(st.ready.len())) {
                    let h = h.get();
                    if h.queued_ns() < since {
                        h.stamp_queued(now);
                    }
                }
            }
        }
        (secs, now)
    }

    /// At the end of an iteration: whether the next one may take its last
    /// reading as its clock (`after_poll`).
    #[inline]
    pub(crate) fn carry_over(&self, ok: bool) {
        self.carry
            .store(if ok { self.last.load(Relaxed) } else { 0 }, Relaxed);
    }

    /// Records the loop thread's ident for the watchdog (once per batch,
    /// only with a blocking threshold).
    #[inline]
    pub(crate) fn note_thread(&self) {
        if self.blocking_ns.load(Relaxed) > 0 {
            // SAFETY: pthread_self has no preconditions.
            let me = unsafe { libc::pthread_self() } as u64;
            self.thread_ident.store(me, Relaxed);
        }
    }
}

impl LoopCore {
    /// After a timed callback (`handle`) or native watcher (`watcher`) that
    /// started as `started`, ended at `end` and that `LoopStats::end` found
    /// worth a look: keeps it if it is among the slowest (described by
    /// `Loop._stats_describe`) and reports it if it went past the blocking
    /// threshold (`Loop._stats_blocked`). Only the report's error is
    /// returned; a failed description is replaced by "?" unless it must
    /// propagate.
    #[cold]
    pub(super) fn after_timed(
        slf: &Bound<'_, Self>,
        handle: Option<&Py<crate::handles::Handle>>,
        watcher: Option<&dyn super::io::IoWatcher>,
        started: &Started,
        end: u64,
    ) -> PyResult<()> {
        let s = &slf.get().stats;
        let took_ns = end.saturating_sub(started.at);
        let slow = took_ns > s.slow_floor.load(Relaxed);
        let blocked = started.seq != 0 && took_ns >= s.blocking_ns.load(Relaxed);
        if blocked {
            bump(&s.blocked, 1);
        }
        let took = took_ns as f64 / 1e9;
        let py = slf.py();
        let (kind, name, location) = match (handle, watcher) {
            (Some(h), _) => match slf
                .call_method1(pyo3::intern!(py, "_stats_describe"), (h,))
                .and_then(|d| d.extract::<(String, String, String)>())
            {
                Ok(d) => d,
                Err(e) if crate::errors::must_propagate(py, &e) => return Err(e),
                Err(_) => ("callback".into(), "?".into(), String::new()),
            },
            (None, Some(w)) => ("io".into(), w.describe(py), String::new()),
            (None, None) => ("callback".into(), "?".into(), String::new()),
        };
        if slow {
            s.add_slow(SlowEntry {
                seconds: took,
                kind: kind.clone(),
                name: name.clone(),
                location: location.clone(),
            });
        }
        if blocked {
            let handle = handle.map(|h| h.clone_ref(py));
            slf.call_method1(
                pyo3::intern!(py, "_stats_blocked"),
                (handle, started.seq, took, kind, name, location),
            )?;
        }
        Ok(())
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// `Loop.enable_stats(on)`.
#[pyfunction]
pub(crate) fn _stats_enable(lp: &Bound<'_, LoopCore>, on: bool) {
    let this = lp.get();
    let s = &this.stats;
    s.enabled.store(on, Relaxed);
    s.fresh_start(this);
    s.sync_on();
}

/// `Loop.reset_stats()`.
#[pyfunction]
pub(crate) fn _stats_reset(lp: &Bound<'_, LoopCore>) {
    lp.get().stats.reset();
}

/// Sets the blocking threshold in seconds (None or <= 0: off).
#[pyfunction]
#[pyo3(signature = (lp, seconds))]
pub(crate) fn _stats_set_blocking(lp: &Bound<'_, LoopCore>, seconds: Option<f64>) {
    let s = &lp.get().stats;
    let ns = match seconds {
        Some(x) if x > 0.0 && x.is_finite() => nanos(x).max(1),
        _ => 0,
    };
    s.blocking_ns.store(ns, Relaxed);
    s.fresh_start(lp.get());
    s.sync_on();
}

/// For the watchdog: (number of the running callback, its start or None,
/// the clock now, the loop thread's ident).
#[pyfunction]
pub(crate) fn _stats_probe(lp: &Bound<'_, LoopCore>) -> (u64, Option<f64>, f64, u64) {
    let this = lp.get();
    let s = &this.stats;
    let start = s.cur_start.load(Relaxed);
    (
        s.cur_seq.load(Relaxed),
        (start != 0).then(|| start as f64 / 1e9),
        this.clock.now(),
        s.thread_ident.load(Relaxed),
    )
}

/// What the core measured, as a dict (`Loop.stats()` adds to it).
#[pyfunction]
pub(crate) fn _stats_snapshot<'py>(lp: &Bound<'py, LoopCore>) -> PyResult<Bound<'py, PyDict>> {
    let py = lp.py();
    let this = lp.get();
    let s = &this.stats;
    let (ready, timers, fds) = {
        let st = this.state.lock();
        (st.ready.len(), st.timers.len(), st.io.len())
    };
    let cancelled = this
        .cancelled_timers
        .load(std::sync::atomic::Ordering::Relaxed);
    let slow = s.slow.lock().clone();
    let d = PyDict::new(py);
    d.set_item("enabled", s.enabled.load(Relaxed))?;
    // Every timed callback records one lag.
    let count = s.lag.count();
    d.set_item("callbacks", count)?;
    d.set_item("iterations", s.iterations.load(Relaxed))?;
    d.set_item("lag_p50_ms", ms(s.lag.quantile(0.5)))?;
    d.set_item("lag_p90_ms", ms(s.lag.quantile(0.9)))?;
    d.set_item("lag_p99_ms", ms(s.lag.quantile(0.99)))?;
    d.set_item("lag_max_ms", ms(s.lag.max.load(Relaxed)))?;
    d.set_item("lag_count", count)?;
    d.set_item("lag_sum_s", s.lag.sum.load(Relaxed) as f64 / 1e9)?;
    let busy = s.busy_ns.load(Relaxed) as f64 / 1e9;
    let idle = s.idle_ns.load(Relaxed) as f64 / 1e9;
    d.set_item("busy_s", busy)?;
    d.set_item("idle_s", idle)?;
    d.set_item(
        "busy_ratio",
        if busy + idle > 0.0 {
            busy / (busy + idle)
        } else {
            0.0
        },
    )?;
    d.set_item("ready", ready)?;
    d.set_item("timers", timers.saturating_sub(cancelled))?;
    d.set_item("fds", fds)?;
    let blocking = s.blocking_ns.load(Relaxed);
    d.set_item(
        "blocking_threshold",
        (blocking > 0).then(|| blocking as f64 / 1e9),
    )?;
    d.set_item("blocking_callbacks", s.blocked.load(Relaxed))?;
    let list = PyList::empty(py);
    for e in slow {
        let item = PyDict::new(py);
        item.set_item("duration_ms", e.seconds * 1e3)?;
        item.set_item("kind", e.kind)?;
        item.set_item("name", e.name)?;
        item.set_item("location", e.location)?;
        list.append(item)?;
    }
    d.set_item("slow_callbacks", list)?;
    let tr = PyDict::new(py);
    tr.set_item("bytes_in", s.bytes_in.load(Relaxed))?;
    tr.set_item("bytes_out", s.bytes_out.load(Relaxed))?;
    d.set_item("transports", tr)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        let mut expect_low = 0;
        for i in 0..=bucket_of(u64::MAX) {
            let (lo, hi) = bucket_range(i);
            assert_eq!(lo, expect_low, "bucket {i}");
            assert_eq!(bucket_of(lo), i);
            assert_eq!(bucket_of(hi - 1), i);
            expect_low = hi;
            if i == bucket_of(u64::MAX) {
                break;
            }
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
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

    #[test]
    fn slow_keeps_the_longest() {
        let s = LoopStats::new();
        for i in 0..30 {
            s.add_slow(SlowEntry {
                seconds: (i % 15) as f64,
                kind: "callback".into(),
                name: format!("f{i}"),
                location: String::new(),
            });
        }
        let slow = s.slow.lock();
        assert_eq!(slow.len(), SLOW_KEEP);
        assert_eq!(slow[0].seconds, 14.0);
        assert_eq!(slow[SLOW_KEEP - 1].seconds, 10.0);
        assert_eq!(s.slow_floor.load(Relaxed), nanos(10.0));
    }
}
