//! What the garbage collector is told about one-shot handles.
//!
//! Every `call_soon`/`call_later` makes a handle that holds the callback, its
//! arguments and a context. Were each handle tracked by the collector, every
//! collection would walk all queued handles (a loop with 10,000 pending
//! timers spends a third of its time in the collector that way). So a
//! one-shot handle is untracked from birth while the loop holds it, and the
//! loop's own `__traverse__` reports the handle's references on its behalf:
//! a cycle that runs through a queued handle is still seen and collected.
//!
//! Invariants:
//! - A one-shot handle sits in exactly one place of the loop (the ready
//!   queue, the spare queue or the timer heap), so its references are
//!   reported exactly once. `add_reader`/`add_writer` handles may be queued
//!   several times at once; they stay tracked and are reported as objects.
//! - When the loop lets go of a one-shot handle (it ran, was swept, or the
//!   loop closed) and someone else still holds it, the handle is tracked
//!   again before the loop's reference goes (`release`): from then on it is
//!   an ordinary object. A handle no one else holds is simply freed.
//! - A handle the loop holds only in a local variable (the batch being run)
//!   is not reported: its references look external, which keeps them alive
//!   for that moment. Missing a report is always safe; reporting twice never
//!   happens (first invariant).
//!
//! Free-threaded builds: `release` reads `Py_REFCNT`, which is not exact
//! there; see `crate::portability` before setting `gil_used = false`.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::handles::Handle;

/// Drops the loop's reference to `h`, tracking it first if it is untracked
/// and someone else still holds it.
pub(crate) fn release(_py: Python<'_>, h: Py<Handle>) {
    let p = h.as_ptr();
    // SAFETY: we hold the GIL and a reference to `p`, so it is alive and its
    // refcount stable; `PyObject_GC_Track` is called only on an untracked
    // object (checked just before), as CPython requires.
    unsafe {
        if ffi::PyObject_GC_IsTracked(p) == 0 && ffi::Py_REFCNT(p) > 1 {
            ffi::PyObject_GC_Track(p.cast());
        }
    }
    drop(h);
}

/// Reports a handle the loop holds: the object if the collector tracks it,
/// else what it references.
pub(crate) fn visit(h: &Py<Handle>, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
    // SAFETY: reading the tracked bit of a live object; the collector that
    // calls us holds the GIL.
    if unsafe { ffi::PyObject_GC_IsTracked(h.as_ptr()) } != 0 {
        visit.call(h)
    } else {
        h.get().traverse_contents(visit)
    }
}
