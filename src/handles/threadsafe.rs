//! `call_soon_threadsafe`'s handle on CPython 3.14+ (`ThreadSafeHandle`):
//! asyncio's `_ThreadSafeHandle` makes `cancel()` and `cancelled()` from
//! another thread wait while the callback runs.
//!
//! Invariants:
//! - `RUNNING` is set before the loop checks `CANCELLED`, so a `cancel()`
//!   from another thread either lands first (the callback is skipped) or
//!   waits until the callback has returned (`settle`).
//! - A waiter sets `WAITERS` and reads `RUNNING` in one atomic step; the
//!   runner clears both in one step and then notifies under `SETTLE_LOCK`,
//!   so a wake-up is never lost.
//! - A callback may cancel its own handle without waiting for itself
//!   (`RUNNING_HERE`), as asyncio's re-entrant lock allows.

use std::sync::atomic::Ordering;

use pyo3::prelude::*;

use super::{Handle, RUNNING, THREADSAFE, WAITERS};

/// Where threads wait for a thread-safe handle's callback to return (one
/// pair for all handles: waiting is rare, and a wake-up is checked).
static SETTLE_LOCK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
static SETTLED: parking_lot::Condvar = parking_lot::Condvar::new();

thread_local! {
    /// Thread-safe handles whose callback runs on this thread.
    static RUNNING_HERE: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Handle {
    /// Runs a thread-safe handle (see the module's invariants).
    #[cold]
    pub(super) fn run_threadsafe(&self, py: Python<'_>) -> PyResult<()> {
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
    pub(super) fn settle(&self, py: Python<'_>) {
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
}

/// `call_soon_threadsafe`'s handle on 3.14+ (the `THREADSAFE` flag of the
/// base handle; see `Handle::run_threadsafe` and `Handle::settle`). Like
/// asyncio's class it is an `asyncio.Handle`: its `__class__` names
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
    /// A thread-safe handle around `base` (made by `Handle::new`), untracked
    /// by the garbage collector (the loop's custody).
    pub(crate) fn create(py: Python<'_>, base: Handle) -> PyResult<Bound<'_, ThreadSafeHandle>> {
        base.flags.fetch_or(THREADSAFE, Ordering::Relaxed);
        let obj = match super::free_list::reuse(py, super::free_list::THREADSAFE, base) {
            Ok(obj) => return Ok(obj),
            Err(base) => Bound::new(
                py,
                PyClassInitializer::from(base).add_subclass(ThreadSafeHandle),
            )?,
        };
        Handle::adopt(py, obj.as_unbound());
        Ok(obj)
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
