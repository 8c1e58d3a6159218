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
//!   connected sockets and to numeric IPv4/IPv6 tuples; any other address
//!   (names, Unix paths, bad values) goes through `sock.sendto`, so its
//!   parsing and errors stay the `socket` module's.
//!
//! - Contexts: datagram callbacks run where asyncio's reader/writer handles
//!   would (`read_ctx` from `_start`/`resume_reading`, `write_ctx` from the
//!   `sendto` that started buffering); see `crate::contexts`.
//!
//! Invariant: `state` is never held while Python code runs or a Python object
//! is dropped; everything Python is cloned out first.

mod inner;

use std::os::fd::RawFd;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView};
use pyo3::{PyTraverseError, PyVisit};

use crate::contexts::copy_current;
use crate::event_loop::io::IoWatcher;
use crate::event_loop::stats::ByteCount;
use crate::event_loop::stats_api::bytes_dict;
use crate::event_loop::LoopCore;
use crate::internal_call::InternalCall;
use crate::reactor::Want;
use inner::{DatagramState, Sent, UdpInner, LOG_THRESHOLD_FOR_CONNLOST_WRITES};

/// The native datagram transport.
#[pyclass(frozen, module = "oxloop._core")]
pub struct UdpTransport {
    /// The shared state (also registered with the loop).
    inner: Arc<UdpInner>,
}

#[pymethods]
impl UdpTransport {
    #[new]
    #[allow(
        clippy::too_many_arguments,
        reason = "the Python constructor's signature: one parameter per argument Python passes"
    )]
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
        let state = DatagramState {
            protocol: Some(protocol.unbind()),
            transport: Some(transport.unbind()),
            sock: Some(sock.unbind()),
            address: address.filter(|a| !a.is_none()).map(Bound::unbind),
            ..DatagramState::default()
        };
        let lp = lp.unbind();
        let inner = Arc::new_cyclic(|me| UdpInner {
            bytes: ByteCount::default(),
            fd,
            connected,
            family,
            native_recv,
            py313,
            me: me.clone(),
            lp,
            state: Mutex::new(state),
        });
        Ok(Self { inner })
    }

    /// Schedules `connection_made`, the start of reading and the waiter,
    /// in asyncio's order, each in a copy of the current context as
    /// asyncio's `call_soon` makes them.
    #[pyo3(signature = (waiter = None))]
    fn _start(&self, py: Python<'_>, waiter: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let (protocol, wrapper) = {
            let st = self.inner.state.lock();
            (
                st.protocol.as_ref().map(|p| p.clone_ref(py)),
                st.transport.as_ref().map(|t| t.clone_ref(py)),
            )
        };
        let (Some(protocol), Some(wrapper)) = (protocol, wrapper) else {
            return Ok(());
        };
        let inner = self.inner.clone();
        let start = InternalCall::native(
            py,
            "UdpTransport._start_reading",
            Box::new(move |py, _| inner.start_reading(py)),
        )?;
        crate::transports::core::schedule_start(
            self.inner.lp.get(),
            protocol.bind(py),
            wrapper.bind(py),
            start,
            waiter,
            None,
        )
    }

    #[pyo3(signature = (data, addr=None))]
    fn sendto(
        &self,
        py: Python<'_>,
        data: Bound<'_, PyAny>,
        addr: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not '{}'",
                data.get_type().name()?
            )));
        }
        // A memoryview that cannot give contiguous bytes (not contiguous;
        // released, from 3.13 on) passes asyncio's checks and fails in the
        // send: a fatal error, or, when it has to be buffered, in bytes().
        let (buf, unsendable) = match PyUntypedBuffer::get(&data) {
            Ok(b) if b.is_c_contiguous() => (Some(b), None),
            Ok(b) => {
                if b.len_bytes() == 0 && !self.inner.py313 {
                    return Ok(());
                }
                drop(b);
                let err = crate::transports::BufView::get(&data, false)
                    .err()
                    .unwrap_or_else(|| {
                        pyo3::exceptions::PyBufferError::new_err("not a contiguous buffer")
                    });
                (None, Some(err))
            }
            Err(e) if self.inner.py313 && e.is_instance_of::<PyValueError>(py) => (None, Some(e)),
            Err(e) => return Err(e),
        };
        if let Some(b) = &buf {
            if b.len_bytes() == 0 && !self.inner.py313 {
                return Ok(());
            }
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
                        .call_method1(
                            intern!(py, "warning"),
                            ("socket.send() raised exception.",),
                        )?;
                }
                return Ok(());
            }
        }
        let empty = inner.state.lock().buffer.is_empty();
        let (buf, _copy) = match (buf, unsendable) {
            (Some(b), _) => (b, None),
            (None, Some(err)) if empty => {
                return inner.fatal_error(py, err, "Fatal write error on datagram transport");
            }
            (None, _) => {
                let copy = py.get_type::<PyBytes>().call1((&data,))?;
                (PyUntypedBuffer::get(&copy)?, Some(copy))
            }
        };
        // SAFETY: a C-contiguous buffer export we hold for this call (of
        // `data`, or of `copy`, alive until the end of the call).
        let bytes =
            unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.len_bytes()) };
        if empty {
            match inner.send_one(py, bytes, addr.as_ref()) {
                Sent::Ok => return Ok(()),
                Sent::WouldBlock => {}
                Sent::Error(e) => {
                    return inner.report_error(py, e, "Fatal write error on datagram transport")
                }
            }
        }
        // The first buffered datagram is where asyncio adds its writer.
        let ctx = if empty { Some(copy_current(py)?) } else { None };
        let old = {
            let mut st = inner.state.lock();
            st.buffer.push_back((bytes.to_vec(), addr));
            st.buffer_size += bytes.len() + inner.header();
            match ctx {
                Some(c) => st.write_ctx.replace(c),
                None => None,
            }
        };
        drop(old);
        inner.sync(inner.lp.get())?;
        inner.maybe_pause_protocol(py)
    }

    fn get_write_buffer_size(&self) -> usize {
        self.inner.state.lock().buffer_size
    }

    /// `{"bytes_in": ..., "bytes_out": ...}`: payload bytes so far
    /// (`get_extra_info("oxloop_stats")`).
    fn _stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (rx, tx) = self.inner.bytes.read();
        bytes_dict(py, rx, tx)
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

    fn resume_reading(&self, py: Python<'_>) -> PyResult<bool> {
        // asyncio adds the reader again, in a copy of the caller's context.
        let ctx = copy_current(py)?;
        let old = {
            let mut st = self.inner.state.lock();
            if st.closing || !st.paused {
                return Ok(false);
            }
            st.paused = false;
            if st.started {
                st.read_ctx.replace(ctx)
            } else {
                None
            }
        };
        drop(old);
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
    fn set_write_buffer_limits(
        &self,
        py: Python<'_>,
        high: Option<i64>,
        low: Option<i64>,
    ) -> PyResult<()> {
        self.inner
            .state
            .lock()
            .flow
            .set_limits(high, low)
            .map_err(PyValueError::new_err)?;
        self.inner.maybe_pause_protocol(py)
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        let st = self.inner.state.lock();
        (st.flow.low, st.flow.high)
    }

    /// Whether the loop is watching the fd for reading / writing (repr).
    fn _polling(&self) -> (bool, bool) {
        let st = self.inner.state.lock();
        match st.reg.interest() {
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
                st.read_ctx.take(),
                st.write_ctx.take(),
            )
        };
        drop(taken);
    }
}
