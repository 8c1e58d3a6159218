//! The watcher half of the datagram transport: the state, the read and write
//! paths, flow control and closing (see the parent module for the design).
//!
//! Invariant: `state` is never held while Python code runs or a Python object
//! is dropped; everything Python is cloned out first.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Weak;

use parking_lot::Mutex;
use pyo3::exceptions::{PyBlockingIOError, PyInterruptedError, PyOSError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::contexts::run_in;
use crate::event_loop::io::IoWatcher;
use crate::event_loop::stats::ByteCount;
use crate::event_loop::{LoopCore, Registration};
use crate::internal_call::InternalCall;
use crate::reactor::addr::{self, RawAddr};
use crate::reactor::sockets as sys;
use crate::reactor::would_block;
use crate::reactor::{Readiness, Want};
use crate::transports::addr_to_py;
use crate::transports::flow::{notify_protocol, FlowControl};

/// asyncio's `_SelectorTransport.max_size`: the largest datagram read.
pub(crate) const MAX_SIZE: usize = 256 * 1024;
/// Datagrams read per readiness event before yielding to other fds.
const READ_BATCH: usize = 64;
/// asyncio's `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
pub(crate) const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

/// The transport's mutable part.
#[derive(Default)]
pub(crate) struct DatagramState {
    /// The claim on the fd in the loop's table, and what it is watched for.
    pub(crate) reg: Registration,
    /// `connection_made` was scheduled and reading started.
    pub(crate) started: bool,
    /// `pause_reading()` is in effect.
    pub(crate) paused: bool,
    /// `close()`/`abort()` was called.
    pub(crate) closing: bool,
    /// Set when `connection_lost` is scheduled; counts writes after it.
    pub(crate) conn_lost: u32,
    /// The water marks and whether `pause_writing()` was called (as the
    /// stream and pipe transports').
    pub(crate) flow: FlowControl,
    /// Datagrams waiting to be sent, with their address.
    pub(crate) buffer: VecDeque<(Vec<u8>, Option<Py<PyAny>>)>,
    /// Bytes in `buffer`.
    pub(crate) buffer_size: usize,
    /// The protocol.
    pub(crate) protocol: Option<Py<PyAny>>,
    /// The Python transport object the protocol sees.
    pub(crate) transport: Option<Py<PyAny>>,
    /// The socket object (None once closed).
    pub(crate) sock: Option<Py<PyAny>>,
    /// The remote address of a connected endpoint (asyncio's `_address`).
    pub(crate) address: Option<Py<PyAny>>,
    /// The context reads run in (asyncio's reader handle's; see `contexts`).
    pub(crate) read_ctx: Option<Py<PyAny>>,
    /// The context the flush of buffered datagrams runs in (the writer's).
    pub(crate) write_ctx: Option<Py<PyAny>>,
}

/// The watcher half of the transport.
pub(crate) struct UdpInner {
    /// The socket's fd.
    pub(crate) fd: RawFd,
    /// Whether the socket is connected (send, not sendto).
    pub(crate) connected: bool,
    /// The socket's address family.
    pub(crate) family: i32,
    /// Whether `recvfrom` results can be decoded natively.
    pub(crate) native_recv: bool,
    /// Python 3.13+: empty datagrams are sent, and each buffered datagram
    /// counts 8 more bytes (its header) in the write buffer size.
    pub(crate) py313: bool,
    /// Ourselves, to register with the loop.
    pub(crate) me: Weak<UdpInner>,
    /// The loop.
    pub(crate) lp: Py<LoopCore>,
    /// Payload bytes received and sent (the loop counts its total too).
    pub(crate) bytes: ByteCount,
    /// Everything else.
    pub(crate) state: Mutex<DatagramState>,
}

pub(crate) fn would_block_err(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<PyBlockingIOError>(py) || e.is_instance_of::<PyInterruptedError>(py)
}

/// A received datagram: `(data, addr)`.
type Datagram = (Py<PyAny>, Py<PyAny>);

/// The result of one send attempt.
pub(crate) enum Sent {
    Ok,
    WouldBlock,
    Error(PyErr),
}

impl UdpInner {
    /// The per-datagram overhead counted in the write buffer size.
    pub(crate) fn header(&self) -> usize {
        if self.py313 {
            8
        } else {
            0
        }
    }

    pub(crate) fn sync(&self, lp: &LoopCore) -> PyResult<()> {
        let mut st = self.state.lock();
        let read = st.started && !st.paused && !st.closing && st.sock.is_some();
        let write = !st.buffer.is_empty() && st.sock.is_some();
        match Want::from_flags(read, write) {
            Some(w) => st.reg.set_interest(lp, self.fd, w, || {
                self.me.upgrade().expect("alive while called")
            }),
            None => {
                // The entry may hold the last reference to us: let go of
                // our lock before it is dropped.
                let reg = st.reg.take();
                drop(st);
                reg.deregister(lp);
                Ok(())
            }
        }
    }

    pub(crate) fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.lock().protocol.as_ref().map(|p| p.clone_ref(py))
    }

    fn sock(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.lock().sock.as_ref().map(|p| p.clone_ref(py))
    }

    /// One send of `data` (to `addr` if not connected).
    /// The sockaddr of a numeric `(host, port[, flowinfo, scope_id])` tuple
    /// for this socket's family; None when only the `socket` module can
    /// tell (names, out-of-range values, other families, odd types), so that
    /// its parsing and errors stay the reference.
    fn native_addr(&self, addr: &Bound<'_, PyAny>) -> Option<RawAddr> {
        let t = addr.cast_exact::<PyTuple>().ok()?;
        let n = t.len();
        let ok_len = match self.family {
            libc::AF_INET => n == 2,
            libc::AF_INET6 => (2..=4).contains(&n),
            _ => false,
        };
        if !ok_len {
            return None;
        }
        let item = |i: usize| t.get_item(i).ok();
        let host_obj = item(0)?;
        let host = host_obj.cast_exact::<PyString>().ok()?.to_str().ok()?;
        let int = |i: usize| -> Option<i64> {
            if i >= n {
                return Some(0);
            }
            let v = item(i)?;
            v.cast_exact::<PyInt>().ok()?.extract::<i64>().ok()
        };
        let port = u16::try_from(int(1)?).ok()?;
        let flowinfo = u32::try_from(int(2)?).ok().filter(|f| *f <= 0xfffff)?;
        let scope_id = u32::try_from(int(3)?).ok()?;
        addr::inet_addr(self.family, host, port, flowinfo, scope_id)
    }

    /// Sends one datagram and counts its bytes if it went.
    pub(crate) fn send_one(&self, py: Python<'_>, data: &[u8], addr: Option<&Py<PyAny>>) -> Sent {
        let sent = self.send_uncounted(py, data, addr);
        if matches!(sent, Sent::Ok) {
            self.bytes.add_out(data.len());
            self.lp.get().stats.udp.add_out(data.len());
        }
        sent
    }

    fn send_uncounted(&self, py: Python<'_>, data: &[u8], addr: Option<&Py<PyAny>>) -> Sent {
        if self.connected {
            return match sys::send(self.fd, data) {
                Ok(_) => Sent::Ok,
                Err(e) if would_block(&e) => Sent::WouldBlock,
                Err(e) => Sent::Error(crate::errors::os_error(e)),
            };
        }
        if let Some(raw) = addr.and_then(|a| self.native_addr(a.bind(py))) {
            return match sys::sendto(self.fd, data, &raw) {
                Ok(_) => Sent::Ok,
                Err(e) if would_block(&e) => Sent::WouldBlock,
                Err(e) => Sent::Error(crate::errors::os_error(e)),
            };
        }
        let Some(sock) = self.sock(py) else {
            return Sent::Error(PyOSError::new_err("socket is closed"));
        };
        let addr = addr.map(|a| a.clone_ref(py)).unwrap_or_else(|| py.None());
        match sock
            .bind(py)
            .call_method1(intern!(py, "sendto"), (PyBytes::new(py, data), addr))
        {
            Ok(_) => Sent::Ok,
            Err(e) if would_block_err(py, &e) => Sent::WouldBlock,
            Err(e) => Sent::Error(e),
        }
    }

    fn call_exception_handler(&self, py: Python<'_>, message: &str, exc: &PyErr) -> PyResult<()> {
        let ctx = PyDict::new(py);
        ctx.set_item("message", message)?;
        ctx.set_item("exception", exc.value(py))?;
        let (tr, pr) = {
            let st = self.state.lock();
            (
                st.transport.as_ref().map(|t| t.clone_ref(py)),
                st.protocol.as_ref().map(|p| p.clone_ref(py)),
            )
        };
        ctx.set_item("transport", tr)?;
        ctx.set_item("protocol", pr)?;
        self.lp
            .bind(py)
            .call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
        Ok(())
    }

    /// `OSError`s go to `error_received`; anything else is fatal.
    pub(crate) fn report_error(
        &self,
        py: Python<'_>,
        e: PyErr,
        fatal_message: &str,
    ) -> PyResult<()> {
        if e.is_instance_of::<PyOSError>(py) {
            if let Some(p) = self.protocol(py) {
                p.bind(py)
                    .call_method1(intern!(py, "error_received"), (e.value(py),))?;
            }
            Ok(())
        } else if e.is_instance_of::<pyo3::exceptions::PyException>(py) {
            self.fatal_error(py, e, fatal_message)
        } else {
            Err(e)
        }
    }

    pub(crate) fn fatal_error(&self, py: Python<'_>, e: PyErr, message: &str) -> PyResult<()> {
        if !e.is_instance_of::<PyOSError>(py) {
            self.call_exception_handler(py, message, &e)?;
        }
        self.force_close(py, Some(e))
    }

    pub(crate) fn force_close(&self, py: Python<'_>, exc: Option<PyErr>) -> PyResult<()> {
        let dropped = {
            let mut st = self.state.lock();
            if st.conn_lost > 0 {
                return Ok(());
            }
            st.closing = true;
            st.conn_lost += 1;
            st.buffer_size = 0;
            std::mem::take(&mut st.buffer)
        };
        drop(dropped);
        self.sync(self.lp.get())?;
        self.schedule_connection_lost(py, exc)
    }

    pub(crate) fn schedule_connection_lost(
        &self,
        py: Python<'_>,
        exc: Option<PyErr>,
    ) -> PyResult<()> {
        let tr = self
            .state
            .lock()
            .transport
            .as_ref()
            .map(|t| t.clone_ref(py));
        if tr.is_none() {
            return Ok(());
        }
        let Some(me) = self.me.upgrade() else {
            return Ok(());
        };
        let func = InternalCall::native(
            py,
            "UdpTransport._call_connection_lost",
            Box::new(move |py, args| me.call_connection_lost(py, &args.get_item(0)?)),
        )?
        .unbind();
        let arg = match exc {
            Some(e) => e.value(py).clone().into_any().unbind(),
            None => py.None(),
        };
        let args = PyTuple::new(py, [arg])?.unbind();
        self.lp.get().soon(py, func, args)?;
        Ok(())
    }

    /// Starts reading (scheduled after `connection_made`): asyncio adds the
    /// reader here, so reads run in a copy of this callback's context.
    pub(crate) fn start_reading(&self, py: Python<'_>) -> PyResult<()> {
        let ctx = crate::contexts::copy_current(py)?;
        let old = {
            let mut st = self.state.lock();
            st.started = true;
            st.read_ctx.replace(ctx)
        };
        drop(old);
        self.sync(self.lp.get())
    }

    /// asyncio's `_call_connection_lost`: `connection_lost(exc)`, then,
    /// whatever it did, the socket is closed and the protocol, the
    /// transport and the socket forgotten (the Python transport's `_sock`,
    /// `_protocol` and `_loop` too).
    pub(crate) fn call_connection_lost(
        &self,
        py: Python<'_>,
        exc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let proto = self.state.lock().protocol.as_ref().map(|p| p.clone_ref(py));
        let result = crate::transports::core::tell_connection_lost(proto, exc);
        let (protocol, transport, sock, address) = {
            let mut st = self.state.lock();
            (
                st.protocol.take(),
                st.transport.take(),
                st.sock.take(),
                st.address.take(),
            )
        };
        let cleanup = (|| -> PyResult<()> {
            let none = py.None();
            if let Some(tr) = &transport {
                tr.bind(py).setattr(intern!(py, "_sock"), &none)?;
            }
            if let Some(sock) = &sock {
                sock.bind(py).call_method0(intern!(py, "close"))?;
            }
            if let Some(tr) = &transport {
                tr.bind(py).setattr(intern!(py, "_protocol"), &none)?;
                tr.bind(py).setattr(intern!(py, "_loop"), &none)?;
            }
            Ok(())
        })();
        drop((protocol, transport, sock, address));
        cleanup.and(result)
    }

    pub(crate) fn maybe_pause_protocol(&self, py: Python<'_>) -> PyResult<()> {
        self.flow_callback(py, true)
    }

    fn maybe_resume_protocol(&self, py: Python<'_>) -> PyResult<()> {
        self.flow_callback(py, false)
    }

    /// asyncio's `_maybe_pause_protocol` / `_maybe_resume_protocol`, as
    /// for streams and pipes (`flow::notify_protocol`).
    fn flow_callback(&self, py: Python<'_>, pause: bool) -> PyResult<()> {
        let (proto, wrapper) = {
            let mut st = self.state.lock();
            let size = st.buffer_size;
            if !st.flow.transition(pause, size) {
                return Ok(());
            }
            (
                st.protocol.as_ref().map(|p| p.clone_ref(py)),
                st.transport.as_ref().map(|t| t.clone_ref(py)),
            )
        };
        let Some(proto) = proto else { return Ok(()) };
        notify_protocol(py, pause, proto, wrapper, Some(self.lp.bind(py).clone()))
    }

    /// One datagram `(data, addr)`: Ok(None) when the socket would block.
    fn recv_one(&self, py: Python<'_>) -> PyResult<Option<Datagram>> {
        if !self.native_recv {
            let Some(sock) = self.sock(py) else {
                return Ok(None);
            };
            return match sock
                .bind(py)
                .call_method1(intern!(py, "recvfrom"), (MAX_SIZE,))
            {
                Ok(r) => {
                    let (d, a): (Py<PyAny>, Py<PyAny>) = r.extract()?;
                    Ok(Some((d, a)))
                }
                Err(e) if would_block_err(py, &e) => Ok(None),
                Err(e) => Err(e),
            };
        }
        let got = crate::transports::with_scratch(MAX_SIZE, |b| {
            sys::recvfrom(self.fd, b)
                .map(|(n, addr)| (PyBytes::new(py, &b[..n]).into_any().unbind(), addr))
        });
        match got {
            Ok((data, a)) => Ok(Some((data, addr_to_py(py, addr::decode(&a))?.unbind()))),
            Err(e) if would_block(&e) => Ok(None),
            Err(e) => Err(crate::errors::os_error(e)),
        }
    }

    fn read_ready(&self, py: Python<'_>) -> PyResult<bool> {
        for _ in 0..READ_BATCH {
            let proto = {
                let st = self.state.lock();
                if !st.started || st.paused || st.closing || st.conn_lost > 0 {
                    return Ok(true);
                }
                st.protocol.as_ref().map(|p| p.clone_ref(py))
            };
            let Some(proto) = proto else { return Ok(true) };
            match self.recv_one(py) {
                Ok(Some((data, addr))) => {
                    let n = data.bind(py).len().unwrap_or(0);
                    self.bytes.add_in(n);
                    self.lp.get().stats.udp.add_in(n);
                    proto
                        .bind(py)
                        .call_method1(intern!(py, "datagram_received"), (data, addr))?;
                }
                Ok(None) => return Ok(true),
                Err(e) => self.report_error(py, e, "Fatal read error on datagram transport")?,
            }
        }
        Ok(false)
    }

    fn write_ready(&self, py: Python<'_>) -> PyResult<()> {
        loop {
            let item = {
                let mut st = self.state.lock();
                if st.conn_lost > 0 && !st.closing {
                    break;
                }
                st.buffer.pop_front()
            };
            let Some((data, addr)) = item else { break };
            match self.send_one(py, &data, addr.as_ref()) {
                Sent::Ok => self.state.lock().buffer_size -= data.len() + self.header(),
                Sent::WouldBlock => {
                    self.state.lock().buffer.push_front((data, addr));
                    break;
                }
                Sent::Error(e) => {
                    self.state.lock().buffer_size -= data.len() + self.header();
                    drop((data, addr));
                    if e.is_instance_of::<PyOSError>(py) {
                        self.report_error(py, e, "")?;
                    } else {
                        return self.report_error(py, e, "Fatal write error on datagram transport");
                    }
                }
            }
        }
        self.maybe_resume_protocol(py)?;
        let (empty, closing) = {
            let st = self.state.lock();
            (st.buffer.is_empty(), st.closing)
        };
        self.sync(self.lp.get())?;
        if empty && closing {
            let attached = self.state.lock().transport.is_some();
            if attached {
                self.call_connection_lost(py, &py.None().into_bound(py))?;
            }
        }
        Ok(())
    }
}

/// BaseException subclasses that are neither Exception nor the two the loop
/// propagates are reported, as asyncio's `except BaseException` does.
impl IoWatcher for UdpInner {
    fn on_ready(&self, py: Python<'_>, lp: &Bound<'_, LoopCore>, ready: Readiness) -> PyResult<()> {
        let mut drained = true;
        let mut result = Ok(());
        let (read_ctx, write_ctx) = {
            let st = self.state.lock();
            (
                st.read_ctx.as_ref().map(|c| c.clone_ref(py)),
                st.write_ctx.as_ref().map(|c| c.clone_ref(py)),
            )
        };
        if ready.for_reader() {
            match run_in(py, read_ctx.as_ref(), || self.read_ready(py)) {
                Ok(d) => drained = d,
                Err(e) => {
                    drained = false;
                    result = Err(e);
                }
            }
        }
        if ready.for_writer() && result.is_ok() {
            result = run_in(py, write_ctx.as_ref(), || self.write_ready(py));
        }
        self.sync(lp.get())?;
        if !drained {
            self.state.lock().reg.rearm(lp.get())?;
        }
        result
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.lp)?;
        let Some(st) = self.state.try_lock() else {
            return Ok(());
        };
        for o in [
            &st.protocol,
            &st.transport,
            &st.sock,
            &st.address,
            &st.read_ctx,
            &st.write_ctx,
        ]
        .into_iter()
        .flatten()
        {
            visit.call(o)?;
        }
        for (_, a) in st.buffer.iter() {
            if let Some(a) = a {
                visit.call(a)?;
            }
        }
        Ok(())
    }

    fn describe(&self, _py: Python<'_>) -> String {
        // No repr(): the loop may ask while holding its own lock, where no
        // Python code may run.
        format!("transport <_DatagramTransport fd={}>", self.fd)
    }
}
