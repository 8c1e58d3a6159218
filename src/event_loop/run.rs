//! One iteration of the loop (asyncio's `_run_once`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use pyo3::intern;
use pyo3::prelude::*;

use super::custody;
use super::io::NativeCall;
use super::stats::Started;
use super::LoopCore;
use crate::errors::{self, must_propagate};
use crate::handles::Handle;

/// asyncio's cap on one wait (`MAXIMUM_SELECT_TIMEOUT`).
const MAX_WAIT_SECS: f64 = 24.0 * 3600.0;
/// Below this many timers the heap is never swept in one go.
const MIN_SWEEP_TIMERS: usize = 100;
/// `time.get_clock_info('monotonic').resolution` on the platforms we run on.
const CLOCK_RESOLUTION: f64 = 1e-9;

fn timer_cancelled(t: &Py<Handle>) -> bool {
    t.get().is_cancelled()
}

/// Whether a thread other than the caller has a Python thread state, so
/// might be waiting for the GIL. asyncio gives the GIL up in every
/// iteration (its `select()`); a loop that skipped its polls while busy
/// would leave such a thread waiting for the interpreter's switch interval
/// (5 ms) at every step it takes: an executor job's hand-back, a worker
/// thread's exit (anyio's `test_run_sync_from_thread_pooling` counted a
/// previous test's worker thread still exiting as alive). Giving the GIL up
/// without a system call in between (or only every 64th iteration) was
/// tried: the waiter seldom wins the GIL in so short a window, and each
/// re-take resets the interpreter's 5 ms switch request, so a thread could
/// wait far longer than 5 ms (`benchmarks/micro.py` thread_handoff: 51/s on
/// CPython 3.14, asyncio 6,503/s). The cost of polling: a call_soon chain
/// with an idle thread present, 304 -> 617 ns per callback; a loop with
/// fds polls in every iteration anyway.
fn other_threads(_py: Python<'_>) -> bool {
    // SAFETY: the caller holds the GIL (the token), so its own thread
    // state is current and alive; only pointers are compared, and a thread
    // state other than ours is never dereferenced.
    unsafe {
        let me = pyo3::ffi::PyThreadState_Get();
        let interp = pyo3::ffi::PyInterpreterState_Get();
        let head = pyo3::ffi::PyInterpreterState_ThreadHead(interp);
        head != me || !pyo3::ffi::PyThreadState_Next(me).is_null()
    }
}

impl LoopCore {
    /// Runs one iteration. Inlined into `run_forever`'s loop (as it was
    /// before stats), with the timed batch out of line. `user` (`time`
    /// overridden, see `user_clock`) is a runtime flag: a const-generic
    /// copy of the iteration, or the user's clock read in a separate step
    /// before step 1, made LLVM outline heap and `Duration` code from the
    /// loop's own path (+20 to +50 instructions per iteration under
    /// callgrind, against +7 to +12 for this shape).
    #[inline(always)]
    pub(crate) fn run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut dead_timers: Vec<Py<Handle>> = Vec::new();
        // `time` overridden: the user's clock decides (see `user_clock`).
        let user = this.user_clock();
        let mut user_now: Option<f64> = None;

        // 1. Sweep cancelled timers; decide how long to wait. With a user's
        // clock that must be read, the lock is let go to call it, and the
        // decision made again with its reading.
        let (timeout, skip_poll, jump_to, queued_before) = loop {
            let mut st = this.state.lock();
            let n = st.timers.len();
            if n > MIN_SWEEP_TIMERS && this.cancelled_timers.load(Ordering::Acquire) * 2 > n {
                st.timers
                    .retain_into(|t| !timer_cancelled(t), &mut dead_timers);
            } else {
                while st.timers.peek().is_some_and(timer_cancelled) {
                    dead_timers.extend(st.timers.pop());
                }
            }
            let mut jump_to = None;
            let timeout = if !st.ready.is_empty() || this.stopping.load(Ordering::Relaxed) {
                Some(Duration::ZERO)
            } else if let Some(when) = st.timers.peek_when() {
                let now = match (user, user_now) {
                    (false, _) => this.clock.now(),
                    (true, Some(now)) => now,
                    (true, None) => {
                        drop(st);
                        Self::release_dead(py, &mut dead_timers);
                        user_now = Some(Self::user_time(slf)?);
                        continue;
                    }
                };
                let mut secs = (when - now).clamp(0.0, MAX_WAIT_SECS);
                // A user's clock is not the loop's to move: no jump.
                if this.clock.is_virtual() && !user {
                    (secs, jump_to) = this.virtual_wait(st.io.is_empty(), when, secs);
                }
                Some(Duration::from_secs_f64(secs))
            } else {
                None
            };
            let zero = timeout == Some(Duration::ZERO);
            // Nothing can become ready without fds, so a zero-timeout poll
            // with no fds is skipped (the waker matters only when sleeping),
            // unless another thread may be waiting for the GIL, which the
            // poll lets go as asyncio's `select()` does (`other_threads`).
            let skip = zero && st.io.is_empty() && !other_threads(py);
            if !zero {
                st.polling = true;
                st.wake_pending = false;
            }
            break (timeout, skip, jump_to, st.ready.len());
        };
        Self::release_dead(py, &mut dead_timers);

        // 2. Wait for I/O with the GIL released; queue what is ready.
        // Native watchers are called in step 4, at the place asyncio would
        // run their callbacks: after the callbacks that were ready before
        // the poll (and the add_reader/add_writer ones), before the timers.
        let mut natives: Vec<NativeCall> = Vec::new();
        let timing = this.stats.timing();
        if !skip_poll {
            let mut events = std::mem::take(&mut *this.events.lock());
            let waited = py.detach(|| this.reactor.wait(timeout, &mut events));
            {
                let mut st = this.state.lock();
                st.polling = false;
                st.wake_pending = false;
            }
            match waited {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => py.check_signals()?,
                Err(e) => return Err(errors::os_error(e)),
            }
            Self::dispatch_events(slf, &mut events, &mut natives);
            events.clear();
            *this.events.lock() = events;
        }
        let io_split = this.state.lock().ready.len();
        let mut jumped = false;
        if let Some(when) = jump_to {
            jumped = this.virtual_jump(io_split + natives.len(), when);
        }

        // 3. Move due timers to the ready queue. Without timers the clock is
        // not read (stats off), as asyncio reads it only for its timers.
        // (Stats off: the loop as it was. Stats on: a reading carried over
        // is converted to seconds only if there are timers; ns fit an i64
        // for 292 years of uptime, and the signed conversion is one
        // instruction.)
        let now_ns = if user {
            let polled = !skip_poll || jumped;
            Self::queue_user_timers(slf, timing, polled, queued_before, io_split, &mut natives)?
        } else if timing {
            let (mut secs, mut now_ns) =
                this.stats
                    .after_poll(this, !skip_poll || jumped, queued_before, io_split);
            let mut st = this.state.lock();
            if st.timers.len() > 0 {
                let carried = now_ns as i64 as f64 * 1e-9;
                // A timer due by the carried (interpolated) reading: the
                // real clock confirms it (`LoopStats::reread`).
                if secs.is_none()
                    && st
                        .timers
                        .peek_when()
                        .is_some_and(|w| w <= carried + CLOCK_RESOLUTION)
                {
                    let (s, n) = this.stats.reread(this);
                    (secs, now_ns) = (Some(s), n);
                }
                let now = secs.unwrap_or(carried);
                Self::queue_due_timers::<false>(&mut st, now, &mut dead_timers, 0);
            }
            now_ns
        } else {
            let mut st = this.state.lock();
            if st.timers.len() > 0 {
                // Reading the clock under the lock is fine: no Python runs.
                let now = this.clock.now();
                Self::queue_due_timers::<false>(&mut st, now, &mut dead_timers, 0);
            }
            0
        };
        for t in dead_timers {
            custody::release(py, t);
        }

        // 4. Run the callbacks that are ready now; later ones wait a turn.
        if timing {
            Self::run_ready::<true>(slf, io_split, natives, now_ns, user)
        } else {
            Self::run_ready::<false>(slf, io_split, natives, 0, user)
        }
    }

    /// Lets go of swept timers (outside the state lock).
    #[inline(always)]
    fn release_dead(py: Python<'_>, dead: &mut Vec<Py<Handle>>) {
        for t in dead.drain(..) {
            t.get().unschedule();
            custody::release(py, t);
        }
    }

    /// Step 3 on a user's clock (`time` overridden, see `user_clock`): the
    /// due timers by `self.time()`. With stats on, a timer's lag counts
    /// from now (its deadline is not on the loop's clock), so it is
    /// stamped as queued now. An error from the user's clock leaves the
    /// loop, the natives not called yet re-armed. Returns the stats clock
    /// reading (0 with stats off).
    #[inline(never)]
    fn queue_user_timers(
        slf: &Bound<'_, Self>,
        timing: bool,
        polled: bool,
        queued_before: usize,
        io_split: usize,
        natives: &mut Vec<NativeCall>,
    ) -> PyResult<u64> {
        let py = slf.py();
        let this = slf.get();
        let now_ns = if timing {
            this.stats
                .after_poll(this, polled, queued_before, io_split)
                .1
        } else {
            0
        };
        let now = match Self::user_time(slf) {
            Ok(t) => t,
            Err(e) => {
                let mut st = this.state.lock();
                for (token, _, _) in natives.drain(..) {
                    let _ = st.io.rearm_native(&this.reactor, token);
                }
                return Err(e);
            }
        };
        let mut dead = Vec::new();
        if now_ns != 0 {
            Self::queue_due_timers::<true>(&mut this.state.lock(), now, &mut dead, now_ns);
        } else {
            Self::queue_due_timers::<false>(&mut this.state.lock(), now, &mut dead, 0);
        }
        for t in dead {
            custody::release(py, t);
        }
        Ok(now_ns)
    }

    /// Moves the timers due at `now` from the heap to the ready queue (the
    /// cancelled ones to `dead`); `STAMP`: each is stamped as queued at
    /// `stamp_ns` (a user's clock with stats on, see `queue_user_timers`).
    #[inline(always)]
    fn queue_due_timers<const STAMP: bool>(
        st: &mut super::State,
        now: f64,
        dead: &mut Vec<Py<Handle>>,
        stamp_ns: u64,
    ) {
        let end = now + CLOCK_RESOLUTION;
        while let Some(t) = st.timers.pop_due(end) {
            let h = t.get();
            h.unschedule();
            if h.is_cancelled() {
                dead.push(t);
            } else {
                if STAMP {
                    h.stamp_queued(stamp_ns);
                }
                st.ready.push_back(t);
            }
        }
    }

    fn dispatch_events(
        slf: &Bound<'_, Self>,
        events: &mut Vec<(usize, crate::reactor::Readiness)>,
        natives: &mut Vec<NativeCall>,
    ) {
        let py = slf.py();
        let this = slf.get();
        let mut garbage: Vec<Py<PyAny>> = Vec::new();
        for (token, ready) in events.drain(..) {
            let mut st = this.state.lock();
            let st = &mut *st;
            st.io.dispatch(
                py,
                &this.reactor,
                (token, ready),
                &mut st.ready,
                &mut garbage,
                natives,
            );
        }
        drop(garbage);
    }

    /// Calls native watchers. An error that must leave the loop
    /// (`KeyboardInterrupt`, `SystemExit`) re-arms the fd of the watcher it
    /// came from and of those not called yet: their edge would be lost, and
    /// asyncio's level-triggered readers run again when the loop does (the
    /// rest of the data, the EOF and `connection_lost` still come).
    /// `TIMED` (stats on): `clock` is the last clock reading (updated) and
    /// `polled` the end of the poll that reported the fds.
    fn run_natives<const TIMED: bool>(
        slf: &Bound<'_, Self>,
        natives: &mut Vec<NativeCall>,
        clock: &mut u64,
        polled: u64,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut calls = std::mem::take(natives).into_iter();
        while let Some((token, watcher, ready)) = calls.next() {
            let timed = if TIMED {
                this.stats
                    .begin_single(*clock, clock.saturating_sub(polled))
            } else {
                Started::NONE
            };
            let mut result = watcher.on_ready(py, slf, ready);
            if TIMED {
                let (at, end) = (*clock, this.clock.stats_ns());
                *clock = end;
                let n = this.stats.end(timed, at, end);
                if n != 0 {
                    let reported = Self::after_timed(slf, None, Some(&*watcher), timed, at, end, n);
                    result = result.and(reported);
                }
            }
            if let Err(e) = result {
                let e = if must_propagate(py, &e) {
                    Err(e)
                } else {
                    slf.call_method1(intern!(py, "_report_io_error"), (e.value(py),))
                        .map(drop)
                };
                if let Err(e) = e {
                    let this = slf.get();
                    let mut st = this.state.lock();
                    let _ = st.io.rearm_native(&this.reactor, token);
                    for (token, _, _) in calls {
                        let _ = st.io.rearm_native(&this.reactor, token);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// `TIMED` (stats on, see `stats`): `clock` is the loop's last clock
    /// reading, the start of the first callback; each callback's end is the
    /// next one's start (its time is busy time, `LoopStats::end`); the
    /// next iteration may reuse the last reading unless the loop stops or
    /// an error leaves it (`LoopStats::batch_done`). Not `TIMED`, it is
    /// unused and this is the loop of a build without stats. `user`: debug
    /// mode times callbacks on the user's `time()` (see `user_clock`).
    #[inline(always)]
    fn run_ready<const TIMED: bool>(
        slf: &Bound<'_, Self>,
        io_split: usize,
        mut natives: Vec<NativeCall>,
        mut clock: u64,
        user: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let polled = clock;
        let mut batch = {
            let mut st = this.state.lock();
            let spare = std::mem::take(&mut st.spare);
            std::mem::replace(&mut st.ready, spare)
        };
        if batch.is_empty() {
            this.state.lock().spare = batch;
            let r = Self::run_natives::<TIMED>(slf, &mut natives, &mut clock, polled);
            if TIMED {
                this.stats.batch_done(clock);
            }
            return r;
        }
        let debug = this.debug.load(Ordering::Relaxed);
        let slow: f64 = if debug {
            slf.getattr(intern!(py, "slow_callback_duration"))
                .and_then(|v| v.extract())
                .unwrap_or(0.1)
        } else {
            0.0
        };
        let mut done = 0usize;
        loop {
            let mut outcome = Ok(());
            if done == io_split && !natives.is_empty() {
                outcome = Self::run_natives::<TIMED>(slf, &mut natives, &mut clock, polled);
            }
            let handle = match outcome {
                Ok(()) => match batch.pop_front() {
                    Some(h) => h,
                    None => break,
                },
                Err(e) => {
                    if TIMED {
                        this.stats.batch_done(clock);
                    }
                    let mut st = this.state.lock();
                    while let Some(rest) = batch.pop_back() {
                        st.ready.push_front(rest);
                    }
                    st.spare = batch;
                    return Err(e);
                }
            };
            done += 1;
            let h = handle.get();
            if h.is_cancelled() {
                custody::release(py, handle);
                continue;
            }
            let timed = if TIMED {
                this.stats.begin(clock, h.lag_ns(clock))
            } else {
                Started::NONE
            };
            // asyncio reads the clock around each callback in debug mode;
            // an error from a user's clock leaves the loop as the
            // callback's own KeyboardInterrupt would.
            let mut started = 0.0;
            let mut clock_failed = false;
            let mut outcome = if debug {
                match Self::sched_now(slf, user) {
                    Ok(t) => {
                        started = t;
                        h.run(py)
                    }
                    Err(e) => {
                        clock_failed = true;
                        Err(e)
                    }
                }
            } else {
                h.run(py)
            };
            if let Err(e) = outcome {
                outcome = if clock_failed || must_propagate(py, &e) {
                    Err(e)
                } else {
                    slf.call_method1(
                        intern!(py, "_report_callback_error"),
                        (&handle, e.value(py)),
                    )
                    .map(drop)
                };
            }
            // In a group (not `timed.read()`, see `LoopStats::begin`), no
            // reading: the next callback starts at the same `clock`.
            if TIMED && timed.read() {
                let (at, end) = (clock, this.clock.stats_ns());
                clock = end;
                let n = this.stats.end(timed, at, end);
                if n != 0 {
                    let reported = Self::after_timed(slf, Some(&handle), None, timed, at, end, n);
                    if outcome.is_ok() {
                        outcome = reported;
                    }
                }
            }
            if outcome.is_ok() && debug {
                outcome = Self::sched_now(slf, user).and_then(|end| {
                    let took = end - started;
                    if took >= slow {
                        slf.call_method1(intern!(py, "_report_slow_callback"), (&handle, took))
                            .map(drop)
                    } else {
                        Ok(())
                    }
                });
            }
            custody::release(py, handle);
            if let Err(e) = outcome {
                // Leave the rest of this batch at the front of the queue, as
                // asyncio does when an exception escapes `_run_once`; native
                // watchers not called yet get their fds re-armed.
                if TIMED {
                    this.stats.batch_done(clock);
                }
                let mut st = this.state.lock();
                for (token, _, _) in natives.drain(..) {
                    let _ = st.io.rearm_native(&this.reactor, token);
                }
                while let Some(rest) = batch.pop_back() {
                    st.ready.push_front(rest);
                }
                st.spare = batch;
                return Err(e);
            }
        }
        if TIMED {
            this.stats.batch_done(clock);
        }
        let mut st = this.state.lock();
        if st.spare.capacity() < batch.capacity() {
            std::mem::swap(&mut st.spare, &mut batch);
        }
        drop(st);
        drop(batch);
        Ok(())
    }
}
