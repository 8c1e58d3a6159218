//! The `contextvars.Context` native I/O callbacks run in.
//!
//! asyncio runs a transport's protocol callbacks from handles, so each runs
//! in its handle's context: `connection_made` and `connection_lost` in a
//! copy of the context current when they were scheduled (`call_soon`), reads
//! in a copy of the context current when the reader was added (`add_reader`:
//! at the start of reading, and again at each `resume_reading()`), writes in
//! a copy of the context current when the writer was added (a `write()` that
//! left data buffered). From 3.15 on, a stream transport made by
//! `create_server`/`create_connection`/`connect_accepted_socket` has one
//! context of its own instead, used for all of those (CPython gh-140947).
//!
//! oxloop's transports are called by the loop's native watchers, outside
//! any handle, so they keep those contexts themselves and enter one around
//! each callback (`run_in`). Copying a context is O(1) (it shares the
//! immutable mapping) and is done only where asyncio makes a handle.
//!
//! Invariant: `run_in` always exits what it entered, whatever `f` returns.

use pyo3::ffi;
use pyo3::prelude::*;

/// A copy of the current context (`contextvars.copy_context()`).
pub fn copy_current(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: returns a new reference or NULL with an exception set; GIL held.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()) }.map(Bound::unbind)
}

/// A copy of `ctx` (`ctx.copy()`); `ctx` must be a `contextvars.Context`.
pub fn copy_of(py: Python<'_>, ctx: &Py<PyAny>) -> PyResult<Py<PyAny>> {
    // SAFETY: `ctx` is a live Context (callers only pass contexts checked or
    // made by us); returns a new reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_Copy(ctx.as_ptr())) }
        .map(Bound::unbind)
}

/// Whether `obj` is exactly a `contextvars.Context`.
pub fn is_context(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: a type check on a live object, GIL held.
    unsafe { ffi::PyContext_CheckExact(obj.as_ptr()) != 0 }
}

/// Runs `f` with `ctx` entered (as `ctx.run(f)` does); with `None`, in the
/// current context.
pub fn run_in<R>(
    py: Python<'_>,
    ctx: Option<&Py<PyAny>>,
    f: impl FnOnce() -> PyResult<R>,
) -> PyResult<R> {
    let Some(ctx) = ctx else { return f() };
    let ptr = ctx.as_ptr();
    // SAFETY: `ptr` is a live Context kept alive by `ctx` for the whole
    // call; GIL held.
    if unsafe { ffi::PyContext_Enter(ptr) } < 0 {
        return Err(PyErr::fetch(py));
    }
    let result = f();
    // SAFETY: as above; `ptr` was entered just before on this thread and
    // `f` leaves the context stack as it found it.
    if unsafe { ffi::PyContext_Exit(ptr) } < 0 {
        let exit_err = PyErr::fetch(py);
        return Err(result.err().unwrap_or(exit_err));
    }
    result
}

/// `ctx` if there is one, else a copy of the current context.
pub fn fixed_or_copy(py: Python<'_>, ctx: Option<&Py<PyAny>>) -> PyResult<Py<PyAny>> {
    match ctx {
        Some(c) => Ok(c.clone_ref(py)),
        None => copy_current(py),
    }
}
