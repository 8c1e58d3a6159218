//! The write side of `StreamTransport`: `write`/`writelines` try the socket
//! at once and buffer the rest; writability drains the buffer with gathered
//! sends; flow control calls `pause_writing`/`resume_writing` at the
//! thresholds (`ByteTransport::flow_callback`); a drained buffer completes
//! `close()` and `write_eof()` (`lifecycle.rs`'s `after_drain`), or goes on
//! with a `sendfile` in progress.

use std::io::{ErrorKind, IoSlice};
use std::os::fd::RawFd;

use parking_lot::MutexGuard;
use pyo3::exceptions::{PyBufferError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView};

use super::core::ByteTransport;
use super::pyobjs::set_exception_unless_done;
use super::stream::StreamTransport;
use super::stream_state::{Sock, StreamState};
use super::{logger, BufView, LOG_THRESHOLD_FOR_CONNLOST_WRITES};
use crate::errors;
use crate::reactor::net::{self, MAX_IOV};

impl StreamTransport {
    pub(crate) fn handle_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut released = Vec::new();
        {
            let mut st = this.st.lock();
            if st.conn_lost > 0 {
                return Ok(());
            }
            if let Some(exc) = st.unsendable.take() {
                st.wbuf.clear(&mut released);
                Self::sync_interest(slf, &mut st)?;
                drop(st);
                drop(released);
                let err = PyErr::from_value(exc.into_bound(py));
                return Self::fatal_error(slf, err, "Fatal write error on socket transport");
            }
            if st.wbuf.is_empty() {
                let sending = st.sendfile.is_some();
                drop(st);
                return if sending {
                    Self::sendfile_step(slf)
                } else {
                    Ok(())
                };
            }
            loop {
                let r = {
                    let mut iov = [IoSlice::new(&[]); MAX_IOV];
                    let (n, offered) = st.wbuf.fill_iov(py, &mut iov);
                    net::send_vectored(st.fd, &iov[..n]).map(|sent| (sent, offered))
                };
                match r {
                    Ok((sent, offered)) => {
                        this.count_out(st.lp.as_ref(), sent);
                        st.wbuf.consume(sent, &mut released);
                        if st.wbuf.is_empty() || sent < offered {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        st.wbuf.clear(&mut released);
                        Self::sync_interest(slf, &mut st)?;
                        let waiter = st.empty_waiter.as_ref().map(|w| w.clone_ref(py));
                        drop(st);
                        drop(released);
                        let err = errors::os_error(e);
                        let exc = err.value(py).clone();
                        Self::fatal_error(slf, err, "Fatal write error on socket transport")?;
                        if let Some(w) = waiter {
                            set_exception_unless_done(w.bind(py), &exc)?;
                        }
                        return Ok(());
                    }
                }
            }
        }
        drop(released);
        Self::flow_callback(slf, false)?;
        Self::after_drain(slf)
    }

    /// asyncio's refusals of `write`/`writelines` (`method`): after
    /// `write_eof()`, or while `sendfile` owns the socket.
    fn check_writable(st: &MutexGuard<'_, StreamState>, method: &str) -> PyResult<()> {
        if st.eof {
            return Err(PyRuntimeError::new_err(format!(
                "Cannot call {method}() after write_eof()"
            )));
        }
        if st.empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err(format!(
                "unable to {method}; sendfile is in progress"
            )));
        }
        Ok(())
    }

    /// `write`/`writelines` after `connection_lost` was scheduled: count
    /// the write and warn past asyncio's threshold. `Ok(false)`: drop it.
    pub(crate) fn write_checks(
        slf: &Bound<'_, Self>,
        st: &mut MutexGuard<'_, StreamState>,
    ) -> PyResult<bool> {
        let py = slf.py();
        if st.conn_lost > 0 || matches!(st.sock, Sock::Closed) {
            let warn = st.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES;
            st.conn_lost += 1;
            if warn {
                MutexGuard::unlocked(st, || {
                    logger(py)?
                        .call_method1("warning", ("socket.send() raised exception.",))
                        .map(drop)
                })?;
            }
            return Ok(false);
        }
        Ok(true)
    }

    /// Watches for writability now that data is buffered, pauses the
    /// protocol if needed. `was_empty`: the buffer was empty before, so
    /// this is where asyncio adds its writer (whose handle's context the
    /// drain then runs in: a copy of the writer's caller's context).
    pub(crate) fn after_buffering(
        slf: &Bound<'_, Self>,
        mut st: MutexGuard<'_, StreamState>,
        was_empty: bool,
    ) -> PyResult<()> {
        Self::sync_interest(slf, &mut st)?;
        let fresh_ctx = was_empty && st.ctx.is_none();
        drop(st);
        if fresh_ctx {
            let ctx = crate::contexts::copy_current(slf.py())?;
            let old = slf.get().st.lock().write_ctx.replace(ctx);
            drop(old);
        }
        Self::flow_callback(slf, true)
    }

    /// What `write` and `writelines` (`method`) share, under the lock:
    /// asyncio's refusals, nothing to do for no bytes (`total`) or after
    /// the connection was lost, and with nothing buffered, one try at the
    /// socket (`send(fd)`) at once; what it did not take, `buffer(st,
    /// sent)` puts in the write buffer.
    #[inline(always)]
    fn write_with(
        slf: &Bound<'_, Self>,
        method: &str,
        total: usize,
        send: impl FnOnce(RawFd) -> std::io::Result<usize>,
        buffer: impl FnOnce(&mut StreamState, usize),
    ) -> PyResult<()> {
        let mut st = slf.get().st.lock();
        Self::check_writable(&st, method)?;
        if total == 0 || !Self::write_checks(slf, &mut st)? {
            return Ok(());
        }
        let was_empty = st.wbuf.is_empty();
        let mut sent = 0;
        if was_empty {
            let r = send(st.fd);
            if let Ok(n) = r {
                slf.get().count_out(st.lp.as_ref(), n);
            }
            match r {
                Ok(n) if n == total => return Ok(()),
                Ok(n) => sent = n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => {
                    drop(st);
                    return Self::fatal_error(
                        slf,
                        errors::os_error(e),
                        "Fatal write error on socket transport",
                    );
                }
            }
        }
        buffer(&mut st, sent);
        Self::after_buffering(slf, st, was_empty)
    }

    pub(crate) fn write_impl(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data.cast::<PyBytes>().ok();
        let view;
        let slice: &[u8] = match bytes {
            Some(b) => b.as_bytes(),
            None => {
                if !(data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>())
                {
                    return Err(PyTypeError::new_err(format!(
                        "data argument must be a bytes-like object, not {}",
                        data.get_type().name()?.repr()?
                    )));
                }
                view = match BufView::get(data, false) {
                    Ok(v) => v,
                    Err(e) if e.is_instance_of::<PyBufferError>(slf.py()) => {
                        return Self::write_unexported(slf, e);
                    }
                    Err(e) => return Err(e),
                };
                view.as_slice()
            }
        };
        Self::write_with(
            slf,
            "write",
            slice.len(),
            |fd| net::send(fd, slice),
            |st, sent| match bytes {
                Some(b) => st.wbuf.push_bytes(b, sent),
                None => st.wbuf.push_copy(&slice[sent..]),
            },
        )
    }

    /// `write()` of a memoryview that cannot be exported as contiguous
    /// bytes (`err`, a BufferError): asyncio accepts it and fails in the
    /// send, with a fatal error; with data already buffered, 3.11's
    /// `bytearray.extend` refuses it (TypeError), 3.12+ fails at the next
    /// flush.
    fn write_unexported(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        let mut st = slf.get().st.lock();
        Self::check_writable(&st, "write")?;
        if !Self::write_checks(slf, &mut st)? {
            return Ok(());
        }
        if st.wbuf.is_empty() {
            drop(st);
            return Self::fatal_error(slf, err, "Fatal write error on socket transport");
        }
        if py.version_info() >= (3, 12) {
            if st.unsendable.is_none() {
                st.unsendable = Some(err.into_value(py).into_any());
            }
            return Ok(());
        }
        Err(PyTypeError::new_err(
            "can't set bytearray slice from memoryview",
        ))
    }

    pub(crate) fn writelines_impl(
        slf: &Bound<'_, Self>,
        list_of_data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        // 3.11 joins the chunks (b''.join: TypeError for anything it cannot
        // take); 3.12+ makes a memoryview of each (its own error) and fails
        // in the send for one that is not contiguous.
        let py312 = py.version_info() >= (3, 12);
        // 3.14+ skips any false chunk (`if not data`) before looking at it.
        let py314 = py.version_info() >= (3, 14);
        let mut items = Vec::new();
        let mut unsendable = None;
        for item in list_of_data.try_iter()? {
            let item = item?;
            let view = match BufView::get(&item, false) {
                Ok(v) => v,
                Err(_) if py314 && !item.is_truthy()? => continue,
                Err(e)
                    if py312
                        && (e.is_instance_of::<PyBufferError>(py)
                            || e.is_instance_of::<PyValueError>(py)) =>
                {
                    if e.is_instance_of::<PyValueError>(py) {
                        return Err(e);
                    }
                    unsendable.get_or_insert(e);
                    continue;
                }
                Err(_) => {
                    return Err(PyTypeError::new_err(format!(
                        "data argument must be a bytes-like object, not {}",
                        item.get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    )))
                }
            };
            if !view.is_empty() {
                items.push((item, view));
            }
        }
        if let Some(err) = unsendable {
            let st = slf.get().st.lock();
            Self::check_writable(&st, "writelines")?;
            if st.conn_lost > 0 || matches!(st.sock, Sock::Closed) {
                return Ok(());
            }
            drop(st);
            drop(items);
            return Self::fatal_error(slf, err, "Fatal write error on socket transport");
        }
        let total: usize = items.iter().map(|(_, v)| v.len()).sum();
        let send = |fd| {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let n = items.len().min(MAX_IOV);
            for (i, (_, v)) in items.iter().take(n).enumerate() {
                iov[i] = IoSlice::new(v.as_slice());
            }
            net::send_vectored(fd, &iov[..n])
        };
        let buffer = |st: &mut StreamState, mut skip: usize| {
            for (item, view) in &items {
                let len = view.len();
                if skip >= len {
                    skip -= len;
                    continue;
                }
                match item.cast::<PyBytes>() {
                    Ok(b) => st.wbuf.push_bytes(b, skip),
                    Err(_) => st.wbuf.push_copy(&view.as_slice()[skip..]),
                }
                skip = 0;
            }
        };
        Self::write_with(slf, "writelines", total, send, buffer)
    }
}
