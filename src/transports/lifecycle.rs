//! The life cycle of `StreamTransport`: start (`connection_made`, then
//! reading, then the waiter), `close()`, `abort()`, fatal errors (reported
//! like asyncio's `_fatal_error`) and `connection_lost`, called exactly
//! once, after which the socket is closed and every reference dropped.

use std::os::fd::{AsRawFd, IntoRawFd};

use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::core::{schedule_start, tell_connection_lost};
use super::must_propagate;
use super::pyobjs::{cached, set_exception_unless_done, TRANSPORT_SOCKET};
use super::stream::StreamTransport;
use super::stream_state::{ProtoKind, Sock};
use crate::contexts::fixed_or_copy;
use crate::errors;
use crate::event_loop::LoopCore;
use crate::internal_call::InternalCall;

impl StreamTransport {
    /// asyncio's `_fatal_error`: report (unless it is an OSError) and
    /// force-close. Returns an error only for KeyboardInterrupt/SystemExit.
    pub(crate) fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if must_propagate(py, &err) {
            return Err(err);
        }
        let exc = err.into_value(py).into_bound(py);
        let (lp, wrapper, proto) = {
            let st = slf.get().st.lock();
            (
                st.lp(py),
                st.wrapper.as_ref().map(|w| w.clone_ref(py)),
                st.protocol.as_ref().map(|p| p.clone_ref(py)),
            )
        };
        let quiet = exc.is_instance_of::<PyOSError>();
        super::report_fatal(py, lp, quiet, message, &exc, wrapper, proto)?;
        Self::force_close(slf, Some(exc.into_any()))
    }

    /// asyncio's `_force_close`: drop buffered data, stop I/O and schedule
    /// `connection_lost(exc)` (once).
    pub(crate) fn force_close(
        slf: &Bound<'_, Self>,
        exc: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let mut released = Vec::new();
        let lp = {
            let mut st = slf.get().st.lock();
            if st.conn_lost > 0 {
                return Ok(());
            }
            st.wbuf.clear(&mut released);
            st.closing = true;
            st.conn_lost += 1;
            Self::sync_interest(slf, &mut st)?;
            st.lp(py)
        };
        drop(released);
        Self::schedule_connection_lost(slf, lp, exc)
    }

    pub(crate) fn schedule_connection_lost(
        slf: &Bound<'_, Self>,
        lp: Option<Bound<'_, LoopCore>>,
        exc: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let Some(lp) = lp else { return Ok(()) };
        let cb = InternalCall::callable(
            slf.as_any(),
            "StreamTransport._call_connection_lost",
            Self::connection_lost_step,
        )?
        .unbind();
        let arg = exc.map(Bound::unbind).unwrap_or_else(|| py.None());
        let ctx = slf.get().st.lock().ctx.as_ref().map(|c| c.clone_ref(py));
        lp.get()
            .soon_in(py, cb, PyTuple::new(py, [arg])?.unbind(), ctx.as_ref())
            .map(drop)
    }

    /// `close()`.
    pub(crate) fn do_close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let lp = {
            let mut st = slf.get().st.lock();
            if st.closing {
                return Ok(());
            }
            st.closing = true;
            let idle = st.wbuf.is_empty() && st.sendfile.is_none();
            if idle {
                st.conn_lost += 1;
            }
            Self::sync_interest(slf, &mut st)?;
            if !idle {
                return Ok(());
            }
            st.lp(py)
        };
        Self::schedule_connection_lost(slf, lp, None)
    }

    /// The `InternalCall` step asyncio's `_call_connection_lost(exc)` is.
    fn connection_lost_step(target: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        Self::call_connection_lost(target.cast::<Self>()?, &args.get_item(0)?)
    }

    /// Starts reading (scheduled after `connection_made`, an
    /// `InternalCall`): asyncio adds the reader here, so reads run in a
    /// copy of this callback's context.
    fn start_reading_step(target: &Bound<'_, PyAny>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        let slf = target.cast::<Self>()?;
        let py = slf.py();
        let fixed = slf.get().st.lock().ctx.as_ref().map(|c| c.clone_ref(py));
        let ctx = fixed_or_copy(py, fixed.as_ref())?;
        let mut st = slf.get().st.lock();
        st.started = true;
        let old = st.read_ctx.replace(ctx);
        let r = Self::sync_interest(slf, &mut st);
        drop(st);
        drop(old);
        r
    }

    pub(crate) fn call_connection_lost(
        slf: &Bound<'_, Self>,
        exc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let proto = {
            let st = slf.get().st.lock();
            if matches!(st.sock, Sock::Closed) {
                return Ok(());
            }
            st.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        let result = tell_connection_lost(proto, exc);
        let (lp, reg, sock, wrapper, protocol, kind, server, waiter, sendfile, ctxs) = {
            let mut st = slf.get().st.lock();
            st.fd = -1;
            let ctxs = (st.ctx.take(), st.read_ctx.take(), st.write_ctx.take());
            (
                st.lp.take(),
                st.reg.take(),
                std::mem::replace(&mut st.sock, Sock::Closed),
                st.wrapper.take(),
                st.protocol.take(),
                st.kind.take(),
                st.server.take(),
                st.empty_waiter.take(),
                st.sendfile.take(),
                ctxs,
            )
        };
        if let Some(lp) = &lp {
            reg.deregister(lp.get());
        }
        let closed = sock.close(py);
        if let Some(server) = server {
            server
                .bind(py)
                .call_method1(intern!(py, "_detach"), (&wrapper,))?;
        }
        if let Some(w) = waiter {
            let e = pyo3::exceptions::PyConnectionError::new_err("Connection is closed by peer");
            set_exception_unless_done(w.bind(py), e.value(py))?;
        }
        if let Some(op) = sendfile {
            op.abandon(py, lp.as_ref().map(|l| l.bind(py)))?;
        }
        drop((protocol, kind, wrapper, lp, ctxs));
        result.and(closed)
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
        let start = InternalCall::callable(
            slf.as_any(),
            "StreamTransport._start_reading",
            Self::start_reading_step,
        )?;
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
