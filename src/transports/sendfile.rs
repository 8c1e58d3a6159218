//! `loop.sendfile()` on a stream transport: zero-copy `sendfile(2)` from a
//! regular file, driven by the transport's own writability events.
//!
//! asyncio's semantics (unix_events' `_sock_sendfile_native`): the Python
//! side first waits until the write buffer is empty (the "empty waiter";
//! `write()` raises while it is set), then starts the operation here. It
//! sends until `count` bytes went out or the file ends, waits for
//! writability on `WouldBlock`, and resolves the future with the number of
//! bytes sent. A failure before any byte was sent becomes
//! `SendfileNotAvailableError` (the caller falls back to read + write); the
//! file position is set past the sent bytes, as asyncio does.

use std::io::ErrorKind;

use pyo3::intern;
use pyo3::prelude::*;

use super::pyobjs::{set_exception_unless_done, set_result_unless_done};
use super::stream::StreamTransport;
use super::stream_state::SendfileOp;
use crate::errors;
use crate::reactor::net;

/// Bytes per `sendfile` call when no count was given.
const CHUNK: usize = 1 << 30;

/// Where one `sendfile_step` left the operation.
enum StepOutcome {
    /// Waiting for writability.
    Pending,
    /// Finished (all sent, end of file, or the future was cancelled).
    Done(Box<SendfileOp>),
    /// Failed with this error.
    Failed(Box<SendfileOp>, PyErr),
}

impl StreamTransport {
    /// Sends as much as the socket takes; finishes the operation when done.
    pub(crate) fn sendfile_step(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        loop {
            let fut = {
                let st = slf.get().st.lock();
                match &st.sendfile {
                    Some(op) => op.fut.clone_ref(py),
                    None => return Ok(()),
                }
            };
            let cancelled = fut
                .bind(py)
                .call_method0(intern!(py, "done"))?
                .is_truthy()?;
            let outcome = {
                // Taken before the lock, so dropped after it.
                let lp = slf.get().st.lock().lp.as_ref().map(|l| l.clone_ref(py));
                let mut st = slf.get().st.lock();
                let fd = st.fd;
                let Some(op) = st.sendfile.as_mut() else {
                    return Ok(());
                };
                if cancelled {
                    StepOutcome::Done(st.sendfile.take().expect("checked"))
                } else {
                    let want = match op.count {
                        Some(c) => (c - op.sent).min(CHUNK as u64) as usize,
                        None => CHUNK,
                    };
                    if want == 0 {
                        StepOutcome::Done(st.sendfile.take().expect("checked"))
                    } else {
                        match net::sendfile(fd, op.in_fd, &mut op.offset, want) {
                            Ok(0) => StepOutcome::Done(st.sendfile.take().expect("checked")),
                            Ok(n) => {
                                slf.get().count_out(lp.as_ref(), n);
                                op.sent += n as u64;
                                continue;
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                                Self::sync_interest(slf, &mut st)?;
                                StepOutcome::Pending
                            }
                            Err(e) => {
                                let op = st.sendfile.take().expect("checked");
                                let err = if op.sent == 0 {
                                    let cls = py
                                        .import("asyncio.exceptions")?
                                        .getattr("SendfileNotAvailableError")?;
                                    PyErr::from_value(cls.call1(("os.sendfile call failed",))?)
                                } else {
                                    errors::os_error(e)
                                };
                                StepOutcome::Failed(op, err)
                            }
                        }
                    }
                }
            };
            match outcome {
                StepOutcome::Pending => return Ok(()),
                StepOutcome::Done(op) => {
                    op.update_filepos();
                    {
                        let mut st = slf.get().st.lock();
                        Self::sync_interest(slf, &mut st)?;
                    }
                    let sent = op.sent.into_pyobject(py)?;
                    if !cancelled {
                        set_result_unless_done(op.fut.bind(py), sent.as_any())?;
                    }
                    return Self::after_drain(slf);
                }
                StepOutcome::Failed(op, err) => {
                    op.update_filepos();
                    {
                        let mut st = slf.get().st.lock();
                        Self::sync_interest(slf, &mut st)?;
                    }
                    set_exception_unless_done(op.fut.bind(py), err.value(py))?;
                    return Ok(());
                }
            }
        }
    }
}

impl StreamTransport {
    /// A future resolved once the write buffer is empty; `write()` raises
    /// while it is set.
    pub(crate) fn make_empty_waiter(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let lp = {
            let st = slf.get().st.lock();
            if st.empty_waiter.is_some() {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "Empty waiter is already set",
                ));
            }
            st.lp
                .as_ref()
                .map(|l| l.clone_ref(py))
                .ok_or_else(errors::loop_closed)?
        };
        let fut = lp.bind(py).call_method0(intern!(py, "create_future"))?;
        let empty = {
            let mut st = slf.get().st.lock();
            st.empty_waiter = Some(fut.clone().unbind());
            st.wbuf.is_empty()
        };
        if empty {
            fut.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(fut.unbind())
    }

    pub(crate) fn reset_empty_waiter(&self) {
        let old = self.st.lock().empty_waiter.take();
        drop(old);
    }

    /// Starts `op` (made by `_sendfile_start`); its future gets the
    /// number of bytes sent.
    pub(crate) fn sendfile_start(slf: &Bound<'_, Self>, op: SendfileOp) -> PyResult<()> {
        {
            let mut st = slf.get().st.lock();
            if st.sendfile.is_some() {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "sendfile is already in progress",
                ));
            }
            st.sendfile = Some(Box::new(op));
        }
        Self::sendfile_step(slf)
    }
}
