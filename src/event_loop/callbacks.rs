//! Scheduling callbacks and fd callbacks: the checks asyncio makes, the
//! context a callback runs in, making handles and queueing them.
//!
//! Invariant (as everywhere in the loop): the state lock is held only for
//! Python-free sections; handles are made before it is taken.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyTuple};

use super::io::{SetError, Waiter};
use super::LoopCore;
use crate::errors;
use crate::handles::{Handle, TimerHandle};

/// `selectors`' rule, first step: the int `obj` is, or its `fileno()` (any
/// value: `resolve_fd` checks it); asyncio's "Invalid file object" error
/// otherwise.
fn raw_fd(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    if obj.is_instance_of::<PyInt>() {
        return obj.extract();
    }
    let bad = || PyValueError::new_err(format!("Invalid file object: {}", repr_of(obj)));
    match obj.call_method0(intern!(obj.py(), "fileno")) {
        Ok(v) => v
            .call_method0("__int__")
            .and_then(|v| v.extract())
            .map_err(|_| bad()),
        Err(e)
            if e.is_instance_of::<PyTypeError>(obj.py())
                || e.is_instance_of::<PyValueError>(obj.py())
                || e.is_instance_of::<pyo3::exceptions::PyAttributeError>(obj.py()) =>
        {
            Err(bad())
        }
        Err(e) => Err(e),
    }
}

fn valid_fd(fd: i64) -> Option<RawFd> {
    RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)
}

fn invalid_fd(fd: i64) -> PyErr {
    PyValueError::new_err(format!("Invalid file descriptor: {fd}"))
}

pub(super) fn repr_of(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<object>".into())
}

impl LoopCore {
    #[inline]
    pub(super) fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            Err(errors::loop_closed())
        } else {
            Ok(())
        }
    }

    pub(super) fn check_thread(&self) -> PyResult<()> {
        if let Some(owner) = *self.owner.lock() {
            if owner != std::thread::current().id() {
                return Err(PyRuntimeError::new_err(
                    "Non-thread-safe operation invoked on an event loop other than the current one",
                ));
            }
        }
        Ok(())
    }

    /// Debug mode's checks on a callback (asyncio runs them only then).
    pub(super) fn check_callback(
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        method: &str,
    ) -> PyResult<()> {
        let coroutines = py.import(intern!(py, "asyncio.coroutines"))?;
        // 3.14 deprecated asyncio.iscoroutinefunction (it warns); asyncio
        // itself calls the private twin that 3.12 added.
        let iscoroutinefunction = match coroutines.getattr(intern!(py, "_iscoroutinefunction")) {
            Ok(f) => f,
            Err(_) => coroutines.getattr(intern!(py, "iscoroutinefunction"))?,
        };
        if coroutines
            .call_method1("iscoroutine", (callback,))?
            .is_truthy()?
            || iscoroutinefunction.call1((callback,))?.is_truthy()?
        {
            return Err(PyTypeError::new_err(format!(
                "coroutines cannot be used with {method}()"
            )));
        }
        if !callback.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "a callable object was expected by {method}(), got {}",
                repr_of(callback)
            )));
        }
        Ok(())
    }

    /// The context a callback runs in: the given one, or a copy of the
    /// current one. Like asyncio's `Handle`, any object is taken: one that
    /// is not a `Context` fails when the handle runs (`Handle::run`).
    #[inline]
    pub(super) fn context_for(
        py: Python<'_>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        match context {
            Some(ctx) if !ctx.is_none() => Ok(ctx.unbind()),
            _ => {
                // SAFETY: returns a new reference or NULL with an exception
                // set; GIL held.
                unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()) }
                    .map(Bound::unbind)
            }
        }
    }

    /// The `Handle` value for a callback: its context (`context_for`) and,
    /// in debug mode, where it was made. `hide`: a context copied for it
    /// is hidden from the collector (`handles::hidden`; for a handle that
    /// goes into the loop's custody).
    #[inline]
    pub(super) fn new_handle(
        &self,
        py: Python<'_>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
        hide: bool,
    ) -> PyResult<Handle> {
        let copied = context.as_ref().is_none_or(|c| c.is_none());
        let ctx = Self::context_for(py, context)?;
        let tb = self.source_traceback(py)?;
        let mut handle = Handle::new(callback.unbind(), args.unbind(), ctx, tb);
        if hide && copied {
            // SAFETY: `context_for` copied the context just above, for this
            // handle alone.
            unsafe { handle.hide_context(py) };
        }
        Ok(handle)
    }

    /// In debug mode, where the caller is (asyncio's `_source_traceback`).
    #[inline]
    pub(super) fn source_traceback(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if !self.debug.load(Ordering::Relaxed) {
            return Ok(None);
        }
        Self::current_stack(py).map(Some)
    }

    /// `format_helpers.extract_stack` of the caller's frame.
    #[cold]
    fn current_stack(py: Python<'_>) -> PyResult<Py<PyAny>> {
        let frame = py
            .import(intern!(py, "sys"))?
            .call_method1(intern!(py, "_getframe"), (0,))?;
        let stack = py
            .import(intern!(py, "asyncio.format_helpers"))?
            .call_method1(intern!(py, "extract_stack"), (frame,))?;
        Ok(stack.unbind())
    }

    /// Queues `handle` and wakes the reactor if the loop is blocked in it.
    pub(super) fn push_ready(&self, handle: Py<Handle>, wake: bool) -> PyResult<()> {
        if self.stats.timing() {
            // In a running loop, on its thread, the loop's last clock
            // reading (the start of the running callback) spares a reading
            // per call_soon.
            let at = if wake || !self.running.load(Ordering::Relaxed) {
                self.clock.now_ns()
            } else {
                self.stats.last_ns()
            };
            handle.get().stamp_queued(at);
        }
        let must_wake = {
            let mut st = self.state.lock();
            st.ready.push_back(handle);
            if wake && st.polling && !st.wake_pending {
                st.wake_pending = true;
                true
            } else {
                false
            }
        };
        if must_wake {
            self.reactor.wake().map_err(errors::os_error)?;
        }
        Ok(())
    }

    pub(super) fn set_io_callback(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        write: bool,
    ) -> PyResult<()> {
        self.check_closed()?;
        let fileobj = fd;
        let fd = self.resolve_fd(fileobj)?;
        if self.debug.load(Ordering::Relaxed) {
            Self::check_callback(
                py,
                &callback,
                if write { "add_writer" } else { "add_reader" },
            )?;
        }
        // Not one-shot (it may be queued many times): tracked, not in the
        // loop's custody.
        let handle = Handle::tracked(py, self.new_handle(py, callback, args, None, false)?)?;
        // A new entry keeps the file object (asyncio's selector key does).
        let obj = (!fileobj.is_instance_of::<PyInt>()).then(|| fileobj.clone().unbind());
        let (replaced, result) = self.state.lock().io.set_waiter(
            py,
            &self.reactor,
            (fd, obj),
            write,
            Waiter::Callback(handle),
            None,
        );
        replaced.dispose(py);
        match result {
            Ok(_) => Ok(()),
            Err(SetError::Taken(who)) => Err(errors::fd_taken(fd, &who)),
            Err(SetError::Os(e)) => Err(errors::os_error(e)),
        }
    }

    /// `remove_reader`/`remove_writer`: removes the callback, or the pending
    /// socket operation's waiter (its future then stays pending, as in
    /// asyncio), of one side of the fd; true if there was one.
    pub(super) fn remove_io_callback(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        write: bool,
    ) -> PyResult<bool> {
        if self.closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let fd = self.resolve_fd(fd)?;
        let (replaced, result) =
            self.state
                .lock()
                .io
                .remove_waiter(py, &self.reactor, fd, write, None);
        let removed = replaced.dispose(py);
        match result {
            Ok(()) => Ok(removed),
            Err(SetError::Taken(who)) => Err(errors::fd_taken(fd, &who)),
            Err(SetError::Os(e)) => Err(errors::os_error(e)),
        }
    }

    /// The fd an `add_reader`-style call names. A file object whose
    /// `fileno()` is no longer valid (a closed socket: -1) names the entry
    /// `add_reader`/`add_writer` created with that very object, as
    /// `selectors`' exhaustive search finds it; else asyncio's `ValueError`.
    fn resolve_fd(&self, obj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
        let raw = raw_fd(obj)?;
        if let Some(fd) = valid_fd(raw) {
            return Ok(fd);
        }
        if !obj.is_instance_of::<PyInt>() {
            if let Some(fd) = self.state.lock().io.fd_of_fileobj(obj.as_ptr()) {
                return Ok(fd);
            }
        }
        Err(invalid_fd(raw))
    }
}

impl LoopCore {
    /// `call_at`/`call_later` (named `method` in debug checks): a timer
    /// handle for `when`, on the heap.
    pub(super) fn call_at_f64(
        &self,
        py: Python<'_>,
        when: f64,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
        method: &str,
    ) -> PyResult<Py<TimerHandle>> {
        self.check_closed()?;
        if self.debug.load(Ordering::Relaxed) {
            self.check_thread()?;
            Self::check_callback(py, &callback, method)?;
        }
        let copied = context.as_ref().is_none_or(|c| c.is_none());
        let ctx = Self::context_for(py, context)?;
        let tb = self.source_traceback(py)?;
        let mut base = Handle::new_timer(
            callback.unbind(),
            args.unbind(),
            ctx,
            tb,
            when,
            self.cancelled_timers.clone(),
        );
        if copied {
            // SAFETY: `context_for` copied the context just above, for this
            // timer alone (which goes into the loop's custody).
            unsafe { base.hide_context(py) };
        }
        let timer = TimerHandle::create(py, base)?;
        let as_handle = timer.as_super().clone().unbind();
        self.state.lock().timers.push(when, as_handle);
        Ok(timer.unbind())
    }
}
