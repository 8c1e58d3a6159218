//! The loop's side of native I/O code (transports, servers, socket
//! operations), and emptying the loop on close.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{custody, io, LoopCore};
use crate::errors;
use crate::handles::Handle;

impl LoopCore {
    /// Empties every queue and the fd table; the objects are dropped after
    /// the lock is released.
    pub(super) fn clear_everything(&self) {
        let (ready, spare, timers, io) = {
            let mut st = self.state.lock();
            let mut timers = Vec::new();
            st.timers.drain_into(&mut timers);
            let io = st.io.drain(&self.reactor);
            (
                std::mem::take(&mut st.ready),
                std::mem::take(&mut st.spare),
                timers,
                io,
            )
        };
        Python::attach(|py| {
            for t in timers {
                t.get().unschedule();
                custody::release(py, t);
            }
            for h in ready.into_iter().chain(spare) {
                custody::release(py, h);
            }
        });
        drop(io);
    }
}

/// The API native I/O code (transports, servers, socket operations) uses to
/// talk to the loop. All of it is called on the loop's thread with the GIL.
impl LoopCore {
    /// Watches `fd` for `want` and calls `watcher` when it is ready. Fails
    /// with `FileExistsError` if another native watcher owns the fd; the
    /// callbacks and socket operations that waited on it are replaced (the
    /// fd was closed and reused, or the watcher takes over the socket).
    pub(crate) fn io_register(
        &self,
        fd: RawFd,
        want: crate::reactor::Want,
        watcher: Arc<dyn io::IoWatcher>,
    ) -> PyResult<usize> {
        self.check_closed()?;
        let (evicted, result) = self
            .state
            .lock()
            .io
            .add_native(&self.reactor, fd, want, watcher);
        if !evicted.is_empty() {
            // The caller may hold its own lock here. What is disposed of
            // (callbacks and pending operations of a stale or taken-over
            // fd) was created before this watcher and holds no reference
            // to it, so nothing it releases can re-enter the caller.
            Python::attach(|py| evicted.dispose(py));
        }
        result.map_err(errors::os_error)
    }

    /// Changes what a native watcher waits for; `None` stops watching (the
    /// token is then dead).
    pub(crate) fn io_set_want(
        &self,
        token: usize,
        want: Option<crate::reactor::Want>,
    ) -> PyResult<()> {
        let result = self
            .state
            .lock()
            .io
            .set_native_want(&self.reactor, token, want);
        // The removed entry (if any) is dropped here, after the lock.
        result.map(drop).map_err(errors::os_error)
    }

    /// Asks the reactor to report the fd under `token` again if it is still
    /// ready (for a watcher that left data unread, for fairness).
    pub(crate) fn io_rearm(&self, token: usize) -> PyResult<()> {
        let result = self.state.lock().io.rearm_native(&self.reactor, token);
        result.map_err(errors::os_error)
    }

    /// Stops watching the fd under `token`.
    pub(crate) fn io_unregister(&self, token: usize) {
        let removed = self.state.lock().io.remove(&self.reactor, token);
        drop(removed);
    }

    /// `call_soon(func, *args)` in the current context, from Rust.
    pub(crate) fn soon(
        &self,
        py: Python<'_>,
        func: Py<PyAny>,
        args: Py<PyTuple>,
    ) -> PyResult<Py<Handle>> {
        self.soon_in(py, func, args, None)
    }

    /// `call_soon(func, *args, context=ctx)` from Rust; `None`: a copy of
    /// the current context. `ctx` must be a `contextvars.Context`.
    pub(crate) fn soon_in(
        &self,
        py: Python<'_>,
        func: Py<PyAny>,
        args: Py<PyTuple>,
        ctx: Option<&Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        self.check_closed()?;
        let ctx = crate::contexts::fixed_or_copy(py, ctx)?;
        let handle = Py::new(py, Handle::new(func, args, ctx, None))?;
        custody::adopt(py, &handle);
        self.push_ready(handle.clone_ref(py), false)?;
        Ok(handle)
    }

    /// Whether debug mode is on.
    pub(crate) fn debug_enabled(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }
}
