//! `PipeTransport`: the native core of a pipe transport (asyncio's
//! `_UnixReadPipeTransport` / `_UnixWritePipeTransport`), for
//! `loop.connect_read_pipe` / `loop.connect_write_pipe` and the pipes of
//! subprocesses.
//!
//! Design:
//! - One class, two directions (`writable`). The Python object user code
//!   sees is a thin `asyncio.ReadTransport`/`WriteTransport` subclass
//!   (`python/oxloop/_pipes.py`) that checks the fd type, holds
//!   `get_extra_info('pipe')` and binds the core's methods onto itself.
//! - Shared with the stream transports: the write buffer and flow control
//!   (`flow.rs`), the per-thread read buffer (`with_read_buf`), the loop's
//!   native watcher API (`IoWatcher`, `event_loop::Registration`). The
//!   syscalls are `read`/`write`/`writev`
//!   (`reactor::pipes`), which also work on sockets and character devices.
//! - Read side: one `read` per readiness event, then the fd is re-armed
//!   (a tty returns a line per read, so a short read does not prove the fd
//!   drained). EOF schedules `eof_received` and then `connection_lost(None)`
//!   (a pipe has no half-open state).
//! - Write side: `write()` tries the fd at once and buffers the rest;
//!   buffered chunks go out with `writev` until `WouldBlock` (mio is
//!   edge-triggered). A write pipe over a FIFO or socket is also watched for
//!   readability, which on a write end means the reader went away: the
//!   transport closes, with `BrokenPipeError()` if data was still buffered
//!   (asyncio's rule).
//! - Contexts: reads (and a write end's close detection) run in `read_ctx`,
//!   taken where asyncio adds its reader (`_start_io`, `resume_reading`);
//!   the flush of buffered data in `write_ctx`, taken by the `write()` that
//!   started buffering (see `crate::contexts`).
//!
//! Invariants:
//! - The mutex is never held while Python code runs (protocol callbacks
//!   re-enter the transport).
//! - The fd is deregistered before the pipe object is closed, and is closed
//!   only by `_call_connection_lost` (or `_dispose` for an unclosed
//!   transport being collected).
//! - `connection_lost` is scheduled at most once (`lost_scheduled`); after
//!   it ran the core drops its loop, wrapper, protocol and pipe.

use std::os::fd::RawFd;

use parking_lot::Mutex;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use super::flow::{FlowControl, WriteBuffer};
use super::BufView;
use crate::contexts::{copy_current, run_in};
use crate::errors;
use crate::event_loop::io::IoWatcher;
use crate::event_loop::stats::ByteCount;
use crate::event_loop::stats_api::bytes_dict;
use crate::event_loop::{LoopCore, Registration};
use crate::internal_call::InternalCall;
use crate::reactor::pipes;
use crate::reactor::{Readiness, Want};

/// The mutable state of a pipe transport.
pub(super) struct PipeSt {
    /// The pipe's fd (-1 once closed).
    pub(super) fd: RawFd,
    /// The fd number, kept after close for reprs (asyncio's `_fileno`).
    pub(super) fileno: RawFd,
    /// The pipe object (`get_extra_info('pipe')`), closed with the transport.
    pub(super) pipe: Option<Py<PyAny>>,
    /// The loop (None after `connection_lost`).
    pub(super) lp: Option<Py<LoopCore>>,
    /// The Python transport object user code sees.
    pub(super) wrapper: Option<Py<PyAny>>,
    /// The protocol.
    pub(super) protocol: Option<Py<PyAny>>,
    /// Write pipe (else read pipe).
    pub(super) writable: bool,
    /// Write pipe: watch the fd for readability to see the reader go away.
    pub(super) watch_close: bool,
    /// I/O was started (after `connection_made`).
    pub(super) started: bool,
    /// `pause_reading()` (read pipe).
    pub(super) paused: bool,
    /// `close()`/`write_eof()` was called, or the transport is closing.
    pub(super) closing: bool,
    /// `connection_lost` was scheduled or called.
    pub(super) lost_scheduled: bool,
    /// Writes after the connection was lost (asyncio's `_conn_lost`).
    pub(super) conn_lost: u32,
    /// The claim on `fd` in the loop's table, and what it is watched for.
    pub(super) reg: Registration,
    /// Unsent data (write pipe).
    pub(super) wbuf: WriteBuffer,
    /// Write-buffer limits (write pipe).
    pub(super) flow: FlowControl,
    /// The context readability runs in (asyncio's reader handle's).
    pub(super) read_ctx: Option<Py<PyAny>>,
    /// The context writability runs in (asyncio's writer handle's).
    pub(super) write_ctx: Option<Py<PyAny>>,
}

impl crate::transports::core::ByteTransportState for PipeSt {
    fn buffered(&self) -> usize {
        self.wbuf.len()
    }
    fn flow_mut(&mut self) -> &mut FlowControl {
        &mut self.flow
    }
    fn protocol(&self) -> Option<&Py<PyAny>> {
        self.protocol.as_ref()
    }
    fn wrapper(&self) -> Option<&Py<PyAny>> {
        self.wrapper.as_ref()
    }
    fn event_loop<'py>(&self, py: Python<'py>) -> Option<Bound<'py, LoopCore>> {
        self.lp(py)
    }
}

impl PipeSt {
    pub(super) fn lp<'py>(&self, py: Python<'py>) -> Option<Bound<'py, LoopCore>> {
        self.lp.as_ref().map(|l| l.bind(py).clone())
    }

    /// What the reactor should watch for now.
    pub(super) fn wanted(&self) -> Option<Want> {
        if self.fd < 0 || self.lost_scheduled || !self.started {
            return None;
        }
        if self.writable {
            Want::from_flags(self.watch_close, !self.wbuf.is_empty())
        } else if !self.paused && !self.closing {
            Some(Want::Read)
        } else {
            None
        }
    }
}

/// The native core of a pipe transport.
#[pyclass(frozen, module = "oxloop._core")]
pub struct PipeTransport {
    /// Everything; see `PipeSt`.
    pub(super) st: Mutex<PipeSt>,
    /// Bytes read and written (the loop counts its total too).
    pub(super) bytes: ByteCount,
}

/// The loop's handle on a pipe transport.
pub(super) struct Watch(pub(super) Py<PipeTransport>);

impl IoWatcher for Watch {
    fn on_ready(
        &self,
        py: Python<'_>,
        _lp: &Bound<'_, LoopCore>,
        ready: Readiness,
    ) -> PyResult<()> {
        let slf = self.0.bind(py);
        let (writable, watch_close, read_ctx, write_ctx) = {
            let st = slf.get().st.lock();
            (
                st.writable,
                st.watch_close,
                st.read_ctx.as_ref().map(|c| c.clone_ref(py)),
                st.write_ctx.as_ref().map(|c| c.clone_ref(py)),
            )
        };
        if !writable {
            if ready.for_reader() {
                run_in(py, read_ctx.as_ref(), || PipeTransport::read_ready(slf))?;
            }
            return Ok(());
        }
        if watch_close && ready.for_reader() {
            // Readable on a write end: the reader went away.
            return run_in(py, read_ctx.as_ref(), || PipeTransport::peer_closed(slf));
        }
        if ready.for_writer() {
            run_in(py, write_ctx.as_ref(), || PipeTransport::write_ready(slf))?;
        }
        Ok(())
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.0)
    }

    fn describe(&self, _py: Python<'_>) -> String {
        match self.0.get().st.try_lock() {
            Some(st) => format!("pipe transport <fd={}>", st.fd),
            None => "pipe transport".into(),
        }
    }
}

/// The steps asyncio schedules as bound methods, queued as `InternalCall`s.
impl PipeTransport {
    /// Starts watching the fd (scheduled after `connection_made`): asyncio
    /// adds its reader here (`_start_io`), so reads run in a copy of this
    /// context.
    fn start_io_step(target: &Bound<'_, PyAny>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        let slf = target.cast::<Self>()?;
        let ctx = copy_current(slf.py())?;
        let mut st = slf.get().st.lock();
        st.started = true;
        let old = st.read_ctx.replace(ctx);
        let r = Self::sync_interest(slf, &mut st);
        drop(st);
        drop(old);
        r
    }

    /// asyncio's `self._call_connection_lost`, to be called with `exc`.
    pub(super) fn connection_lost_call<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        InternalCall::callable(
            slf.as_any(),
            "PipeTransport._call_connection_lost",
            |target, args| Self::call_connection_lost(target.cast::<Self>()?, &args.get_item(0)?),
        )
    }
}

#[pymethods]
impl PipeTransport {
    /// A transport over `pipe` (whose fd is `fd`, already non-blocking).
    #[new]
    fn py_new(
        lp: Bound<'_, LoopCore>,
        pipe: Bound<'_, PyAny>,
        fd: RawFd,
        writable: bool,
        watch_close: bool,
    ) -> PyResult<Self> {
        if fd < 0 {
            return Err(PyValueError::new_err("the pipe is closed"));
        }
        Ok(Self {
            bytes: ByteCount::default(),
            st: Mutex::new(PipeSt {
                fd,
                fileno: fd,
                pipe: Some(pipe.unbind()),
                lp: Some(lp.unbind()),
                wrapper: None,
                protocol: None,
                writable,
                watch_close: writable && watch_close,
                started: false,
                paused: false,
                closing: false,
                lost_scheduled: false,
                conn_lost: 0,
                reg: Registration::new(),
                wbuf: WriteBuffer::default(),
                flow: FlowControl::default(),
                read_ctx: None,
                write_ctx: None,
            }),
        })
    }

    /// Sets the wrapper and protocol, and schedules `connection_made`, the
    /// start of I/O and the waiter, in asyncio's order.
    #[pyo3(signature = (wrapper, protocol, waiter = None))]
    fn _start(
        slf: &Bound<'_, Self>,
        wrapper: Bound<'_, PyAny>,
        protocol: Bound<'_, PyAny>,
        waiter: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let lp = {
            let mut st = slf.get().st.lock();
            st.wrapper = Some(wrapper.clone().unbind());
            st.protocol = Some(protocol.clone().unbind());
            st.lp(py)
        };
        let Some(lp) = lp else { return Ok(()) };
        let start =
            InternalCall::callable(slf.as_any(), "PipeTransport._start_io", Self::start_io_step)?;
        super::core::schedule_start(lp.get(), &protocol, &wrapper, start, waiter, None)
    }

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            // asyncio's `assert isinstance(data, (bytes, bytearray,
            // memoryview)), repr(data)`.
            return Err(pyo3::exceptions::PyAssertionError::new_err(
                data.repr()?.unbind(),
            ));
        }
        let view = match BufView::get(data, false) {
            Ok(v) => v,
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyBufferError>(py) => {
                // Not contiguous: asyncio fails in os.write() (a fatal
                // error) or, with data buffered, in `bytearray += data`.
                let mut st = slf.get().st.lock();
                if !Self::write_allowed(slf, &mut st)? {
                    return Ok(());
                }
                if !st.wbuf.is_empty() {
                    return Err(PyTypeError::new_err("can't concat memoryview to bytearray"));
                }
                st.conn_lost += 1;
                drop(st);
                return Self::fatal_error(slf, e, "Fatal write error on pipe transport");
            }
            Err(e) => return Err(e),
        };
        let bytes = view.as_slice();
        if bytes.is_empty() {
            return Ok(());
        }
        let mut st = slf.get().st.lock();
        if !Self::write_allowed(slf, &mut st)? {
            return Ok(());
        }
        let mut start = 0;
        let was_empty = st.wbuf.is_empty();
        if was_empty && st.fd >= 0 {
            let r = pipes::write(st.fd, bytes);
            if let Ok(n) = r {
                slf.get().count_out(&st, n);
            }
            match r {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => start = n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    st.conn_lost += 1;
                    drop(st);
                    drop(view);
                    return Self::fatal_error(
                        slf,
                        errors::os_error(e),
                        "Fatal write error on pipe transport",
                    );
                }
            }
        }
        match data.cast::<PyBytes>() {
            Ok(b) => st.wbuf.push_bytes(b, start),
            Err(_) => st.wbuf.push_copy(&bytes[start..]),
        }
        drop(view);
        let r = Self::sync_interest(slf, &mut st);
        drop(st);
        r?;
        if was_empty {
            // Where asyncio adds its writer: the flush runs in a copy of
            // this caller's context.
            let ctx = copy_current(py)?;
            let old = slf.get().st.lock().write_ctx.replace(ctx);
            drop(old);
        }
        Self::flow_callback(slf, true)
    }

    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let joined = PyBytes::new(py, b"").call_method1(intern!(py, "join"), (list_of_data,))?;
        Self::write(slf, &joined)
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let lp = {
            let mut st = slf.get().st.lock();
            if st.closing {
                return Ok(());
            }
            st.closing = true;
            if !st.wbuf.is_empty() || st.lost_scheduled {
                return Ok(());
            }
            st.lost_scheduled = true;
            Self::sync_interest(slf, &mut st)?;
            st.lp(py)
        };
        let none = py.None().into_bound(py);
        Self::soon(
            py,
            &lp,
            Self::connection_lost_call(slf)?,
            PyTuple::new(py, [none])?,
        )
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let (writable, open, closing) = {
            let st = slf.get().st.lock();
            (st.writable, st.pipe.is_some(), st.closing)
        };
        if closing {
            return Ok(());
        }
        if writable {
            if open {
                Self::write_eof(slf)?;
            }
            Ok(())
        } else {
            Self::close_with(slf, None)
        }
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close_with(slf, None)
    }

    fn is_closing(&self) -> bool {
        self.st.lock().closing
    }

    fn is_reading(&self) -> bool {
        let st = self.st.lock();
        !st.paused && !st.closing
    }

    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let mut st = slf.get().st.lock();
        if st.closing || st.paused {
            return Ok(());
        }
        st.paused = true;
        Self::sync_interest(slf, &mut st)
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        // asyncio adds the reader again, in a copy of the caller's context.
        let ctx = copy_current(slf.py())?;
        let mut st = slf.get().st.lock();
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

    fn set_protocol(&self, protocol: Py<PyAny>) {
        let old = self.st.lock().protocol.replace(protocol);
        drop(old);
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.lock().protocol.as_ref().map(|p| p.clone_ref(py))
    }

    fn get_write_buffer_size(&self) -> usize {
        self.st.lock().wbuf.len()
    }

    /// `{"bytes_in": ..., "bytes_out": ...}`: bytes so far
    /// (`get_extra_info("oxloop_stats")`).
    fn _stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (rx, tx) = self.bytes.read();
        bytes_dict(py, rx, tx)
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        let st = self.st.lock();
        (st.flow.low, st.flow.high)
    }

    #[pyo3(signature = (high = None, low = None))]
    fn set_write_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<i64>,
        low: Option<i64>,
    ) -> PyResult<()> {
        slf.get()
            .st
            .lock()
            .flow
            .set_limits(high, low)
            .map_err(PyValueError::new_err)?;
        Self::flow_callback(slf, true)
    }

    /// "fd=N polling" and the like, for the wrapper's repr (asyncio's
    /// format: "open" once the loop is closed).
    fn _repr_info(&self, py: Python<'_>) -> PyResult<String> {
        let (lp, closed_pipe, closing, fd, polling, writable, buffered) = {
            let st = self.st.lock();
            (
                st.lp(py),
                st.pipe.is_none(),
                st.closing,
                st.fileno,
                st.reg.is_registered(),
                st.writable,
                st.wbuf.len(),
            )
        };
        let mut info = Vec::new();
        if closed_pipe {
            info.push("closed".to_string());
        } else if closing {
            info.push("closing".to_string());
        }
        info.push(format!("fd={fd}"));
        let loop_open = match &lp {
            Some(lp) => !lp.call_method0(intern!(py, "is_closed"))?.is_truthy()?,
            None => false,
        };
        if !closed_pipe && loop_open {
            let active = polling && (!writable || buffered > 0);
            info.push(if active {
                "polling".into()
            } else {
                "idle".into()
            });
            if writable {
                info.push(format!("bufsize={buffered}"));
            }
        } else if !closed_pipe {
            info.push("open".into());
        } else {
            info.push("closed".into());
        }
        Ok(info.join(" "))
    }

    /// Whether the pipe is still open (the wrapper's `__del__` asks).
    fn _is_open(&self) -> bool {
        self.st.lock().pipe.is_some()
    }

    /// Closes the pipe without callbacks (`__del__` of an unclosed
    /// transport, after it warned).
    fn _dispose(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::release(slf)
    }

    /// Whether the protocol is paused for writing.
    #[getter]
    fn _protocol_paused(&self) -> bool {
        self.st.lock().flow.paused
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(st) = self.st.try_lock() else {
            return Ok(());
        };
        for o in [
            &st.lp.as_ref().map(|l| l.as_any()),
            &st.wrapper.as_ref(),
            &st.protocol.as_ref(),
            &st.pipe.as_ref(),
            &st.read_ctx.as_ref(),
            &st.write_ctx.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            visit.call(*o)?;
        }
        st.wbuf.traverse(&visit)
    }

    fn __clear__(&self) {
        let taken = {
            let mut st = self.st.lock();
            (
                st.lp.take(),
                st.wrapper.take(),
                st.protocol.take(),
                st.read_ctx.take(),
                st.write_ctx.take(),
            )
        };
        drop(taken);
    }
}
