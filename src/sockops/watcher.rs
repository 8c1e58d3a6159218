//! The per-fd watcher of the low-level socket operations, and the operations
//! themselves.
//!
//! A `SockWatcher` has one slot per direction (asyncio's reader/writer of a
//! `sock_*` call). A slot holds the operation, its future and an id. The
//! watcher is registered with the loop while a slot is full and for exactly
//! the directions that are full; when both are empty it is unregistered (the
//! fd is free for `add_reader` again), but the `Arc` is kept by `SockOps` and
//! reused by the next operation on the same fd.
//!
//! Invariants:
//! - `state` is never held while Python code runs or a Python object is
//!   dropped: a slot is taken out, worked on, and put back.
//! - A slot whose future is done (cancelled) is dropped without touching the
//!   socket: cancelling `sock_recv` loses no bytes.
//! - A second operation on the same direction replaces the first (its future
//!   stays pending), as asyncio's `add_reader`/`add_writer` do.
//! - Lock order: watcher `state`, then the loop's `state` (register/rearm);
//!   `traverse` only `try_lock`s, since the GC may run while it is held.

use std::os::fd::RawFd;

use parking_lot::Mutex;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyBlockingIOError, PyInterruptedError};

use crate::errors::must_propagate;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::{PyTraverseError, PyVisit};

use crate::event_loop::io::IoWatcher;
use crate::event_loop::LoopCore;
use crate::reactor::sockets as sys;
use crate::reactor::{Readiness, Want};

extern "C" {
    /// CPython's `_PyBytes_Resize` (exported since 2.x; pyo3 keeps it
    /// private). Shrinks a fresh bytes object in place, as `socket.recv` does.
    fn _PyBytes_Resize(
        bytes: *mut *mut ffi::PyObject,
        newsize: ffi::Py_ssize_t,
    ) -> std::os::raw::c_int;
}

/// One socket operation.
pub(crate) enum Op {
    /// `sock_recv(sock, n)`.
    Recv {
        /// Maximum bytes to read.
        n: usize,
    },
    /// `sock_recv_into(sock, buf)`.
    RecvInto {
        /// The target object.
        obj: Py<PyAny>,
        /// Its writable buffer, taken when the operation starts.
        buf: Option<PyUntypedBuffer>,
    },
    /// `sock_sendall(sock, data)`.
    SendAll {
        /// The data object.
        obj: Py<PyAny>,
        /// Its buffer, taken when the operation starts.
        buf: Option<PyUntypedBuffer>,
        /// Bytes sent so far.
        pos: usize,
    },
    /// A Python callable that does the syscall: returns the result, or
    /// raises `BlockingIOError`/`InterruptedError` to wait for readiness.
    Call {
        /// The callable.
        attempt: Py<PyAny>,
    },
}

/// What one attempt did.
pub(crate) enum Outcome {
    /// Would block: wait for readiness.
    Pending,
    /// Finished with this result.
    Done(Py<PyAny>),
    /// Failed with this exception.
    Failed(PyErr),
}

fn os_outcome(e: std::io::Error) -> Outcome {
    if sys::would_block(&e) {
        Outcome::Pending
    } else {
        Outcome::Failed(crate::errors::os_error(e))
    }
}

/// Above this size `recv_bytes` reads into the thread's scratch buffer and
/// copies what arrived, instead of allocating `n` bytes and shrinking them:
/// servers ask for 64-256 KiB and mostly get far less, and a would-block
/// attempt then costs no allocation at all.
const SCRATCH_MIN: usize = 16 * 1024;
/// The largest request served from the scratch buffer.
const SCRATCH_MAX: usize = 4 * 1024 * 1024;

thread_local! {
    /// The receive scratch buffer of this thread.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `socket.recv(n)` through the scratch buffer; None if it is in use.
fn recv_scratch(py: Python<'_>, fd: RawFd, n: usize) -> Option<Outcome> {
    SCRATCH.with(|cell| {
        let mut buf = cell.try_borrow_mut().ok()?;
        if buf.len() < n {
            buf.resize(n, 0);
        }
        // SAFETY: `buf` is writable for at least `n` bytes.
        Some(match unsafe { sys::recv(fd, buf.as_mut_ptr(), n) } {
            Ok(got) => Outcome::Done(PyBytes::new(py, &buf[..got]).into_any().unbind()),
            Err(e) => os_outcome(e),
        })
    })
}

/// `socket.recv(n)` on `fd`: a bytes object of at most `n` bytes.
fn recv_bytes(py: Python<'_>, fd: RawFd, n: usize) -> Outcome {
    if (SCRATCH_MIN..=SCRATCH_MAX).contains(&n) {
        if let Some(outcome) = recv_scratch(py, fd, n) {
            return outcome;
        }
    }
    let Ok(len) = ffi::Py_ssize_t::try_from(n) else {
        return Outcome::Failed(pyo3::exceptions::PyOverflowError::new_err(
            "buffer size too large",
        ));
    };
    // SAFETY: with a NULL source, PyBytes_FromStringAndSize allocates an
    // uninitialised bytes object of `len` bytes (new reference or NULL); GIL
    // held. Nobody else sees it before it is filled and resized.
    let mut obj = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), len) };
    if obj.is_null() {
        return Outcome::Failed(PyErr::fetch(py));
    }
    // SAFETY: `obj` is a live bytes object with `n` writable bytes.
    let got = unsafe { sys::recv(fd, ffi::PyBytes_AsString(obj).cast(), n) };
    match got {
        Ok(got) => {
            // SAFETY: `obj` is ours alone (refcount 1), as _PyBytes_Resize
            // requires; on failure it is freed and set to NULL.
            if got != n && unsafe { _PyBytes_Resize(&mut obj, got as ffi::Py_ssize_t) } < 0 {
                return Outcome::Failed(PyErr::fetch(py));
            }
            // SAFETY: `obj` is a new reference we own.
            Outcome::Done(unsafe { Bound::from_owned_ptr(py, obj) }.unbind())
        }
        Err(e) => {
            // SAFETY: we own the reference.
            unsafe { ffi::Py_DECREF(obj) };
            os_outcome(e)
        }
    }
}

impl Op {
    /// Takes the buffers the operation needs (the errors `socket.recv_into`
    /// and `socket.send` raise for bad arguments).
    pub(crate) fn prepare(&mut self, py: Python<'_>) -> PyResult<()> {
        match self {
            Op::RecvInto { obj, buf } if buf.is_none() => {
                let b = obj.bind(py);
                let taken = PyUntypedBuffer::get(b)
                    .ok()
                    .filter(|x| !x.readonly() && x.is_c_contiguous());
                match taken {
                    Some(x) => *buf = Some(x),
                    None => {
                        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                            "recv_into() argument 'buffer' must be read-write bytes-like object, not {}",
                            b.get_type().name()?
                        )))
                    }
                }
            }
            Op::SendAll { obj, buf, .. } if buf.is_none() => {
                let b = obj.bind(py);
                let taken = PyUntypedBuffer::get(b).ok().filter(|x| x.is_c_contiguous());
                match taken {
                    Some(x) => *buf = Some(x),
                    None => {
                        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                            "a bytes-like object is required, not '{}'",
                            b.get_type().name()?
                        )))
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Tries the operation once (sendall: until it would block).
    pub(crate) fn attempt(&mut self, py: Python<'_>, fd: RawFd) -> Outcome {
        match self {
            Op::Recv { n } => recv_bytes(py, fd, *n),
            Op::RecvInto { buf, .. } => {
                let buf = buf.as_ref().expect("prepared");
                // SAFETY: a writable, C-contiguous buffer we hold an export
                // of, so its memory stays valid and unmoved.
                match unsafe { sys::recv(fd, buf.buf_ptr().cast(), buf.len_bytes()) } {
                    Ok(n) => Outcome::Done(n.into_pyobject(py).expect("int").into_any().unbind()),
                    Err(e) => os_outcome(e),
                }
            }
            Op::SendAll { buf, pos, .. } => {
                let buf = buf.as_ref().expect("prepared");
                // SAFETY: a C-contiguous buffer export we hold; read only.
                let data = unsafe {
                    std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.len_bytes())
                };
                loop {
                    match sys::send(fd, &data[*pos..]) {
                        Ok(n) => {
                            *pos += n;
                            if *pos >= data.len() {
                                return Outcome::Done(py.None());
                            }
                        }
                        Err(e) => return os_outcome(e),
                    }
                }
            }
            Op::Call { attempt } => match attempt.bind(py).call0() {
                Ok(v) => Outcome::Done(v.unbind()),
                Err(e)
                    if e.is_instance_of::<PyBlockingIOError>(py)
                        || e.is_instance_of::<PyInterruptedError>(py) =>
                {
                    Outcome::Pending
                }
                Err(e) => Outcome::Failed(e),
            },
        }
    }

    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Op::Recv { .. } => Ok(()),
            Op::RecvInto { obj, .. } | Op::SendAll { obj, .. } => visit.call(obj),
            Op::Call { attempt } => visit.call(attempt),
        }
    }
}

/// An operation waiting for its fd.
pub(crate) struct Slot {
    /// Identifies the operation (to remove only our own slot).
    pub(crate) id: u64,
    /// The future the operation resolves.
    pub(crate) fut: Py<PyAny>,
    /// The operation.
    pub(crate) op: Op,
}

/// The watcher's mutable part.
#[derive(Default)]
pub(crate) struct WState {
    /// The loop's token while registered.
    pub(crate) token: Option<usize>,
    /// What the loop watches for (None: unregistered).
    pub(crate) want: Option<Want>,
    /// The read-side operation.
    pub(crate) reader: Option<Slot>,
    /// The write-side operation.
    pub(crate) writer: Option<Slot>,
}

impl WState {
    pub(crate) fn desired(&self) -> Option<Want> {
        Want::from_flags(self.reader.is_some(), self.writer.is_some())
    }

    pub(crate) fn slot(&mut self, write: bool) -> &mut Option<Slot> {
        if write {
            &mut self.writer
        } else {
            &mut self.reader
        }
    }
}

/// The watcher of one fd's socket operations.
pub(crate) struct SockWatcher {
    /// The fd.
    pub(crate) fd: RawFd,
    /// Slots and registration.
    pub(crate) state: Mutex<WState>,
}

/// `fut.done()`.
pub(crate) fn future_done(fut: &Bound<'_, PyAny>) -> PyResult<bool> {
    fut.call_method0(intern!(fut.py(), "done"))?.is_truthy()
}

impl SockWatcher {
    pub(crate) fn new(fd: RawFd) -> Self {
        Self {
            fd,
            state: Mutex::new(WState::default()),
        }
    }

    /// Narrows or drops the registration after slots were emptied.
    pub(crate) fn shrink(&self, lp: &LoopCore) {
        let (token, want) = {
            let mut st = self.state.lock();
            let want = st.desired();
            if want == st.want {
                return;
            }
            st.want = want;
            let token = if want.is_none() {
                st.token.take()
            } else {
                st.token
            };
            (token, want)
        };
        if let Some(t) = token {
            // A failure means the fd is gone; the kernel forgot it already.
            let _ = lp.io_set_want(t, want);
        }
    }

    /// Removes the slot `id` (if it is still there) and updates the
    /// registration: a cancelled or abandoned operation.
    pub(crate) fn remove(&self, lp: Option<&LoopCore>, id: u64, write: bool) {
        let taken = {
            let mut st = self.state.lock();
            let slot = st.slot(write);
            if slot.as_ref().is_some_and(|s| s.id == id) {
                slot.take()
            } else {
                None
            }
        };
        if taken.is_some() {
            if let Some(lp) = lp {
                self.shrink(lp);
            }
        }
        drop(taken);
    }

    /// Puts `slot` back on its side unless a newer one took it meanwhile.
    fn put_back(&self, write: bool, slot: Slot) {
        let rejected = {
            let mut st = self.state.lock();
            let dst = st.slot(write);
            if dst.is_none() {
                *dst = Some(slot);
                None
            } else {
                Some(slot) // replaced meanwhile: the newer one wins
            }
        };
        drop(rejected);
    }

    /// Runs the slot of one direction; true if it is still pending.
    fn run_slot(&self, py: Python<'_>, write: bool) -> PyResult<bool> {
        let Some(mut slot) = self.state.lock().slot(write).take() else {
            return Ok(false);
        };
        let fut = slot.fut.bind(py).clone();
        if future_done(&fut)? {
            return Ok(false); // cancelled: the socket is not touched
        }
        let outcome = match slot.op.attempt(py, self.fd) {
            Outcome::Pending => {
                self.put_back(write, slot);
                return Ok(true);
            }
            // KeyboardInterrupt/SystemExit leaves the loop while asyncio's
            // reader stays registered: the operation is tried again when the
            // loop runs again (the caller re-arms the fd).
            Outcome::Failed(e) if must_propagate(py, &e) => {
                self.put_back(write, slot);
                return Err(e);
            }
            other => other,
        };
        match outcome {
            Outcome::Done(v) => {
                fut.call_method1(intern!(py, "set_result"), (v,))?;
            }
            Outcome::Failed(e) => {
                fut.call_method1(intern!(py, "set_exception"), (e.value(py),))?;
            }
            Outcome::Pending => unreachable!("handled above"),
        }
        Ok(false)
    }
}

impl IoWatcher for SockWatcher {
    fn on_ready(&self, py: Python<'_>, lp: &Bound<'_, LoopCore>, ready: Readiness) -> PyResult<()> {
        let mut result = Ok(false);
        if ready.for_reader() {
            result = self.run_slot(py, false);
        }
        if ready.for_writer() {
            let r = self.run_slot(py, true);
            result = match (result, r) {
                (Ok(a), Ok(b)) => Ok(a || b),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        self.shrink(lp.get());
        // An attempt that would block although the fd was reported ready
        // (EINTR, a racing reader, a Python attempt that chose to wait):
        // have the fd reported again if it stays ready, as a level-triggered
        // selector would.
        if let Ok(true) = result {
            let token = self.state.lock().token;
            if let Some(t) = token {
                lp.get().io_rearm(t)?;
            }
        }
        result.map(drop)
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(st) = self.state.try_lock() else {
            return Ok(());
        };
        for slot in [&st.reader, &st.writer].into_iter().flatten() {
            visit.call(&slot.fut)?;
            slot.op.traverse(visit)?;
        }
        Ok(())
    }

    fn describe(&self, _py: Python<'_>) -> String {
        format!("a pending socket operation (fd {})", self.fd)
    }
}
