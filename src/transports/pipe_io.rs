//! The I/O paths of `PipeTransport` (see `pipe.rs` for the design and
//! invariants): interest in the reactor, the read path, the write path and
//! flow control, fatal errors and the close sequence.

use std::io::IoSlice;
use std::sync::Arc;

use parking_lot::MutexGuard;
use pyo3::exceptions::{PyBrokenPipeError, PyOSError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use super::pipe::{PipeSt, PipeTransport, Watch};
use super::{logger, must_propagate, with_read_buf, LOG_THRESHOLD_FOR_CONNLOST_WRITES};
use crate::errors;
use crate::event_loop::LoopCore;
use crate::reactor::net::MAX_IOV;
use crate::reactor::pipes;

impl PipeTransport {
    /// Counts `n` bytes read, here and in the loop's total.
    pub(super) fn count_in(&self, st: &PipeSt, n: usize) {
        self.bytes.add_in(n);
        if let Some(lp) = &st.lp {
            lp.get().stats.pipe.add_in(n);
        }
    }

    /// Counts `n` bytes written, here and in the loop's total.
    pub(super) fn count_out(&self, st: &PipeSt, n: usize) {
        self.bytes.add_out(n);
        if let Some(lp) = &st.lp {
            lp.get().stats.pipe.add_out(n);
        }
    }

    /// Makes the reactor watch what the state needs.
    pub(super) fn sync_interest(slf: &Bound<'_, Self>, st: &mut PipeSt) -> PyResult<()> {
        let py = slf.py();
        let want = st.wanted();
        let Some(lp) = st.lp(py) else { return Ok(()) };
        match want {
            Some(w) => {
                let fd = st.fd;
                st.reg
                    .set_interest(lp.get(), fd, w, || Arc::new(Watch(slf.clone().unbind())))
            }
            // `slf` keeps the transport alive without the entry.
            None => {
                st.reg.take().deregister(lp.get());
                Ok(())
            }
        }
    }

    /// `call_soon(func, *args)` on the transport's loop, if it has one.
    pub(super) fn soon(
        py: Python<'_>,
        lp: &Option<Bound<'_, LoopCore>>,
        func: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        match lp {
            Some(lp) => lp.get().soon(py, func.unbind(), args.unbind()).map(drop),
            None => Ok(()),
        }
    }

    /// asyncio's `_close(exc)`: stop I/O, drop buffered data and schedule
    /// `connection_lost(exc)` (once).
    pub(super) fn close_with(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
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
        Self::soon(
            py,
            &lp,
            Self::connection_lost_call(slf)?,
            PyTuple::new(py, [arg])?,
        )
    }

    /// asyncio's `_fatal_error`: report (unless it is an OSError the
    /// direction ignores) and close. Errors only for KeyboardInterrupt/
    /// SystemExit.
    pub(super) fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if must_propagate(py, &err) {
            return Err(err);
        }
        let exc = err.into_value(py).into_bound(py).into_any();
        let (lp, wrapper, proto, writable) = {
            let st = slf.get().st.lock();
            (
                st.lp(py),
                st.wrapper.as_ref().map(|w| w.clone_ref(py)),
                st.protocol.as_ref().map(|p| p.clone_ref(py)),
                st.writable,
            )
        };
        let quiet = if writable {
            exc.is_instance_of::<PyOSError>()
        } else {
            exc.is_instance_of::<PyOSError>()
                && exc.getattr(intern!(py, "errno"))?.extract::<i32>().ok() == Some(libc::EIO)
        };
        super::report_fatal(py, lp, quiet, message, &exc, wrapper, proto)?;
        Self::close_with(slf, Some(exc))
    }

    /// The read pipe's fd is readable: one `read`, then `data_received` or
    /// EOF handling.
    pub(super) fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
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
                let this = slf.get();
                this.count_in(&this.st.lock(), data.as_bytes().len());
                let r = proto
                    .bind(py)
                    .call_method1(intern!(py, "data_received"), (data,))
                    .map(drop);
                let st = slf.get().st.lock();
                if let (Some(lp), Some(_)) = (st.lp(py), st.wanted()) {
                    st.reg.rearm(lp.get())?;
                }
                drop(st);
                r
            }
            Ok(None) => {
                let lp = {
                    let mut st = slf.get().st.lock();
                    let lp = st.lp(py);
                    if let Some(lp) = &lp {
                        if lp.get().debug_enabled() {
                            drop(st);
                            let wrapper = slf
                                .get()
                                .st
                                .lock()
                                .wrapper
                                .as_ref()
                                .map(|w| w.clone_ref(py));
                            logger(py)?.call_method1("info", ("%r was closed by peer", wrapper))?;
                            st = slf.get().st.lock();
                        }
                    }
                    st.closing = true;
                    st.lost_scheduled = true;
                    Self::sync_interest(slf, &mut st)?;
                    lp
                };
                Self::soon(
                    py,
                    &lp,
                    proto.bind(py).getattr(intern!(py, "eof_received"))?,
                    PyTuple::empty(py),
                )?;
                let none = py.None().into_bound(py);
                Self::soon(
                    py,
                    &lp,
                    Self::connection_lost_call(slf)?,
                    PyTuple::new(py, [none])?,
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Self::fatal_error(
                slf,
                errors::os_error(e),
                "Fatal read error on pipe transport",
            ),
        }
    }

    /// The write pipe's reader went away.
    pub(super) fn peer_closed(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (buffered, debug, wrapper) = {
            let st = slf.get().st.lock();
            if st.lost_scheduled {
                return Ok(());
            }
            (
                !st.wbuf.is_empty(),
                st.lp(py).is_some_and(|l| l.get().debug_enabled()),
                st.wrapper.as_ref().map(|w| w.clone_ref(py)),
            )
        };
        if debug {
            logger(py)?.call_method1("info", ("%r was closed by peer", wrapper))?;
        }
        if buffered {
            let exc = PyBrokenPipeError::new_err(())
                .into_value(py)
                .into_bound(py)
                .into_any();
            Self::close_with(slf, Some(exc))
        } else {
            Self::close_with(slf, None)
        }
    }

    /// The write pipe's fd is writable: flush the buffer until `WouldBlock`.
    pub(super) fn write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
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
                    slf.get().count_out(&st, n);
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
                    return Self::fatal_error(
                        slf,
                        errors::os_error(e),
                        "Fatal write error on pipe transport",
                    );
                }
            }
        }
    }

    /// asyncio's `_maybe_pause_protocol` (`pause`) / `_maybe_resume_protocol`.
    pub(super) fn flow_callback(slf: &Bound<'_, Self>, pause: bool) -> PyResult<()> {
        super::core::flow_callback(slf.py(), &slf.get().st, pause)
    }

    /// A write after the connection was lost or while closing: count it and
    /// warn past asyncio's threshold. `Ok(false)`: drop the data.
    pub(super) fn write_allowed(
        slf: &Bound<'_, Self>,
        st: &mut MutexGuard<'_, PipeSt>,
    ) -> PyResult<bool> {
        if st.conn_lost == 0 && !st.closing {
            return Ok(true);
        }
        if st.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
            let py = slf.py();
            MutexGuard::unlocked(st, || {
                logger(py)?
                    .call_method1(
                        "warning",
                        ("pipe closed by peer or os.write(pipe, data) raised exception.",),
                    )
                    .map(drop)
            })?;
        }
        st.conn_lost += 1;
        Ok(false)
    }

    pub(super) fn call_connection_lost(
        slf: &Bound<'_, Self>,
        exc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let proto = {
            let st = slf.get().st.lock();
            if st.fd < 0 {
                return Ok(());
            }
            st.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        let result = super::core::tell_connection_lost(proto, exc);
        let closed = Self::release(slf);
        result.and(closed)
    }

    /// Deregisters the fd, closes the pipe and drops every reference.
    pub(super) fn release(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut released = Vec::new();
        let (lp, reg, pipe, wrapper, protocol) = {
            let mut st = slf.get().st.lock();
            st.fd = -1;
            st.lost_scheduled = true;
            st.wbuf.clear(&mut released);
            (
                st.lp.take(),
                st.reg.take(),
                st.pipe.take(),
                st.wrapper.take(),
                st.protocol.take(),
            )
        };
        if let Some(lp) = &lp {
            reg.deregister(lp.get());
        }
        let closed = match &pipe {
            Some(p) => p.bind(py).call_method0(intern!(py, "close")).map(drop),
            None => Ok(()),
        };
        drop((lp, pipe, wrapper, protocol, released));
        closed
    }
}
