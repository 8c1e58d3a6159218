//! Timers: the state only timers have (`TimerState`, kept in the base
//! `Handle`) and `TimerHandle`, the Python-facing subclass that adds
//! `when()` and ordering.
//!
//! Invariants:
//! - A timer is `SCHEDULED` while it sits in the loop's timer heap.
//!   Cancelling a scheduled timer bumps the loop's cancelled-timer counter,
//!   which the loop uses to decide when to sweep the heap; whoever takes a
//!   timer out of the heap clears `SCHEDULED` and, if it was cancelled,
//!   takes it off the counter. Both bits live in one atomic, changed by
//!   fetch_or/fetch_and, so a cancel racing the removal counts exactly once.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::PyTuple;

use super::{Handle, CANCELLED, SCHEDULED};

/// What only timers have.
pub(crate) struct TimerState {
    /// The deadline on the loop's clock.
    pub(super) when: f64,
    /// The loop's count of cancelled timers still in its heap.
    pub(super) cancelled_in_heap: Arc<AtomicUsize>,
}

impl Handle {
    /// A timer at `when`, counted in `cancelled_in_heap` if cancelled while
    /// scheduled. It starts out scheduled: the caller puts it in the heap.
    pub(crate) fn new_timer(
        func: Py<PyAny>,
        args: Py<PyTuple>,
        context: Py<PyAny>,
        source_traceback: Option<Py<PyAny>>,
        when: f64,
        cancelled_in_heap: Arc<AtomicUsize>,
    ) -> Self {
        let mut h = Self::new(func, args, context, source_traceback);
        h.flags = AtomicU8::new(SCHEDULED);
        h.timer = Some(TimerState {
            when,
            cancelled_in_heap,
        });
        h
    }

    /// The deadline, for timers.
    #[inline]
    pub(crate) fn when(&self) -> Option<f64> {
        self.timer.as_ref().map(|t| t.when)
    }

    /// Called by whoever takes this timer out of the loop's heap.
    pub(crate) fn unschedule(&self) {
        let before = self.flags.fetch_and(!SCHEDULED, Ordering::AcqRel);
        if before & SCHEDULED != 0 && before & CANCELLED != 0 {
            if let Some(t) = &self.timer {
                t.cancelled_in_heap.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// A callback scheduled at a point in time (`call_later`, `call_at`); the
/// timer state itself is in the base `Handle`.
#[pyclass(frozen, extends = Handle, module = "oxloop._core")]
pub struct TimerHandle;

impl TimerHandle {
    /// A timer object around `base` (made by `Handle::new_timer`), untracked
    /// by the garbage collector (the loop's custody).
    pub(crate) fn create(py: Python<'_>, base: Handle) -> PyResult<Bound<'_, TimerHandle>> {
        let obj = match super::free_list::reuse(py, super::free_list::TIMER, base) {
            Ok(obj) => return Ok(obj),
            Err(base) => Bound::new(py, PyClassInitializer::from(base).add_subclass(TimerHandle))?,
        };
        Handle::adopt(py, obj.as_unbound());
        Ok(obj)
    }
}

fn when_of(slf: &Bound<'_, TimerHandle>) -> f64 {
    slf.as_super().get().when().unwrap_or(f64::NAN)
}

#[pymethods]
impl TimerHandle {
    /// The absolute time, on `loop.time()`'s clock, when the callback runs.
    fn when(slf: &Bound<'_, Self>) -> f64 {
        when_of(slf)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let base: &Handle = slf.as_super().get();
        let when = format!("when={}", when_of(slf));
        base.repr_with(slf.py(), &slf.get_type().name()?.to_string(), Some(when))
    }

    fn __richcmp__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>, op: CompareOp) -> Py<PyAny> {
        let py = other.py();
        let other = match other.cast::<TimerHandle>() {
            Ok(t) => when_of(t),
            Err(_) => return py.NotImplemented(),
        };
        let mine = when_of(slf);
        let answer = match op {
            CompareOp::Lt => mine < other,
            CompareOp::Le => mine <= other,
            CompareOp::Gt => mine > other,
            CompareOp::Ge => mine >= other,
            // Equality stays identity, so handles remain hashable.
            CompareOp::Eq | CompareOp::Ne => return py.NotImplemented(),
        };
        answer
            .into_pyobject(py)
            .unwrap()
            .to_owned()
            .into_any()
            .unbind()
    }
}
