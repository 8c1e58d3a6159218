//! `StreamListener`: the native accept loop of one listening socket of a
//! `Server` (`python/oxloop/_streams.py` holds the `Server` object itself).
//!
//! Design:
//! - On readability, accept up to `backlog` connections (asyncio's rule),
//!   each as a non-blocking close-on-exec fd (`accept4`), and build its
//!   transport natively: `protocol_factory()`, the `StreamTransport` core, the
//!   Python transport object (`transport_class(core)`), then the usual
//!   `connection_made`/start-reading callbacks. No Python socket object is
//!   made per connection (`get_extra_info('socket')` makes one on demand).
//! - mio is edge-triggered: stopping at the `backlog` cap with connections
//!   still pending re-arms the fd so the next poll reports it again.
//! - Out of fds (EMFILE/ENFILE/ENOBUFS/ENOMEM): like asyncio, report to the
//!   exception handler ('socket.accept() out of system resource'), stop
//!   watching the socket and try again after `ACCEPT_RETRY_DELAY` (1 s):
//!   no busy loop, and the pending connections stay in the kernel's queue.
//!
//! - Contexts: the protocol factory and `connection_made` see the context of
//!   `_start_serving` (3.15+: of the `Server`'s creation), one copy per
//!   connection, as asyncio's accept task does; see `contexts`.
//!
//! Invariants: the listener never closes the listening socket (the `Server`
//! owns it and closes it after `close()` deregistered the listener); no lock
//! is held while Python code runs.

use std::io::ErrorKind;
use std::os::fd::RawFd;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::event_loop::io::{Watch, Watched};
use crate::event_loop::{LoopCore, Registration};
use crate::internal_call::InternalCall;
use crate::reactor::{net, Readiness, Want};
use crate::transports::must_propagate;
use crate::transports::stream::StreamTransport;
use crate::{contexts, errors};

/// asyncio's `constants.ACCEPT_RETRY_DELAY`, in seconds.
const ACCEPT_RETRY_DELAY: f64 = 1.0;

/// A listener's state.
struct ListenerState {
    /// The listening fd.
    fd: RawFd,
    /// The loop (None once closed).
    lp: Option<Py<LoopCore>>,
    /// The listening `socket.socket` (for error contexts).
    sock: Option<Py<PyAny>>,
    /// Makes a protocol per connection.
    protocol_factory: Option<Py<PyAny>>,
    /// The `Server` (attached/detached by each transport).
    server: Option<Py<PyAny>>,
    /// The Python transport class to wrap each core in.
    transport_class: Option<Py<PyAny>>,
    /// Connections accepted per readiness event at most.
    backlog: usize,
    /// Set `TCP_NODELAY` on accepted sockets.
    nodelay: bool,
    /// The listening socket's protocol number (accepted sockets share it).
    proto: i32,
    /// The claim on `fd` in the loop's table while accepting.
    reg: Registration,
    /// The timer that resumes accepting after EMFILE.
    retry: Option<Py<PyAny>>,
    /// `close()` was called.
    closed: bool,
    /// Each connection's accept step runs in a copy of this context (asyncio
    /// runs it as a task made from the listening socket's reader handle).
    ctx: Option<Py<PyAny>>,
    /// 3.15+: that copy is also the transport's own context.
    fixed_ctx: bool,
}

impl ListenerState {
    /// The Python objects the listener holds, besides its loop: what the
    /// collector is shown and what `close()`/`__clear__` let go of.
    fn refs(&mut self) -> [&mut Option<Py<PyAny>>; 6] {
        [
            &mut self.sock,
            &mut self.protocol_factory,
            &mut self.server,
            &mut self.transport_class,
            &mut self.retry,
            &mut self.ctx,
        ]
    }
}

/// The accept loop of one listening socket.
#[pyclass(frozen, module = "oxloop._core")]
pub struct StreamListener {
    /// See `ListenerState`.
    st: Mutex<ListenerState>,
}

impl Watched for StreamListener {
    fn on_ready(slf: &Bound<'_, Self>, lp: &Bound<'_, LoopCore>, ready: Readiness) -> PyResult<()> {
        if ready.for_reader() {
            Self::accept_ready(slf, lp)?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match self.st.try_lock() {
            Some(st) => format!("server <listening socket fd={}>", st.fd),
            None => "server".into(),
        }
    }
}

impl StreamListener {
    fn watch(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut st = slf.get().st.lock();
        if st.closed || st.reg.is_registered() {
            return Ok(());
        }
        let Some(lp) = st.lp.as_ref().map(|l| l.bind(py).clone()) else {
            return Ok(());
        };
        let fd = st.fd;
        st.reg
            .set_interest(lp.get(), fd, Want::Read, || Watch::of(slf))
    }

    fn accept_ready(slf: &Bound<'_, Self>, lp: &Bound<'_, LoopCore>) -> PyResult<()> {
        let (fd, backlog) = {
            let st = slf.get().st.lock();
            if st.closed || !st.reg.is_registered() {
                return Ok(());
            }
            (st.fd, st.backlog.max(1))
        };
        for _ in 0..backlog {
            match net::accept(fd) {
                Ok((conn, addr)) => {
                    Self::new_connection(slf, lp, conn, addr)?;
                    if !slf.get().st.lock().reg.is_registered() {
                        return Ok(()); // closed by a callback
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Ok(())
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    return Self::out_of_resources(slf, lp, errors::os_error(e));
                }
                Err(e) => return Err(errors::os_error(e)),
            }
        }
        // Connections may still be pending: have the next poll report them.
        slf.get().st.lock().reg.rearm(lp.get())
    }

    fn new_connection(
        slf: &Bound<'_, Self>,
        lp: &Bound<'_, LoopCore>,
        conn: std::os::fd::OwnedFd,
        addr: crate::reactor::addr::RawAddr,
    ) -> PyResult<()> {
        let py = slf.py();
        let (factory, server, class, (nodelay, sock_proto), ctx, fixed_ctx) = {
            let st = slf.get().st.lock();
            match (&st.protocol_factory, &st.server, &st.transport_class) {
                (Some(f), Some(s), Some(c)) => (
                    f.clone_ref(py),
                    s.clone_ref(py),
                    c.clone_ref(py),
                    (st.nodelay, st.proto),
                    st.ctx.as_ref().map(|c| c.clone_ref(py)),
                    st.fixed_ctx,
                ),
                _ => return Ok(()),
            }
        };
        let conn_ctx = match &ctx {
            Some(c) => Some(contexts::copy_of(py, c)?),
            None => None,
        };
        let mut protocol = None;
        let mut transport = None;
        let result = contexts::run_in(py, conn_ctx.as_ref(), || -> PyResult<()> {
            let proto = factory.bind(py).call0()?;
            protocol = Some(proto.clone());
            let core = StreamTransport::accepted(
                py,
                lp.clone().unbind(),
                conn,
                addr,
                nodelay,
                sock_proto,
            )?;
            let wrapper = class.bind(py).call1((core.clone_ref(py),))?;
            transport = Some(wrapper.clone());
            let own = if fixed_ctx {
                conn_ctx.as_ref().map(|c| c.clone_ref(py))
            } else {
                None
            };
            StreamTransport::start(
                core.bind(py),
                &wrapper,
                &proto,
                None,
                Some(server.bind(py)),
                own,
            )
        });
        match result {
            Ok(()) => Ok(()),
            Err(e) if must_propagate(py, &e) => Err(e),
            Err(e) => {
                if let Some(t) = &transport {
                    let _ = t.call_method0("close");
                }
                if lp.get().debug_enabled() {
                    let ctx = PyDict::new(py);
                    ctx.set_item(
                        "message",
                        "Error on transport creation for incoming connection",
                    )?;
                    ctx.set_item("exception", e.value(py))?;
                    if let Some(p) = protocol {
                        ctx.set_item("protocol", p)?;
                    }
                    if let Some(t) = transport {
                        ctx.set_item("transport", t)?;
                    }
                    lp.call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
                }
                Ok(())
            }
        }
    }

    fn out_of_resources(
        slf: &Bound<'_, Self>,
        lp: &Bound<'_, LoopCore>,
        err: PyErr,
    ) -> PyResult<()> {
        let py = slf.py();
        let (reg, sock) = {
            let mut st = slf.get().st.lock();
            (st.reg.take(), st.sock.as_ref().map(|s| s.clone_ref(py)))
        };
        reg.deregister(lp.get());
        let ctx = PyDict::new(py);
        ctx.set_item("message", "socket.accept() out of system resource")?;
        ctx.set_item("exception", err.value(py))?;
        if let Some(sock) = sock {
            let ts = py
                .import("asyncio.trsock")?
                .getattr("TransportSocket")?
                .call1((sock,))?;
            ctx.set_item("socket", ts)?;
        }
        lp.call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
        let resume =
            InternalCall::callable(slf.as_any(), "StreamListener._resume", |target, _| {
                let slf = target.cast::<Self>()?;
                let old = slf.get().st.lock().retry.take();
                drop(old);
                Self::watch(slf)
            })?;
        let timer = lp.call_method1(intern!(py, "call_later"), (ACCEPT_RETRY_DELAY, resume))?;
        let old = {
            let mut st = slf.get().st.lock();
            if st.closed {
                Some(timer.unbind())
            } else {
                st.retry.replace(timer.unbind())
            }
        };
        if let Some(t) = old {
            t.bind(py).call_method0("cancel")?;
        }
        Ok(())
    }
}

#[pymethods]
impl StreamListener {
    #[new]
    #[pyo3(signature = (lp, sock, protocol_factory, server, transport_class, backlog, nodelay, context = None, fixed_context = false))]
    #[allow(
        clippy::too_many_arguments,
        reason = "the Python constructor's signature: one parameter per argument Python passes"
    )]
    fn py_new(
        py: Python<'_>,
        lp: Bound<'_, LoopCore>,
        sock: Bound<'_, PyAny>,
        protocol_factory: Bound<'_, PyAny>,
        server: Bound<'_, PyAny>,
        transport_class: Bound<'_, PyAny>,
        backlog: i64,
        nodelay: bool,
        context: Option<Bound<'_, PyAny>>,
        fixed_context: bool,
    ) -> PyResult<Self> {
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        let proto: i32 = sock.getattr(intern!(py, "proto"))?.extract()?;
        let ctx = match context.filter(|c| !c.is_none()) {
            Some(c) if contexts::is_context(&c) => Some(c.unbind()),
            Some(_) => {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "context must be a contextvars.Context",
                ))
            }
            None => None,
        };
        Ok(Self {
            st: Mutex::new(ListenerState {
                fd,
                lp: Some(lp.unbind()),
                sock: Some(sock.unbind()),
                protocol_factory: Some(protocol_factory.unbind()),
                server: Some(server.unbind()),
                transport_class: Some(transport_class.unbind()),
                backlog: backlog.clamp(1, 65535) as usize,
                nodelay,
                proto,
                reg: Registration::new(),
                retry: None,
                closed: false,
                ctx,
                fixed_ctx: fixed_context,
            }),
        })
    }

    /// Starts accepting.
    fn start(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::watch(slf)
    }

    /// Stops accepting for good and drops the references (the `Server`
    /// closes the socket).
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (reg, lp, retry, refs) = {
            let mut st = slf.get().st.lock();
            st.closed = true;
            let retry = st.retry.take();
            (
                st.reg.take(),
                st.lp.take(),
                retry,
                st.refs().map(Option::take),
            )
        };
        if let Some(lp) = &lp {
            reg.deregister(lp.get());
        }
        let cancelled = match &retry {
            Some(t) => t.bind(py).call_method0("cancel").map(drop),
            None => Ok(()),
        };
        drop((lp, retry, refs));
        cancelled
    }

    /// Whether the listener is accepting now (false while backing off).
    fn is_accepting(&self) -> bool {
        self.st.lock().reg.is_registered()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(mut st) = self.st.try_lock() else {
            return Ok(());
        };
        visit.call(&st.lp)?;
        for o in st.refs() {
            visit.call(&*o)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let taken = {
            let mut st = self.st.lock();
            (st.lp.take(), st.refs().map(Option::take))
        };
        drop(taken);
    }
}
