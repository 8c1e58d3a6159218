//! Stream transports (TCP and Unix sockets) in Rust.
//!
//! Design:
//! - `StreamTransport` is the native core of one connection, in layers
//!   (each file uses only the ones above it in this list;
//!   `scripts/check_layout.py` checks that no two files depend on each
//!   other): `pyobjs.rs` (asyncio names, future helpers), `flow.rs` and
//!   `core.rs` (what it shares with the pipe transport); `stream_state.rs`
//!   (`StreamState`, everything its mutex guards: a `ByteCore` and its own fields,
//!   and the `sendfile` state); `stream.rs` (the type, its constructors,
//!   its `Registration` with the loop); start/close/`connection_lost` and
//!   the end of a drain (`lifecycle.rs`, the `ByteTransport` impl);
//!   `loop.sendfile` (`sendfile.rs`); the read path (`read.rs`,
//!   `recv_bytes.rs`) and the write path (`write.rs`); and on top the thin
//!   `#[pymethods]` and the loop's entry, its `Watched` impl
//!   (`stream_api.rs`).
//!   It owns the socket (a Rust `OwnedFd`, or the user's `socket.socket` when
//!   one was passed in), the write buffer (`flow.rs`) and the protocol. The
//!   object user code sees is a thin Python subclass of
//!   `asyncio.Transport` (`python/oxloop/_streams.py`) that holds the core and
//!   binds its hot methods (`write`, `writelines`, ...) straight onto itself,
//!   so `isinstance(t, asyncio.Transport)` holds and a `write` costs one
//!   native call.
//! - The loop calls the core through its fd's entry, an
//!   `event_loop::io::Watch`, when its fd is ready.
//!   mio is edge-triggered: reads go on until `WouldBlock`, a short read (a
//!   stream socket's queue was drained; later data raises a new edge) or a
//!   fairness cap (then the fd is re-armed); writes go on until the buffer is
//!   empty or `WouldBlock`.
//! - Reads land in one reusable per-thread buffer (`READ_BUF_SIZE`) and
//!   become one `bytes` per `data_received` (after a large read, straight in
//!   a fresh `bytes`: `recv_bytes.rs`); a `BufferedProtocol` gets the
//!   bytes straight into the buffer its `get_buffer()` returned. The protocol
//!   methods on the hot path are looked up once per `set_protocol`.
//! - `write()` tries the socket at once and buffers only what the kernel did
//!   not take; buffered chunks go out with one gathered `sendmsg`.
//!
//! - `PipeTransport` (`pipe.rs`, I/O paths in `pipe_io.rs`, `#[pymethods]`
//!   in `pipe_api.rs`) is the core of the read and write pipe transports
//!   (`connect_read_pipe`, `connect_write_pipe`, subprocess pipes); it
//!   shares `core.rs`'s `ByteCore`/`ByteTransport`, the write buffer and
//!   the per-thread read buffer with the stream transports and makes
//!   `read`/`write`/`writev` calls instead of socket calls.
//! - `core.rs` holds what stream, pipe and datagram (`crate::udp`)
//!   transports do alike, as uvloop's `basetransport.pyx`: the order of
//!   `connection_made`, the start of reading and the waiter; the call of
//!   `connection_lost`; and for stream and pipe, their common state and
//!   behaviour (fatal errors, closing, pause/resume, the
//!   `pause_writing`/`resume_writing` callback at the water marks of
//!   `flow.rs`'s `FlowControl`). All three schedule these from
//!   Rust, their own steps as `crate::internal_call::InternalCall`s queued
//!   where asyncio's `call_soon(self._call_connection_lost, exc)` would go.
//!
//! Invariants:
//! - The transport's own mutex is held only for Python-free sections: it is
//!   released before any protocol method, exception handler or other Python
//!   code runs (protocol callbacks re-enter the transport).
//! - The fd is deregistered from the loop before it is closed.
//! - `connection_lost` is scheduled at most once (`conn_lost` counts it),
//!   after which the transport drops its protocol, wrapper, loop and server.
//! - Callback order is asyncio's: `connection_made` is scheduled with
//!   `call_soon`, reading starts in the callback after it, and the waiter of
//!   `create_connection` is resolved after both.
//! - Contexts are asyncio's (see `crate::contexts`): the loop calls a
//!   transport outside any handle, so reads run with `read_ctx` entered
//!   (taken where asyncio adds its reader: the start of reading and each
//!   `resume_reading()`), the flush of buffered data with `write_ctx`
//!   (taken by the `write()` that started buffering); on 3.15+ a transport
//!   of `create_server`/`create_connection` uses its own `ctx` for all.

pub(crate) mod core;
pub mod flow;
pub mod lifecycle;
pub mod pipe;
pub mod pipe_api;
pub mod pipe_io;
pub mod pyobjs;
pub mod read;
pub mod recv_bytes;
pub mod sendfile;
pub mod stream;
pub mod stream_api;
pub mod stream_state;
pub mod write;

use std::cell::RefCell;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

use crate::reactor::addr::Addr;

/// The size of the per-thread read buffer (asyncio's `max_size`).
pub const READ_BUF_SIZE: usize = 256 * 1024;

/// asyncio's `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
pub const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

thread_local! {
    /// This thread's receive buffer, shared by every native read on it:
    /// stream and pipe transports, datagram `recvfrom`, large `sock_recv`
    /// (one buffer of max(`READ_BUF_SIZE`, the largest request served)
    /// rather than one per kind). Allocated on first use.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The first `len` bytes of `buf`, grown to at least `READ_BUF_SIZE` and
/// `len` first.
fn scratch_slice(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    let want = len.max(READ_BUF_SIZE);
    if buf.len() < want {
        buf.resize(want, 0);
    }
    &mut buf[..len]
}

/// Runs `f` with `len` bytes of this thread's receive buffer; None (and
/// `f` not called) if the buffer is in use (a re-entrant read).
pub fn try_with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
    SCRATCH.with(|cell| {
        let mut buf = cell.try_borrow_mut().ok()?;
        Some(f(scratch_slice(&mut buf, len)))
    })
}

/// Runs `f` with `len` bytes of this thread's receive buffer; a re-entrant
/// call gets a temporary buffer.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(scratch_slice(&mut buf, len)),
        Err(_) => f(&mut vec![0u8; len]),
    })
}

/// Runs `f` with this thread's read buffer (`READ_BUF_SIZE` bytes).
pub fn with_read_buf<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    with_scratch(READ_BUF_SIZE, f)
}

pub use crate::errors::must_propagate;

static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The `asyncio` logger.
pub fn logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    LOGGER
        .get_or_try_init(py, || {
            py.import("logging")?
                .call_method1("getLogger", ("asyncio",))
                .map(Bound::unbind)
        })
        .map(|l| l.bind(py))
}

/// How asyncio's `_fatal_error` reports: an error the transport expects
/// (`quiet`: connection resets, EIO on a pty, ...) is only logged, in debug
/// mode; anything else goes to the loop's exception handler with the
/// transport and protocol.
pub fn report_fatal(
    py: Python<'_>,
    lp: Option<Bound<'_, crate::event_loop::LoopCore>>,
    quiet: bool,
    message: &str,
    exc: &Bound<'_, PyAny>,
    transport: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
) -> PyResult<()> {
    let Some(lp) = lp else { return Ok(()) };
    if quiet {
        if lp.get().debug_enabled() {
            let kw = pyo3::types::PyDict::new(py);
            kw.set_item("exc_info", exc)?;
            logger(py)?.call_method("debug", ("%r: %s", transport, message), Some(&kw))?;
        }
        return Ok(());
    }
    let ctx = pyo3::types::PyDict::new(py);
    ctx.set_item("message", message)?;
    ctx.set_item("exception", exc)?;
    ctx.set_item("transport", transport)?;
    ctx.set_item("protocol", protocol)?;
    lp.call_method1(pyo3::intern!(py, "call_exception_handler"), (ctx,))?;
    Ok(())
}

/// A decoded socket address as Python's `socket` module shows it: a
/// `(host, port)` or `(host, port, flowinfo, scope_id)` tuple, a Unix path
/// (`str`, decoded as `os.fsdecode` does), a Linux abstract address
/// (`bytes`), or None.
#[inline(always)]
pub fn addr_to_py(py: Python<'_>, addr: Addr) -> PyResult<Bound<'_, PyAny>> {
    Ok(match addr {
        Addr::None | Addr::Other => py.None().into_bound(py),
        Addr::V4(h, p) => (h, p).into_pyobject(py)?.into_any(),
        Addr::V6(h, p, f, s) => (h, p, f, s).into_pyobject(py)?.into_any(),
        Addr::UnixAbstract(b) => PyBytes::new(py, &b).into_any(),
        Addr::UnixPath(b) => {
            use std::os::unix::ffi::OsStrExt;
            std::ffi::OsStr::from_bytes(&b)
                .into_pyobject(py)?
                .into_any()
        }
    })
}

/// A contiguous view of a Python object's bytes (the buffer protocol),
/// released on drop. `writable` asks for a writable buffer.
pub struct BufView {
    /// The filled-in `Py_buffer`.
    view: Box<ffi::Py_buffer>,
}

impl BufView {
    pub fn get(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Self> {
        // SAFETY: a zeroed Py_buffer is the documented initial state.
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        let flags = if writable {
            ffi::PyBUF_WRITABLE
        } else {
            ffi::PyBUF_SIMPLE
        };
        // SAFETY: `obj` is live (GIL held); `view` is valid storage that
        // PyObject_GetBuffer fills in or leaves untouched on error.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) } != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(Self { view })
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.view.len as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.view.buf.cast()
    }

    /// The bytes (valid while `self` lives and the GIL is held).
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        if self.is_empty() {
            return &[];
        }
        // SAFETY: the exporter guarantees `buf` holds `len` contiguous bytes
        // (PyBUF_SIMPLE/WRITABLE) until the view is released.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }
}

impl Drop for BufView {
    fn drop(&mut self) {
        // SAFETY: releasing a view obtained by PyObject_GetBuffer; the GIL
        // is held wherever views are used (they never leave a GIL scope).
        unsafe { ffi::PyBuffer_Release(&mut *self.view) }
    }
}
