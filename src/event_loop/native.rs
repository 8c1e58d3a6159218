//! The loop's side of native I/O code (transports, servers, socket
//! operations), and emptying the loop on close.

use std::sync::atomic::Ordering;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{custody, LoopCore};
use crate::handles::Handle;

impl LoopCore {
    /// Empties every queue and the fd table; the objects are dropped after
    /// the lock is released.
    pub(super) fn clear_everything(&self) {
        let (ready, timers, io) = {
            let mut st = self.state.lock();
            let mut timers = Vec::new();
            st.timers.drain_into(&mut timers);
            let io = st.io.drain(&self.reactor);
            (std::mem::take(&mut st.ready), timers, io)
        };
        Python::attach(|py| {
            for t in timers {
                t.get().unschedule();
                custody::release(py, t);
            }
            for h in ready {
                custody::release(py, h);
            }
        });
        drop(io);
    }
}

/// The API native I/O code (transports, servers, socket operations) uses to
/// talk to the loop. All of it is called on the loop's thread with the GIL.
impl LoopCore {
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
        let handle = Handle::untracked(py, Handle::new(func, args, ctx, None))?;
        self.push_ready(handle.clone_ref(py), false)?;
        Ok(handle)
    }

    /// Whether debug mode is on.
    pub(crate) fn debug_enabled(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }
}
