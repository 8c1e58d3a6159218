//! `Handle` and `TimerHandle`: a scheduled callback, its arguments and the
//! `contextvars.Context` it runs in.
//!
//! Invariants:
//! - A handle is created on any thread but only run on the loop's thread.
//! - `cancel()` is idempotent; it drops the callback and its arguments at
//!   once (as asyncio does), so a cancelled far-away timer holds no memory
//!   but its own.
//! - A timer is `SCHEDULED` while it sits in the loop's timer heap.
//!   Cancelling a scheduled timer bumps the loop's cancelled-timer counter,
//!   which the loop uses to decide when to sweep the heap; whoever takes a
//!   timer out of the heap clears `SCHEDULED` and, if it was cancelled,
//!   takes it off the counter. Both bits live in one atomic, changed by
//!   fetch_or/fetch_and, so a cancel racing the removal counts exactly once.
//! - The timer state lives in the base `Handle` (`timer`), so the loop keeps
//!   every handle, timers included, as a `Py<Handle>`; `TimerHandle` is the
//!   Python-facing subclass that adds `when()` and ordering.
//! - One-shot handles (not `add_reader`/`add_writer` ones) are kept out of
//!   the garbage collector's lists while only the loop holds them; see
//!   `event_loop::custody`. `traverse_contents` lets the loop report what
//!   such a handle references.
//! - No lock here is held while Python code runs or while a Python object is
//!   dropped.
//! - Plain `Handle` objects (the exact type) are allocated from, and freed
//!   to, a free list with their own `tp_alloc`/`tp_dealloc` (`free_list`),
//!   not PyO3's generic ones. A recycled handle comes back untracked by the
//!   garbage collector: one-shot handles are untracked anyway (custody),
//!   and every other maker tracks it (`Handle::tracked`). PyO3's own
//!   `freelist` option is not used: it leaves that to each caller too and
//!   keeps PyO3's slower dealloc.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};

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
}

impl Drop for Callback {
    fn drop(&mut self) {
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
/// direct `Py_DECREF` when they go, as `Bound` does).
struct CallbackRef<'py> {
    func: Bound<'py, PyAny>,
    args: Bound<'py, PyTuple>,
    context: Bound<'py, PyAny>,
}

impl Callback {
    fn bind<'py>(&self, py: Python<'py>) -> CallbackRef<'py> {
        CallbackRef {
            func: self.func.bind(py).clone(),
            args: self.args.bind(py).clone(),
            context: self.context.bind(py).clone(),
        }
    }
}

/// Whether `asyncio.format_helpers` takes `debug=` (CPython 3.14+).
static FORMAT_TAKES_DEBUG: pyo3::sync::PyOnceLock<bool> = pyo3::sync::PyOnceLock::new();

fn format_takes_debug(py: Python<'_>, helpers: &Bound<'_, PyAny>) -> PyResult<bool> {
    FORMAT_TAKES_DEBUG
        .get_or_try_init(py, || {
            let code = helpers
                .getattr("_format_args_and_kwargs")?
                .getattr("__code__")?;
            let kwonly: usize = code.getattr("co_kwonlyargcount")?.extract()?;
            Ok::<bool, PyErr>(kwonly > 0)
        })
        .copied()
}

thread_local! {
    /// Handles whose repr is being built on this thread.
    static IN_REPR: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Marks a handle as being repr'd on this thread until dropped.
struct ReprGuard(usize);

impl ReprGuard {
    fn enter(id: usize) -> Option<Self> {
        IN_REPR.with(|v| {
            let mut v = v.borrow_mut();
            if v.contains(&id) {
                None
            } else {
                v.push(id);
                Some(ReprGuard(id))
            }
        })
    }
}

impl Drop for ReprGuard {
    fn drop(&mut self) {
        IN_REPR.with(|v| v.borrow_mut().retain(|&x| x != self.0));
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

/// Where threads wait for a thread-safe handle's callback to return (one
/// pair for all handles: waiting is rare, and a wake-up is checked).
static SETTLE_LOCK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
static SETTLED: parking_lot::Condvar = parking_lot::Condvar::new();

thread_local! {
    /// Thread-safe handles whose callback runs on this thread (a callback
    /// may cancel its own handle without waiting for itself, as asyncio's
    /// re-entrant lock allows).
    static RUNNING_HERE: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What only timers have.
pub(crate) struct TimerState {
    /// The deadline on the loop's clock.
    when: f64,
    /// The loop's count of cancelled timers still in its heap.
    cancelled_in_heap: Arc<AtomicUsize>,
}

/// A callback scheduled with `call_soon` (or registered with `add_reader`).
#[pyclass(frozen, subclass, weakref, module = "oxloop._core")]
pub struct Handle {
    /// The callback; `None` once cancelled or cleared by the GC.
    inner: Mutex<Option<Callback>>,
    /// `CANCELLED` and `SCHEDULED` bits.
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
            inner: Mutex::new(Some(Callback {
                func: ManuallyDrop::new(func),
                args: ManuallyDrop::new(args),
                context: ManuallyDrop::new(context),
            })),
            flags: AtomicU8::new(0),
            source_traceback: source_traceback.map(|tb| RawRef(ManuallyDrop::new(tb))),
            timer: None,
            queued: AtomicU64::new(0),
        }
    }

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

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & CANCELLED != 0
    }

    /// The deadline, for timers.
    #[inline]
    pub(crate) fn when(&self) -> Option<f64> {
        self.timer.as_ref().map(|t| t.when)
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
    #[inline]
    pub(crate) fn lag_ns(&self, now_ns: u64) -> u64 {
        match (self.queued.load(Ordering::Relaxed), &self.timer) {
            // Signed conversions: one instruction each way (an early
            // start gives a negative lag, which counts as 0).
            (0, Some(t)) => ((now_ns as i64 as f64 * 1e-9 - t.when) * 1e9).max(0.0) as i64 as u64,
            (0, None) => 0,
            (q, _) => now_ns.saturating_sub(q),
        }
    }

    /// Marks the handle cancelled and releases its callback. Returns whether
    /// this call did it (false if it was cancelled already).
    pub(crate) fn cancel_inner(&self) -> bool {
        let before = self.flags.fetch_or(CANCELLED, Ordering::AcqRel);
        if before & CANCELLED != 0 {
            return false;
        }
        if before & SCHEDULED != 0 {
            if let Some(t) = &self.timer {
                t.cancelled_in_heap.fetch_add(1, Ordering::AcqRel);
            }
        }
        let taken = self.inner.lock().take();
        drop(taken); // outside the lock: dropping may run Python code
        true
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

    /// Reports what the handle references, for a loop that holds it while
    /// the handle itself is not tracked by the garbage collector.
    pub(crate) fn traverse_contents(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(tb) = &self.source_traceback {
            visit.call(&**tb)?;
        }
        if let Some(guard) = self.inner.try_lock() {
            if let Some(cb) = &*guard {
                visit.call(&*cb.func)?;
                visit.call(&*cb.args)?;
                visit.call(&*cb.context)?;
            }
        }
        Ok(())
    }

    /// Runs the callback in its context. A cancelled handle does nothing.
    #[inline]
    pub(crate) fn run(&self, py: Python<'_>) -> PyResult<()> {
        if self.flags.load(Ordering::Relaxed) & THREADSAFE != 0 {
            return self.run_threadsafe(py);
        }
        self.run_plain(py)
    }

    /// Runs a thread-safe handle: `RUNNING` is set before the cancelled
    /// check, so a `cancel()` from another thread either lands first (the
    /// callback is skipped) or waits until the callback has returned.
    #[cold]
    fn run_threadsafe(&self, py: Python<'_>) -> PyResult<()> {
        let id = self as *const Self as usize;
        self.flags.fetch_or(RUNNING, Ordering::AcqRel);
        RUNNING_HERE.with(|v| v.borrow_mut().push(id));
        let result = self.run_plain(py);
        RUNNING_HERE.with(|v| v.borrow_mut().retain(|&x| x != id));
        let before = self.flags.fetch_and(!(RUNNING | WAITERS), Ordering::AcqRel);
        if before & WAITERS != 0 {
            // Taking the lock orders this wake-up after the waiter's wait.
            let _guard = SETTLE_LOCK.lock();
            SETTLED.notify_all();
        }
        result
    }

    /// For a thread-safe handle: returns once its callback is not running,
    /// unless it runs on this very thread. The GIL is released meanwhile.
    fn settle(&self, py: Python<'_>) {
        if self.flags.load(Ordering::Acquire) & RUNNING == 0 {
            return;
        }
        let id = self as *const Self as usize;
        if RUNNING_HERE.with(|v| v.borrow().contains(&id)) {
            return;
        }
        py.detach(|| {
            let mut guard = SETTLE_LOCK.lock();
            // WAITERS is set and RUNNING checked in one step: the runner
            // clears both in one step too, and then notifies under the lock.
            while self.flags.fetch_or(WAITERS, Ordering::AcqRel) & RUNNING != 0 {
                SETTLED.wait(&mut guard);
            }
            self.flags.fetch_and(!WAITERS, Ordering::AcqRel);
        });
    }

    #[inline]
    fn run_plain(&self, py: Python<'_>) -> PyResult<()> {
        let cb = match &*self.inner.lock() {
            Some(cb) if !self.is_cancelled() => cb.bind(py),
            _ => return Ok(()),
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

    fn describe(&self, py: Python<'_>) -> PyResult<String> {
        // A handle whose arguments contain the handle would recurse through
        // repr(); show it as "..." the second time, as reprlib does.
        let Some(_guard) = ReprGuard::enter(self as *const Self as usize) else {
            return Ok("...".into());
        };
        let cb = self.inner.lock().as_ref().map(|cb| cb.bind(py));
        let mut text = String::new();
        if let Some(cb) = cb {
            let helpers = py.import("asyncio.format_helpers")?;
            let format = helpers.getattr("_format_callback_source")?;
            // From 3.14 on asyncio shows a callback's arguments in debug mode
            // only (`debug=`); a handle made in debug mode has a traceback.
            text = if self.source_traceback.is_some() && format_takes_debug(py, &helpers)? {
                let kwargs = pyo3::types::PyDict::new(py);
                kwargs.set_item("debug", true)?;
                format.call((cb.func, cb.args), Some(&kwargs))?
            } else {
                format.call1((cb.func, cb.args))?
            }
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
    /// On a thread-safe handle, waits while the callback runs on another
    /// thread.
    fn cancel(&self, py: Python<'_>) {
        if self.flags.load(Ordering::Relaxed) & THREADSAFE == 0 {
            self.cancel_inner();
            return;
        }
        self.settle(py);
        self.cancel_inner();
        // The callback may have started between the two: it saw no
        // cancellation, so wait for it as if it had started first.
        self.settle(py);
    }

    fn cancelled(&self, py: Python<'_>) -> bool {
        self.settle(py);
        self.is_cancelled()
    }

    /// The `contextvars.Context` the callback runs in.
    fn get_context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner
            .lock()
            .as_ref()
            .map(|cb| cb.context.clone_ref(py))
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
        self.traverse_contents(&visit)
    }

    fn __clear__(&self) {
        let taken = self.inner.lock().take();
        drop(taken);
    }
}

/// `call_soon_threadsafe`'s handle on CPython 3.14+, where asyncio's
/// `_ThreadSafeHandle` makes `cancel()` and `cancelled()` from another
/// thread wait while the callback runs (the `THREADSAFE` flag of the base
/// handle; see `Handle::run_threadsafe` and `Handle::settle`). Like asyncio's
/// class it is an `asyncio.Handle`: its `__class__` names
/// `asyncio.events._ThreadSafeHandle`, so `isinstance` answers as for
/// asyncio's handle, while `type()` shows this native class.
#[pyclass(frozen, extends = Handle, name = "_ThreadSafeHandle", module = "oxloop._core")]
pub struct ThreadSafeHandle;

/// `asyncio.events._ThreadSafeHandle` (None before 3.14).
static STDLIB_THREADSAFE: pyo3::sync::PyOnceLock<Option<Py<PyAny>>> = pyo3::sync::PyOnceLock::new();

/// asyncio's thread-safe handle class, if this Python has one.
pub(crate) fn stdlib_threadsafe(py: Python<'_>) -> PyResult<Option<&Py<PyAny>>> {
    STDLIB_THREADSAFE
        .get_or_try_init(py, || {
            let events = py.import("asyncio.events")?;
            Ok::<_, PyErr>(events.getattr_opt("_ThreadSafeHandle")?.map(Bound::unbind))
        })
        .map(Option::as_ref)
}

impl ThreadSafeHandle {
    /// A thread-safe handle around `base` (made by `Handle::new`).
    pub(crate) fn create(py: Python<'_>, base: Handle) -> PyResult<Bound<'_, ThreadSafeHandle>> {
        base.flags.fetch_or(THREADSAFE, Ordering::Relaxed);
        Bound::new(
            py,
            PyClassInitializer::from(base).add_subclass(ThreadSafeHandle),
        )
    }
}

#[pymethods]
impl ThreadSafeHandle {
    /// asyncio's `_ThreadSafeHandle`, which this handle stands for.
    #[getter]
    fn __class__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        Ok(match stdlib_threadsafe(py)? {
            Some(cls) => cls.clone_ref(py),
            None => slf.get_type().into_any().unbind(),
        })
    }
}

/// A callback scheduled at a point in time (`call_later`, `call_at`); the
/// timer state itself is in the base `Handle`.
#[pyclass(frozen, extends = Handle, module = "oxloop._core")]
pub struct TimerHandle;

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
        let mut parts = vec![slf.get_type().name()?.to_string()];
        if base.is_cancelled() {
            parts.push("cancelled".into());
        }
        parts.push(format!("when={}", when_of(slf)));
        let src = base.describe(slf.py())?;
        if !src.is_empty() {
            parts.push(src);
        }
        Ok(format!("<{}>", parts.join(" ")))
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

/// Free lists of handle objects and the type slots that use them.
///
/// `call_soon` makes a handle and the loop frees it a moment later; the
/// generic path zeroes a fresh object (`PyType_GenericAlloc`) and frees it
/// through PyO3's dealloc trampoline. Here a freed handle (its fields
/// dropped, untracked, its weak references cleared) is kept for reuse, and
/// dealloc drops the fields directly (every field of a `Handle` is released
/// with a plain `Py_DECREF` or is not a Python object: no PyO3 GIL
/// bookkeeping is needed). PyO3 writes every field of the object it gets
/// from `tp_alloc`, so a recycled one needs no zeroing. `Handle`,
/// `TimerHandle` and `ThreadSafeHandle` each have a list; the two
/// subclasses add no field (checked below), so dropping the base `Handle`
/// is dropping all of it.
///
/// Invariants:
/// - A list holds only objects of exactly its type; Python subclasses take
///   the generic path (`PyType_GenericAlloc`, `tp_free`).
/// - The lists are touched only by a thread attached to the interpreter
///   with the GIL (tp_alloc/tp_dealloc); see `crate::portability` before a
///   free-threaded build.
/// - A recycled object is untracked; `Handle::tracked` tracks it where the
///   handle is not left to the loop's custody.
pub(crate) mod free_list {
    use std::cell::UnsafeCell;

    use pyo3::ffi;
    use pyo3::prelude::*;
    use pyo3::PyTypeInfo;

    use super::{Handle, ThreadSafeHandle, TimerHandle};

    // The subclasses' own parts must need no dropping (see above).
    const _: () = assert!(
        std::mem::size_of::<TimerHandle>() == 0
            && !std::mem::needs_drop::<TimerHandle>()
            && std::mem::size_of::<ThreadSafeHandle>() == 0
            && !std::mem::needs_drop::<ThreadSafeHandle>()
    );

    const CAPACITY: usize = 256;
    const TYPES: usize = 3;

    struct List {
        ty: *mut ffi::PyTypeObject,
        len: usize,
        objs: [*mut ffi::PyObject; CAPACITY],
    }

    struct Shared(UnsafeCell<[List; TYPES]>);
    // SAFETY: only touched with the GIL held (see the module's invariants).
    unsafe impl Sync for Shared {}

    const EMPTY: List = List {
        ty: std::ptr::null_mut(),
        len: 0,
        objs: [std::ptr::null_mut(); CAPACITY],
    };
    static LISTS: Shared = Shared(UnsafeCell::new([EMPTY; TYPES]));

    /// Installs the slots on the three handle types (once, at module init,
    /// before any handle exists).
    pub(crate) fn install(py: Python<'_>) {
        let types = [
            Handle::type_object_raw(py),
            TimerHandle::type_object_raw(py),
            ThreadSafeHandle::type_object_raw(py),
        ];
        // SAFETY: GIL held; the types are ours (heap types made by PyO3)
        // and have no instances yet; CPython reads these slots at each use.
        unsafe {
            let lists = &mut *LISTS.0.get();
            for (list, ty) in lists.iter_mut().zip(types) {
                list.ty = ty;
                (*ty).tp_alloc = Some(alloc);
                (*ty).tp_dealloc = Some(dealloc);
            }
        }
    }

    /// The list of objects of exactly `ty`, if it has one.
    #[inline(always)]
    unsafe fn list_of(ty: *mut ffi::PyTypeObject) -> Option<&'static mut List> {
        // SAFETY: GIL held by the caller (see the module's invariants).
        unsafe { (*LISTS.0.get()).iter_mut().find(|l| l.ty == ty) }
    }

    unsafe extern "C" fn alloc(
        subtype: *mut ffi::PyTypeObject,
        nitems: ffi::Py_ssize_t,
    ) -> *mut ffi::PyObject {
        // SAFETY: CPython calls tp_alloc with the GIL held.
        unsafe {
            if nitems == 0 {
                if let Some(list) = list_of(subtype).filter(|l| l.len > 0) {
                    list.len -= 1;
                    let obj = list.objs[list.len];
                    // Sets the type (a new reference to it), a refcount of 1.
                    ffi::PyObject_Init(obj, subtype);
                    return obj;
                }
            }
            ffi::PyType_GenericAlloc(subtype, nitems)
        }
    }

    unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
        // SAFETY: CPython calls tp_dealloc with the GIL held, on an object
        // of a handle type or a Python subclass of one, once no reference
        // is left. The fields are dropped exactly once, before the memory
        // is freed or recycled.
        unsafe {
            ffi::PyObject_GC_UnTrack(obj.cast());
            let ty = ffi::Py_TYPE(obj);
            // PyO3 keeps the weak-reference list in the object, at the
            // offset it gives the base type (inherited by the others).
            let weak_offset = (*(*LISTS.0.get())[0].ty).tp_weaklistoffset;
            if weak_offset > 0 {
                let slot = obj
                    .cast::<u8>()
                    .offset(weak_offset)
                    .cast::<*mut ffi::PyObject>();
                if !(*slot).is_null() {
                    ffi::PyObject_ClearWeakRefs(obj);
                }
            } else if weak_offset != 0 {
                // Not PyO3's slot in the object: let CPython find the list.
                ffi::PyObject_ClearWeakRefs(obj);
            }
            let py = Python::assume_attached();
            let handle: *const Handle = pyo3::Borrowed::from_ptr(py, obj)
                .cast_unchecked::<Handle>()
                .get();
            // The value lives in PyO3's UnsafeCell: writing through it is
            // allowed, and no reference to it is left.
            std::ptr::drop_in_place(handle.cast_mut());
            match list_of(ty).filter(|l| l.len < CAPACITY) {
                Some(list) => {
                    list.objs[list.len] = obj;
                    list.len += 1;
                }
                None => {
                    if let Some(free) = (*ty).tp_free {
                        free(obj.cast());
                    }
                }
            }
            // Instances of heap types own a reference to their type.
            ffi::Py_DECREF(ty.cast());
        }
    }
}
