//! What the loop's fd table (`io`) holds and hands back: the native
//! watchers it calls (`IoWatcher`; `Watch<T>`, the entry of a `Watched`
//! transport or listener), the waiters of a shared entry's sides
//! (`Waiter`), and what a change of the table took out (`Replaced`),
//! disposed of by the caller once the loop's lock is released.
//!
//! Invariant: nothing here runs Python code under the loop's lock; what
//! `Replaced` holds is dropped or told (`dispose`) after it.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use super::LoopCore;
use crate::handles::Handle;
use crate::reactor::Readiness;

/// Something native that wants to hear when an fd is ready.
pub trait IoWatcher: Send + Sync {
    /// Called on the loop's thread, with the GIL held, when the fd is ready.
    /// An error is reported to the loop's exception handler (or propagated,
    /// for `KeyboardInterrupt`/`SystemExit`).
    fn on_ready(&self, py: Python<'_>, lp: &Bound<'_, LoopCore>, ready: Readiness) -> PyResult<()>;

    /// Visits the Python objects the watcher holds.
    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError>;

    /// What `add_reader` says when the fd is taken (e.g. "transport <...>").
    fn describe(&self, py: Python<'_>) -> String;

    /// This watcher waited on one direction of a `Shared` entry and was
    /// replaced there (`add_reader`, `remove_reader`, a transport taking
    /// the fd). Called without the loop's lock.
    fn evicted(&self, _py: Python<'_>, _write: bool) {}
}

/// A native resource that owns its fd (a transport, a listener: a frozen
/// pyclass); `Watch` is its entry in the table.
pub(crate) trait Watched:
    pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync
{
    /// The fd is ready (`IoWatcher::on_ready`).
    fn on_ready(slf: &Bound<'_, Self>, lp: &Bound<'_, LoopCore>, ready: Readiness) -> PyResult<()>;

    /// What `add_reader` says when the fd is taken; runs no Python code
    /// (the loop may ask under its lock), so it must not block on the
    /// resource's lock either.
    fn describe(&self) -> String;
}

/// The loop's handle on a `Watched` resource: keeps it alive while its fd
/// is registered.
pub(crate) struct Watch<T: Watched>(pub(crate) Py<T>);

impl<T: Watched> Watch<T> {
    /// The entry for `slf` (what `Registration::set_interest` registers).
    pub(crate) fn of(slf: &Bound<'_, T>) -> Arc<dyn IoWatcher> {
        Arc::new(Self(slf.clone().unbind()))
    }
}

impl<T: Watched> IoWatcher for Watch<T> {
    #[inline]
    fn on_ready(&self, py: Python<'_>, lp: &Bound<'_, LoopCore>, ready: Readiness) -> PyResult<()> {
        T::on_ready(self.0.bind(py), lp, ready)
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.0)
    }

    fn describe(&self, _py: Python<'_>) -> String {
        self.0.get().describe()
    }
}

/// The identity of a watcher (the address of its data), for "is this
/// direction still mine" checks.
pub(crate) fn watcher_id(w: &dyn IoWatcher) -> *const () {
    w as *const dyn IoWatcher as *const ()
}

/// Who waits on one direction of a `Shared` entry.
pub(crate) enum Waiter {
    /// An `add_reader`/`add_writer` callback.
    Callback(Py<Handle>),
    /// A native waiter for this direction (a pending socket operation).
    Native(Arc<dyn IoWatcher>),
}

impl Waiter {
    pub(super) fn is(&self, id: *const ()) -> bool {
        matches!(self, Waiter::Native(w) if Arc::as_ptr(w) as *const () == id)
    }
}

/// What a change took out of the table: disposed of (callbacks cancelled,
/// native waiters told, file objects released) by the caller once the
/// loop's lock is released.
#[must_use]
#[derive(Default)]
pub(crate) struct Replaced {
    /// The waiters taken out, with their side (`true`: writer).
    pub(super) waiters: Vec<(Waiter, bool)>,
    /// The file objects of removed entries.
    pub(super) objs: Vec<Py<PyAny>>,
}

impl Replaced {
    pub(super) fn push(&mut self, waiter: Option<Waiter>, write: bool) {
        if let Some(w) = waiter {
            self.waiters.push((w, write));
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiters.is_empty() && self.objs.is_empty()
    }

    /// Cancels the replaced callbacks and tells the replaced native waiters.
    /// True if a waiter was replaced.
    pub(crate) fn dispose(self, py: Python<'_>) -> bool {
        let any = !self.waiters.is_empty();
        drop(self.objs);
        for (waiter, write) in self.waiters {
            match waiter {
                Waiter::Callback(h) => {
                    h.get().cancel_inner(py);
                }
                Waiter::Native(w) => w.evicted(py, write),
            }
        }
        any
    }

    /// Drops what was taken without telling anyone (a native waiter that
    /// removed itself), after the loop's lock.
    pub(crate) fn forget(self) {
        drop(self);
    }
}
