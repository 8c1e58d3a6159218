//! `Handle` and `TimerHandle`: a scheduled callback, its arguments and the
//! `contextvars.Context` it runs in.
//!
//! Layout: this module has the base `Handle` (what every handle holds, how
//! it runs and is cancelled); `timer` the timer state and `TimerHandle`;
//! `threadsafe` the 3.14+ `call_soon_threadsafe` handle; `repr` their
//! `repr()`; `free_list` the allocation of handle objects.
//!
//! Invariants:
//! - A handle is created on any thread but only run on the loop's thread.
//! - `cancel()` is idempotent; it drops the callback and its arguments at
//!   once (as asyncio does), so a cancelled far-away timer holds no memory
//!   but its own.
//! - The callback slot (`CallbackCell`) is guarded by the GIL, not by a
//!   lock: see its doc for the argument. No Python code runs, no Python
//!   object is allocated and none is released while the slot is borrowed.
//! - The timer state lives in the base `Handle` (`timer`), so the loop keeps
//!   every handle, timers included, as a `Py<Handle>`; `TimerHandle` is the
//!   Python-facing subclass that adds `when()` and ordering.
//! - One-shot handles (not `add_reader`/`add_writer` ones) are kept out of
//!   the garbage collector's lists while only the loop holds them; see
//!   `event_loop::custody`. `traverse_contents` lets the loop report what
//!   such a handle references.
//! - A one-shot handle's context, when the loop copied it for this handle,
//!   may be kept out of the collector's lists too, while only the loop holds
//!   it (`hidden`); `traverse_contents` then reports what the context holds.
//! - Handle objects of the three native types are allocated from, and freed
//!   to, free lists (`free_list`), not PyO3's generic slots. A recycled
//!   handle comes back untracked by the garbage collector: one-shot handles
//!   are untracked anyway (custody), and every other maker tracks it
//!   (`Handle::tracked`).

pub(crate) mod free_list;
mod hidden;
mod repr;
mod threadsafe;
mod timer;

use std::cell::UnsafeCell;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};

pub(crate) use threadsafe::stdlib_threadsafe;
pub use threadsafe::ThreadSafeHandle;
pub use timer::TimerHandle;
use timer::TimerState;

/// What a handle calls.
///
/// The fields are released by `Drop` with a plain `Py_DECREF`: a `Callback`
/// lives only in a `Handle`, and every place that lets one go (the handle's
/// deallocation, `cancel()`, the collector's `__clear__`, a failed
/// `Py::new`) is attached to the interpreter, so PyO3's per-drop check of
/// the thread state (a thread-local read for each of the three references)
/// is not needed.
pub(crate) struct Callback {
    /// The callable.
    func: ManuallyDrop<Py<PyAny>>,
    /// Positional arguments.
    args: ManuallyDrop<Py<PyTuple>>,
    /// The `contextvars.Context` the call runs in.
    context: ManuallyDrop<Py<PyAny>>,
    /// `context` is a copy only this callback holds, kept out of the
    /// collector's lists while the loop holds the handle (`hidden`).
    context_hidden: bool,
}

impl Drop for Callback {
    fn drop(&mut self) {
        // A hidden context is tracked again before its reference goes: it
        // may be the last one, and a context's dealloc unlinks it from the
        // collector's list (see `hidden`).
        self.reveal_context();
        // SAFETY: see the type's doc: whoever drops a Callback is attached
        // to the interpreter; each field is a strong reference we own and
        // never use again (they are ManuallyDrop, so not released twice).
        unsafe {
            ffi::Py_DECREF(self.func.as_ptr());
            ffi::Py_DECREF(self.args.as_ptr());
            ffi::Py_DECREF(self.context.as_ptr());
        }
    }
}

/// A strong reference released with a plain `Py_DECREF` (see `Callback`):
/// a handle's fields never go through PyO3's deferred-decref check, so
/// `handle_dealloc` may drop them without PyO3's trampoline.
pub(crate) struct RawRef(ManuallyDrop<Py<PyAny>>);

impl Drop for RawRef {
    fn drop(&mut self) {
        // SAFETY: as for `Callback`: dropped only by an attached thread; the
        // reference is ours and never used again.
        unsafe { ffi::Py_DECREF(self.0.as_ptr()) }
    }
}

impl std::ops::Deref for RawRef {
    type Target = Py<PyAny>;
    fn deref(&self) -> &Py<PyAny> {
        &self.0
    }
}

/// A callback's three references, borrowed for one call (released with a
/// direct `Py_DECREF` when they go, as `Bound` does). The call uses these
/// new references, not the slot's: a callback that cancels its own handle
/// releases the slot's while it runs.
struct CallbackRef<'py> {
    func: Bound<'py, PyAny>,
    args: Bound<'py, PyTuple>,
    context: Bound<'py, PyAny>,
}

/// A handle's callback slot, guarded by the GIL instead of a lock.
///
/// SAFETY argument (why `Sync` holds and no access overlaps another):
/// - Every access takes a `Python` token (or runs inside the collector's
///   `tp_traverse`/`tp_clear`, which run attached with the GIL held), and
///   `_core` is declared `gil_used = true`, so even a free-threaded
///   interpreter runs it with the GIL on (see `crate::portability`): two
///   threads never touch a slot at once.
/// - Within one thread, a borrow of the slot never outlives the method that
///   takes it, and no such method runs Python code, allocates a Python
///   object (which could start a collection, hence `tp_traverse`) or
///   releases one (which could run `__del__`, hence any code): `take`
///   hands the callback out to be dropped by the caller, `bind` only adds
///   references. So no re-entrant access can see a borrow in progress.
pub(crate) struct CallbackCell(UnsafeCell<Option<Callback>>);

// SAFETY: see the type's doc: the GIL serializes every access.
unsafe impl Sync for CallbackCell {}

impl CallbackCell {
    fn new(cb: Callback) -> Self {
        Self(UnsafeCell::new(Some(cb)))
    }

    /// Takes the callback out; the caller drops it (after this returns).
    #[inline]
    fn take(&self, _py: Python<'_>) -> Option<Callback> {
        // SAFETY: GIL held (`_py`); see the type's doc.
        unsafe { (*self.0.get()).take() }
    }

    /// New references to the callback's parts, if it is still there.
    #[inline]
    fn bind<'py>(&self, py: Python<'py>) -> Option<CallbackRef<'py>> {
        // SAFETY: GIL held (`py`); see the type's doc. Only increfs happen
        // while the slot is borrowed.
        let cb = unsafe { (*self.0.get()).as_ref() }?;
        Some(CallbackRef {
            func: cb.func.bind(py).clone(),
            args: cb.args.bind(py).clone(),
            context: cb.context.bind(py).clone(),
        })
    }

    /// The callback in the slot, for the collector's `tp_traverse`.
    ///
    /// # Safety
    /// Called by the collector (attached, GIL held); the borrow ends before
    /// the collector does anything else.
    unsafe fn peek(&self) -> Option<&Callback> {
        // SAFETY: see the type's doc and the function's contract.
        unsafe { (*self.0.get()).as_ref() }
    }
}

/// `Handle::flags`: `cancel()` was called.
const CANCELLED: u8 = 1;
/// `Handle::flags`: the timer sits in the loop's heap.
const SCHEDULED: u8 = 2;
/// `Handle::flags`: a `call_soon_threadsafe` handle of 3.14+ (see
/// `ThreadSafeHandle`): `cancel()`/`cancelled()` from another thread wait
/// while the callback runs.
const THREADSAFE: u8 = 4;
/// `Handle::flags`: the callback of a `THREADSAFE` handle is running.
const RUNNING: u8 = 8;
/// `Handle::flags`: a thread waits for `RUNNING` to clear (on `SETTLED`).
const WAITERS: u8 = 16;

/// A callback scheduled with `call_soon` (or registered with `add_reader`).
#[pyclass(frozen, subclass, weakref, module = "oxloop._core")]
pub struct Handle {
    /// The callback; `None` once cancelled or cleared by the GC.
    inner: CallbackCell,
    /// `CANCELLED`, `SCHEDULED`, `THREADSAFE`, `RUNNING` and `WAITERS` bits
    /// (atomic: a waiter in `threadsafe` changes them without the GIL).
    flags: AtomicU8,
    /// In debug mode, where the handle was made (a list of FrameSummary).
    source_traceback: Option<RawRef>,
    /// Deadline and heap accounting, for timers.
    timer: Option<TimerState>,
    /// When stats are on: the loop's clock (ns) when the handle was last
    /// queued; 0 when not stamped. See `event_loop::stats`.
    queued: AtomicU64,
}

impl Handle {
    pub(crate) fn new(
        func: Py<PyAny>,
        args: Py<PyTuple>,
        context: Py<PyAny>,
        source_traceback: Option<Py<PyAny>>,
    ) -> Self {
        Self {
            inner: CallbackCell::new(Callback {
                func: ManuallyDrop::new(func),
                args: ManuallyDrop::new(args),
                context: ManuallyDrop::new(context),
                context_hidden: false,
            }),
            flags: AtomicU8::new(0),
            source_traceback: source_traceback.map(|tb| RawRef(ManuallyDrop::new(tb))),
            timer: None,
            queued: AtomicU64::new(0),
        }
    }

    /// A new Python object for a handle the garbage collector tracks (one
    /// that is not left to the loop's custody): a recycled object comes
    /// back untracked (see `free_list`).
    pub(crate) fn tracked(py: Python<'_>, handle: Handle) -> PyResult<Py<Handle>> {
        let obj = Py::new(py, handle)?;
        // SAFETY: a live GC-capable object, GIL held; tracked only if it is
        // not already.
        unsafe {
            if ffi::PyObject_GC_IsTracked(obj.as_ptr()) == 0 {
                ffi::PyObject_GC_Track(obj.as_ptr().cast());
            }
        }
        Ok(obj)
    }

    /// Takes a new one-shot handle out of the collector's lists (the
    /// loop's custody, see `event_loop::custody`, which tracks it again if
    /// someone else keeps it).
    pub(crate) fn adopt<T>(_py: Python<'_>, h: &Py<T>) {
        // SAFETY: `h` is a live GC-capable object (a pyclass with
        // `__traverse__`) and we hold the GIL (`_py`); untracking a tracked
        // object is always allowed.
        unsafe { ffi::PyObject_GC_UnTrack(h.as_ptr().cast()) };
    }

    /// A new Python object for a one-shot handle, untracked by the garbage
    /// collector (the loop's custody, see `event_loop::custody`).
    #[inline]
    pub(crate) fn untracked(py: Python<'_>, handle: Handle) -> PyResult<Py<Handle>> {
        match free_list::reuse::<Handle>(py, free_list::PLAIN, handle) {
            Ok(obj) => Ok(obj.unbind()),
            Err(handle) => {
                let obj = Py::new(py, handle)?;
                Self::adopt(py, &obj);
                Ok(obj)
            }
        }
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & CANCELLED != 0
    }

    /// Records when the handle was queued (ns on the loop's clock; stats on).
    #[inline]
    pub(crate) fn stamp_queued(&self, now_ns: u64) {
        self.queued.store(now_ns, Ordering::Relaxed);
    }

    /// When it was last stamped (0: never).
    #[inline]
    pub(crate) fn queued_ns(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// How late it starts at `now_ns`: after it was queued, or, a timer
    /// that never was stamped, after its deadline (0 for an unstamped
    /// callback). The loop stamps timers only when they are due by a
    /// user's clock (`event_loop::user_clock`), whose deadlines are not on
    /// the loop's.
    /// (Its first test is a group's common case: a `call_soon` stamped
    /// with the reading the loop still runs on, no lag; see
    /// `event_loop::stats`.)
    #[inline]
    pub(crate) fn lag_ns(&self, now_ns: u64) -> u64 {
        let queued = self.queued.load(Ordering::Relaxed);
        if queued == now_ns {
            return 0;
        }
        match (queued, &self.timer) {
            // Signed conversions: one instruction each way (an early
            // start gives a negative lag, which counts as 0).
            (0, Some(t)) => ((now_ns as i64 as f64 * 1e-9 - t.when) * 1e9).max(0.0) as i64 as u64,
            (0, None) => 0,
            (q, _) => now_ns.saturating_sub(q),
        }
    }

    /// Marks the handle cancelled and releases its callback. Returns whether
    /// this call did it (false if it was cancelled already).
    pub(crate) fn cancel_inner(&self, py: Python<'_>) -> bool {
        let before = self.flags.fetch_or(CANCELLED, Ordering::AcqRel);
        if before & CANCELLED != 0 {
            return false;
        }
        if before & SCHEDULED != 0 {
            if let Some(t) = &self.timer {
                t.cancelled_in_heap.fetch_add(1, Ordering::AcqRel);
            }
        }
        let taken = self.inner.take(py);
        drop(taken); // after the slot's borrow: dropping may run Python code
        true
    }

    /// Reports what the handle references, for a loop that holds it while
    /// the handle itself is not tracked by the garbage collector. Called
    /// only from a `tp_traverse`.
    pub(crate) fn traverse_contents(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(tb) = &self.source_traceback {
            visit.call(&**tb)?;
        }
        // SAFETY: inside the collector's traverse (see `CallbackCell`); the
        // visits only read the references.
        if let Some(cb) = unsafe { self.inner.peek() } {
            visit.call(&*cb.func)?;
            visit.call(&*cb.args)?;
            if cb.context_hidden {
                // Untracked: reporting it would not report what it holds.
                hidden::visit_referents(&cb.context, visit)?;
            } else {
                visit.call(&*cb.context)?;
            }
        }
        Ok(())
    }

    /// `traverse_contents` for the raw slot (`free_list::traverse`): calls
    /// `visit` on each object the handle references (the traceback, the
    /// callback's three parts), stopping at the first non-zero answer,
    /// which it returns. Called only from a `tp_traverse` (see
    /// `CallbackCell`).
    pub(crate) fn visit_contents(
        &self,
        mut visit: impl FnMut(*mut ffi::PyObject) -> std::ffi::c_int,
    ) -> std::ffi::c_int {
        let tb = self.source_traceback.as_ref().map(|tb| tb.as_ptr());
        // SAFETY: inside the collector's traverse (see `CallbackCell`); the
        // visits only read the references.
        let cb = unsafe { self.inner.peek() };
        let parts = cb
            .into_iter()
            .flat_map(|cb| [cb.func.as_ptr(), cb.args.as_ptr(), cb.context.as_ptr()]);
        for p in tb.into_iter().chain(parts) {
            let ret = visit(p);
            if ret != 0 {
                return ret;
            }
        }
        0
    }

    /// Runs the callback in its context. A cancelled handle does nothing.
    #[inline]
    pub(crate) fn run(&self, py: Python<'_>) -> PyResult<()> {
        if self.flags.load(Ordering::Relaxed) & THREADSAFE != 0 {
            return self.run_threadsafe(py);
        }
        self.run_plain(py)
    }

    #[inline]
    fn run_plain(&self, py: Python<'_>) -> PyResult<()> {
        if self.is_cancelled() {
            return Ok(());
        }
        let Some(cb) = self.inner.bind(py) else {
            return Ok(());
        };
        let ctx = cb.context.as_ptr();
        // SAFETY: a type check on a live object, GIL held.
        if unsafe { ffi::PyContext_CheckExact(ctx) } == 0 {
            // Not a Context (call_soon takes any object, as asyncio's
            // Handle does): call its `run` as asyncio does, which for most
            // objects raises AttributeError, reported like any callback's.
            let run = cb.context.getattr(pyo3::intern!(py, "run"))?;
            let mut all = vec![cb.func.clone()];
            all.extend(cb.args.iter());
            return run.call1(PyTuple::new(py, all)?).map(drop);
        }
        // SAFETY: `ctx` is a live `contextvars.Context` (checked just above)
        // kept alive by `cb` for the whole call; we hold the GIL (`py`).
        if unsafe { ffi::PyContext_Enter(ctx) } < 0 {
            return Err(PyErr::fetch(py));
        }
        let (args, func) = (&cb.args, &cb.func);
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
}

#[pymethods]
impl Handle {
    /// Cancels the callback; a no-op if it already ran or was cancelled.
    /// On a thread-safe handle, waits while the callback runs on another
    /// thread.
    fn cancel(&self, py: Python<'_>) {
        if self.flags.load(Ordering::Relaxed) & THREADSAFE == 0 {
            self.cancel_inner(py);
            return;
        }
        self.settle(py);
        self.cancel_inner(py);
        // The callback may have started between the two: it saw no
        // cancellation, so wait for it as if it had started first.
        self.settle(py);
    }

    fn cancelled(&self, py: Python<'_>) -> bool {
        self.settle(py);
        self.is_cancelled()
    }

    /// The `contextvars.Context` the callback runs in (tracked by the
    /// collector from now on: Python holds it, see `hidden`).
    fn get_context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.reveal_context(py);
        self.inner.bind(py).map(|cb| cb.context.unbind())
    }

    /// The context, as asyncio's `_context` (`get_context()` from 3.12 on);
    /// tracked by the collector from now on, as for `get_context()`.
    #[getter]
    fn _context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.get_context(py)
    }

    /// The callback (None once cancelled); read-only, as in asyncio.
    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner.bind(py).map(|cb| cb.func.unbind())
    }

    /// The positional arguments (None once cancelled).
    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.inner.bind(py).map(|cb| cb.args.unbind())
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
        let class = slf.get_type().name()?.to_string();
        slf.get().repr_with(slf.py(), &class, None)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.traverse_contents(&visit)
    }

    fn __clear__(&self) {
        // SAFETY: the collector calls tp_clear attached, with the GIL held.
        let py = unsafe { Python::assume_attached() };
        let taken = self.inner.take(py);
        drop(taken); // after the slot's borrow: dropping may run Python code
    }
}
