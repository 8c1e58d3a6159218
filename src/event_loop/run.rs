//! One iteration of the loop (asyncio's `_run_once`).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pyo3::prelude::*;

use super::batch::Scratch;
use super::custody;
use super::io::NativeCall;
use super::LoopCore;
use crate::errors;
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
    ///
    /// The state lock is taken once in a busy iteration (callbacks ready,
    /// no poll, the loop's own clock, no virtual jump): the sweep, the
    /// wait decision, the due timers and the batch under one lock. After a
    /// poll without a jump it is taken twice: step 1, then the wake flags,
    /// the events' dispatch, the due timers and the batch. A `perf record`
    /// of a call_soon chain had put ~30 % of the loop's samples on the
    /// `lock cmpxchg` of the five round trips this replaced.
    #[inline(always)]
    pub(crate) fn run_once(slf: &Bound<'_, Self>, scratch: &mut Scratch) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut dead_timers: Vec<Py<Handle>> = Vec::new();
        // `time` overridden: the user's clock decides (see `user_clock`).
        let user = this.user_clock();
        let mut user_now: Option<f64> = None;
        let timing = this.stats.timing();

        // 1. Sweep cancelled timers; decide how long to wait. With a user's
        // clock that must be read, the lock is let go to call it, and the
        // decision made again with its reading.
        let (timeout, jump_to, queued_before) = loop {
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
            let before = st.ready.len();
            // Nothing can become ready without fds, so a zero-timeout poll
            // with no fds is skipped (the waker matters only when sleeping),
            // unless another thread may be waiting for the GIL, which the
            // poll lets go as asyncio's `select()` does (`other_threads`).
            if zero && st.io.is_empty() && !other_threads(py) {
                if user || jump_to.is_some() {
                    drop(st);
                    Self::release_dead(py, &mut dead_timers);
                    let natives = Vec::new();
                    return Self::finish_iteration(slf, scratch, jump_to, false, before, natives);
                }
                // The busy iteration: steps 3 and 4's batch under this lock.
                let (batch, now_ns) = this.due_and_batch(
                    &mut st,
                    timing,
                    false,
                    before,
                    before,
                    &mut dead_timers,
                    &mut scratch.spare,
                );
                drop(st);
                Self::release_dead(py, &mut dead_timers);
                return Self::run_batch(slf, scratch, batch, before, Vec::new(), now_ns, user);
            }
            if !zero {
                st.polling = true;
                st.wake_pending = false;
            }
            break (timeout, jump_to, before);
        };
        Self::release_dead(py, &mut dead_timers);

        // 2. Wait for I/O with the GIL released; queue what is ready.
        // Native watchers are called in step 4, at the place asyncio would
        // run their callbacks: after the callbacks that were ready before
        // the poll (and the add_reader/add_writer ones), before the timers.
        let mut natives: Vec<NativeCall> = Vec::new();
        let mut events = std::mem::take(&mut scratch.events);
        let waited = py.detach(|| this.reactor.wait(timeout, &mut events));
        let mut garbage: Vec<Py<PyAny>> = Vec::new();
        let mut st = this.state.lock();
        st.polling = false;
        st.wake_pending = false;
        if let Err(e) = waited {
            drop(st);
            scratch.events = events;
            return match e.kind() {
                std::io::ErrorKind::Interrupted => {
                    py.check_signals()?;
                    Self::finish_iteration(slf, scratch, jump_to, true, queued_before, natives)
                }
                _ => Err(errors::os_error(e)),
            };
        }
        for ev in events.drain(..) {
            let st = &mut *st;
            st.io.dispatch(
                py,
                &this.reactor,
                ev,
                &mut st.ready,
                &mut garbage,
                &mut natives,
            );
        }
        scratch.events = events;
        if user || jump_to.is_some() {
            drop(st);
            drop(garbage);
            return Self::finish_iteration(slf, scratch, jump_to, true, queued_before, natives);
        }
        // 3. (and 4's batch) under the same lock.
        let io_split = st.ready.len();
        let (batch, now_ns) = this.due_and_batch(
            &mut st,
            timing,
            true,
            queued_before,
            io_split,
            &mut dead_timers,
            &mut scratch.spare,
        );
        drop(st);
        drop(garbage);
        Self::release_dead(py, &mut dead_timers);
        Self::run_batch(slf, scratch, batch, io_split, natives, now_ns, user)
    }

    /// Steps 3 and 4 of an iteration on a user's clock or with a virtual
    /// jump: the rare shapes, with a lock of their own for each step.
    /// `polled`: a poll ran (its events are dispatched); `jump_to`: the
    /// virtual clock's deadline to jump to if nothing became ready.
    #[inline(never)]
    fn finish_iteration(
        slf: &Bound<'_, Self>,
        scratch: &mut Scratch,
        jump_to: Option<f64>,
        polled: bool,
        queued_before: usize,
        mut natives: Vec<NativeCall>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let user = this.user_clock();
        let timing = this.stats.timing();
        let io_split = this.state.lock().ready.len();
        let mut jumped = false;
        if let Some(when) = jump_to {
            jumped = this.virtual_jump(io_split + natives.len(), when);
        }
        let mut dead = Vec::new();
        let (batch, now_ns) = if user {
            let now_ns = Self::queue_user_timers(
                slf,
                timing,
                polled,
                queued_before,
                io_split,
                &mut natives,
            )?;
            let mut st = this.state.lock();
            let spare = std::mem::take(&mut scratch.spare);
            (std::mem::replace(&mut st.ready, spare), now_ns)
        } else {
            let mut st = this.state.lock();
            this.due_and_batch(
                &mut st,
                timing,
                polled || jumped,
                queued_before,
                io_split,
                &mut dead,
                &mut scratch.spare,
            )
        };
        Self::release_dead(py, &mut dead);
        Self::run_batch(slf, scratch, batch, io_split, natives, now_ns, user)
    }

    /// Step 3, then step 4's batch, under the caller's lock: the due
    /// timers move to the ready queue (the cancelled ones to `dead`), and
    /// the whole queue is taken as the batch, `spare` taking its place.
    /// Without timers the clock is not read (stats off), as asyncio reads
    /// it only for its timers. Stats on: a reading carried over is
    /// converted to seconds only if there are timers (ns fit an i64 for
    /// 292 years of uptime; the signed conversion is one instruction).
    /// Returns the batch and the stats clock reading (0 with stats off).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn due_and_batch(
        &self,
        st: &mut super::State,
        timing: bool,
        polled: bool,
        queued_before: usize,
        io_split: usize,
        dead: &mut Vec<Py<Handle>>,
        spare: &mut VecDeque<Py<Handle>>,
    ) -> (VecDeque<Py<Handle>>, u64) {
        let now_ns = if timing {
            let (mut secs, mut now_ns) =
                self.stats
                    .after_poll(self, &st.ready, polled, queued_before, io_split);
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
                    let (s, n) = self.stats.reread(self);
                    (secs, now_ns) = (Some(s), n);
                }
                let now = secs.unwrap_or(carried);
                Self::queue_due_timers::<false>(st, now, dead, 0);
            }
            now_ns
        } else {
            if st.timers.len() > 0 {
                // Reading the clock under the lock is fine: no Python runs.
                let now = self.clock.now();
                Self::queue_due_timers::<false>(st, now, dead, 0);
            }
            0
        };
        let batch = std::mem::replace(&mut st.ready, std::mem::take(spare));
        (batch, now_ns)
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
            let st = this.state.lock();
            this.stats
                .after_poll(this, &st.ready, polled, queued_before, io_split)
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
}
