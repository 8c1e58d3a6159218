//! `Handle` and `TimerHandle`: a scheduled callback, its arguments and the
//! `contextvars.Context` it runs in.
//!
//! Invariants:
//! - A handle is created on any thread but only run on the loop's thread.
//! - `cancel()` is idempotent; it drops the callback and its arguments at
//!   once (as asyncio does), so a cancelled far-away timer holds no memory
//!   but its own.
//! - A `TimerHandle` is `scheduled` while it sits in the loop's timer heap.
//!   Cancelling a scheduled timer bumps the loop's cancelled-timer counter,
//!   which the loop uses to decide when to sweep the heap; whoever takes a
//!   timer out of the heap clears `scheduled` and, if it was cancelled,
//!   takes it off the counter.
//! - No lock here is held while Python code runs or while a Python object is
//!   dropped.
//! - No `freelist`: with PyO3 0.30 an object reused from a pyclass freelist
//!   comes back without GC tracking, so a cycle through a recycled handle
//!   would never be collected (tests/test_gc.py catches it).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};

/// What a handle calls.
pub(crate) struct Callback {
    /// The callable.
    pub(crate) func: Py<PyAny>,
    /// Positional arguments.
    pub(crate) args: Py<PyTuple>,
    /// The `contextvars.Context` the call runs in.
    pub(crate) context: Py<PyAny>,
}

impl Callback {
    fn clone_ref(&self, py: Python<'_>) -> Self {
        Self {
            func: self.func.clone_ref(py),
            args: self.args.clone_ref(py),
            context: self.context.clone_ref(py),
        }
    }
}

/// A callback scheduled with `call_soon` (or registered with `add_reader`).
#[pyclass(frozen, subclass, weakref, module = "oxloop._core")]
pub struct Handle {
    /// The callback; `None` once cancelled or cleared by the GC.
    inner: Mutex<Option<Callback>>,
    /// Set by `cancel()`.
    cancelled: AtomicBool,
    /// In debug mode, where the handle was made (a list of FrameSummary).
    source_traceback: Option<Py<PyAny>>,
}

impl Handle {
    pub(crate) fn new(
        func: Py<PyAny>,
        args: Py<PyTuple>,
        context: Py<PyAny>,
        source_traceback: Option<Py<PyAny>>,
    ) -> Self {
        Self {
            inner: Mutex::new(Some(Callback {
                func,
                args,
                context,
            })),
            cancelled: AtomicBool::new(false),
            source_traceback,
        }
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Marks the handle cancelled and releases its callback. Returns whether
    /// this call did it (false if it was cancelled already).
    pub(crate) fn cancel_inner(&self) -> bool {
        if self.cancelled.swap(true, Ordering::AcqRel) {
            return false;
        }
        let taken = self.inner.lock().take();
        drop(taken); // outside the lock: dropping may run Python code
        true
    }

    /// Runs the callback in its context. A cancelled handle does nothing.
    #[inline]
    pub(crate) fn run(&self, py: Python<'_>) -> PyResult<()> {
        let cb = match &*self.inner.lock() {
            Some(cb) if !self.is_cancelled() => cb.clone_ref(py),
            _ => return Ok(()),
        };
        let ctx = cb.context.as_ptr();
        // SAFETY: `ctx` is a live `contextvars.Context` (checked when the
        // handle was made) kept alive by `cb` for the whole call; we hold the
        // GIL (`py`).
        if unsafe { ffi::PyContext_Enter(ctx) } < 0 {
            return Err(PyErr::fetch(py));
        }
        let args = cb.args.bind(py);
        let func = cb.func.bind(py);
        let result = if args.is_empty() {
            func.call0()
        } else {
            func.call1(args)
        };
        // SAFETY: as above; `ctx` was entered just before on this thread.
        if unsafe { ffi::PyContext_Exit(ctx) } < 0 {
            let exit_err = PyErr::fetch(py);
            return Err(result.err().unwrap_or(exit_err));
        }
        result.map(drop)
    }

    fn describe(&self, py: Python<'_>) -> PyResult<String> {
        let cb = match &*self.inner.lock() {
            Some(cb) => Some(cb.clone_ref(py)),
            None => None,
        };
        let mut text = String::new();
        if let Some(cb) = cb {
            let helpers = py.import("asyncio.format_helpers")?;
            text = helpers
                .call_method1("_format_callback_source", (cb.func, cb.args))?
                .extract()?;
        }
        if let Some(tb) = &self.source_traceback {
            let tb = tb.bind(py);
            if let Ok(last) = tb.get_item(tb.len()? - 1) {
                let file: String = last.getattr("filename")?.extract()?;
                let line: i64 = last.getattr("lineno")?.extract()?;
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(&format!("created at {file}:{line}"));
            }
        }
        Ok(text)
    }
}

#[pymethods]
impl Handle {
    /// Cancels the callback; a no-op if it already ran or was cancelled.
    fn cancel(&self) {
        self.cancel_inner();
    }

    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    /// The `contextvars.Context` the callback runs in.
    fn get_context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner.lock().as_ref().map(|cb| cb.context.clone_ref(py))
    }

    /// The callback (None once cancelled); read-only, as in asyncio.
    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner.lock().as_ref().map(|cb| cb.func.clone_ref(py))
    }

    /// The positional arguments (None once cancelled).
    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.inner.lock().as_ref().map(|cb| cb.args.clone_ref(py))
    }

    /// In debug mode, the stack where the handle was made; else None.
    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.source_traceback.as_ref().map(|tb| tb.clone_ref(py))
    }

    /// Runs the callback now, in its context (what the loop does).
    fn _run(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let this = slf.get();
        let mut parts = vec![slf.get_type().name()?.to_string()];
        if this.is_cancelled() {
            parts.push("cancelled".into());
        }
        let src = this.describe(slf.py())?;
        if !src.is_empty() {
            parts.push(src);
        }
        Ok(format!("<{}>", parts.join(" ")))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(tb) = &self.source_traceback {
            visit.call(tb)?;
        }
        if let Some(guard) = self.inner.try_lock() {
            if let Some(cb) = &*guard {
                visit.call(&cb.func)?;
                visit.call(&cb.args)?;
                visit.call(&cb.context)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let taken = self.inner.lock().take();
        drop(taken);
    }
}

/// A callback scheduled at a point in time (`call_later`, `call_at`).
#[pyclass(frozen, extends = Handle, module = "oxloop._core")]
pub struct TimerHandle {
    /// The deadline on the loop's clock.
    when: f64,
    /// True while the handle sits in the loop's timer heap.
    scheduled: AtomicBool,
    /// The loop's count of cancelled timers still in its heap.
    cancelled_in_heap: Arc<AtomicUsize>,
}

impl TimerHandle {
    pub(crate) fn new(when: f64, cancelled_in_heap: Arc<AtomicUsize>) -> Self {
        Self {
            when,
            scheduled: AtomicBool::new(true),
            cancelled_in_heap,
        }
    }

    #[inline]
    pub(crate) fn when_secs(&self) -> f64 {
        self.when
    }

    /// Called by whoever takes this timer out of the heap.
    pub(crate) fn unschedule(&self, base: &Handle) {
        if self.scheduled.swap(false, Ordering::AcqRel) && base.is_cancelled() {
            self.cancelled_in_heap.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[pymethods]
impl TimerHandle {
    fn cancel(slf: &Bound<'_, Self>) {
        let this = slf.get();
        let base: &Handle = slf.as_super().get();
        if base.cancel_inner() && this.scheduled.load(Ordering::Acquire) {
            this.cancelled_in_heap.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The absolute time, on `loop.time()`'s clock, when the callback runs.
    fn when(&self) -> f64 {
        self.when
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let base: &Handle = slf.as_super().get();
        let mut parts = vec![slf.get_type().name()?.to_string()];
        if base.is_cancelled() {
            parts.push("cancelled".into());
        }
        parts.push(format!("when={}", slf.get().when));
        let src = base.describe(slf.py())?;
        if !src.is_empty() {
            parts.push(src);
        }
        Ok(format!("<{}>", parts.join(" ")))
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> Py<PyAny> {
        let py = other.py();
        let other = match other.cast::<TimerHandle>() {
            Ok(t) => t.get().when,
            Err(_) => return py.NotImplemented(),
        };
        let answer = match op {
            CompareOp::Lt => self.when < other,
            CompareOp::Le => self.when <= other,
            CompareOp::Gt => self.when > other,
            CompareOp::Ge => self.when >= other,
            // Equality stays identity, so handles remain hashable.
            CompareOp::Eq | CompareOp::Ne => return py.NotImplemented(),
        };
        answer.into_pyobject(py).unwrap().to_owned().into_any().unbind()
    }
}
