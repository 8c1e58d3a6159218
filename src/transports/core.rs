//! What every transport (stream, pipe, datagram) does the same way, as
//! asyncio's base transports do: the order of the first callbacks, and the
//! call of the protocol's `connection_lost`. Each transport keeps its own
//! state and clean-up; the seam with Python sits on the Rust side for all
//! three (the Python wrappers schedule nothing themselves).

use parking_lot::Mutex;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::flow::{notify_protocol, FlowControl};
use super::pyobjs::{cached, SET_RESULT_UNLESS_CANCELLED};
use crate::event_loop::LoopCore;

/// What the shared behaviour reads from a byte transport's state (stream
/// and pipe: `St`, `PipeSt`).
pub(crate) trait ByteTransportState {
    /// Bytes waiting in the write buffer.
    fn buffered(&self) -> usize;
    fn flow_mut(&mut self) -> &mut FlowControl;
    fn protocol(&self) -> Option<&Py<PyAny>>;
    /// The Python transport the protocol sees.
    fn wrapper(&self) -> Option<&Py<PyAny>>;
    fn event_loop<'py>(&self, py: Python<'py>) -> Option<Bound<'py, LoopCore>>;
}

/// asyncio's `_maybe_pause_protocol` (`pause`) / `_maybe_resume_protocol`:
/// when the buffer crosses a water mark, `pause_writing()` /
/// `resume_writing()`, outside the lock.
pub(crate) fn flow_callback<S: ByteTransportState>(
    py: Python<'_>,
    state: &Mutex<S>,
    pause: bool,
) -> PyResult<()> {
    let (proto, wrapper, lp) = {
        let mut st = state.lock();
        let size = st.buffered();
        if !st.flow_mut().transition(pause, size) {
            return Ok(());
        }
        (
            st.protocol().map(|p| p.clone_ref(py)),
            st.wrapper().map(|w| w.clone_ref(py)),
            st.event_loop(py),
        )
    };
    let Some(proto) = proto else { return Ok(()) };
    notify_protocol(py, pause, proto, wrapper, lp)
}

/// Schedules `connection_made(wrapper)`, then `start` (the transport's own
/// start of reading, an `InternalCall`), then the waiter's result, in
/// asyncio's order. Each runs in `ctx`, or in a copy of the current context
/// as asyncio's `call_soon` makes them.
pub(crate) fn schedule_start(
    lp: &LoopCore,
    protocol: &Bound<'_, PyAny>,
    wrapper: &Bound<'_, PyAny>,
    start: Bound<'_, PyAny>,
    waiter: Option<Bound<'_, PyAny>>,
    ctx: Option<&Py<PyAny>>,
) -> PyResult<()> {
    let py = protocol.py();
    lp.soon_in(
        py,
        protocol.getattr(intern!(py, "connection_made"))?.unbind(),
        PyTuple::new(py, [wrapper])?.unbind(),
        ctx,
    )?;
    lp.soon_in(py, start.unbind(), PyTuple::empty(py).unbind(), ctx)?;
    if let Some(waiter) = waiter {
        let setter = cached(
            py,
            &SET_RESULT_UNLESS_CANCELLED,
            "asyncio.futures",
            "_set_result_unless_cancelled",
        )?;
        lp.soon_in(
            py,
            setter.unbind(),
            PyTuple::new(py, [waiter, py.None().into_bound(py)])?.unbind(),
            ctx,
        )?;
    }
    Ok(())
}

/// `protocol.connection_lost(exc)`, if there is a protocol; the caller
/// releases the transport afterwards whatever this returns.
pub(crate) fn tell_connection_lost(
    protocol: Option<Py<PyAny>>,
    exc: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = exc.py();
    match protocol {
        Some(p) => p
            .bind(py)
            .call_method1(intern!(py, "connection_lost"), (exc,))
            .map(drop),
        None => Ok(()),
    }
}
