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
//!   native watcher API (`IoWatcher`, `io_register`/`io_set_want`/
//!   `io_rearm`). The syscalls are `read`/`write`/`writev`
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
//!
//! Invariants:
//! - The mutex is never held while Python code runs (protocol callbacks
//!   re-enter the transport).
//! - The fd is deregistered before the pipe object is closed, and is closed
//!   only by `_call_connection_lost` (or `_dispose` for an unclosed
//!   transport being collected).
//! - `connection_lost` is scheduled at most once (`lost_scheduled`); after
//!   it ran the core drops its loop, wrapper, protocol and pipe.

use std::io::IoSlice;
use std::os::fd::RawFd;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use pyo3::exceptions::{PyBrokenPipeError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use super::flow::{FlowControl, WriteBuffer};
use super::{logger, must_propagate, with_read_buf, BufView, LOG_THRESHOLD_FOR_CONNLOST_WRITES};
use crate::errors;
use crate::event_loop::io::IoWatcher;
use crate::event_loop::LoopCore;
use crate::reactor::net::MAX_IOV;
use crate::reactor::pipes;
use crate::reactor::{Readiness, Want};

/// The mutable state of a pipe transport.
struct PipeSt {
    /// The pipe's fd (-1 once closed).
    fd: RawFd,
    /// The pipe object (`get_extra_info('pipe')`), closed with the transport.
    pipe: Option<Py<PyAny>>,
    /// The loop (None after `connection_lost`).
    lp: Option<Py<LoopCore>>,
    /// The Python transport object user code sees.
    wrapper: Option<Py<PyAny>>,
    /// The protocol.
    protocol: Option<Py<PyAny>>,
    /// Write pipe (else read pipe).
    writable: bool,
    /// Write pipe: watch the fd for readability to see the reader go away.
    watch_close: bool,
    /// I/O was started (after `connection_made`).
    started: bool,
    /// `pause_reading()` (read pipe).
    paused: bool,
    /// `close()`/`write_eof()` was called, or the transport is closing.
    closing: bool,
    /// `connection_lost` was scheduled or called.
    lost_scheduled: bool,
    /// Writes after the connection was lost (asyncio's `_conn_lost`).
    conn_lost: u32,
    /// The reactor token while registered.
    token: Option<usize>,
    /// What the reactor watches for.
    want: Option<Want>,
    /// Unsent data (write pipe).
    wbuf: WriteBuffer,
    /// Write-buffer limits (write pipe).
    flow: FlowControl,
}

impl PipeSt {
    fn lp<'py>(&self, py: Python<'py>) -> Option<Bound<'py, LoopCore>> {
        self.lp.as_ref().map(|l| l.bind(py).clone())
    }

    /// What the reactor should watch for now.
    fn wanted(&self) -> Option<Want> {
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
    st: Mutex<PipeSt>,
}

/// The loop's handle on a pipe transport.
struct Watch(Py<PipeTransport>);

impl IoWatcher for Watch {
    fn on_ready(&self, py: Python<'_>, _lp: &Bound<'_, LoopCore>, ready: Readiness) -> PyResult<()> {
        let slf = self.0.bind(py);
        let (writable, watch_close) = {
            let st = slf.get().st.lock();
            (st.writable, st.watch_close)
        };
        if !writable {
            if ready.for_reader() {
                PipeTransport::read_ready(slf)?;
            }
            return Ok(());
        }
        if watch_close && ready.for_reader() {
            // Readable on a write end: the reader went away.
            return PipeTransport::peer_closed(slf);
        }
        if ready.for_writer() {
            PipeTransport::write_ready(slf)?;
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

impl PipeTransport {
    /// Makes the reactor watch what the state needs.
    fn sync_interest(slf: &Bound<'_, Self>, st: &mut PipeSt) -> PyResult<()> {
        let py = slf.py();
        let want = st.wanted();
        let Some(lp) = st.lp(py) else { return Ok(()) };
        match (st.token, want) {
            (Some(token), Some(w)) => {
                if st.want != Some(w) {
                    lp.get().io_set_want(token, Some(w))?;
                    st.want = Some(w);
                }
            }
            (Some(token), None) => {
                st.token = None;
                st.want = None;
                lp.get().io_set_want(token, None)?;
            }
            (None, Some(w)) => {
                let watcher: Arc<dyn IoWatcher> = Arc::new(Watch(slf.clone().unbind()));
                st.token = Some(lp.get().io_register(st.fd, w, watcher)?);
                st.want = Some(w);
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// `call_soon(func, *args)` on the transport's loop, if it has one.
    fn soon(py: Python<'_>, lp: &Option<Bound<'_, LoopCore>>, func: Bound<'_, PyAny>, args: Bound<'_, PyTuple>) -> PyResult<()> {
        match lp {
            Some(lp) => lp.get().soon(py, func.unbind(), args.unbind()).map(drop),
            None => Ok(()),
        }
    }

    /// asyncio's `_close(exc)`: stop I/O, drop buffered data and schedule
    /// `connection_lost(exc)` (once).
    fn close_with(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let mut released = Vec::new();
        let lp = {
            let mut st = slf.get().st.lock();
            st.closing = true;
            st.wbuf.clear(&mut released);
            if st.lost_scheduled {
                return Ok(());
            }
            st.lost_scheduled = true;
            Self::sync_interest(slf, &mut st)?;
            st.lp(py)
        };
        drop(released);
        let arg = exc.unwrap_or_else(|| py.None().into_bound(py));
        Self::soon(py, &lp, slf.getattr(intern!(py, "_call_connection_lost"))?, PyTuple::new(py, [arg])?)
    }

    /// asyncio's `_fatal_error`: report (unless it is an OSError the
    /// direction ignores) and close. Errors only for KeyboardInterrupt/
    /// SystemExit.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if must_propagate(py, &err) {
            return Err(err);
        }
        let exc = err.into_value(py).into_bound(py).into_any();
        let (lp, wrapper, proto, writable) = {
            let st = slf.get().st.lock();
            (st.lp(py), st.wrapper.as_ref().map(|w| w.clone_ref(py)), st.protocol.as_ref().map(|p| p.clone_ref(py)), st.writable)
        };
        let quiet = if writable {
            exc.is_instance_of::<PyOSError>()
        } else {
            exc.is_instance_of::<PyOSError>() && exc.getattr(intern!(py, "errno"))?.extract::<i32>().ok() == Some(libc::EIO)
        };
        if let Some(lp) = lp {
            if quiet {
                if lp.get().debug_enabled() {
                    let kw = PyDict::new(py);
                    kw.set_item("exc_info", &exc)?;
                    logger(py)?.call_method("debug", ("%r: %s", &wrapper, message), Some(&kw))?;
                }
            } else {
                let ctx = PyDict::new(py);
                ctx.set_item("message", message)?;
                ctx.set_item("exception", &exc)?;
                ctx.set_item("transport", &wrapper)?;
                ctx.set_item("protocol", &proto)?;
                lp.call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
            }
        }
        Self::close_with(slf, Some(exc))
    }

    /// The read pipe's fd is readable: one `read`, then `data_received` or
    /// EOF handling.
    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (fd, proto) = {
            let st = slf.get().st.lock();
            if st.wanted().is_none() {
                return Ok(());
            }
            (st.fd, st.protocol.as_ref().map(|p| p.clone_ref(py)))
        };
        let Some(proto) = proto else { return Ok(()) };
        let got = with_read_buf(|buf| match pipes::read(fd, buf) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(PyBytes::new(py, &buf[..n]))),
            Err(e) => Err(e),
        });
        match got {
            Ok(Some(data)) => {
                let r = proto.bind(py).call_method1(intern!(py, "data_received"), (data,)).map(drop);
                let token = {
                    let st = slf.get().st.lock();
                    st.token.filter(|_| st.wanted().is_some())
                };
                let lp = slf.get().st.lock().lp(py);
                if let (Some(token), Some(lp)) = (token, lp) {
                    lp.get().io_rearm(token)?;
                }
                r
            }
            Ok(None) => {
                let lp = {
                    let mut st = slf.get().st.lock();
                    let lp = st.lp(py);
                    if let Some(lp) = &lp {
                        if lp.get().debug_enabled() {
                            drop(st);
                            let wrapper = slf.get().st.lock().wrapper.as_ref().map(|w| w.clone_ref(py));
                            logger(py)?.call_method1("info", ("%r was closed by peer", wrapper))?;
                            st = slf.get().st.lock();
                        }
                    }
                    st.closing = true;
                    st.lost_scheduled = true;
                    Self::sync_interest(slf, &mut st)?;
                    lp
                };
                Self::soon(py, &lp, proto.bind(py).getattr(intern!(py, "eof_received"))?, PyTuple::empty(py))?;
                let none = py.None().into_bound(py);
                Self::soon(py, &lp, slf.getattr(intern!(py, "_call_connection_lost"))?, PyTuple::new(py, [none])?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Self::fatal_error(slf, errors::os_error(e), "Fatal read error on pipe transport"),
        }
    }

    /// The write pipe's reader went away.
    fn peer_closed(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (buffered, debug, wrapper) = {
            let st = slf.get().st.lock();
            if st.lost_scheduled {
                return Ok(());
            }
            (!st.wbuf.is_empty(), st.lp(py).is_some_and(|l| l.get().debug_enabled()), st.wrapper.as_ref().map(|w| w.clone_ref(py)))
        };
        if debug {
            logger(py)?.call_method1("info", ("%r was closed by peer", wrapper))?;
        }
        if buffered {
            let exc = PyBrokenPipeError::new_err(()).into_value(py).into_bound(py).into_any();
            Self::close_with(slf, Some(exc))
        } else {
            Self::close_with(slf, None)
        }
    }

    /// The write pipe's fd is writable: flush the buffer until `WouldBlock`.
    fn write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut released = Vec::new();
        loop {
            let mut st = slf.get().st.lock();
            if st.wbuf.is_empty() || st.fd < 0 || st.lost_scheduled {
                return Ok(());
            }
            let r = {
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let (n, _) = st.wbuf.fill_iov(py, &mut iov);
                pipes::write_vectored(st.fd, &iov[..n])
            };
            match r {
                Ok(n) => {
                    st.wbuf.consume(n, &mut released);
                    if !st.wbuf.is_empty() {
                        continue;
                    }
                    Self::sync_interest(slf, &mut st)?;
                    let closing = st.closing;
                    drop(st);
                    drop(std::mem::take(&mut released));
                    Self::flow_callback(slf, false)?;
                    if closing {
                        {
                            let mut st = slf.get().st.lock();
                            if st.lost_scheduled {
                                return Ok(());
                            }
                            st.lost_scheduled = true;
                            Self::sync_interest(slf, &mut st)?;
                        }
                        let none = py.None().into_bound(py);
                        return Self::call_connection_lost(slf, &none);
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    st.wbuf.clear(&mut released);
                    st.conn_lost += 1;
                    Self::sync_interest(slf, &mut st)?;
                    drop(st);
                    drop(released);
                    return Self::fatal_error(slf, errors::os_error(e), "Fatal write error on pipe transport");
                }
            }
        }
    }

    /// asyncio's `_maybe_pause_protocol` (`pause`) / `_maybe_resume_protocol`.
    fn flow_callback(slf: &Bound<'_, Self>, pause: bool) -> PyResult<()> {
        let py = slf.py();
        let (proto, wrapper, lp) = {
            let mut st = slf.get().st.lock();
            let size = st.wbuf.len();
            let go = if pause { st.flow.should_pause(size) } else { st.flow.should_resume(size) };
            if !go {
                return Ok(());
            }
            st.flow.paused = pause;
            (st.protocol.as_ref().map(|p| p.clone_ref(py)), st.wrapper.as_ref().map(|w| w.clone_ref(py)), st.lp(py))
        };
        let Some(proto) = proto else { return Ok(()) };
        let (method, message) = if pause {
            (intern!(py, "pause_writing"), "protocol.pause_writing() failed")
        } else {
            (intern!(py, "resume_writing"), "protocol.resume_writing() failed")
        };
        if let Err(e) = proto.bind(py).call_method0(method) {
            if must_propagate(py, &e) {
                return Err(e);
            }
            if let Some(lp) = lp {
                let ctx = PyDict::new(py);
                ctx.set_item("message", message)?;
                ctx.set_item("exception", e.value(py))?;
                ctx.set_item("transport", wrapper)?;
                ctx.set_item("protocol", proto)?;
                lp.call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
            }
        }
        Ok(())
    }

    /// A write after the connection was lost or while closing: count it and
    /// warn past asyncio's threshold. `Ok(false)`: drop the data.
    fn write_allowed(slf: &Bound<'_, Self>, st: &mut MutexGuard<'_, PipeSt>) -> PyResult<bool> {
        if st.conn_lost == 0 && !st.closing {
            return Ok(true);
        }
        if st.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
            let py = slf.py();
            MutexGuard::unlocked(st, || {
                logger(py)?.call_method1("warning", ("pipe closed by peer or os.write(pipe, data) raised exception.",)).map(drop)
            })?;
        }
        st.conn_lost += 1;
        Ok(false)
    }

    fn call_connection_lost(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let proto = {
            let st = slf.get().st.lock();
            if st.fd < 0 {
                return Ok(());
            }
            st.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        let result = match proto {
            Some(p) => p.bind(py).call_method1(intern!(py, "connection_lost"), (exc,)).map(drop),
            None => Ok(()),
        };
        let closed = Self::release(slf);
        result.and(closed)
    }

    /// Deregisters the fd, closes the pipe and drops every reference.
    fn release(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut released = Vec::new();
        let (lp, token, pipe, wrapper, protocol) = {
            let mut st = slf.get().st.lock();
            st.fd = -1;
            st.lost_scheduled = true;
            st.wbuf.clear(&mut released);
            (st.lp.take(), st.token.take(), st.pipe.take(), st.wrapper.take(), st.protocol.take())
        };
        if let (Some(lp), Some(token)) = (&lp, token) {
            lp.get().io_unregister(token);
        }
        let closed = match &pipe {
            Some(p) => p.bind(py).call_method0(intern!(py, "close")).map(drop),
            None => Ok(()),
        };
        drop((lp, pipe, wrapper, protocol, released));
        closed
    }
}

#[pymethods]
impl PipeTransport {
    /// A transport over `pipe` (whose fd is `fd`, already non-blocking).
    #[new]
    fn py_new(lp: Bound<'_, LoopCore>, pipe: Bound<'_, PyAny>, fd: RawFd, writable: bool, watch_close: bool) -> PyResult<Self> {
        if fd < 0 {
            return Err(PyValueError::new_err("the pipe is closed"));
        }
        Ok(Self {
            st: Mutex::new(PipeSt {
                fd,
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
                token: None,
                want: None,
                wbuf: WriteBuffer::default(),
                flow: FlowControl::default(),
            }),
        })
    }

    /// Sets the wrapper and protocol, and schedules `connection_made`, the
    /// start of I/O and the waiter, in asyncio's order.
    #[pyo3(signature = (wrapper, protocol, waiter = None))]
    fn _start(slf: &Bound<'_, Self>, wrapper: Bound<'_, PyAny>, protocol: Bound<'_, PyAny>, waiter: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let lp = {
            let mut st = slf.get().st.lock();
            st.wrapper = Some(wrapper.clone().unbind());
            st.protocol = Some(protocol.clone().unbind());
            st.lp(py)
        };
        Self::soon(py, &lp, protocol.getattr(intern!(py, "connection_made"))?, PyTuple::new(py, [wrapper])?)?;
        Self::soon(py, &lp, slf.getattr(intern!(py, "_start_io"))?, PyTuple::empty(py))?;
        if let Some(waiter) = waiter {
            let setter = super::stream::cached(py, &super::stream::SET_RESULT_UNLESS_CANCELLED, "asyncio.futures", "_set_result_unless_cancelled")?;
            Self::soon(py, &lp, setter, PyTuple::new(py, [waiter.into_any(), py.None().into_bound(py)])?)?;
        }
        Ok(())
    }

    /// Starts watching the fd (scheduled after `connection_made`).
    fn _start_io(slf: &Bound<'_, Self>) -> PyResult<()> {
        let mut st = slf.get().st.lock();
        st.started = true;
        Self::sync_interest(slf, &mut st)
    }

    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        Self::call_connection_lost(slf, &exc)
    }

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if !(data.is_instance_of::<PyBytes>() || data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>()) {
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not {:?}",
                data.get_type().name()?.to_string()
            )));
        }
        let view = BufView::get(data, false)?;
        let bytes = view.as_slice();
        if bytes.is_empty() {
            return Ok(());
        }
        let mut st = slf.get().st.lock();
        if !Self::write_allowed(slf, &mut st)? {
            return Ok(());
        }
        let mut start = 0;
        if st.wbuf.is_empty() && st.fd >= 0 {
            match pipes::write(st.fd, bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => start = n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    st.conn_lost += 1;
                    drop(st);
                    drop(view);
                    return Self::fatal_error(slf, errors::os_error(e), "Fatal write error on pipe transport");
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
        let _ = py;
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
        Self::soon(py, &lp, slf.getattr(intern!(py, "_call_connection_lost"))?, PyTuple::new(py, [none])?)
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
        let mut st = slf.get().st.lock();
        if st.closing || !st.paused {
            return Ok(());
        }
        st.paused = false;
        Self::sync_interest(slf, &mut st)
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

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        let st = self.st.lock();
        (st.flow.low, st.flow.high)
    }

    #[pyo3(signature = (high = None, low = None))]
    fn set_write_buffer_limits(slf: &Bound<'_, Self>, high: Option<i64>, low: Option<i64>) -> PyResult<()> {
        slf.get().st.lock().flow.set_limits(high, low).map_err(PyValueError::new_err)?;
        Self::flow_callback(slf, true)
    }

    /// "fd=N polling" and the like, for the wrapper's repr (asyncio's
    /// format: "open" once the loop is closed).
    fn _repr_info(&self, py: Python<'_>) -> PyResult<String> {
        let (lp, closed_pipe, closing, fd, polling, writable, buffered) = {
            let st = self.st.lock();
            (st.lp(py), st.pipe.is_none(), st.closing, st.fd, st.token.is_some(), st.writable, st.wbuf.len())
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
            info.push(if active { "polling".into() } else { "idle".into() });
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
        let Some(st) = self.st.try_lock() else { return Ok(()) };
        for o in [&st.lp.as_ref().map(|l| l.as_any()), &st.wrapper.as_ref(), &st.protocol.as_ref(), &st.pipe.as_ref()].into_iter().flatten() {
            visit.call(*o)?;
        }
        st.wbuf.traverse(&visit)
    }

    fn __clear__(&self) {
        let taken = {
            let mut st = self.st.lock();
            (st.lp.take(), st.wrapper.take(), st.protocol.take())
        };
        drop(taken);
    }
}
