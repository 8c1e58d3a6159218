//! What every transport (stream, pipe, datagram) does the same way, as
//! asyncio's base transports do: the order of the first callbacks, and the
//! call of the protocol's `connection_lost`. The seam with Python sits on
//! the Rust side for all three (the Python wrappers schedule nothing
//! themselves).
//!
//! The two byte transports (stream: `StreamTransport`, pipe:
//! `PipeTransport`) share more, as asyncio's `_SelectorTransport` and the
//! pipe transports do: `ByteCore`, the state both keep under their mutex
//! (the fd, the loop, protocol and wrapper, the write buffer and its
//! limits, the reading flags, the contexts), and `ByteTransport`, the
//! behaviour written once over it: `_fatal_error`, `_force_close`,
//! `close()` once the buffer is drained, the scheduling and the call of
//! `connection_lost`, the start of reading, `pause_reading`/
//! `resume_reading`, the write-buffer limits and the flow-control
//! callback. `byte_transport_pymethods!` gives both the same Python
//! methods for that shared surface. Each transport adds its own I/O
//! (socket or pipe calls) and clean-up.
//!
//! Invariant: no method here holds a transport's lock while Python code
//! runs or a Python object is dropped.

use std::ops::DerefMut;
use std::os::fd::RawFd;

use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::boolean_struct::True;
use pyo3::types::PyTuple;
use pyo3::{PyClass, PyTraverseError, PyVisit};

use super::flow::{notify_protocol, FlowControl, WriteBuffer};
use super::pyobjs::{cached, SET_RESULT_UNLESS_CANCELLED};
use super::{must_propagate, report_fatal};
use crate::contexts::fixed_or_copy;
use crate::event_loop::{LoopCore, Registration};
use crate::internal_call::InternalCall;

/// The state a stream and a pipe transport keep alike (`StreamState` and
/// `PipeState` deref to it; the rest of each is the transport's own).
pub(crate) struct ByteCore {
    /// The fd (-1 once closed).
    pub(crate) fd: RawFd,
    /// The fd number, kept after close for reprs (asyncio's `_sock_fd`,
    /// `_fileno`).
    pub(crate) fileno: RawFd,
    /// The loop (None after `connection_lost`).
    pub(crate) lp: Option<Py<LoopCore>>,
    /// The Python transport object user code sees.
    pub(crate) wrapper: Option<Py<PyAny>>,
    /// The protocol.
    pub(crate) protocol: Option<Py<PyAny>>,
    /// The claim on `fd` in the loop's table, and what it is watched for.
    pub(crate) reg: Registration,
    /// Reading was started (after `connection_made`).
    pub(crate) started: bool,
    /// `pause_reading()`.
    pub(crate) paused: bool,
    /// `close()` was called (or the transport is being closed).
    pub(crate) closing: bool,
    /// asyncio's `_conn_lost`: writes after the connection was lost (the
    /// stream transport also counts its scheduling of `connection_lost`).
    pub(crate) conn_lost: u32,
    /// Unsent data.
    pub(crate) wbuf: WriteBuffer,
    /// Write-buffer limits.
    pub(crate) flow: FlowControl,
    /// The transport's own context (3.15+'s stream transports of
    /// `create_server`/`create_connection`): every callback runs in it.
    pub(crate) ctx: Option<Py<PyAny>>,
    /// The context reads run in (asyncio's reader handle's).
    pub(crate) read_ctx: Option<Py<PyAny>>,
    /// The context writability runs in (asyncio's writer handle's).
    pub(crate) write_ctx: Option<Py<PyAny>>,
}

impl ByteCore {
    /// A transport's state over `fd`, before `connection_made`.
    pub(crate) fn new(fd: RawFd, lp: Py<LoopCore>) -> Self {
        Self {
            fd,
            fileno: fd,
            lp: Some(lp),
            wrapper: None,
            protocol: None,
            reg: Registration::new(),
            started: false,
            paused: false,
            closing: false,
            conn_lost: 0,
            wbuf: WriteBuffer::default(),
            flow: FlowControl::default(),
            ctx: None,
            read_ctx: None,
            write_ctx: None,
        }
    }

    pub(crate) fn lp<'py>(&self, py: Python<'py>) -> Option<Bound<'py, LoopCore>> {
        self.lp.as_ref().map(|l| l.bind(py).clone())
    }

    /// Visits the Python objects held here (`__traverse__`).
    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(lp) = &self.lp {
            visit.call(lp)?;
        }
        for o in [
            &self.wrapper,
            &self.protocol,
            &self.ctx,
            &self.read_ctx,
            &self.write_ctx,
        ]
        .into_iter()
        .flatten()
        {
            visit.call(o)?;
        }
        self.wbuf.traverse(visit)
    }

    /// Takes the references held here, to be dropped after the lock is
    /// released (when `connection_lost` has run, and by `__clear__`).
    pub(crate) fn take_refs(&mut self) -> CoreRefs {
        CoreRefs {
            lp: self.lp.take(),
            wrapper: self.wrapper.take(),
            protocol: self.protocol.take(),
            contexts: [self.ctx.take(), self.read_ctx.take(), self.write_ctx.take()],
        }
    }
}

/// The references `ByteCore::take_refs` took (some are only held, to be
/// dropped where no lock is held).
#[allow(dead_code, reason = "fields held only to be dropped later")]
pub(crate) struct CoreRefs {
    /// The loop.
    pub(crate) lp: Option<Py<LoopCore>>,
    /// The Python transport object.
    pub(crate) wrapper: Option<Py<PyAny>>,
    /// The protocol.
    pub(crate) protocol: Option<Py<PyAny>>,
    /// The own, read and write contexts.
    pub(crate) contexts: [Option<Py<PyAny>>; 3],
}

/// `Deref`/`DerefMut` of a transport's state (`$st`, with a field `core`)
/// to its `ByteCore`, so shared and own code alike read `st.fd`.
macro_rules! deref_to_byte_core {
    ($st:ty) => {
        impl ::std::ops::Deref for $st {
            type Target = $crate::transports::core::ByteCore;
            #[inline(always)]
            fn deref(&self) -> &Self::Target {
                &self.core
            }
        }

        impl ::std::ops::DerefMut for $st {
            #[inline(always)]
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.core
            }
        }
    };
}
pub(crate) use deref_to_byte_core;

/// The behaviour stream and pipe transports share, over their `ByteCore`
/// (asyncio's `_SelectorTransport` and `_UnixRead/WritePipeTransport`).
/// The transport supplies its state, its interest in the reactor and its
/// own closing; the provided methods are the rest.
pub(crate) trait ByteTransport: PyClass<Frozen = True> + Sync {
    /// Everything the transport's mutex guards.
    type State: DerefMut<Target = ByteCore> + Send;
    /// The qualified name of the start-of-reading step (in handle reprs).
    const START_STEP: &'static str;
    /// The qualified name of the `_call_connection_lost` step.
    const LOST_STEP: &'static str;

    fn state(&self) -> &Mutex<Self::State>;
    /// Makes the reactor watch what the state needs.
    fn sync_interest(slf: &Bound<'_, Self>, st: &mut Self::State) -> PyResult<()>;
    /// Marks `connection_lost` as scheduled, under the lock; false if it
    /// already was (it is scheduled at most once).
    fn mark_lost(st: &mut Self::State) -> bool;
    /// Nothing is left to write: a `close()` can complete at once.
    fn drained(st: &Self::State) -> bool;
    /// Whether `_fatal_error` only logs `exc` (in debug mode): an error
    /// the transport expects.
    fn expected_error(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<bool>;
    /// The fd was released (`connection_lost` ran, or `_dispose`).
    fn released(st: &Self::State) -> bool;
    /// Deregisters and closes the fd and drops every reference. `Err`: a
    /// failure that wins over `connection_lost`'s; `Ok(r)`: `r` is the
    /// close's result, reported only if `connection_lost` succeeded.
    fn release(slf: &Bound<'_, Self>) -> PyResult<PyResult<()>>;

    /// asyncio's `_maybe_pause_protocol` (`pause`) /
    /// `_maybe_resume_protocol`: when the buffer crosses a water mark,
    /// `pause_writing()` / `resume_writing()`, outside the lock.
    fn flow_callback(slf: &Bound<'_, Self>, pause: bool) -> PyResult<()> {
        let py = slf.py();
        let (proto, wrapper, lp) = {
            let mut st = slf.get().state().lock();
            let size = st.wbuf.len();
            if !st.flow.transition(pause, size) {
                return Ok(());
            }
            (
                st.protocol.as_ref().map(|p| p.clone_ref(py)),
                st.wrapper.as_ref().map(|w| w.clone_ref(py)),
                st.lp(py),
            )
        };
        let Some(proto) = proto else { return Ok(()) };
        notify_protocol(py, pause, proto, wrapper, lp)
    }

    /// asyncio's `_fatal_error`: report (unless `expected_error`) and
    /// force-close. Errors only for KeyboardInterrupt/SystemExit.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if must_propagate(py, &err) {
            return Err(err);
        }
        let exc = err.into_value(py).into_bound(py).into_any();
        let quiet = Self::expected_error(slf, &exc)?;
        let (lp, wrapper, proto) = {
            let st = slf.get().state().lock();
            (
                st.lp(py),
                st.wrapper.as_ref().map(|w| w.clone_ref(py)),
                st.protocol.as_ref().map(|p| p.clone_ref(py)),
            )
        };
        report_fatal(py, lp, quiet, message, &exc, wrapper, proto)?;
        Self::force_close(slf, Some(exc))
    }

    /// asyncio's `_force_close(exc)` (a pipe's `_close(exc)`): drop
    /// buffered data, stop I/O and schedule `connection_lost(exc)` (once).
    fn force_close(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let mut released = Vec::new();
        let lp = {
            let mut st = slf.get().state().lock();
            st.closing = true;
            st.wbuf.clear(&mut released);
            if !Self::mark_lost(&mut st) {
                return Ok(());
            }
            Self::sync_interest(slf, &mut st)?;
            st.lp(py)
        };
        drop(released);
        Self::schedule_connection_lost(slf, lp, exc)
    }

    /// asyncio's `close()` (a write pipe's `write_eof()`): closing from
    /// now on; `connection_lost(None)` is scheduled at once if nothing is
    /// left to write, else when the buffer has drained.
    fn close_when_drained(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let lp = {
            let mut st = slf.get().state().lock();
            if st.closing {
                return Ok(());
            }
            st.closing = true;
            let now = Self::drained(&st) && Self::mark_lost(&mut st);
            Self::sync_interest(slf, &mut st)?;
            if !now {
                return Ok(());
            }
            st.lp(py)
        };
        Self::schedule_connection_lost(slf, lp, None)
    }

    /// `call_soon(self._call_connection_lost, exc)` on `lp` (if the
    /// transport still has its loop), in the transport's own context if it
    /// has one.
    fn schedule_connection_lost(
        slf: &Bound<'_, Self>,
        lp: Option<Bound<'_, LoopCore>>,
        exc: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let Some(lp) = lp else { return Ok(()) };
        let cb =
            InternalCall::callable(slf.as_any(), Self::LOST_STEP, connection_lost_step::<Self>)?
                .unbind();
        let arg = exc.map(Bound::unbind).unwrap_or_else(|| py.None());
        let ctx = Self::own_ctx(slf);
        lp.get()
            .soon_in(py, cb, PyTuple::new(py, [arg])?.unbind(), ctx.as_ref())
            .map(drop)
    }

    /// The transport's own context, if it has one (see `ByteCore::ctx`).
    fn own_ctx(slf: &Bound<'_, Self>) -> Option<Py<PyAny>> {
        let st = slf.get().state().lock();
        st.ctx.as_ref().map(|c| c.clone_ref(slf.py()))
    }

    /// asyncio's `_call_connection_lost(exc)`: the protocol's
    /// `connection_lost`, then the release of the fd (once).
    fn call_connection_lost(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let proto = {
            let st = slf.get().state().lock();
            if Self::released(&st) {
                return Ok(());
            }
            st.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        let result = tell_connection_lost(proto, exc);
        let closed = Self::release(slf)?;
        result.and(closed)
    }

    /// The start of reading (asyncio adds its reader there), as the
    /// `InternalCall` `schedule_start` queues after `connection_made`.
    fn start_reading_call<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        InternalCall::callable(slf.as_any(), Self::START_STEP, start_reading_step::<Self>)
    }

    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let mut st = slf.get().state().lock();
        if st.closing || st.paused {
            return Ok(());
        }
        st.paused = true;
        Self::sync_interest(slf, &mut st)
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let fixed = {
            let st = slf.get().state().lock();
            if st.closing || !st.paused {
                return Ok(());
            }
            st.ctx.as_ref().map(|c| c.clone_ref(py))
        };
        // asyncio adds the reader again: reads now run in a copy of the
        // caller's context (or in the transport's own).
        let ctx = fixed_or_copy(py, fixed.as_ref())?;
        let mut st = slf.get().state().lock();
        if st.closing || !st.paused {
            return Ok(());
        }
        st.paused = false;
        let old = if st.started {
            st.read_ctx.replace(ctx)
        } else {
            None
        };
        let r = Self::sync_interest(slf, &mut st);
        drop(st);
        drop(old);
        r
    }

    fn set_write_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<i64>,
        low: Option<i64>,
    ) -> PyResult<()> {
        slf.get()
            .state()
            .lock()
            .flow
            .set_limits(high, low)
            .map_err(PyValueError::new_err)?;
        Self::flow_callback(slf, true)
    }
}

/// The `InternalCall` step asyncio's `_call_connection_lost(exc)` is.
fn connection_lost_step<T: ByteTransport>(
    target: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
) -> PyResult<()> {
    T::call_connection_lost(target.cast::<T>()?, &args.get_item(0)?)
}

/// Starts reading (scheduled after `connection_made`): asyncio adds the
/// reader here, so reads run in a copy of this callback's context (or in
/// the transport's own).
fn start_reading_step<T: ByteTransport>(
    target: &Bound<'_, PyAny>,
    _args: &Bound<'_, PyTuple>,
) -> PyResult<()> {
    let slf = target.cast::<T>()?;
    let py = slf.py();
    let ctx = fixed_or_copy(py, T::own_ctx(slf).as_ref())?;
    let mut st = slf.get().state().lock();
    st.started = true;
    let old = st.read_ctx.replace(ctx);
    let r = T::sync_interest(slf, &mut st);
    drop(st);
    drop(old);
    r
}

/// The `#[pymethods]` block of a byte transport `$ty`: the Python methods
/// stream and pipe transports share (over `ByteTransport`), then the
/// transport's own (`$own`). One macro because PyO3 takes one
/// `#[pymethods]` block per class.
macro_rules! byte_transport_pymethods {
    ($ty:ident { $($own:tt)* }) => {
        #[::pyo3::pymethods]
        impl $ty {
            fn abort(slf: &::pyo3::Bound<'_, Self>) -> ::pyo3::PyResult<()> {
                <Self as $crate::transports::core::ByteTransport>::force_close(slf, None)
            }

            fn can_write_eof(&self) -> bool {
                true
            }

            fn is_closing(&self) -> bool {
                self.st.lock().closing
            }

            fn is_reading(&self) -> bool {
                let st = self.st.lock();
                !st.closing && !st.paused
            }

            fn pause_reading(slf: &::pyo3::Bound<'_, Self>) -> ::pyo3::PyResult<()> {
                <Self as $crate::transports::core::ByteTransport>::pause_reading(slf)
            }

            fn resume_reading(slf: &::pyo3::Bound<'_, Self>) -> ::pyo3::PyResult<()> {
                <Self as $crate::transports::core::ByteTransport>::resume_reading(slf)
            }

            fn get_protocol(
                &self,
                py: ::pyo3::Python<'_>,
            ) -> ::std::option::Option<::pyo3::Py<::pyo3::PyAny>> {
                self.st.lock().protocol.as_ref().map(|p| p.clone_ref(py))
            }

            fn get_write_buffer_size(&self) -> usize {
                self.st.lock().wbuf.len()
            }

            fn get_write_buffer_limits(&self) -> (usize, usize) {
                let st = self.st.lock();
                (st.flow.low, st.flow.high)
            }

            #[pyo3(signature = (high = None, low = None))]
            fn set_write_buffer_limits(
                slf: &::pyo3::Bound<'_, Self>,
                high: ::std::option::Option<i64>,
                low: ::std::option::Option<i64>,
            ) -> ::pyo3::PyResult<()> {
                <Self as $crate::transports::core::ByteTransport>::set_write_buffer_limits(
                    slf, high, low,
                )
            }

            /// Whether the protocol is paused for writing.
            #[getter]
            fn _protocol_paused(&self) -> bool {
                self.st.lock().flow.paused
            }

            $($own)*
        }
    };
}
pub(crate) use byte_transport_pymethods;

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
