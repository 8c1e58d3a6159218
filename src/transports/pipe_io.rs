//! The I/O paths of `PipeTransport` (see `pipe.rs` for the design and
//! invariants): `write()`, the read path, the write path, and closing (its
//! `ByteTransport` impl: `_close(exc)`, which errors are expected, the
//! release of the pipe).

use std::io::IoSlice;

use parking_lot::{Mutex, MutexGuard};
use pyo3::exceptions::{PyBrokenPipeError, PyBufferError, PyOSError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyTuple};

use super::core::ByteTransport;
use super::pipe::{PipeState, PipeTransport};
use super::{logger, with_read_buf, BufView, LOG_THRESHOLD_FOR_CONNLOST_WRITES};
use crate::contexts::copy_current;
use crate::errors;
use crate::event_loop::LoopCore;
use crate::reactor::net::MAX_IOV;
use crate::reactor::pipes;

impl ByteTransport for PipeTransport {
    type State = PipeState;
    const START_STEP: &'static str = "PipeTransport._start_io";
    const LOST_STEP: &'static str = "PipeTransport._call_connection_lost";

    #[inline(always)]
    fn state(&self) -> &Mutex<PipeState> {
        &self.st
    }

    #[inline(always)]
    fn sync_interest(slf: &Bound<'_, Self>, st: &mut PipeState) -> PyResult<()> {
        PipeTransport::sync_interest(slf, st)
    }

    fn mark_lost(st: &mut PipeState) -> bool {
        !std::mem::replace(&mut st.lost_scheduled, true)
    }

    fn drained(st: &PipeState) -> bool {
        st.wbuf.is_empty()
    }

    /// A write pipe expects any OSError; a read pipe only EIO (a pty whose
    /// other side closed).
    fn expected_error(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = slf.py();
        if !exc.is_instance_of::<PyOSError>() {
            return Ok(false);
        }
        let writable = slf.get().st.lock().writable;
        Ok(writable || exc.getattr(intern!(py, "errno"))?.extract::<i32>().ok() == Some(libc::EIO))
    }

    fn released(st: &PipeState) -> bool {
        st.fd < 0
    }

    /// Deregisters the fd, closes the pipe and drops every reference.
    fn release(slf: &Bound<'_, Self>) -> PyResult<PyResult<()>> {
        let py = slf.py();
        let mut released = Vec::new();
        let (reg, pipe, refs) = {
            let mut st = slf.get().st.lock();
            st.fd = -1;
            st.lost_scheduled = true;
            st.wbuf.clear(&mut released);
            (st.reg.take(), st.pipe.take(), st.core.take_refs())
        };
        if let Some(lp) = &refs.lp {
            reg.deregister(lp.get());
        }
        let closed = match &pipe {
            Some(p) => p.bind(py).call_method0(intern!(py, "close")).map(drop),
            None => Ok(()),
        };
        drop((refs, pipe, released));
        Ok(closed)
    }
}

impl PipeTransport {
    /// `write(data)`: try the fd at once, buffer the rest.
    #[inline]
    pub(super) fn write_impl(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
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
            Err(e) if e.is_instance_of::<PyBufferError>(py) => {
                // Not contiguous: asyncio fails in os.write() (a fatal
                // error) or, with data buffered, in `bytearray += data`.
                let mut st = slf.get().st.lock();
                if !Self::write_allowed(slf, &mut st)? {
                    return Ok(());
                }
                if !st.wbuf.is_empty() {
                    return Err(PyTypeError::new_err("can't concat memoryview to bytearray"));
                }
                return Self::write_failed(slf, st, e);
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
                    drop(view);
                    return Self::write_failed(slf, st, errors::os_error(e));
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

    /// A write failed with `err`: drop what is buffered, count the write
    /// as lost, and close with asyncio's fatal error.
    #[cold]
    fn write_failed(
        slf: &Bound<'_, Self>,
        mut st: MutexGuard<'_, PipeState>,
        err: PyErr,
    ) -> PyResult<()> {
        let mut released = Vec::new();
        st.wbuf.clear(&mut released);
        st.conn_lost += 1;
        Self::sync_interest(slf, &mut st)?;
        drop(st);
        drop(released);
        Self::fatal_error(slf, err, "Fatal write error on pipe transport")
    }

    /// The read pipe's fd is readable: one `read`, then `data_received` or
    /// EOF handling.
    pub(super) fn read_ready(slf: &Bound<'_, Self>, lp: &Bound<'_, LoopCore>) -> PyResult<()> {
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
                // A tty returns a line per read: have the next poll report
                // the fd again if more is there.
                let st = slf.get().st.lock();
                if st.wanted().is_some() {
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
                if let Some(lp) = &lp {
                    let eof_received = proto.bind(py).getattr(intern!(py, "eof_received"))?;
                    lp.get()
                        .soon(py, eof_received.unbind(), PyTuple::empty(py).unbind())?;
                }
                Self::schedule_connection_lost(slf, lp, None)
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
            Self::force_close(slf, Some(exc))
        } else {
            Self::force_close(slf, None)
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
                // `released` is dropped after the lock, on the way out.
                Err(e) => return Self::write_failed(slf, st, errors::os_error(e)),
            }
        }
    }

    /// A write after the connection was lost or while closing: count it and
    /// warn past asyncio's threshold. `Ok(false)`: drop the data.
    pub(super) fn write_allowed(
        slf: &Bound<'_, Self>,
        st: &mut MutexGuard<'_, PipeState>,
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
}
