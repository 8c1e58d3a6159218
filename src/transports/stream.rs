//! `StreamTransport`: the native core of one TCP or Unix stream connection
//! (asyncio's `_SelectorSocketTransport`). See the module docs of
//! `transports` for the design and invariants.
//!
//! Interest in the reactor follows the state: `Read` while reading,
//! `Write` while data is buffered, `Both` for both; a registered transport
//! that wants neither stays registered for `Write` (which stays quiet on an
//! idle socket), so the fd is claimed until `connection_lost`.

use std::io::{ErrorKind, IoSlice};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyString, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};
use socket2::SockAddr;

use super::flow::{FlowControl, WriteBuffer};
use super::{logger, must_propagate, sockaddr_to_py, with_read_buf, BufView, LOG_THRESHOLD_FOR_CONNLOST_WRITES};
use crate::errors;
use crate::event_loop::io::IoWatcher;
use crate::event_loop::LoopCore;
use crate::reactor::net::{self, MAX_IOV};
use crate::reactor::{Readiness, Want};

/// Reads per readiness event before the fd is re-armed (fairness).
const MAX_READS: usize = 16;

/// Who owns the socket.
pub(crate) enum Sock {
    /// The transport (an accepted connection).
    Rust(OwnedFd),
    /// A `socket.socket` (passed in, or made for `get_extra_info`).
    Python(Py<PyAny>),
    /// Closed.
    Closed,
}

/// How data reaches the protocol; methods looked up once per protocol.
pub(crate) enum ProtoKind {
    /// `Protocol.data_received`.
    Plain(Py<PyAny>),
    /// `BufferedProtocol.get_buffer` and `buffer_updated`.
    Buffered(Py<PyAny>, Py<PyAny>),
    /// The methods were missing at `set_protocol`; look them up each time
    /// (the lookup raises the error asyncio would). `true`: buffered.
    Lazy(bool),
}

/// The mutable state of a transport.
pub(crate) struct St {
    /// The socket's fd (-1 once closed).
    pub(crate) fd: RawFd,
    /// The socket's owner.
    pub(crate) sock: Sock,
    /// The loop (None after `connection_lost`).
    pub(crate) lp: Option<Py<LoopCore>>,
    /// The Python transport object user code sees.
    pub(crate) wrapper: Option<Py<PyAny>>,
    /// The protocol.
    pub(crate) protocol: Option<Py<PyAny>>,
    /// Its cached methods.
    pub(crate) kind: Option<ProtoKind>,
    /// The `Server` that accepted the connection.
    pub(crate) server: Option<Py<PyAny>>,
    /// The reactor token while registered.
    pub(crate) token: Option<usize>,
    /// What the reactor watches for.
    pub(crate) want: Option<Want>,
    /// Reading was started (after `connection_made`).
    pub(crate) started: bool,
    /// `pause_reading()`.
    pub(crate) paused: bool,
    /// EOF received and the protocol kept the transport half-open.
    pub(crate) read_eof: bool,
    /// `close()` was called (or the transport is being force-closed).
    pub(crate) closing: bool,
    /// `write_eof()` was called.
    pub(crate) eof: bool,
    /// `connection_lost` scheduled (then counts writes after that).
    pub(crate) conn_lost: u32,
    /// Unsent data.
    pub(crate) wbuf: WriteBuffer,
    /// Write-buffer limits.
    pub(crate) flow: FlowControl,
    /// `get_extra_info('sockname')`.
    pub(crate) sockname: Option<Py<PyAny>>,
    /// `get_extra_info('peername')`.
    pub(crate) peername: Option<Py<PyAny>>,
    /// `get_extra_info('socket')`, made on first use.
    pub(crate) extra_socket: Option<Py<PyAny>>,
    /// Resolved when the write buffer is empty (used by `sendfile`).
    pub(crate) empty_waiter: Option<Py<PyAny>>,
    /// The `sendfile` in progress.
    pub(crate) sendfile: Option<super::sendfile::SendfileOp>,
    /// The class name shown in reprs.
    pub(crate) name: &'static str,
}

impl St {
    #[inline]
    fn reading_active(&self) -> bool {
        self.started && !self.paused && !self.closing && !self.read_eof && self.conn_lost == 0
    }

    fn lp<'py>(&self, py: Python<'py>) -> Option<Bound<'py, LoopCore>> {
        self.lp.as_ref().map(|l| l.bind(py).clone())
    }
}

/// The native core of a stream transport.
#[pyclass(frozen, module = "oxloop._core")]
pub struct StreamTransport {
    /// Everything; see `St`.
    pub(crate) st: Mutex<St>,
}

/// The loop's handle on a transport.
struct Watch(Py<StreamTransport>);

impl IoWatcher for Watch {
    fn on_ready(&self, py: Python<'_>, lp: &Bound<'_, LoopCore>, ready: Readiness) -> PyResult<()> {
        let slf = self.0.bind(py);
        if ready.for_reader() {
            StreamTransport::handle_read(slf, lp, ready)?;
        }
        if ready.for_writer() {
            StreamTransport::handle_write(slf)?;
        }
        Ok(())
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.0)
    }

    fn describe(&self, _py: Python<'_>) -> String {
        match self.0.get().st.try_lock() {
            Some(st) => format!("transport <{} fd={}>", st.name, st.fd),
            None => "transport".into(),
        }
    }
}

static SET_RESULT_UNLESS_CANCELLED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static BUFFERED_PROTOCOL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static TRANSPORT_SOCKET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn cached<'py>(py: Python<'py>, cell: &'static PyOnceLock<Py<PyAny>>, module: &str, attr: &str) -> PyResult<Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || py.import(module)?.getattr(attr).map(Bound::unbind))
        .map(|o| o.bind(py).clone())
}

fn addr_or_none(py: Python<'_>, addr: std::io::Result<SockAddr>) -> Option<Py<PyAny>> {
    addr.ok().and_then(|a| sockaddr_to_py(py, &a).ok()).map(Bound::unbind)
}

impl StreamTransport {
    pub(crate) fn new_state(py: Python<'_>, lp: Py<LoopCore>, fd: RawFd, sock: Sock, peer: Option<SockAddr>, name: &'static str) -> St {
        let sockname = addr_or_none(py, net::local_addr(fd));
        let peername = match peer {
            Some(a) => addr_or_none(py, Ok(a)),
            None => addr_or_none(py, net::peer_addr(fd)),
        };
        St {
            fd,
            sock,
            lp: Some(lp),
            wrapper: None,
            protocol: None,
            kind: None,
            server: None,
            token: None,
            want: None,
            started: false,
            paused: false,
            read_eof: false,
            closing: false,
            eof: false,
            conn_lost: 0,
            wbuf: WriteBuffer::default(),
            flow: FlowControl::default(),
            sockname,
            peername,
            extra_socket: None,
            empty_waiter: None,
            sendfile: None,
            name,
        }
    }

    /// A transport for a connection accepted by a server.
    pub(crate) fn accepted(py: Python<'_>, lp: Py<LoopCore>, fd: OwnedFd, peer: SockAddr, nodelay: bool) -> PyResult<Py<Self>> {
        let raw = fd.as_raw_fd();
        if nodelay {
            let _ = net::set_nodelay(raw);
        }
        let name = if peer.is_unix() { "UnixTransport" } else { "TCPTransport" };
        let st = Self::new_state(py, lp, raw, Sock::Rust(fd), Some(peer), name);
        Py::new(py, Self { st: Mutex::new(st) })
    }

    fn set_protocol_locked(py: Python<'_>, st: &mut St, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let buffered = protocol.is_instance(&cached(py, &BUFFERED_PROTOCOL, "asyncio.protocols", "BufferedProtocol")?)?;
        let kind = if buffered {
            match (protocol.getattr(intern!(py, "get_buffer")), protocol.getattr(intern!(py, "buffer_updated"))) {
                (Ok(g), Ok(u)) => ProtoKind::Buffered(g.unbind(), u.unbind()),
                _ => ProtoKind::Lazy(true),
            }
        } else {
            match protocol.getattr(intern!(py, "data_received")) {
                Ok(d) => ProtoKind::Plain(d.unbind()),
                Err(_) => ProtoKind::Lazy(false),
            }
        };
        st.protocol = Some(protocol.clone().unbind());
        st.kind = Some(kind);
        Ok(())
    }

    /// Makes the reactor watch what the state needs.
    pub(crate) fn sync_interest(slf: &Bound<'_, Self>, st: &mut St) -> PyResult<()> {
        let py = slf.py();
        if matches!(st.sock, Sock::Closed) {
            return Ok(());
        }
        let read = st.reading_active();
        let write = !st.wbuf.is_empty() || st.sendfile.is_some();
        let want = match Want::from_flags(read, write) {
            Some(w) => w,
            None if st.token.is_some() => Want::Write,
            None => return Ok(()),
        };
        let Some(lp) = st.lp(py) else { return Ok(()) };
        match st.token {
            Some(token) => {
                if st.want != Some(want) {
                    lp.get().io_set_want(token, Some(want))?;
                    st.want = Some(want);
                }
            }
            None => {
                let watcher: Arc<dyn IoWatcher> = Arc::new(Watch(slf.clone().unbind()));
                st.token = Some(lp.get().io_register(st.fd, want, watcher)?);
                st.want = Some(want);
            }
        }
        Ok(())
    }

    fn handle_read(slf: &Bound<'_, Self>, lp: &Bound<'_, LoopCore>, ready: Readiness) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let keep_going = ready.is_read_closed() || ready.is_error();
        for _ in 0..MAX_READS {
            let (fd, kind) = {
                let st = this.st.lock();
                if !st.reading_active() {
                    return Ok(());
                }
                let kind = match &st.kind {
                    Some(ProtoKind::Plain(f)) => ProtoKind::Plain(f.clone_ref(py)),
                    Some(ProtoKind::Buffered(g, u)) => ProtoKind::Buffered(g.clone_ref(py), u.clone_ref(py)),
                    Some(ProtoKind::Lazy(b)) => ProtoKind::Lazy(*b),
                    None => return Ok(()),
                };
                (st.fd, kind)
            };
            let full = match kind {
                ProtoKind::Plain(cb) => Self::read_plain(slf, fd, cb.bind(py))?,
                ProtoKind::Buffered(g, u) => Self::read_buffered(slf, fd, g.bind(py), u.bind(py))?,
                ProtoKind::Lazy(buffered) => {
                    let proto = this.st.lock().protocol.as_ref().map(|p| p.clone_ref(py));
                    let Some(proto) = proto else { return Ok(()) };
                    let proto = proto.bind(py);
                    if buffered {
                        let g = proto.getattr("get_buffer");
                        let u = proto.getattr("buffer_updated");
                        match (g, u) {
                            (Ok(g), Ok(u)) => Self::read_buffered(slf, fd, &g, &u)?,
                            (Err(e), _) | (_, Err(e)) => {
                                Self::fatal_error(slf, e, "Fatal error: protocol.get_buffer() call failed.")?;
                                None
                            }
                        }
                    } else {
                        match proto.getattr("data_received") {
                            Ok(cb) => Self::read_plain(slf, fd, &cb)?,
                            Err(e) => {
                                Self::fatal_error(slf, e, "Fatal error: protocol.data_received() call failed.")?;
                                None
                            }
                        }
                    }
                }
            };
            match full {
                Some(true) => continue,
                // Data came with a hang-up or error: the EOF (or error) is
                // for the next iteration, as in asyncio; re-arm to see it.
                Some(false) if keep_going => break,
                _ => return Ok(()),
            }
        }
        let token = this.st.lock().token;
        if let Some(token) = token {
            lp.get().io_rearm(token)?;
        }
        Ok(())
    }

    /// One `recv` + `data_received`. `Some(full)` if data came (full: the
    /// read filled the buffer); `None` to stop reading.
    fn read_plain(slf: &Bound<'_, Self>, fd: RawFd, cb: &Bound<'_, PyAny>) -> PyResult<Option<bool>> {
        let py = slf.py();
        let got = with_read_buf(|buf| match net::recv(fd, buf) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some((PyBytes::new(py, &buf[..n]), n == buf.len()))),
            Err(e) => Err(e),
        });
        match got {
            Ok(Some((data, full))) => match cb.call1((data,)) {
                Ok(_) => Ok(Some(full)),
                Err(e) => {
                    Self::fatal_error(slf, e, "Fatal error: protocol.data_received() call failed.")?;
                    Ok(None)
                }
            },
            Ok(None) => Self::on_eof(slf).map(|()| None),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
            Err(e) => Self::fatal_error(slf, errors::os_error(e), "Fatal read error on socket transport").map(|()| None),
        }
    }

    /// `get_buffer` + `recv_into` + `buffer_updated`.
    fn read_buffered(slf: &Bound<'_, Self>, fd: RawFd, get_buffer: &Bound<'_, PyAny>, updated: &Bound<'_, PyAny>) -> PyResult<Option<bool>> {
        let py = slf.py();
        let buf = match get_buffer.call1((-1,)) {
            Ok(b) => b,
            Err(e) => {
                Self::fatal_error(slf, e, "Fatal error: protocol.get_buffer() call failed.")?;
                return Ok(None);
            }
        };
        let view = match BufView::get(&buf, true) {
            Ok(v) => v,
            Err(e) => {
                Self::fatal_error(slf, e, "Fatal read error on socket transport")?;
                return Ok(None);
            }
        };
        if view.is_empty() {
            drop(view);
            let e = PyRuntimeError::new_err("get_buffer() returned an empty buffer");
            Self::fatal_error(slf, e, "Fatal error: protocol.get_buffer() call failed.")?;
            return Ok(None);
        }
        let cap = view.len();
        // SAFETY: `view` is a live writable view of `cap` contiguous bytes
        // and stays alive (pinning the exporter's memory) for the call.
        let r = unsafe { net::recv_raw(fd, view.as_ptr(), cap) };
        drop(view);
        drop(buf);
        match r {
            Ok(0) => Self::on_eof(slf).map(|()| None),
            Ok(n) => match updated.call1((n,)) {
                Ok(_) => Ok(Some(n == cap)),
                Err(e) => {
                    Self::fatal_error(slf, e, "Fatal error: protocol.buffer_updated() call failed.")?;
                    Ok(None)
                }
            },
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
            Err(e) => {
                let _ = py;
                Self::fatal_error(slf, errors::os_error(e), "Fatal read error on socket transport").map(|()| None)
            }
        }
    }

    fn on_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (proto, wrapper, debug) = {
            let st = slf.get().st.lock();
            let debug = st.lp.as_ref().is_some_and(|l| l.get().debug_enabled());
            (st.protocol.as_ref().map(|p| p.clone_ref(py)), st.wrapper.as_ref().map(|w| w.clone_ref(py)), debug)
        };
        let Some(proto) = proto else { return Ok(()) };
        if debug {
            logger(py)?.call_method1("debug", ("%r received EOF", wrapper))?;
        }
        let keep_open = proto.bind(py).call_method0(intern!(py, "eof_received")).and_then(|v| v.is_truthy());
        match keep_open {
            Err(e) => Self::fatal_error(slf, e, "Fatal error: protocol.eof_received() call failed."),
            Ok(true) => {
                let mut st = slf.get().st.lock();
                st.read_eof = true;
                Self::sync_interest(slf, &mut st)
            }
            Ok(false) => Self::do_close(slf),
        }
    }

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
            (st.lp(py), st.wrapper.as_ref().map(|w| w.clone_ref(py)), st.protocol.as_ref().map(|p| p.clone_ref(py)))
        };
        if let Some(lp) = lp {
            if exc.is_instance_of::<PyOSError>() {
                if lp.get().debug_enabled() {
                    let kw = PyDict::new(py);
                    kw.set_item("exc_info", &exc)?;
                    logger(py)?.call_method("debug", ("%r: %s", &wrapper, message), Some(&kw))?;
                }
            } else {
                let ctx = PyDict::new(py);
                ctx.set_item("message", message)?;
                ctx.set_item("exception", &exc)?;
                ctx.set_item("transport", &wrapper)?;
                ctx.set_item("protocol", &proto)?;
                lp.call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
            }
        }
        Self::force_close(slf, Some(exc.into_any()))
    }

    /// asyncio's `_force_close`: drop buffered data, stop I/O and schedule
    /// `connection_lost(exc)` (once).
    pub(crate) fn force_close(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
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

    fn schedule_connection_lost(slf: &Bound<'_, Self>, lp: Option<Bound<'_, LoopCore>>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let Some(lp) = lp else { return Ok(()) };
        let cb = slf.getattr(intern!(py, "_call_connection_lost"))?.unbind();
        let arg = exc.map(Bound::unbind).unwrap_or_else(|| py.None());
        lp.get().soon(py, cb, PyTuple::new(py, [arg])?.unbind()).map(drop)
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

    fn handle_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut released = Vec::new();
        {
            let mut st = this.st.lock();
            if st.conn_lost > 0 {
                return Ok(());
            }
            if st.wbuf.is_empty() {
                let sending = st.sendfile.is_some();
                drop(st);
                return if sending { Self::sendfile_step(slf) } else { Ok(()) };
            }
            loop {
                let r = {
                    let mut iov = [IoSlice::new(&[]); MAX_IOV];
                    let (n, offered) = st.wbuf.fill_iov(py, &mut iov);
                    net::send_vectored(st.fd, &iov[..n]).map(|sent| (sent, offered))
                };
                match r {
                    Ok((sent, offered)) => {
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
        Self::maybe_resume_protocol(slf)?;
        Self::after_drain(slf)
    }

    /// What happens when the write buffer may have become empty.
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
            (st.empty_waiter.as_ref().map(|w| w.clone_ref(py)), closing, st.eof, st.fd)
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

    pub(crate) fn maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::flow_callback(slf, true)
    }

    pub(crate) fn maybe_resume_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::flow_callback(slf, false)
    }

    fn flow_callback(slf: &Bound<'_, Self>, pause: bool) -> PyResult<()> {
        let py = slf.py();
        let (proto, wrapper, lp) = {
            let mut st = slf.get().st.lock();
            let size = st.wbuf.len();
            let go = if pause { st.flow.should_pause(size) } else { st.flow.should_resume(size) };
            if !go {
                return Ok(());
            }
            st.flow.paused = pause;
            (st.protocol.as_ref().map(|p| p.clone_ref(py)), st.wrapper.as_ref().map(|w| w.clone_ref(py)), st.lp(py))
        };
        let Some(proto) = proto else { return Ok(()) };
        let (method, message) = if pause {
            (intern!(py, "pause_writing"), "protocol.pause_writing() failed")
        } else {
            (intern!(py, "resume_writing"), "protocol.resume_writing() failed")
        };
        if let Err(e) = proto.bind(py).call_method0(method) {
            if must_propagate(py, &e) {
                return Err(e);
            }
            if let Some(lp) = lp {
                let ctx = PyDict::new(py);
                ctx.set_item("message", message)?;
                ctx.set_item("exception", e.value(py))?;
                ctx.set_item("transport", wrapper)?;
                ctx.set_item("protocol", proto)?;
                lp.call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
            }
        }
        Ok(())
    }

    /// `write`/`writelines` after `connection_lost` was scheduled: count
    /// the write and warn past asyncio's threshold. `Ok(false)`: drop it.
    fn write_checks(slf: &Bound<'_, Self>, st: &mut MutexGuard<'_, St>) -> PyResult<bool> {
        let py = slf.py();
        if st.conn_lost > 0 || matches!(st.sock, Sock::Closed) {
            let warn = st.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES;
            st.conn_lost += 1;
            if warn {
                MutexGuard::unlocked(st, || logger(py)?.call_method1("warning", ("socket.send() raised exception.",)).map(drop))?;
            }
            return Ok(false);
        }
        Ok(true)
    }

    /// Buffers what is left, watches for writability, pauses the protocol
    /// if needed.
    fn after_buffering(slf: &Bound<'_, Self>, mut st: MutexGuard<'_, St>) -> PyResult<()> {
        Self::sync_interest(slf, &mut st)?;
        drop(st);
        Self::maybe_pause_protocol(slf)
    }

    pub(crate) fn call_connection_lost(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let proto = {
            let st = slf.get().st.lock();
            if matches!(st.sock, Sock::Closed) {
                return Ok(());
            }
            st.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        let result = match proto {
            Some(p) => p.bind(py).call_method1(intern!(py, "connection_lost"), (exc,)).map(drop),
            None => Ok(()),
        };
        let (lp, token, sock, wrapper, protocol, kind, server, waiter, sendfile) = {
            let mut st = slf.get().st.lock();
            st.fd = -1;
            (
                st.lp.take(),
                st.token.take(),
                std::mem::replace(&mut st.sock, Sock::Closed),
                st.wrapper.take(),
                st.protocol.take(),
                st.kind.take(),
                st.server.take(),
                st.empty_waiter.take(),
                st.sendfile.take(),
            )
        };
        if let (Some(lp), Some(token)) = (&lp, token) {
            lp.get().io_unregister(token);
        }
        let closed = close_sock(py, sock);
        if let Some(server) = server {
            server.bind(py).call_method1(intern!(py, "_detach"), (&wrapper,))?;
        }
        if let Some(w) = waiter {
            let e = pyo3::exceptions::PyConnectionError::new_err("Connection is closed by peer");
            set_exception_unless_done(w.bind(py), e.value(py))?;
        }
        if let Some(op) = sendfile {
            op.abandon(py, lp.as_ref().map(|l| l.bind(py)))?;
        }
        drop((protocol, kind, wrapper, lp));
        result.and(closed)
    }
}

/// Closes a socket, whoever owns it.
pub(crate) fn close_sock(py: Python<'_>, sock: Sock) -> PyResult<()> {
    match sock {
        Sock::Rust(fd) => {
            drop(fd);
            Ok(())
        }
        Sock::Python(s) => s.bind(py).call_method0(intern!(py, "close")).map(drop),
        Sock::Closed => Ok(()),
    }
}

pub(crate) fn set_result_unless_done(fut: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if !fut.call_method0(intern!(fut.py(), "done"))?.is_truthy()? {
        fut.call_method1(intern!(fut.py(), "set_result"), (value,))?;
    }
    Ok(())
}

pub(crate) fn set_exception_unless_done(fut: &Bound<'_, PyAny>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
    if !fut.call_method0(intern!(fut.py(), "done"))?.is_truthy()? {
        fut.call_method1(intern!(fut.py(), "set_exception"), (exc,))?;
    }
    Ok(())
}

#[pymethods]
impl StreamTransport {
    /// A transport over a connected `socket.socket` (which it then owns).
    #[new]
    #[pyo3(signature = (lp, sock, name = "TCPTransport", nodelay = false))]
    fn py_new(py: Python<'_>, lp: Bound<'_, LoopCore>, sock: Bound<'_, PyAny>, name: &str, nodelay: bool) -> PyResult<Self> {
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        if fd < 0 {
            return Err(PyValueError::new_err("the socket is closed"));
        }
        if nodelay {
            net::set_nodelay(fd).map_err(errors::os_error)?;
        }
        let name = if name == "UnixTransport" { "UnixTransport" } else { "TCPTransport" };
        let st = Self::new_state(py, lp.unbind(), fd, Sock::Python(sock.clone().unbind()), None, name);
        let mut st = st;
        st.extra_socket = Some(cached(py, &TRANSPORT_SOCKET, "asyncio.trsock", "TransportSocket")?.call1((sock,))?.unbind());
        Ok(Self { st: Mutex::new(st) })
    }

    /// Sets the protocol and the Python transport object, attaches to the
    /// server, and schedules `connection_made`, the start of reading and the
    /// waiter, in asyncio's order.
    #[pyo3(signature = (wrapper, protocol, waiter = None, server = None))]
    fn _start(slf: &Bound<'_, Self>, wrapper: Bound<'_, PyAny>, protocol: Bound<'_, PyAny>, waiter: Option<Bound<'_, PyAny>>, server: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        Self::start(slf, &wrapper, &protocol, waiter.as_ref(), server.as_ref())
    }

    /// Starts reading (scheduled after `connection_made`).
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let mut st = slf.get().st.lock();
        st.started = true;
        Self::sync_interest(slf, &mut st)
    }

    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        Self::call_connection_lost(slf, &exc)
    }

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let bytes = data.cast::<PyBytes>().ok();
        let view;
        let slice: &[u8] = match bytes {
            Some(b) => b.as_bytes(),
            None => {
                if !(data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>()) {
                    return Err(PyTypeError::new_err(format!(
                        "data argument must be a bytes-like object, not {}",
                        data.get_type().name()?.repr()?
                    )));
                }
                view = BufView::get(data, false)?;
                view.as_slice()
            }
        };
        let mut st = slf.get().st.lock();
        if st.eof {
            return Err(PyRuntimeError::new_err("Cannot call write() after write_eof()"));
        }
        if st.empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err("unable to write; sendfile is in progress"));
        }
        if slice.is_empty() {
            return Ok(());
        }
        if !Self::write_checks(slf, &mut st)? {
            return Ok(());
        }
        let mut sent = 0;
        if st.wbuf.is_empty() {
            match net::send(st.fd, slice) {
                Ok(n) if n == slice.len() => return Ok(()),
                Ok(n) => sent = n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => {
                    drop(st);
                    return Self::fatal_error(slf, errors::os_error(e), "Fatal write error on socket transport");
                }
            }
        }
        match bytes {
            Some(b) => st.wbuf.push_bytes(b, sent),
            None => st.wbuf.push_copy(&slice[sent..]),
        }
        let _ = py;
        Self::after_buffering(slf, st)
    }

    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let mut items = Vec::new();
        for item in list_of_data.try_iter()? {
            let item = item?;
            let view = BufView::get(&item, false).map_err(|_| {
                PyTypeError::new_err(format!(
                    "data argument must be a bytes-like object, not {}",
                    item.get_type().name().map(|n| n.to_string()).unwrap_or_default()
                ))
            })?;
            if !view.is_empty() {
                items.push((item, view));
            }
        }
        let mut st = slf.get().st.lock();
        if st.eof {
            return Err(PyRuntimeError::new_err("Cannot call writelines() after write_eof()"));
        }
        if st.empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err("unable to writelines; sendfile is in progress"));
        }
        if items.is_empty() {
            return Ok(());
        }
        if !Self::write_checks(slf, &mut st)? {
            return Ok(());
        }
        let mut skip = 0;
        if st.wbuf.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let n = items.len().min(MAX_IOV);
            for (i, (_, v)) in items.iter().take(n).enumerate() {
                iov[i] = IoSlice::new(v.as_slice());
            }
            let total: usize = items.iter().map(|(_, v)| v.len()).sum();
            match net::send_vectored(st.fd, &iov[..n]) {
                Ok(s) if s == total => return Ok(()),
                Ok(s) => skip = s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => {
                    drop(st);
                    return Self::fatal_error(slf, errors::os_error(e), "Fatal write error on socket transport");
                }
            }
        }
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
        let _ = py;
        Self::after_buffering(slf, st)
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

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::do_close(slf)
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, None)
    }

    /// asyncio's `_force_close(exc)` (used by `sslproto`).
    fn _force_close(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let exc = if exc.is_none() { None } else { Some(exc) };
        Self::force_close(slf, exc)
    }

    fn is_closing(&self) -> bool {
        self.st.lock().closing
    }

    fn is_reading(&self) -> bool {
        let st = self.st.lock();
        !st.closing && !st.paused
    }

    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let mut st = slf.get().st.lock();
        if st.closing || st.paused {
            return Ok(());
        }
        st.paused = true;
        Self::sync_interest(slf, &mut st)
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let mut st = slf.get().st.lock();
        if st.closing || !st.paused {
            return Ok(());
        }
        st.paused = false;
        Self::sync_interest(slf, &mut st)
    }

    fn set_protocol(&self, py: Python<'_>, protocol: Bound<'_, PyAny>) -> PyResult<()> {
        let mut st = self.st.lock();
        let (old_p, old_k) = (st.protocol.take(), st.kind.take());
        let r = Self::set_protocol_locked(py, &mut st, &protocol);
        drop(st);
        drop((old_p, old_k));
        r
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.lock().protocol.as_ref().map(|p| p.clone_ref(py))
    }

    fn get_write_buffer_size(&self) -> usize {
        self.st.lock().wbuf.len()
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        let st = self.st.lock();
        (st.flow.low, st.flow.high)
    }

    #[pyo3(signature = (high = None, low = None))]
    fn set_write_buffer_limits(slf: &Bound<'_, Self>, high: Option<i64>, low: Option<i64>) -> PyResult<()> {
        slf.get().st.lock().flow.set_limits(high, low).map_err(PyValueError::new_err)?;
        Self::maybe_pause_protocol(slf)
    }

    #[pyo3(signature = (name, default = None))]
    fn get_extra_info(slf: &Bound<'_, Self>, name: &Bound<'_, PyAny>, default: Option<Py<PyAny>>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        let Ok(name) = name.cast::<PyString>() else { return Ok(default) };
        let st = slf.get().st.lock();
        Ok(match name.to_str()? {
            "peername" => st.peername.as_ref().map(|p| p.clone_ref(py)),
            "sockname" => st.sockname.as_ref().map(|p| p.clone_ref(py)),
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
        info.push(format!("fd={}", st.fd));
        if !matches!(st.sock, Sock::Closed) {
            let read = st.token.is_some() && matches!(st.want, Some(Want::Read | Want::Both));
            let write = st.token.is_some() && !st.wbuf.is_empty();
            info.push(format!("read={}", if read { "polling" } else { "idle" }));
            info.push(format!("write=<{}, bufsize={}>", if write { "polling" } else { "idle" }, st.wbuf.len()));
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
        let (lp, token, sock) = {
            let mut st = slf.get().st.lock();
            st.fd = -1;
            (st.lp.take(), st.token.take(), std::mem::replace(&mut st.sock, Sock::Closed))
        };
        if let (Some(lp), Some(token)) = (&lp, token) {
            lp.get().io_unregister(token);
        }
        close_sock(py, sock)
    }

    fn _make_empty_waiter(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::make_empty_waiter(slf)
    }

    fn _reset_empty_waiter(&self) {
        self.reset_empty_waiter()
    }

    fn _sendfile_start(slf: &Bound<'_, Self>, in_fd: RawFd, offset: i64, count: u64, fut: Bound<'_, PyAny>) -> PyResult<()> {
        Self::sendfile_start(slf, in_fd, offset, count, fut)
    }

    /// The fd (-1 once closed).
    #[getter]
    fn _sock_fd(&self) -> RawFd {
        self.st.lock().fd
    }

    /// The loop (None after `connection_lost`).
    #[getter]
    fn _loop(&self, py: Python<'_>) -> Option<Py<LoopCore>> {
        self.st.lock().lp.as_ref().map(|l| l.clone_ref(py))
    }

    /// Whether the protocol is paused for writing.
    #[getter]
    fn _protocol_paused(&self) -> bool {
        self.st.lock().flow.paused
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(st) = self.st.try_lock() else { return Ok(()) };
        for o in [&st.lp.as_ref().map(|l| l.as_any()), &st.wrapper.as_ref(), &st.protocol.as_ref(), &st.server.as_ref(), &st.sockname.as_ref(), &st.peername.as_ref(), &st.extra_socket.as_ref(), &st.empty_waiter.as_ref()].into_iter().flatten() {
            visit.call(*o)?;
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
        if let Some(op) = &st.sendfile {
            op.traverse(&visit)?;
        }
        st.wbuf.traverse(&visit)
    }

    fn __clear__(&self) {
        let taken = {
            let mut st = self.st.lock();
            (st.lp.take(), st.wrapper.take(), st.protocol.take(), st.kind.take(), st.server.take(), st.extra_socket.take(), st.empty_waiter.take(), st.sendfile.take())
        };
        drop(taken);
    }
}

impl StreamTransport {
    pub(crate) fn start(slf: &Bound<'_, Self>, wrapper: &Bound<'_, PyAny>, protocol: &Bound<'_, PyAny>, waiter: Option<&Bound<'_, PyAny>>, server: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let lp = {
            let mut st = slf.get().st.lock();
            st.wrapper = Some(wrapper.clone().unbind());
            st.server = server.map(|s| s.clone().unbind());
            Self::set_protocol_locked(py, &mut st, protocol)?;
            st.lp(py).ok_or_else(errors::loop_closed)?
        };
        if let Some(server) = server {
            server.call_method1(intern!(py, "_attach"), (wrapper,))?;
        }
        let core = lp.get();
        core.soon(py, protocol.getattr(intern!(py, "connection_made"))?.unbind(), PyTuple::new(py, [wrapper])?.unbind())?;
        core.soon(py, slf.getattr(intern!(py, "_start_reading"))?.unbind(), PyTuple::empty(py).unbind())?;
        if let Some(w) = waiter {
            let f = cached(py, &SET_RESULT_UNLESS_CANCELLED, "asyncio.futures", "_set_result_unless_cancelled")?;
            core.soon(py, f.unbind(), PyTuple::new(py, [w.clone(), py.None().into_bound(py)])?.unbind())?;
        }
        Ok(())
    }

    /// `get_extra_info('socket')`: a `TransportSocket` over a `socket.socket`
    /// that takes over the fd.
    fn make_extra_socket(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let fd = {
            let st = slf.get().st.lock();
            match &st.sock {
                Sock::Rust(fd) => fd.as_raw_fd(),
                _ => return Ok(py.None()),
            }
        };
        let kw = PyDict::new(py);
        kw.set_item("fileno", fd)?;
        let pysock = py.import("socket")?.getattr("socket")?.call((), Some(&kw))?;
        let wrapped = cached(py, &TRANSPORT_SOCKET, "asyncio.trsock", "TransportSocket")?.call1((&pysock,))?;
        let mut st = slf.get().st.lock();
        if let Sock::Rust(owned) = std::mem::replace(&mut st.sock, Sock::Python(pysock.unbind())) {
            // The Python socket owns the fd now.
            let _ = owned.into_raw_fd();
        }
        st.extra_socket = Some(wrapped.clone().unbind());
        Ok(wrapped.unbind())
    }
}
