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
//! The copied context (`handles::hidden`). `call_soon_threadsafe` and the
//! timers copy the current `contextvars.Context` for each handle made
//! without `context=`; the copy is hidden from the collector while the
//! handle is in custody, and the handle's `traverse_contents` reports what
//! the copy references (its type's `tp_traverse`: the variables' mapping
//! and, while entered, the previous context) in place of the copy. Why a
//! cycle through the copy (a context variable's value that references the
//! loop or a callback) is still collected, and nothing live is freed:
//! - The collector's rule: an object is garbage when every reference to it
//!   comes from objects it examines, as reported by their `tp_traverse`,
//!   and they are garbage too. Each reported reference must be real and
//!   reported once; an unreported one only makes its target look
//!   referenced from outside (kept alive: a missed collection at worst).
//! - While hidden, the copy is referenced by its handle's callback alone
//!   (the callback holds the only reference from birth; it is tracked again
//!   before `get_context()` hands it out and before the loop lets go of a
//!   handle someone else holds, `release`). Its handle sits in one place
//!   of the loop (first invariant above), so each of the copy's references
//!   is reported once, by the loop, as the loop's own: the loop owns them
//!   through the handle. While the callback runs, the thread state and
//!   the running call also reference the copy (entered), but the handle is
//!   then a local of the loop and not reported at all (third invariant).
//! - A cycle loop -> handle -> copy -> value -> loop: the value's reference
//!   count has the copy's reference, which the loop reports; the loop's
//!   has the value's, which the value reports. With no reference from
//!   outside, both are garbage; clearing the loop releases the handle, the
//!   callback tracks the copy again and drops it (freed: it was held only
//!   there), and the value goes with it. Were the copy reported as an
//!   object instead, the collector would skip it (untracked objects are not
//!   examined) and the value would look referenced from outside: the cycle
//!   would leak. `tests/test_gc.py` checks such cycles (through the loop,
//!   through a queued callback that references the loop), after the handle
//!   ran, and that a copy handed out is tracked.
//! - Once the copy is tracked again it is an ordinary object: the
//!   handle's own `tp_traverse` reports it, and nothing reports its
//!   references on its behalf any more (`traverse_contents` checks the
//!   flag the reveal clears), so nothing is reported twice.
//! - What holds for the handle's other references holds for the copy's:
//!   they are reported as the loop's while the loop holds the handle, even
//!   if someone else holds the handle too (a `TimerHandle` kept to cancel
//!   it). Should the loop itself become garbage without being closed while
//!   such a handle lives on elsewhere, the collector may clear what only
//!   that handle references; closing the loop releases every handle first.
//!
//! Free-threaded builds: `release` reads `Py_REFCNT`, which is not exact
//! there; see `crate::portability` before setting `gil_used = false`.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::handles::Handle;

/// Drops the loop's reference to `h`, tracking it first if it is untracked
/// and someone else still holds it (and its hidden context, if any: no one
/// reports the context's references once the loop lets go).
#[inline]
pub(crate) fn release(py: Python<'_>, h: Py<Handle>) {
    let p = h.as_ptr();
    // SAFETY: we hold the GIL and a reference to `p`, so it is alive and its
    // refcount stable; `PyObject_GC_Track` is called only on an untracked
    // object (checked just before), as CPython requires.
    unsafe {
        if ffi::Py_REFCNT(p) > 1 {
            h.get().reveal_context(py);
            if ffi::PyObject_GC_IsTracked(p) == 0 {
                ffi::PyObject_GC_Track(p.cast());
            }
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
