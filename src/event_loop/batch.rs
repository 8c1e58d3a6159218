//! Step 4 of an iteration: running the batch of callbacks that were ready
//! at step 3 (`run.rs`), with the native I/O watchers the poll reported
//! called after the callbacks queued before them.
//!
//! Invariants:
//! - exactly the batch runs; what its callbacks queue waits for the next
//!   iteration (asyncio's `_run_once`);
//! - an error that leaves the loop puts the rest of the batch back at the
//!   front of the ready queue, and re-arms the fds of the native watchers
//!   not called yet;
//! - the batch's emptied queue goes back to `Scratch` for its allocation.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use pyo3::intern;
use pyo3::prelude::*;

use super::custody;
use super::io::NativeCall;
use super::stats::Started;
use super::LoopCore;
use crate::errors::must_propagate;
use crate::handles::Handle;

/// What `run_forever` keeps from one iteration to the next, outside the
/// shared state, so reusing it takes no lock.
pub(crate) struct Scratch {
    /// The reactor's event buffer.
    pub(super) events: Vec<(usize, crate::reactor::Readiness)>,
    /// An empty ready queue kept for its allocation: swapped with
    /// `State::ready` to take a batch, and the batch's queue comes back
    /// here once run (the larger of the two allocations is kept).
    pub(super) spare: VecDeque<Py<Handle>>,
}

impl Scratch {
    pub(crate) fn new() -> Self {
        Scratch {
            events: Vec::with_capacity(256),
            spare: VecDeque::new(),
        }
    }

    /// Keeps `batch`'s allocation if it is the larger one. `batch` must be
    /// empty (nothing is dropped here, so no Python code runs).
    #[inline(always)]
    pub(super) fn give_back(&mut self, batch: VecDeque<Py<Handle>>) {
        debug_assert!(batch.is_empty());
        if self.spare.capacity() < batch.capacity() {
            self.spare = batch;
        }
    }
}

impl LoopCore {
    /// Calls native watchers. An error that must leave the loop
    /// (`KeyboardInterrupt`, `SystemExit`) re-arms the fd of the watcher it
    /// came from and of those not called yet: their edge would be lost, and
    /// asyncio's level-triggered readers run again when the loop does (the
    /// rest of the data, the EOF and `connection_lost` still come).
    /// `TIMED` (stats on): `clock` is the last clock reading (updated) and
    /// `polled` the end of the poll that reported the fds.
    pub(super) fn run_natives<const TIMED: bool>(
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

    /// Step 4: runs `batch` (the callbacks ready at step 3; later ones wait
    /// a turn), the native watchers after the first `io_split` of them.
    /// Stats on, `clock` is the loop's last clock reading. Dispatches to
    /// `run_ready` with stats' timing compiled in or out.
    #[inline(always)]
    pub(super) fn run_batch(
        slf: &Bound<'_, Self>,
        scratch: &mut Scratch,
        batch: VecDeque<Py<Handle>>,
        io_split: usize,
        natives: Vec<NativeCall>,
        clock: u64,
        user: bool,
    ) -> PyResult<()> {
        if slf.get().stats.timing() {
            Self::run_ready::<true>(slf, scratch, batch, io_split, natives, clock, user)
        } else {
            Self::run_ready::<false>(slf, scratch, batch, io_split, natives, 0, user)
        }
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
        scratch: &mut Scratch,
        mut batch: VecDeque<Py<Handle>>,
        io_split: usize,
        mut natives: Vec<NativeCall>,
        mut clock: u64,
        user: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let polled = clock;
        if batch.is_empty() {
            scratch.give_back(batch);
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
                    drop(st);
                    scratch.give_back(batch);
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
                drop(st);
                scratch.give_back(batch);
                return Err(e);
            }
        }
        if TIMED {
            this.stats.batch_done(clock);
        }
        scratch.give_back(batch);
        Ok(())
    }
}
