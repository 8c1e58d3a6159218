//! The Python face of `PipeTransport` (see `pipe.rs`): its own
//! `#[pymethods]` beside the ones it shares with the stream transport
//! (`core.rs`'s `byte_transport_pymethods!`), and its `Watched` impl, the
//! entry from the loop into the read and write paths (`pipe_io.rs`).
//! Nothing below calls up into this file.

use std::os::fd::RawFd;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3::{intern, PyTraverseError, PyVisit};

use super::core::{byte_transport_pymethods, schedule_start, ByteTransport};
use super::pipe::PipeTransport;
use crate::contexts::run_in;
use crate::event_loop::io::Watched;
use crate::event_loop::stats_api::bytes_dict;
use crate::event_loop::LoopCore;
use crate::reactor::Readiness;

byte_transport_pymethods!(PipeTransport {
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
        Ok(Self::new(lp.unbind(), pipe.unbind(), fd, writable, watch_close))
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
        let start = Self::start_reading_call(slf)?;
        schedule_start(lp.get(), &protocol, &wrapper, start, waiter, None)
    }

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::write_impl(slf, data)
    }

    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let joined = PyBytes::new(py, b"").call_method1(intern!(py, "join"), (list_of_data,))?;
        Self::write_impl(slf, &joined)
    }

    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close_when_drained(slf)
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let (writable, open, closing) = {
            let st = slf.get().st.lock();
            (st.writable, st.pipe.is_some(), st.closing)
        };
        if closing {
            return Ok(());
        }
        if !writable {
            return Self::force_close(slf, None);
        }
        if open {
            Self::write_eof(slf)?;
        }
        Ok(())
    }

    fn set_protocol(&self, protocol: Py<PyAny>) {
        let old = self.st.lock().protocol.replace(protocol);
        drop(old);
    }

    /// `{"bytes_in": ..., "bytes_out": ...}`: bytes so far
    /// (`get_extra_info("oxloop_stats")`).
    fn _stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (rx, tx) = self.bytes.read();
        bytes_dict(py, rx, tx)
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
        Self::release(slf)?
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(st) = self.st.try_lock() else {
            return Ok(());
        };
        if let Some(pipe) = &st.pipe {
            visit.call(pipe)?;
        }
        st.core.traverse(&visit)
    }

    fn __clear__(&self) {
        let taken = self.st.lock().core.take_refs();
        drop(taken);
    }
});

/// The loop calls the transport here when its fd is ready.
impl Watched for PipeTransport {
    #[inline]
    fn on_ready(slf: &Bound<'_, Self>, lp: &Bound<'_, LoopCore>, ready: Readiness) -> PyResult<()> {
        let py = slf.py();
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
                run_in(py, read_ctx.as_ref(), || Self::read_ready(slf, lp))?;
            }
            return Ok(());
        }
        if watch_close && ready.for_reader() {
            // Readable on a write end: the reader went away.
            return run_in(py, read_ctx.as_ref(), || Self::peer_closed(slf));
        }
        if ready.for_writer() {
            run_in(py, write_ctx.as_ref(), || Self::write_ready(slf))?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match self.st.try_lock() {
            Some(st) => format!("pipe transport <fd={}>", st.fd),
            None => "pipe transport".into(),
        }
    }
}
