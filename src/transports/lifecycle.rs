//! The life cycle of `StreamTransport`: start (`connection_made`, then
//! reading, then the waiter), `close()`, `abort()`, the end of a drain
//! (`close()`/`write_eof()` waiting for the buffer), fatal errors and
//! `connection_lost`, called exactly once, after which the socket is closed
//! and every reference dropped. What it shares with the pipe transport
//! (`_fatal_error`, the scheduling and call of `connection_lost`, the start
//! of reading) is `core.rs`'s `ByteTransport`; this file implements it for
//! streams. It uses only the layers below it (`stream.rs`, the state), so
//! the read, write and sendfile paths can all call into it.

use std::os::fd::{AsRawFd, IntoRawFd};

use parking_lot::Mutex;
use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::core::{schedule_start, ByteTransport};
use super::pyobjs::{cached, set_exception_unless_done, set_result_unless_done, TRANSPORT_SOCKET};
use super::stream::StreamTransport;
use super::stream_state::{ProtoKind, Sock, StreamState};
use crate::errors;
use crate::reactor::net;

impl ByteTransport for StreamTransport {
    type State = StreamState;
    const START_STEP: &'static str = "StreamTransport._start_reading";
    const LOST_STEP: &'static str = "StreamTransport._call_connection_lost";

    #[inline(always)]
    fn state(&self) -> &Mutex<StreamState> {
        &self.st
    }

    #[inline(always)]
    fn sync_interest(slf: &Bound<'_, Self>, st: &mut StreamState) -> PyResult<()> {
        StreamTransport::sync_interest(slf, st)
    }

    fn mark_lost(st: &mut StreamState) -> bool {
        if st.conn_lost > 0 {
            return false;
        }
        st.conn_lost += 1;
        true
    }

    fn drained(st: &StreamState) -> bool {
        st.wbuf.is_empty() && st.sendfile.is_none()
    }

    /// Any OSError: asyncio's socket transports only log those.
    fn expected_error(_slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(exc.is_instance_of::<PyOSError>())
    }

    fn released(st: &StreamState) -> bool {
        matches!(st.sock, Sock::Closed)
    }

    /// Closes the socket, detaches from the server, fails the empty waiter
    /// and a `sendfile` in progress, and drops every reference.
    fn release(slf: &Bound<'_, Self>) -> PyResult<PyResult<()>> {
        let py = slf.py();
        let (reg, sock, refs) = {
            let mut st = slf.get().st.lock();
            st.fd = -1;
            let sock = std::mem::replace(&mut st.sock, Sock::Closed);
            (st.reg.take(), sock, st.take_refs())
        };
        let lp = refs.core.lp.as_ref().map(|l| l.bind(py));
        if let Some(lp) = lp {
            reg.deregister(lp.get());
        }
        let closed = sock.close(py);
        if let Some(server) = &refs.server {
            server
                .bind(py)
                .call_method1(intern!(py, "_detach"), (&refs.core.wrapper,))?;
        }
        if let Some(w) = &refs.empty_waiter {
            let e = pyo3::exceptions::PyConnectionError::new_err("Connection is closed by peer");
            set_exception_unless_done(w.bind(py), e.value(py))?;
        }
        if let Some(op) = refs.sendfile {
            op.abandon(py, lp)?;
        }
        Ok(closed)
    }
}

impl StreamTransport {
    /// `ByteTransport::fatal_error`, by the name the read and write paths
    /// call.
    pub(crate) fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        <Self as ByteTransport>::fatal_error(slf, err, message)
    }

    /// `close()` (`ByteTransport::close_when_drained`), by the name the
    /// read path calls.
    pub(crate) fn do_close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close_when_drained(slf)
    }

    /// What happens when the write buffer may have become empty (after a
    /// flush or a `sendfile`): the empty waiter, then the `close()` or
    /// `write_eof()` that waited for it.
    pub(crate) fn after_drain(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (waiter, closing, eof, fd) = {
            let mut st = slf.get().st.lock();
            if !st.wbuf.is_empty() || st.sendfile.is_some() || st.conn_lost > 0 {
                return Ok(());
            }
            Self::sync_interest(slf, &mut st)?;
            let closing = st.closing;
            if closing {
                st.conn_lost += 1;
            }
            (
                st.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                closing,
                st.eof,
                st.fd,
            )
        };
        if let Some(w) = waiter {
            set_result_unless_done(w.bind(py), py.None().bind(py))?;
        }
        if closing {
            Self::call_connection_lost(slf, py.None().bind(py))?;
        } else if eof {
            net::shutdown_write(fd).map_err(errors::os_error)?;
        }
        Ok(())
    }

    pub(crate) fn start(
        slf: &Bound<'_, Self>,
        wrapper: &Bound<'_, PyAny>,
        protocol: &Bound<'_, PyAny>,
        waiter: Option<&Bound<'_, PyAny>>,
        server: Option<&Bound<'_, PyAny>>,
        ctx: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let kind = ProtoKind::of(py, protocol)?;
        let (lp, old) = {
            let mut st = slf.get().st.lock();
            st.wrapper = Some(wrapper.clone().unbind());
            st.server = server.map(|s| s.clone().unbind());
            if let Some(c) = &ctx {
                st.ctx = Some(c.clone_ref(py));
                st.read_ctx = Some(c.clone_ref(py));
                st.write_ctx = Some(c.clone_ref(py));
            }
            let old = st.install_protocol(protocol.clone().unbind(), kind);
            (st.lp(py), old)
        };
        drop(old);
        let lp = lp.ok_or_else(errors::loop_closed)?;
        if let Some(server) = server {
            server.call_method1(intern!(py, "_attach"), (wrapper,))?;
        }
        // Each in a copy of the current context, as asyncio's call_soon
        // makes them (3.15+: in the transport's own).
        let start = Self::start_reading_call(slf)?;
        schedule_start(
            lp.get(),
            protocol,
            wrapper,
            start,
            waiter.cloned(),
            ctx.as_ref(),
        )
    }

    /// `get_extra_info('socket')`: a `TransportSocket` over a `socket.socket`
    /// that takes over the fd.
    pub(crate) fn make_extra_socket(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let fd = {
            let st = slf.get().st.lock();
            match &st.sock {
                Sock::Rust(fd) => fd.as_raw_fd(),
                Sock::Closed if st.extra_socket.is_none() => {
                    let kind = st.sock_kind;
                    drop(st);
                    return Self::closed_extra_socket(slf, kind);
                }
                _ => return Ok(py.None()),
            }
        };
        let kw = PyDict::new(py);
        kw.set_item("fileno", fd)?;
        let pysock = py
            .import("socket")?
            .getattr("socket")?
            .call((), Some(&kw))?;
        let wrapped = cached(py, &TRANSPORT_SOCKET, "asyncio.trsock", "TransportSocket")?
            .call1((&pysock,))?;
        let mut st = slf.get().st.lock();
        if let Sock::Rust(owned) = std::mem::replace(&mut st.sock, Sock::Python(pysock.unbind())) {
            // The Python socket owns the fd now.
            let _ = owned.into_raw_fd();
        }
        st.extra_socket = Some(wrapped.clone().unbind());
        Ok(wrapped.unbind())
    }
}

impl StreamTransport {
    /// The `socket` extra of a connection whose socket was closed before
    /// anyone asked: as asyncio's, a `TransportSocket` over a closed socket
    /// of the same family, type and protocol.
    fn closed_extra_socket(slf: &Bound<'_, Self>, kind: (i32, i32, i32)) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let pysock = py
            .import("socket")?
            .getattr("socket")?
            .call1((kind.0, kind.1, kind.2))?;
        pysock.call_method0(intern!(py, "close"))?;
        let wrapped = cached(py, &TRANSPORT_SOCKET, "asyncio.trsock", "TransportSocket")?
            .call1((&pysock,))?;
        let old = slf
            .get()
            .st
            .lock()
            .extra_socket
            .replace(wrapped.clone().unbind());
        drop(old);
        Ok(wrapped.unbind())
    }
}
