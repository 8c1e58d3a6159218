//! The Python face of `StreamTransport`: thin `#[pymethods]` over the I/O
//! paths (`read.rs`, `write.rs`, `sendfile.rs`) and the life cycle
//! (`lifecycle.rs`), the methods it shares with the pipe transport coming
//! from `core.rs`'s `byte_transport_pymethods!`; and its `Watched` impl,
//! the entry from the loop into those paths. Nothing below calls up into
//! this file.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering::Relaxed;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;
use pyo3::{intern, PyTraverseError, PyVisit};

use super::addr_to_py;
use super::core::{byte_transport_pymethods, ByteTransport};
use super::pyobjs::{cached, TRANSPORT_SOCKET};
use super::stream::StreamTransport;
use super::stream_state::{LazyAddr, ProtoKind, SendfileOp, Sock, StreamState};
use crate::contexts::run_in;
use crate::errors;
use crate::event_loop::io::Watched;
use crate::event_loop::LoopCore;
use crate::reactor::net;
use crate::reactor::{Readiness, Want};

impl StreamTransport {
    /// `get_extra_info('sockname'/'peername')`: the name's Python value,
    /// built on the first call (outside the lock) and kept.
    fn extra_addr(
        slf: &Bound<'_, Self>,
        slot: fn(&mut StreamState) -> &mut LazyAddr,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let raw = match slot(&mut slf.get().st.lock()) {
            LazyAddr::Py(o) => return Ok(o.clone_ref(py)),
            LazyAddr::Raw(a) => a.clone(),
        };
        let obj = addr_to_py(py, raw.decode())?.unbind();
        let mut st = slf.get().st.lock();
        let slot = slot(&mut st);
        match slot {
            // Another thread built it first: hand out the kept one.
            LazyAddr::Py(o) => Ok(o.clone_ref(py)),
            LazyAddr::Raw(_) => {
                *slot = LazyAddr::Py(obj.clone_ref(py));
                Ok(obj)
            }
        }
    }
}

byte_transport_pymethods!(StreamTransport {
    /// A transport over a connected `socket.socket` (which it then owns).
    #[new]
    #[pyo3(signature = (lp, sock, name = "TCPTransport", nodelay = false))]
    fn py_new(
        py: Python<'_>,
        lp: Bound<'_, LoopCore>,
        sock: Bound<'_, PyAny>,
        name: &str,
        nodelay: bool,
    ) -> PyResult<Self> {
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        if fd < 0 {
            return Err(PyValueError::new_err("the socket is closed"));
        }
        if nodelay {
            net::set_nodelay(fd).map_err(errors::os_error)?;
        }
        let st = Self::new_state(
            lp.unbind(),
            fd,
            Sock::Python(sock.clone().unbind()),
            None,
            name == "UnixTransport",
        );
        let mut st = st;
        st.extra_socket = Some(
            cached(py, &TRANSPORT_SOCKET, "asyncio.trsock", "TransportSocket")?
                .call1((sock,))?
                .unbind(),
        );
        Ok(Self::with_state(st))
    }

    /// Sets the protocol and the Python transport object, attaches to the
    /// server, and schedules `connection_made`, the start of reading and the
    /// waiter, in asyncio's order.
    /// `context`: the transport's own context (3.15+), else None.
    #[pyo3(signature = (wrapper, protocol, waiter = None, server = None, context = None))]
    fn _start(
        slf: &Bound<'_, Self>,
        wrapper: Bound<'_, PyAny>,
        protocol: Bound<'_, PyAny>,
        waiter: Option<Bound<'_, PyAny>>,
        server: Option<Bound<'_, PyAny>>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let context = context.filter(|c| !c.is_none());
        if let Some(c) = &context {
            if !crate::contexts::is_context(c) {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "context must be a contextvars.Context",
                ));
            }
        }
        Self::start(
            slf,
            &wrapper,
            &protocol,
            waiter.as_ref(),
            server.as_ref(),
            context.map(Bound::unbind),
        )
    }

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::write_impl(slf, data)
    }

    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::writelines_impl(slf, list_of_data)
    }

    fn write_eof(&self) -> PyResult<()> {
        let mut st = self.st.lock();
        if st.closing || st.eof {
            return Ok(());
        }
        st.eof = true;
        if st.wbuf.is_empty() && st.sendfile.is_none() && st.fd >= 0 {
            net::shutdown_write(st.fd).map_err(errors::os_error)?;
        }
        Ok(())
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::do_close(slf)
    }

    /// asyncio's `_force_close(exc)` (used by `sslproto`).
    fn _force_close(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let exc = if exc.is_none() { None } else { Some(exc) };
        <Self as ByteTransport>::force_close(slf, exc)
    }

    fn set_protocol(&self, py: Python<'_>, protocol: Bound<'_, PyAny>) -> PyResult<()> {
        let kind = ProtoKind::of(py, &protocol)?;
        let old = self.st.lock().install_protocol(protocol.unbind(), kind);
        drop(old);
        Ok(())
    }

    #[pyo3(signature = (name, default = None))]
    fn get_extra_info(
        slf: &Bound<'_, Self>,
        name: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        let Ok(name) = name.cast::<PyString>() else {
            return Ok(default);
        };
        let st = slf.get().st.lock();
        Ok(match name.to_str()? {
            "peername" => {
                drop(st);
                return Self::extra_addr(slf, |st| &mut st.peername).map(Some);
            }
            "sockname" => {
                drop(st);
                return Self::extra_addr(slf, |st| &mut st.sockname).map(Some);
            }
            "oxloop_stats" => {
                let this = slf.get();
                let d = pyo3::types::PyDict::new(py);
                d.set_item("bytes_in", this.bytes_in.load(Relaxed))?;
                d.set_item("bytes_out", this.bytes_out.load(Relaxed))?;
                Some(d.into_any().unbind())
            }
            "socket" => {
                if let Some(s) = &st.extra_socket {
                    return Ok(Some(s.clone_ref(py)));
                }
                drop(st);
                return Self::make_extra_socket(slf).map(Some);
            }
            _ => default,
        })
    }

    /// "fd=N read=polling write=<idle, bufsize=0>" for the wrapper's repr.
    fn _repr_info(&self) -> String {
        let st = self.st.lock();
        let mut info = Vec::new();
        if matches!(st.sock, Sock::Closed) {
            info.push("closed".to_string());
        } else if st.closing {
            info.push("closing".to_string());
        }
        info.push(format!("fd={}", st.fileno));
        if !matches!(st.sock, Sock::Closed) {
            let read = matches!(st.reg.interest(), Some(Want::Read | Want::Both));
            let write = st.reg.is_registered() && !st.wbuf.is_empty();
            info.push(format!("read={}", if read { "polling" } else { "idle" }));
            info.push(format!(
                "write=<{}, bufsize={}>",
                if write { "polling" } else { "idle" },
                st.wbuf.len()
            ));
        }
        info.join(" ")
    }

    /// Whether the socket is still open (the wrapper's `__del__` asks).
    fn _is_open(&self) -> bool {
        !matches!(self.st.lock().sock, Sock::Closed)
    }

    /// Closes the socket without callbacks (`__del__` of an unclosed
    /// transport, after it warned).
    fn _dispose(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (lp, reg, sock) = {
            let mut st = slf.get().st.lock();
            st.fd = -1;
            (
                st.lp.take(),
                st.reg.take(),
                std::mem::replace(&mut st.sock, Sock::Closed),
            )
        };
        if let Some(lp) = &lp {
            reg.deregister(lp.get());
        }
        sock.close(py)
    }

    fn _make_empty_waiter(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::make_empty_waiter(slf)
    }

    fn _reset_empty_waiter(&self) {
        self.reset_empty_waiter()
    }

    /// Starts sending `count` bytes (0: to the end) of `in_fd` from
    /// `offset`; `fut` gets the number of bytes sent.
    fn _sendfile_start(
        slf: &Bound<'_, Self>,
        in_fd: RawFd,
        offset: i64,
        count: u64,
        fut: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        Self::sendfile_start(slf, SendfileOp::new(in_fd, offset, count, fut.unbind()))
    }

    /// The fd number (kept after close, as asyncio's).
    #[getter]
    fn _sock_fd(&self) -> RawFd {
        self.st.lock().fileno
    }

    /// The loop (None after `connection_lost`).
    #[getter]
    fn _loop(&self, py: Python<'_>) -> Option<Py<LoopCore>> {
        self.st.lock().lp.as_ref().map(|l| l.clone_ref(py))
    }

    /// Whether reading is paused (`pause_reading()`), as asyncio's `_paused`.
    #[getter]
    fn _paused(&self) -> bool {
        self.st.lock().paused
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(st) = self.st.try_lock() else {
            return Ok(());
        };
        st.core.traverse(&visit)?;
        for o in [st.sockname.built(), st.peername.built()].into_iter().flatten() {
            visit.call(o)?;
        }
        for o in [
            &st.server,
            &st.extra_socket,
            &st.empty_waiter,
            &st.unsendable,
        ]
        .into_iter()
        .flatten()
        {
            visit.call(o)?;
        }
        if let Sock::Python(s) = &st.sock {
            visit.call(s)?;
        }
        match &st.kind {
            Some(ProtoKind::Plain(f)) => visit.call(f)?,
            Some(ProtoKind::Buffered(g, u)) => {
                visit.call(g)?;
                visit.call(u)?;
            }
            _ => {}
        }
        match &st.sendfile {
            Some(op) => op.traverse(&visit),
            None => Ok(()),
        }
    }

    fn __clear__(&self) {
        let taken = {
            let mut st = self.st.lock();
            let extras = [st.extra_socket.take(), st.unsendable.take()];
            (st.take_refs(), extras)
        };
        drop(taken);
    }
});

/// The loop calls the transport here when its fd is ready: the read path
/// (`read.rs`) in the reader's context, the write path (`write.rs`, or
/// `sendfile.rs` once the buffer is empty) in the writer's.
impl Watched for StreamTransport {
    #[inline]
    fn on_ready(slf: &Bound<'_, Self>, lp: &Bound<'_, LoopCore>, ready: Readiness) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if ready.for_reader() {
            let ctx = this.st.lock().read_ctx.as_ref().map(|c| c.clone_ref(py));
            let before = this.bytes_in.load(Relaxed);
            let r = run_in(py, ctx.as_ref(), || Self::handle_read(slf, lp, ready));
            let got = this.bytes_in.load(Relaxed).wrapping_sub(before);
            lp.get().stats.stream.add_in(got as usize);
            r?;
        }
        if ready.for_writer() {
            let ctx = this.st.lock().write_ctx.as_ref().map(|c| c.clone_ref(py));
            run_in(py, ctx.as_ref(), || Self::handle_write(slf))?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match self.st.try_lock() {
            Some(st) => format!("transport <{} fd={}>", st.class_name(), st.fd),
            None => "transport".into(),
        }
    }
}
