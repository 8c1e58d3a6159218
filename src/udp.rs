//! The datagram transport (`create_datagram_endpoint`), in Rust.
//!
//! `UdpTransport` is the native core; `python/oxloop/_sockets.py` wraps it in
//! `_DatagramTransport`, a subclass of `asyncio.DatagramTransport` (a native
//! class cannot also inherit the stdlib class, whose `__slots__` conflict
//! with ours), which holds the extra info and forwards every method here.
//!
//! Behaviour is asyncio's `_SelectorDatagramTransport`: immediate send when
//! nothing is buffered, otherwise a FIFO of `(bytes, addr)`; `OSError`s go to
//! `protocol.error_received`; flow control (`pause_writing` above the high
//! water mark, `resume_writing` at or below the low one; 64 KiB / 16 KiB by
//! default); `close` waits for the buffer to drain, `abort` drops it;
//! `connection_lost` is called once, via `call_soon`, and then the socket is
//! closed.
//!
//! Design:
//! - `UdpInner` is the `IoWatcher` registered on the socket's fd, for reading
//!   while started, not paused and not closing, and for writing while the
//!   buffer is non-empty (`sync`).
//! - The reactor is edge-triggered: a readable event reads datagrams until
//!   `EAGAIN`, at most `READ_BATCH` of them, then asks for the fd to be
//!   reported again so other fds get their turn.
//! - Reads are native (`recvfrom(2)` into a per-thread 256 KiB buffer, the
//!   address decoded as the `socket` module does) for AF_INET, AF_INET6 and
//!   AF_UNIX; other families go through `sock.recvfrom`. Sends are native on
//!   connected sockets; `sendto` with an address goes through `sock.sendto`
//!   (so address parsing and errors are the `socket` module's).
//!
//! Invariant: `state` is never held while Python code runs or a Python object
//! is dropped; everything Python is cloned out first.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyBlockingIOError, PyInterruptedError, PyOSError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::event_loop::io::IoWatcher;
use crate::event_loop::LoopCore;
use crate::reactor::sockets::{self as sys, Addr};
use crate::reactor::{Readiness, Want};

/// asyncio's `_SelectorTransport.max_size`: the largest datagram read.
const MAX_SIZE: usize = 256 * 1024;
/// Datagrams read per readiness event before yielding to other fds.
const READ_BATCH: usize = 64;
/// asyncio's `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

thread_local! {
    /// The receive buffer shared by the datagram transports of this thread.
    static RECV_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The transport's mutable part.
#[derive(Default)]
struct UState {
    /// The loop's token while registered.
    token: Option<usize>,
    /// What the loop watches for.
    want: Option<Want>,
    /// `connection_made` was scheduled and reading started.
    started: bool,
    /// `pause_reading()` is in effect.
    paused: bool,
    /// `close()`/`abort()` was called.
    closing: bool,
    /// Set when `connection_lost` is scheduled; counts writes after it.
    conn_lost: u32,
    /// `pause_writing()` was called and `resume_writing()` not yet.
    protocol_paused: bool,
    /// High water mark.
    high: usize,
    /// Low water mark.
    low: usize,
    /// Datagrams waiting to be sent, with their address.
    buffer: VecDeque<(Vec<u8>, Option<Py<PyAny>>)>,
    /// Bytes in `buffer`.
    buffer_size: usize,
    /// The protocol.
    protocol: Option<Py<PyAny>>,
    /// The Python transport object the protocol sees.
    transport: Option<Py<PyAny>>,
    /// The socket object (None once closed).
    sock: Option<Py<PyAny>>,
    /// The remote address of a connected endpoint (asyncio's `_address`).
    address: Option<Py<PyAny>>,
}

/// The watcher half of the transport.
pub(crate) struct UdpInner {
    /// The socket's fd.
    fd: RawFd,
    /// Whether the socket is connected (send, not sendto).
    connected: bool,
    /// Whether `recvfrom` results can be decoded natively.
    native_recv: bool,
    /// Python 3.13+: empty datagrams are sent, and each buffered datagram
    /// counts 8 more bytes (its header) in the write buffer size.
    py313: bool,
    /// Ourselves, to register with the loop.
    me: Weak<UdpInner>,
    /// The loop.
    lp: Py<LoopCore>,
    /// Everything else.
    state: Mutex<UState>,
}

fn addr_to_py(py: Python<'_>, addr: Addr) -> PyResult<Py<PyAny>> {
    Ok(match addr {
        Addr::None | Addr::Other => py.None(),
        Addr::V4(h, p) => (h, p).into_pyobject(py)?.into_any().unbind(),
        Addr::V6(h, p, f, s) => (h, p, f, s).into_pyobject(py)?.into_any().unbind(),
        Addr::UnixAbstract(b) => PyBytes::new(py, &b).into_any().unbind(),
        Addr::UnixPath(b) => {
            // PyUnicode_DecodeFSDefault, as socket.recvfrom.
            let os = py.import(intern!(py, "os"))?;
            os.call_method1(intern!(py, "fsdecode"), (PyBytes::new(py, &b),))?.unbind()
        }
    })
}

fn would_block_err(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<PyBlockingIOError>(py) || e.is_instance_of::<PyInterruptedError>(py)
}

/// The result of one send attempt.
enum Sent {
    Ok,
    WouldBlock,
    Error(PyErr),
}

impl UdpInner {
    /// The per-datagram overhead counted in the write buffer size.
    fn header(&self) -> usize {
        if self.py313 {
            8
        } else {
            0
        }
    }

    fn sync(&self, lp: &LoopCore) -> PyResult<()> {
        let mut st = self.state.lock();
        let read = st.started && !st.paused && !st.closing && st.sock.is_some();
        let write = !st.buffer.is_empty() && st.sock.is_some();
        let want = Want::from_flags(read, write);
        if want == st.want {
            return Ok(());
        }
        match (st.token, want) {
            (Some(t), None) => {
                st.token = None;
                st.want = None;
                drop(st);
                lp.io_set_want(t, None)
            }
            (Some(t), Some(w)) => {
                st.want = want;
                lp.io_set_want(t, Some(w))
            }
            (None, Some(w)) => {
                let me = self.me.upgrade().expect("alive while called") as Arc<dyn IoWatcher>;
                let t = lp.io_register(self.fd, w, me)?;
                st.token = Some(t);
                st.want = want;
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }

    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.lock().protocol.as_ref().map(|p| p.clone_ref(py))
    }

    fn sock(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.lock().sock.as_ref().map(|p| p.clone_ref(py))
    }

    /// One send of `data` (to `addr` if not connected).
    fn send_one(&self, py: Python<'_>, data: &[u8], addr: Option<&Py<PyAny>>) -> Sent {
        if self.connected {
            return match sys::send(self.fd, data) {
                Ok(_) => Sent::Ok,
                Err(e) if sys::would_block(&e) => Sent::WouldBlock,
                Err(e) => Sent::Error(crate::sockops::os_error(e)),
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
    fn report_error(&self, py: Python<'_>, e: PyErr, fatal_message: &str) -> PyResult<()> {
        if e.is_instance_of::<PyOSError>(py) {
            if let Some(p) = self.protocol(py) {
                p.bind(py).call_method1(intern!(py, "error_received"), (e.value(py),))?;
            }
            Ok(())
        } else if e.is_instance_of::<pyo3::exceptions::PyException>(py) {
            self.fatal_error(py, e, fatal_message)
        } else {
            Err(e)
        }
    }

    fn fatal_error(&self, py: Python<'_>, e: PyErr, message: &str) -> PyResult<()> {
        if !e.is_instance_of::<PyOSError>(py) {
            self.call_exception_handler(py, message, &e)?;
        }
        self.force_close(py, Some(e))
    }

    fn force_close(&self, py: Python<'_>, exc: Option<PyErr>) -> PyResult<()> {
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

    fn schedule_connection_lost(&self, py: Python<'_>, exc: Option<PyErr>) -> PyResult<()> {
        let tr = self.state.lock().transport.as_ref().map(|t| t.clone_ref(py));
        let Some(tr) = tr else { return Ok(()) };
        let func = tr.bind(py).getattr(intern!(py, "_call_connection_lost"))?.unbind();
        let arg = match exc {
            Some(e) => e.value(py).clone().into_any().unbind(),
            None => py.None(),
        };
        let args = PyTuple::new(py, [arg])?.unbind();
        self.lp.get().soon(py, func, args)?;
        Ok(())
    }

    fn maybe_pause_protocol(&self, py: Python<'_>) -> PyResult<()> {
        let proto = {
            let mut st = self.state.lock();
            if st.buffer_size <= st.high || st.protocol_paused {
                return Ok(());
            }
            st.protocol_paused = true;
            st.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        if let Some(p) = proto {
            if let Err(e) = p.bind(py).call_method0(intern!(py, "pause_writing")) {
                if !e.is_instance_of::<pyo3::exceptions::PyException>(py) && !is_plain_base(py, &e) {
                    return Err(e);
                }
                self.call_exception_handler(py, "protocol.pause_writing() failed", &e)?;
            }
        }
        Ok(())
    }

    fn maybe_resume_protocol(&self, py: Python<'_>) -> PyResult<()> {
        let proto = {
            let mut st = self.state.lock();
            if !(st.protocol_paused && st.buffer_size <= st.low) {
                return Ok(());
            }
            st.protocol_paused = false;
            st.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        if let Some(p) = proto {
            if let Err(e) = p.bind(py).call_method0(intern!(py, "resume_writing")) {
                if !e.is_instance_of::<pyo3::exceptions::PyException>(py) && !is_plain_base(py, &e) {
                    return Err(e);
                }
                self.call_exception_handler(py, "protocol.resume_writing() failed", &e)?;
            }
        }
        Ok(())
    }

    /// One datagram: Ok(None) when the socket would block.
    fn recv_one(&self, py: Python<'_>) -> Result<Option<(Py<PyAny>, Py<PyAny>)>, PyErr> {
        if !self.native_recv {
            let Some(sock) = self.sock(py) else { return Ok(None) };
            return match sock.bind(py).call_method1(intern!(py, "recvfrom"), (MAX_SIZE,)) {
                Ok(r) => {
                    let (d, a): (Py<PyAny>, Py<PyAny>) = r.extract()?;
                    Ok(Some((d, a)))
                }
                Err(e) if would_block_err(py, &e) => Ok(None),
                Err(e) => Err(e),
            };
        }
        let got = RECV_BUF.with(|b| {
            let mut b = b.borrow_mut();
            if b.len() < MAX_SIZE {
                b.resize(MAX_SIZE, 0);
            }
            sys::recvfrom(self.fd, &mut b[..]).map(|(n, addr)| (PyBytes::new(py, &b[..n]).into_any().unbind(), addr))
        });
        match got {
            Ok((data, addr)) => Ok(Some((data, addr_to_py(py, sys::decode(&addr))?))),
            Err(e) if sys::would_block(&e) => Ok(None),
            Err(e) => Err(crate::sockops::os_error(e)),
        }
    }

    fn read_ready(&self, py: Python<'_>) -> PyResult<bool> {
        for _ in 0..READ_BATCH {
            let proto = {
                let st = self.state.lock();
                if !(st.started && !st.paused && !st.closing && st.conn_lost == 0) {
                    return Ok(true);
                }
                st.protocol.as_ref().map(|p| p.clone_ref(py))
            };
            let Some(proto) = proto else { return Ok(true) };
            match self.recv_one(py) {
                Ok(Some((data, addr))) => {
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
            let tr = self.state.lock().transport.as_ref().map(|t| t.clone_ref(py));
            if let Some(tr) = tr {
                tr.bind(py).call_method1(intern!(py, "_call_connection_lost"), (py.None(),))?;
            }
        }
        Ok(())
    }
}

/// BaseException subclasses that are neither Exception nor the two the loop
/// propagates are reported, as asyncio's `except BaseException` does.
fn is_plain_base(py: Python<'_>, e: &PyErr) -> bool {
    !(e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
        || e.is_instance_of::<pyo3::exceptions::PySystemExit>(py))
}

impl IoWatcher for UdpInner {
    fn on_ready(&self, py: Python<'_>, lp: &Bound<'_, LoopCore>, ready: Readiness) -> PyResult<()> {
        let mut drained = true;
        let mut result = Ok(());
        if ready.for_reader() {
            match self.read_ready(py) {
                Ok(d) => drained = d,
                Err(e) => {
                    drained = false;
                    result = Err(e);
                }
            }
        }
        if ready.for_writer() && result.is_ok() {
            result = self.write_ready(py);
        }
        self.sync(lp.get())?;
        if !drained {
            let token = self.state.lock().token;
            if let Some(t) = token {
                lp.get().io_rearm(t)?;
            }
        }
        result
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.lp)?;
        let Some(st) = self.state.try_lock() else {
            return Ok(());
        };
        for o in [&st.protocol, &st.transport, &st.sock, &st.address].into_iter().flatten() {
            visit.call(o)?;
        }
        for (_, a) in st.buffer.iter() {
            if let Some(a) = a {
                visit.call(a)?;
            }
        }
        Ok(())
    }

    fn describe(&self, py: Python<'_>) -> String {
        let tr = self.state.lock().transport.as_ref().map(|t| t.clone_ref(py));
        match tr {
            Some(t) => format!("transport {}", t.bind(py).repr().map(|r| r.to_string()).unwrap_or_default()),
            None => format!("a datagram transport (fd {})", self.fd),
        }
    }
}

/// The native datagram transport.
#[pyclass(frozen, module = "oxloop._core")]
pub struct UdpTransport {
    /// The shared state (also registered with the loop).
    inner: Arc<UdpInner>,
}

#[pymethods]
impl UdpTransport {
    #[new]
    #[pyo3(signature = (lp, sock, protocol, address, transport, connected, py313=false))]
    fn py_new(
        py: Python<'_>,
        lp: Bound<'_, LoopCore>,
        sock: Bound<'_, PyAny>,
        protocol: Bound<'_, PyAny>,
        address: Option<Bound<'_, PyAny>>,
        transport: Bound<'_, PyAny>,
        connected: bool,
        py313: bool,
    ) -> PyResult<Self> {
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        let family: i32 = sock.getattr(intern!(py, "family"))?.extract()?;
        let native_recv = matches!(family, libc::AF_INET | libc::AF_INET6 | libc::AF_UNIX);
        let state = UState {
            high: 64 * 1024,
            low: 16 * 1024,
            protocol: Some(protocol.unbind()),
            transport: Some(transport.unbind()),
            sock: Some(sock.unbind()),
            address: address.filter(|a| !a.is_none()).map(Bound::unbind),
            ..UState::default()
        };
        let lp = lp.unbind();
        let inner = Arc::new_cyclic(|me| UdpInner {
            fd,
            connected,
            native_recv,
            py313,
            me: me.clone(),
            lp,
            state: Mutex::new(state),
        });
        Ok(Self { inner })
    }

    /// Starts reading (after `connection_made`).
    fn _start(&self) -> PyResult<()> {
        self.inner.state.lock().started = true;
        self.inner.sync(self.inner.lp.get())
    }

    #[pyo3(signature = (data, addr=None))]
    fn sendto(&self, py: Python<'_>, data: Bound<'_, PyAny>, addr: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        if !(data.is_instance_of::<PyBytes>() || data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>()) {
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not '{}'",
                data.get_type().name()?.to_string()
            )));
        }
        let buf = PyUntypedBuffer::get(&data)?;
        if buf.len_bytes() == 0 && !self.inner.py313 {
            return Ok(());
        }
        if !buf.is_c_contiguous() {
            return Err(PyTypeError::new_err("data must be a contiguous buffer"));
        }
        let inner = &*self.inner;
        let address = inner.state.lock().address.as_ref().map(|a| a.clone_ref(py));
        let mut addr = addr.filter(|a| !a.is_none()).map(Bound::unbind);
        if let Some(address) = &address {
            if let Some(a) = &addr {
                if !a.bind(py).eq(address.bind(py))? {
                    return Err(PyValueError::new_err(format!(
                        "Invalid address: must be None or {}",
                        address.bind(py).str()?
                    )));
                }
            }
            addr = Some(address.clone_ref(py));
        }
        {
            let mut st = inner.state.lock();
            if st.conn_lost > 0 && address.is_some() {
                let warn = st.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES;
                st.conn_lost += 1;
                drop(st);
                if warn {
                    py.import(intern!(py, "asyncio.log"))?
                        .getattr(intern!(py, "logger"))?
                        .call_method1(intern!(py, "warning"), ("socket.send() raised exception.",))?;
                }
                return Ok(());
            }
        }
        // SAFETY: a C-contiguous buffer export we hold for this call.
        let bytes = unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.len_bytes()) };
        let empty = inner.state.lock().buffer.is_empty();
        if empty {
            match inner.send_one(py, bytes, addr.as_ref()) {
                Sent::Ok => return Ok(()),
                Sent::WouldBlock => {}
                Sent::Error(e) => return inner.report_error(py, e, "Fatal write error on datagram transport"),
            }
        }
        {
            let mut st = inner.state.lock();
            st.buffer.push_back((bytes.to_vec(), addr));
            st.buffer_size += bytes.len() + inner.header();
        }
        inner.sync(inner.lp.get())?;
        inner.maybe_pause_protocol(py)
    }

    fn get_write_buffer_size(&self) -> usize {
        self.inner.state.lock().buffer_size
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let schedule = {
            let mut st = self.inner.state.lock();
            if st.closing {
                return Ok(());
            }
            st.closing = true;
            if st.buffer.is_empty() {
                st.conn_lost += 1;
                true
            } else {
                false
            }
        };
        self.inner.sync(self.inner.lp.get())?;
        if schedule {
            self.inner.schedule_connection_lost(py, None)?;
        }
        Ok(())
    }

    #[pyo3(signature = (exc=None))]
    fn abort(&self, py: Python<'_>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        self.inner.force_close(py, exc.map(PyErr::from_value))
    }

    /// `_fatal_error(exc, message)`.
    fn _fatal_error(&self, py: Python<'_>, exc: Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        self.inner.fatal_error(py, PyErr::from_value(exc), message)
    }

    fn is_closing(&self) -> bool {
        self.inner.state.lock().closing
    }

    fn is_reading(&self) -> bool {
        let st = self.inner.state.lock();
        !st.closing && !st.paused
    }

    fn pause_reading(&self) -> PyResult<bool> {
        {
            let mut st = self.inner.state.lock();
            if st.closing || st.paused {
                return Ok(false);
            }
            st.paused = true;
        }
        self.inner.sync(self.inner.lp.get())?;
        Ok(true)
    }

    fn resume_reading(&self) -> PyResult<bool> {
        {
            let mut st = self.inner.state.lock();
            if st.closing || !st.paused {
                return Ok(false);
            }
            st.paused = false;
        }
        self.inner.sync(self.inner.lp.get())?;
        Ok(true)
    }

    fn set_protocol(&self, protocol: Bound<'_, PyAny>) {
        let old = self.inner.state.lock().protocol.replace(protocol.unbind());
        drop(old);
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner.protocol(py)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(&self, py: Python<'_>, high: Option<i64>, low: Option<i64>) -> PyResult<()> {
        let high = match (high, low) {
            (Some(h), _) => h,
            (None, None) => 64 * 1024,
            (None, Some(l)) => 4 * l,
        };
        let low = low.unwrap_or(high / 4);
        if !(high >= low && low >= 0) {
            return Err(PyValueError::new_err(format!(
                "high ({high}) must be >= low ({low}) must be >= 0"
            )));
        }
        {
            let mut st = self.inner.state.lock();
            st.high = high as usize;
            st.low = low as usize;
        }
        self.inner.maybe_pause_protocol(py)
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        let st = self.inner.state.lock();
        (st.low, st.high)
    }

    /// `connection_lost` has run: forget the protocol, the transport and the
    /// socket (the caller closes it).
    fn _detach(&self) {
        let taken = {
            let mut st = self.inner.state.lock();
            (st.protocol.take(), st.transport.take(), st.sock.take(), st.address.take())
        };
        drop(taken);
    }

    /// Whether the loop is watching the fd for reading / writing (repr).
    fn _polling(&self) -> (bool, bool) {
        let st = self.inner.state.lock();
        match st.want {
            None => (false, false),
            Some(Want::Read) => (true, false),
            Some(Want::Write) => (false, true),
            Some(Want::Both) => (true, true),
        }
    }

    /// Whether `connection_lost` was scheduled.
    fn _conn_lost(&self) -> u32 {
        self.inner.state.lock().conn_lost
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.inner.traverse(&visit)
    }

    fn __clear__(&self) {
        let taken = {
            let mut st = self.inner.state.lock();
            (
                st.protocol.take(),
                st.transport.take(),
                st.address.take(),
                std::mem::take(&mut st.buffer),
            )
        };
        drop(taken);
    }
}
