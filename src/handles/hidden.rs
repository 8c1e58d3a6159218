//! A handle's copied context, hidden from the garbage collector while only
//! the loop holds it.
//!
//! `call_soon_threadsafe` and `call_later`/`call_at` without `context=`
//! copy the current `contextvars.Context` for each handle
//! (`PyContext_CopyCurrent`: a new object, tracked by the collector). A
//! burst of 10,000 such calls leaves 10,000 copies in the collector's
//! youngest list; they survive its passes (the loop holds them) and are
//! walked again by every older one. So, as the handle itself
//! (`event_loop::custody`), the copy is taken out of the collector's lists
//! when the handle goes into the loop's custody (`Handle::hide_context`),
//! and the loop reports what the copy references (`visit_referents`, from
//! `Handle::traverse_contents`). Why cycles through the copy are still
//! collected is argued in `event_loop::custody`.
//!
//! Invariants:
//! - Only a context nothing but this handle's callback references is
//!   hidden: the copy made for it (the caller's promise to `hide_context`).
//!   A context given with `context=` is never hidden: others hold it.
//! - A hidden context is tracked again (`reveal_context`) whenever it may
//!   stop being the loop's alone: before Python gets it (`get_context()`),
//!   when the loop lets go of a handle someone else still holds
//!   (`event_loop::custody::release`), and before the callback's reference
//!   to it goes (`Callback`'s `Drop`: cancel, the collector's `__clear__`,
//!   the handle's dealloc). The last matters for memory safety, not only
//!   for leaks: a context's dealloc unlinks it from the collector's list
//!   unconditionally (`_PyObject_GC_UNTRACK`), which on an untracked
//!   object writes through a null link. Every reference the callback holds
//!   goes through that `Drop`, so no context is freed untracked.
//! - Hiding and revealing neither run Python code nor allocate, so they may
//!   touch the callback slot under its GIL-only guard (`CallbackCell`).
//! - `gc.get_referents(handle)` still hands out the context itself (the
//!   handle's `tp_traverse` cannot track anything): a caller that keeps it
//!   holds an untracked object until the loop lets go of the handle, which
//!   can only delay the collection of a cycle through it, never free
//!   anything early.

use std::ffi::{c_int, c_void};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use super::{Callback, CallbackCell, Handle};

impl Callback {
    /// Tracks the context again if it is hidden.
    pub(super) fn reveal_context(&mut self) {
        if !self.context_hidden {
            return;
        }
        self.context_hidden = false;
        // SAFETY: reading the tracked bit of a live object we hold.
        debug_assert!(unsafe { ffi::PyObject_GC_IsTracked(self.context.as_ptr()) } == 0);
        // SAFETY: a live object we hold (the callback owns a reference);
        // whoever reveals is attached with the GIL (see `Callback`). It is
        // untracked, as CPython requires of `PyObject_GC_Track`: we
        // untracked it when we set the flag, and nothing tracks a context
        // again but us (CPython tracks one only when it makes it).
        unsafe { ffi::PyObject_GC_Track(self.context.as_ptr().cast()) }
    }
}

impl CallbackCell {
    /// Tracks the callback's context again if it is hidden.
    fn reveal_context(&self, _py: Python<'_>) {
        // SAFETY: GIL held (`_py`); see `CallbackCell`: tracking an object
        // runs no Python code and allocates nothing, and the borrow ends
        // here.
        if let Some(cb) = unsafe { (*self.0.get()).as_mut() } {
            cb.reveal_context();
        }
    }
}

impl Handle {
    /// Takes the handle's context out of the collector's lists, before the
    /// handle goes into the loop's custody (`event_loop::custody`).
    ///
    /// # Safety
    /// The context is a `contextvars.Context` copied for this handle alone:
    /// nothing but this callback references it (the module's first
    /// invariant; another holder could free it untracked).
    pub(crate) unsafe fn hide_context(&mut self, _py: Python<'_>) {
        let Some(cb) = self.inner.0.get_mut() else {
            return;
        };
        let ctx = cb.context.as_ptr();
        // SAFETY: a live object we hold, GIL held (`_py`); the caller
        // promises no one else references it. A new context is tracked
        // (CPython tracks it when it makes it; `PyObject_GC_UnTrack` checks
        // anyway).
        unsafe {
            if ffi::PyContext_CheckExact(ctx) != 0 {
                ffi::PyObject_GC_UnTrack(ctx.cast());
                cb.context_hidden = true;
            }
        }
    }

    /// Tracks the handle's context again if it is hidden: it is about to be
    /// seen by someone other than the loop (see the module's invariants).
    pub(crate) fn reveal_context(&self, py: Python<'_>) {
        self.inner.reveal_context(py);
    }
}

/// Reports, through `visit`, what `obj` references (its type's
/// `tp_traverse`), for an object the collector does not track: visiting
/// the object itself would report nothing, as the collector skips
/// untracked objects. Called only from a `tp_traverse`.
pub(super) fn visit_referents(obj: &Py<PyAny>, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
    /// The `visit` to forward to and the first error it gave.
    struct Forward<'a, 'v> {
        visit: &'a PyVisit<'v>,
        error: Option<PyTraverseError>,
    }

    unsafe extern "C" fn forward(obj: *mut ffi::PyObject, arg: *mut c_void) -> c_int {
        // SAFETY: `arg` is the `Forward` below, alive for the traverse call
        // that calls us; `obj` is a live object the traversed one holds;
        // we run inside the collector's traverse (attached, GIL held).
        unsafe {
            let fwd = &mut *arg.cast::<Forward<'_, '_>>();
            let py = Python::assume_attached();
            match fwd.visit.call(Borrowed::from_ptr(py, obj).as_unbound()) {
                Ok(()) => 0,
                Err(e) => {
                    fwd.error = Some(e);
                    -1
                }
            }
        }
    }

    let p = obj.as_ptr();
    // SAFETY: reading the type slot of a live object.
    let Some(traverse) = (unsafe { (*ffi::Py_TYPE(p)).tp_traverse }) else {
        return Ok(());
    };
    let mut fwd = Forward { visit, error: None };
    // SAFETY: the type's own traverse on a live object of that type, with
    // a visit function and argument that outlive the call; inside the
    // collector's traverse (see the function's doc).
    unsafe { traverse(p, forward, (&mut fwd as *mut Forward<'_, '_>).cast()) };
    match fwd.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
