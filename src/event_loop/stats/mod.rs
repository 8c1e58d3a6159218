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
//!   log-bucket histogram of nanoseconds (`histogram.rs`: four buckets per
//!   power of two, so a percentile is known within ±12 %), with sum and max.
//! - duration: from one callback's start to the reading taken right after
//!   it, which is the next one's start (one reading per callback; per
//!   group of callbacks in a long run of short ones, see groups). An
//!   iteration that skips the poll with callbacks already queued takes the
//!   previous iteration's last reading as its clock (`after_poll`,
//!   `carry`), so a chain of `call_soon` callbacks reads the clock once per
//!   callback, as the loop does without stats; one with nothing queued (a
//!   timer due, a virtual jump) reads it, or a due timer would stay unseen.
//!   The clock is `Clock::stats_ns` (virtual time included): the CPU's
//!   cycle counter scaled to the real clock where that is safe
//!   (`clock::cycles`: one `rdtsc`, a few ns, against 58-97 ns for a
//!   `clock_gettime` on a KVM guest), re-read for real at least every
//!   millisecond and at each iteration that reads the clock
//!   (`Clock::stats_pair`: seconds for the timers and ns from one system
//!   call, with no float-to-integer conversion). A carried reading is
//!   interpolated, so when it finds a timer due the real clock confirms
//!   it (`reread`): a timer never runs before its `when()` by
//!   `loop.time()`. Callbacks run back to back and each reading's
//!   callbacks started at the previous one (or at their batch's start), so
//!   busy time is added at each reading, the time since the previous one
//!   (`end`: once per group, not once per iteration); poll waits and
//!   virtual jumps are idle time. (The callbacks of a group still open
//!   when the loop polls, the end of a chain, are counted as idle: at
//!   most 31 callbacks of under 2 µs.)
//! - groups: a reading costs about 15 ns even with the cycle counter (one
//!   `rdtsc` on a KVM guest), 7 % of a 215 ns `call_soon` callback. So in
//!   a long run of short callbacks (`GROUP_AFTER`, 64, in a row under
//!   `SHORT_NS`, 2 µs, each, since the loop's last real reading: no poll,
//!   no timer due) callbacks are timed in groups, one reading after each:
//!   the first of `GROUP` (8), each next one twice as large while the run
//!   lasts, up to `GROUP_MAX` (32). `end` arms `skips`; `begin` takes one
//!   before a callback runs, which is then not followed by a reading
//!   (`Started::read`). Inside a group a callback's start is the group's
//!   start, so its lag is counted from there (a `call_soon` stamped
//!   meanwhile has lag 0, which touches one histogram bucket and nothing
//!   else; one from another thread up to the group's length less); busy
//!   time and iterations stay exact. A group that runs past `look_ns` is one slow entry of kind
//!   "callbacks", "N callbacks, the last <kind> <name>" (the others are not
//!   known), and ends the run: the next `GROUP_AFTER` callbacks are timed
//!   singly, so a callback that is slow again is named. A group longer
//!   than `SHORT_NS` per callback ends the run too. With the blocking
//!   detector on there are no groups: the watchdog's culprit and the
//!   blocking report stay exact.
//! - slow callbacks: the `SLOW_KEEP` longest of at least `SLOW_MIN_NS`,
//!   described by the Python half (`Loop._stats_describe`: qualified name and
//!   file:line) only when a callback is longer than the shortest one kept,
//!   so describing is rare. One threshold (`look_ns`, the smaller of that
//!   and the blocking threshold) decides after each callback whether it
//!   needs a closer look (`LoopCore::after_timed`).
//! - bytes in and out per kind of transport (`ByteCount`: stream, pipe,
//!   UDP), always counted; each transport counts its own too
//!   (`get_extra_info("oxloop_stats")`).
//!
//! Cost: with stats off the loop tests one flag per iteration (then runs
//! `run_ready::<false>`, the loop as it was) and one per `call_soon`. With
//! stats on, per `call_soon` on the loop's thread: the stamp (a load and a
//! store); per iteration: the iteration counter and the carried reading
//! (`after_poll` inlined, its clock reading out of line; cleared once per
//! `run_forever`, `run_starts`, and set by `batch_done`); per callback in
//! a group: its lag, a 0 (one bucket), and one skip taken; per reading
//! (each callback outside groups): one `rdtsc` and `end` (busy time, the
//! run of short callbacks, the slow threshold). What a callback's timing
//! keeps across the call is one word (`Started`). `benchmarks/
//! cg_overhead.py` counts the instructions per `call_soon` callback:
//! grouped (a build with `OXLOOP_STATS_SLOWDOWN=500`, see `SLOWDOWN`) 33
//! more than stats off (+1.5 %; 70 before groups grew to 32 and skips were
//! taken before the call), singly timed (a plain build under valgrind,
//! where callbacks are too slow to be grouped) 100 (+4.6 %);
//! `benchmarks/stats_ab.py` times stats off and on interleaved. The loop
//! thread's ident (for the watchdog) is noted once per `run_forever`.
//!
//! Lag per batch instead of per callback was tried: `call_soon` on the
//! loop's thread left unstamped, its lag counted from the start of the
//! batch that queued it. In a `call_soon` chain every batch is one
//! callback, so it saves nothing there, and it cost 6 instructions more per
//! callback (the batch's start, kept and swapped each iteration) while
//! blurring lag in large batches (up to the batch's length): not taken.
//!
//! The Python face (`_stats_*`, the snapshot, and `LoopCore::after_timed`,
//! which describes and reports a slow callback) is `stats_api.rs`.
//!
//! Invariants:
//! - Counters and the histogram are written only by the loop's thread and
//!   read from any (`stats()` may be called from an exporter's thread): they
//!   are relaxed atomics updated with load + store (no read-modify-write).
//!   `enable_stats` from another thread may reset `last`/`carry` meanwhile;
//!   the worst outcome is one stale lag sample. `set_blocking` from another
//!   thread ends a group meanwhile: its callbacks so far are then timed with
//!   the next one as if they were one.
//! - `slow` is the only lock; it is taken with no Python code running and
//!   never held across a call into Python.
//! - No hook takes the loop's state lock (`after_poll`, `begin`,
//!   `begin_single`, `end`, `batch_done`, `reread`, `run_starts`): each may
//!   be called with it held; `after_poll` stamps the `add_reader`/
//!   `add_writer` callbacks the poll queued in the ready queue its caller
//!   passes (under that lock).
//! - The watchdog (`python/oxloop/_stats.py`) reads `cur_seq`/`cur_start`
//!   without a lock: `cur_start` is 0 whenever no callback runs, and the
//!   watchdog checks both again after sampling the stack.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;
use pyo3::Py;

use super::histogram::{bump, Histogram};
use super::LoopCore;
use crate::handles::Handle;

/// How many slow callbacks are kept.
pub(crate) const SLOW_KEEP: usize = 10;
/// The stats' time thresholds are multiplied by this: 1, or
/// `OXLOOP_STATS_SLOWDOWN` when the crate was built, a build for
/// measuring under valgrind only (`benchmarks/cg_overhead.py`), where code
/// runs some 50 times slower: 500 lets short callbacks form groups there,
/// and no group be a slow callback.
const SLOWDOWN: u64 = match option_env!("OXLOOP_STATS_SLOWDOWN") {
    Some(x) => match u64::from_str_radix(x, 10) {
        Ok(x) => x,
        Err(_) => panic!("OXLOOP_STATS_SLOWDOWN: not a number"),
    },
    None => 1,
};
/// Shorter callbacks are never slow ones (ns): describing one costs a call
/// into Python, which a loop of microsecond callbacks should not pay.
const SLOW_MIN_NS: u64 = 100_000 * SLOWDOWN;

/// Callbacks timed together in a run's first group (see "groups" in the
/// module docs); each short group after it is twice as large, up to
/// `GROUP_MAX`.
const GROUP: u64 = 8;
/// Callbacks timed together, at most.
const GROUP_MAX: u64 = 32;
/// Short callbacks in a row, timed, before groups begin.
const GROUP_AFTER: u64 = 64;
/// A group (or callback) is short below this much per callback (ns).
const SHORT_NS: u64 = 2_000 * SLOWDOWN;

/// Seconds to whole nanoseconds (negative and NaN give 0).
#[inline]
pub(crate) fn nanos(secs: f64) -> u64 {
    (secs * 1e9) as u64
}

/// Bytes through transports, in and out (single writer: the loop's
/// thread, where transports are used).
#[derive(Default)]
pub(crate) struct ByteCount {
    /// Bytes received.
    rx: AtomicU64,
    /// Bytes sent.
    tx: AtomicU64,
}

impl ByteCount {
    /// Counts `n` bytes received.
    #[inline]
    pub(crate) fn add_in(&self, n: usize) {
        bump(&self.rx, n as u64);
    }

    /// Counts `n` bytes sent.
    #[inline]
    pub(crate) fn add_out(&self, n: usize) {
        bump(&self.tx, n as u64);
    }

    /// (received, sent).
    pub(crate) fn read(&self) -> (u64, u64) {
        (self.rx.load(Relaxed), self.tx.load(Relaxed))
    }
}

/// One of the slowest callbacks.
#[derive(Clone)]
pub(crate) struct SlowEntry {
    /// How long it ran, in seconds.
    pub(crate) seconds: f64,
    /// "callback", "task", "io", or "callbacks" (a group, see the module
    /// docs).
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
    /// A callback at least this long (ns) needs a closer look: the smaller
    /// of `slow_floor + 1` and `blocking_ns` (when set).
    look_ns: AtomicU64,
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
    /// (a new `run_forever`, or readings restarted: `run_starts`,
    /// `fresh_start`).
    pub(crate) carry: AtomicU64,
    /// The loop thread's `threading.get_ident()`.
    pub(crate) thread_ident: AtomicU64,
    /// Short callbacks timed in a row since the loop's last real reading
    /// (0 with the blocking detector on): from `GROUP_AFTER` on, callbacks
    /// are timed in groups.
    streak: AtomicU64,
    /// Readings still to skip in the group that runs (`begin` takes them).
    skips: AtomicU64,
    /// Readings the group was given to skip (its size less one; 0: none).
    armed: AtomicU64,
    /// Bytes through stream transports (TCP, Unix).
    pub(crate) stream: ByteCount,
    /// Bytes through pipe transports (`connect_*_pipe`, subprocess pipes).
    pub(crate) pipe: ByteCount,
    /// Bytes through datagram transports (payloads).
    pub(crate) udp: ByteCount,
}

/// What the loop must remember about the callback it runs, across the
/// call (one word; its start is the loop's clock, which the loop keeps):
/// the watchdog's number for it (0 if no detector), or `SKIP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Started(u64);

impl Started {
    /// Not followed by a reading: one of a group's skips, timed with the
    /// callbacks after it (never a watchdog number: they count from 1).
    const SKIP: u64 = u64::MAX;
    /// The placeholder when stats are off (never read).
    pub(crate) const NONE: Started = Started(Self::SKIP);

    /// The clock is read after it (`LoopStats::end`).
    #[inline(always)]
    pub(crate) fn read(self) -> bool {
        self.0 != Self::SKIP
    }

    /// The watchdog's number for it (0 if no detector).
    #[inline(always)]
    pub(crate) fn seq(self) -> u64 {
        self.0
    }
}

impl LoopStats {
    pub(crate) fn new() -> Self {
        let s = Self::default();
        s.slow_floor.store(SLOW_MIN_NS, Relaxed);
        s.update_look();
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

    /// Recomputes `look_ns` from the slow floor and the threshold.
    fn update_look(&self) {
        let slow = self.slow_floor.load(Relaxed).saturating_add(1);
        let look = match self.blocking_ns.load(Relaxed) {
            0 => slow,
            b => slow.min(b),
        };
        self.look_ns.store(look, Relaxed);
    }

    /// `enable_stats(on)`.
    pub(crate) fn set_enabled(&self, lp: &LoopCore, on: bool) {
        self.enabled.store(on, Relaxed);
        self.fresh_start(lp);
        self.sync_on();
    }

    /// Sets the blocking threshold (ns; 0: no detector).
    pub(crate) fn set_blocking(&self, lp: &LoopCore, ns: u64) {
        self.blocking_ns.store(ns, Relaxed);
        // No group from now on (the detector times callbacks singly).
        self.end_group();
        self.update_look();
        self.fresh_start(lp);
        self.sync_on();
    }

    /// The loop's last clock reading, ns.
    #[inline]
    pub(crate) fn last_ns(&self) -> u64 {
        self.last.load(Relaxed)
    }

    /// Bookkeeping before a callback that is `lag` ns late starts at `at`,
    /// and whether the clock is read after it (`Started::read`): not if
    /// it is one of the `skips` that `end` armed (a group, see the module
    /// docs), decided here, before it runs, with the stats at hand.
    #[inline(always)]
    pub(crate) fn begin(&self, at: u64, lag: u64) -> Started {
        self.lag.record(lag);
        let k = self.skips.load(Relaxed);
        if k != 0 {
            // A group: no detector (it ends groups), no watchdog number.
            self.skips.store(k - 1, Relaxed);
            return Started::NONE;
        }
        self.begin_read(at)
    }

    /// `begin` for a native watcher: always timed on its own (watchers run
    /// right after a poll, whose reading ended any group).
    #[inline]
    pub(crate) fn begin_single(&self, at: u64, lag: u64) -> Started {
        self.lag.record(lag);
        self.begin_read(at)
    }

    /// A callback timed by a reading after it: its watchdog number.
    #[inline(always)]
    fn begin_read(&self, at: u64) -> Started {
        let mut seq = 0;
        if self.blocking_ns.load(Relaxed) > 0 {
            seq = self.cur_seq.load(Relaxed) + 1;
            self.cur_seq.store(seq, Relaxed);
            self.cur_start.store(at, Relaxed);
        }
        Started(seq)
    }

    /// Ends the run of short callbacks (and the group, if one runs).
    #[inline]
    fn end_group(&self) {
        self.streak.store(0, Relaxed);
        self.skips.store(0, Relaxed);
        self.armed.store(0, Relaxed);
    }

    /// Bookkeeping after the callbacks since `at` (one, `s`, or a group
    /// ending with `s`; `at` is the previous reading or the batch's start,
    /// see `begin`) ended at `end`: their time is busy time. Returns how
    /// many they were if they need a closer look (`LoopCore::after_timed`):
    /// they may be among the slowest, or one went past the blocking
    /// threshold; else 0.
    #[inline]
    pub(crate) fn end(&self, s: Started, at: u64, end: u64) -> u64 {
        self.last.store(end, Relaxed);
        if s.seq() != 0 {
            self.cur_start.store(0, Relaxed);
        }
        // The callbacks since the last reading: the group's skips, all
        // taken (a reading, only after one that took none, or a poll's,
        // which ends the group: `reread`).
        let n = self.armed.load(Relaxed) + 1;
        // `end >= at` (one monotonic clock); were it not, the time would
        // count as 0 and only send the callback to `after_timed`, which
        // saturates.
        let took = end.saturating_sub(at);
        // Readings are back to back (`at` is the previous one, or the
        // batch's start): busy time adds up without a gap.
        bump(&self.busy_ns, took);
        if s.seq() == 0 && took < n * SHORT_NS {
            let streak = self.streak.load(Relaxed) + n;
            self.streak.store(streak, Relaxed);
            // Long enough a run: the next callbacks form a group, twice
            // as large as this one (8 at first, 32 at most).
            let arm = if streak >= GROUP_AFTER {
                (2 * n).clamp(GROUP, GROUP_MAX) - 1
            } else {
                0
            };
            self.skips.store(arm, Relaxed);
            self.armed.store(arm, Relaxed);
        } else {
            self.end_group();
        }
        if took >= self.look_ns.load(Relaxed) {
            n
        } else {
            0
        }
    }

    /// After a batch of callbacks whose last reading is `end` (ns): the
    /// next iteration of this `run_forever` may take `end` as its clock
    /// (`after_poll`; a run starts without one, `run_starts`, so neither a
    /// stop nor an error that left the loop leaves one behind). Its busy
    /// time was counted reading by reading (`end`).
    #[inline(always)]
    pub(crate) fn batch_done(&self, end: u64) {
        self.carry.store(end, Relaxed);
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
            self.update_look();
        }
    }

    /// Forgets what was measured (not the settings, nor the byte totals).
    pub(crate) fn reset(&self) {
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
        self.update_look();
        let old = std::mem::take(&mut *self.slow.lock());
        drop(old);
    }

    /// The iteration's clock, in ns and, if the clock was read, in
    /// seconds (the start of its first callback; a carried reading is
    /// converted only if a timer needs it: `LoopCore::run_once`). An iteration that skipped the poll (`polled` false) with
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
    /// (Inlined, the carried case first: it is a `call_soon` chain's every
    /// iteration.)
    #[inline(always)]
    pub(crate) fn after_poll(
        &self,
        lp: &LoopCore,
        ready: &VecDeque<Py<Handle>>,
        polled: bool,
        before: usize,
        after: usize,
    ) -> (Option<f64>, u64) {
        bump(&self.iterations, 1);
        // (Not cleared: the batch that follows sets it, `batch_done`.)
        let carried = self.carry.load(Relaxed);
        if !polled && before > 0 && carried != 0 {
            return (None, carried);
        }
        self.after_poll_read(lp, ready, polled, before, after, carried)
    }

    /// `after_poll` when it reads the clock.
    #[inline(never)]
    fn after_poll_read(
        &self,
        lp: &LoopCore,
        ready: &VecDeque<Py<Handle>>,
        polled: bool,
        before: usize,
        after: usize,
        carried: u64,
    ) -> (Option<f64>, u64) {
        // The real clock itself decides which timers are due, so a virtual
        // clock that jumped exactly to a deadline sees it due.
        let (secs, now) = self.reread(lp);
        if polled {
            // The wait began at the previous iteration's last reading.
            let since = if carried != 0 { carried } else { now };
            bump(&self.idle_ns, now - since.min(now));
            if after > before {
                for h in ready.range(before..after.min(ready.len())) {
                    let h = h.get();
                    if h.queued_ns() < since {
                        h.stamp_queued(now);
                    }
                }
            }
        }
        (Some(secs), now)
    }

    /// A real reading (seconds, ns) as the loop's last one; it anchors the
    /// cycle-counter interpolation too (`Clock::stats_pair`). For an
    /// iteration that carried a reading over and finds a timer due by it:
    /// the real clock confirms it, so a timer never runs before its
    /// `when()` by `loop.time()`.
    #[inline]
    pub(crate) fn reread(&self, lp: &LoopCore) -> (f64, u64) {
        let (secs, now) = lp.clock.stats_pair();
        self.last.store(now, Relaxed);
        // A group ends here, and the next begins after `GROUP_AFTER` more.
        self.end_group();
        (secs, now)
    }

    /// At the start of each `run_forever`: records the loop thread's ident
    /// for the watchdog (the thread cannot change while it runs), and no
    /// reading of an earlier run is carried into this one's first
    /// iteration (the loop stood still in between: that time is neither
    /// busy nor idle).
    #[inline]
    pub(crate) fn run_starts(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as u64;
        self.thread_ident.store(me, Relaxed);
        self.carry.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests;
