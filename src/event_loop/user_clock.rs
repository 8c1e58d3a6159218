//! A `time()` overridden by the user, which the scheduler then follows.
//!
//! asyncio's `BaseEventLoop` reads its clock by calling `self.time()`, so a
//! `time` replaced on the instance (`loop.time = f`,
//! `mock.patch.object(loop, "time", ...)`) or overridden in a subclass moves
//! its deadlines too; tests use that to make a timer due without waiting
//! (aiohttp's keep-alive test, for one). The places, the same in 3.9-3.15:
//! `call_later` (`self.time() + delay`), `_run_once`'s wait (`when -
//! self.time()`, called only when no callback is ready, the loop is not
//! stopping and a timer is scheduled), its timer step (`self.time() +
//! clock_resolution`, every iteration) and, in debug mode, the start and end
//! of each callback for the slow-callback warning. `call_at` reads no clock.
//!
//! oxloop reads its native clock in those places unless `user_clock` says
//! `time` is overridden; then it calls `self.time()` (an ordinary attribute
//! lookup: whatever `time` is at that moment) exactly there:
//! - `INSTANCE`: `Loop.__setattr__`/`__delattr__` (Python, in
//!   `python/oxloop/_loop.py`; `mock.patch` writes through them too) set it
//!   when `time` is assigned and clear it when it is deleted. They are
//!   Python, not a native slot, so that `object.__setattr__(loop, ...)` keeps
//!   working as on the stdlib loop (CPython refuses it on an instance whose
//!   native base defines its own slot);
//! - `TYPE`: the loop's class resolves `time` to something other than the
//!   native method (a subclass defining `time()`, a patched class). Checked
//!   when the loop is made and whenever `run_forever` starts, so a class
//!   patched later is followed from the next run on.
//!
//! Writing `loop.__dict__["time"]` directly, or through
//! `object.__setattr__`, bypasses `Loop.__setattr__` and is not seen.
//!
//! Cost without an override: one relaxed load and a predictable branch per
//! `call_later` and per iteration, plus, per `run_forever`, two attribute
//! lookups on types. Under callgrind (`benchmarks/cg_overhead.py`'s
//! workloads, per function): `call_soon` unchanged, `call_later` +3
//! instructions (of 817), an iteration -2 to +12 (of ~2,800 per chained
//! callback). Attribute writes on the loop run a Python
//! `__setattr__`; none of them is on a hot path.
//!
//! Virtual time: a user's clock is not the loop's to move, so a virtual-time
//! loop whose `time` is overridden waits in real time, as a real-time loop
//! does, and never jumps. Stats (`loop.stats()`, the blocking detector) keep
//! measuring on the loop's own clock: they time real work. A timer's lag is
//! then counted from the moment the loop found it due by the user's clock,
//! since its deadline is on that clock and not the loop's.
//!
//! An exception from the user's `time()` leaves the loop as asyncio's
//! leaves `_run_once`: what is queued stays queued (native watchers already
//! reported get their fds re-armed), and it propagates out of `run_forever`
//! or `call_later`.

use std::sync::atomic::Ordering;

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyType;

use super::LoopCore;

/// `time` is assigned on the instance.
pub(crate) const INSTANCE: u8 = 1;
/// The loop's class overrides `time`.
pub(crate) const TYPE: u8 = 2;

/// Whether `cls` resolves `time` to something other than `LoopCore.time`.
pub(crate) fn type_overrides_time(cls: &Bound<'_, PyType>) -> PyResult<bool> {
    let py = cls.py();
    let name = intern!(py, "time");
    let native = py.get_type::<LoopCore>().getattr(name)?;
    Ok(!cls.getattr(name)?.is(&native))
}

impl LoopCore {
    /// The override bits (`INSTANCE | TYPE`); 0: the native clock rules.
    #[inline(always)]
    pub(crate) fn user_clock(&self) -> bool {
        self.user_clock.load(Ordering::Relaxed) != 0
    }

    /// Sets or clears `bit`.
    pub(crate) fn set_user_clock(&self, bit: u8, on: bool) {
        if on {
            self.user_clock.fetch_or(bit, Ordering::Relaxed);
        } else {
            self.user_clock.fetch_and(!bit, Ordering::Relaxed);
        }
    }

    /// `self.time()`, called as asyncio calls it.
    #[cold]
    #[inline(never)]
    pub(crate) fn user_time(slf: &Bound<'_, Self>) -> PyResult<f64> {
        let t = slf.call_method0(intern!(slf.py(), "time"))?;
        t.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "loop.time() must return a real number, not {}",
                t.get_type()
                    .name()
                    .map_or_else(|_| "?".to_owned(), |n| n.to_string())
            ))
        })
    }

    /// The clock as the scheduler reads it: the native one, or `self.time()`
    /// when `user` (`user_clock()` read at the start of the iteration).
    #[inline(always)]
    pub(crate) fn sched_now(slf: &Bound<'_, Self>, user: bool) -> PyResult<f64> {
        if user {
            Self::user_time(slf)
        } else {
            Ok(slf.get().clock.now())
        }
    }

    /// Re-reads whether the loop's class overrides `time` (`TYPE`).
    pub(crate) fn check_type_clock(slf: &Bound<'_, Self>) -> PyResult<()> {
        let on = type_overrides_time(&slf.get_type())?;
        slf.get().set_user_clock(TYPE, on);
        Ok(())
    }
}
