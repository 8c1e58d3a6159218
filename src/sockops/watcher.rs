//! The per-fd watcher of the low-level socket operations, and the operations
//! themselves.
//!
//! A `SockWatcher` has one slot per direction (asyncio's reader/writer of a
//! `sock_*` call). A slot holds the operation, its future, its socket and an
//! id. While a slot is full, the watcher is the loop's waiter on that side
//! of the fd (see `event_loop::io`, `Shared` entries); the `Arc` is kept by
//! `SockOps` and reused by the next operation on the same fd.
//!
//! Invariants:
//! - `state` is never held while Python code runs or a Python object is
//!   dropped: a slot is taken out, worked on, and put back.
//! - A slot whose future is done (cancelled) is dropped without touching the
//!   socket: cancelling `sock_recv` loses no bytes.
//! - A second operation on the same direction replaces the first (its future
//!   stays pending), as asyncio's `add_reader`/`add_writer` do; so do
//!   `add_reader`/`remove_reader` on the fd and a transport taking it over
//!   (`evicted`).
//! - A socket closed while an operation waits: the kernel forgets the fd,
//!   so, as asyncio's reader, the operation waits until cancelled. If the
//!   loop reports the fd anyway (the close came after this iteration's poll,
//!   or the fd number was reused by a new socket that is watched), the
//!   operation runs as asyncio's callback would on the closed socket
//!   (`Op::attempt_closed`: it fails with EBADF) and never touches the fd,
//!   which may be the new socket's.
//! - A `KeyboardInterrupt`/`SystemExit` from an attempt puts the slot back:
//!   asyncio's reader stays registered and runs again when the loop does.
//! - `armed` names the socket object (weakly) whose operation last
//!   registered or re-armed the fd's entry through this watcher, and the
//!   entry's token then. An operation on that same object, which still
//!   has the fd, vouches for the token (`vouch`): the file is the one the
//!   kernel watches, so parking needs no syscall. Any other socket (a new
//!   one on a reused fd number, a second object on the same fd) does not,
//!   and its wait re-arms (registering afresh, new token, if the kernel
//!   forgot the fd). Only an attempt that saw the fd would block
//!   (`Outcome::Pending`, not `Retry`) parks on a vouched entry.
//! - Lock order: watcher `state`, then the loop's `state`; `traverse` only
//!   `try_lock`s, since the GC may run while it is held.

use std::os::fd::RawFd;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyBlockingIOError, PyInterruptedError};

use crate::errors::must_propagate;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyWeakrefMethods, PyWeakrefReference};
use pyo3::{PyTraverseError, PyVisit};

use crate::event_loop::io::IoWatcher;
use crate::event_loop::{LoopCore, SideWaiter};
use crate::reactor::sockets as sys;
use crate::reactor::Readiness;

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

impl Op {
    /// `sock_recv_into`'s operation on `obj` (its buffer taken at the start).
    pub(crate) fn recv_into(obj: Bound<'_, PyAny>) -> Self {
        Self::RecvInto {
            obj: obj.unbind(),
            buf: None,
        }
    }

    /// `sock_sendall`'s operation on `obj` (its buffer taken at the start).
    pub(crate) fn send_all(obj: Bound<'_, PyAny>) -> Self {
        Self::SendAll {
            obj: obj.unbind(),
            buf: None,
            pos: 0,
        }
    }

    /// Whether the operation waits for writability (else readability).
    pub(crate) fn writes(&self) -> bool {
        matches!(self, Self::SendAll { .. })
    }
}

/// What one attempt did.
pub(crate) enum Outcome {
    /// Would block (the syscall said so): wait for readiness.
    Pending,
    /// Wait for readiness, although no syscall saw the fd not ready (a
    /// Python attempt that raised `InterruptedError`): the wait re-arms.
    Retry,
    /// Finished with this result.
    Done(Py<PyAny>),
    /// Failed with this exception.
    Failed(PyErr),
}

fn os_outcome(e: std::io::Error) -> Outcome {
    if crate::reactor::would_block(&e) {
        Outcome::Pending
    } else {
        Outcome::Failed(crate::errors::os_error(e))
    }
}

/// Above this size `recv_bytes` reads into the thread's scratch buffer and
/// copies what arrived, instead of allocating `n` bytes and shrinking them:
/// a request this large would be an `mmap` per call under glibc's default
/// thresholds (whatever `tune_malloc` could do). Up to it, the `bytes` of
/// `n` is allocated and read into directly, then shrunk in place, as
/// `socket.recv` does: with glibc's thresholds raised (`tune_malloc`, at
/// the first request of at least `LARGE_RECV`) that is no page fault, and
/// it saves copying what arrived (echo in sockets mode at 100 KiB, reads
/// of 64 KiB: ~28 -> ~19 µs server CPU per request; at 1 KiB no
/// difference).
const SCRATCH_MIN: usize = crate::transports::recv_bytes::DIRECT_MAX + 1;
/// A request at least this large raises glibc's thresholds (`tune_malloc`).
const LARGE_RECV: usize = 16 * 1024;
/// The largest request served from the scratch buffer.
const SCRATCH_MAX: usize = 4 * 1024 * 1024;

/// `socket.recv(n)` through this thread's receive buffer
/// (`transports::try_with_scratch`); None if it is in use.
fn recv_scratch(py: Python<'_>, fd: RawFd, n: usize) -> Option<Outcome> {
    crate::transports::try_with_scratch(n, |buf| {
        // SAFETY: `buf` is writable for its `n` bytes.
        match unsafe { sys::recv(fd, buf.as_mut_ptr(), n) } {
            Ok(got) => Outcome::Done(PyBytes::new(py, &buf[..got]).into_any().unbind()),
            Err(e) => os_outcome(e),
        }
    })
}

/// `socket.recv(n)` on `fd`: a bytes object of at most `n` bytes.
fn recv_bytes(py: Python<'_>, fd: RawFd, n: usize) -> Outcome {
    if n >= LARGE_RECV {
        crate::transports::recv_bytes::tune_malloc();
    }
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

/// One call of a Python attempt: its result, or wait on
/// `BlockingIOError`/`InterruptedError`.
fn call_attempt(attempt: &Bound<'_, PyAny>) -> Outcome {
    let py = attempt.py();
    match attempt.call0() {
        Ok(v) => Outcome::Done(v.unbind()),
        Err(e) if e.is_instance_of::<PyBlockingIOError>(py) => Outcome::Pending,
        Err(e) if e.is_instance_of::<PyInterruptedError>(py) => Outcome::Retry,
        Err(e) => Outcome::Failed(e),
    }
}

/// `obj`'s C-contiguous buffer, writable if `writable`; else the TypeError
/// whose message `refusal` makes from the type's name.
fn contiguous_buffer(
    obj: &Bound<'_, PyAny>,
    writable: bool,
    refusal: impl FnOnce(&str) -> String,
) -> PyResult<PyUntypedBuffer> {
    let taken = PyUntypedBuffer::get(obj)
        .ok()
        .filter(|x| x.is_c_contiguous() && !(writable && x.readonly()));
    match taken {
        Some(x) => Ok(x),
        None => Err(pyo3::exceptions::PyTypeError::new_err(refusal(
            &obj.get_type().name()?.to_string(),
        ))),
    }
}

impl Op {
    /// Takes the buffers the operation needs (the errors `socket.recv_into`
    /// and `socket.send` raise for bad arguments).
    pub(crate) fn prepare(&mut self, py: Python<'_>) -> PyResult<()> {
        match self {
            Op::RecvInto { obj, buf } if buf.is_none() => {
                *buf = Some(contiguous_buffer(obj.bind(py), true, |t| {
                    format!("recv_into() argument 'buffer' must be read-write bytes-like object, not {t}")
                })?);
            }
            Op::SendAll { obj, buf, .. } if buf.is_none() => {
                *buf = Some(contiguous_buffer(obj.bind(py), false, |t| {
                    format!("a bytes-like object is required, not '{t}'")
                })?);
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
            Op::Call { attempt } => call_attempt(attempt.bind(py)),
        }
    }

    /// Runs the operation as asyncio's callback would on a socket that was
    /// closed (or detached) since it started. The fd number may belong to
    /// another socket by now and is never touched: the native operations
    /// fail as `socket.recv`/`send` do on a closed socket (EBADF); a Python
    /// attempt goes through the socket object, which raises.
    pub(crate) fn attempt_closed(&mut self, py: Python<'_>) -> Outcome {
        match self {
            Op::Call { attempt } => call_attempt(attempt.bind(py)),
            _ => Outcome::Failed(crate::errors::os_error(std::io::Error::from_raw_os_error(
                libc::EBADF,
            ))),
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
    /// The socket object (its `fileno()` tells whether it still has the fd).
    pub(crate) sock: Py<PyAny>,
}

/// Who last armed the fd's entry through this watcher.
pub(crate) struct Armed {
    /// The entry's token then.
    token: usize,
    /// The socket object whose operation armed it (a weak reference: the
    /// watcher must not keep a socket alive, nor mistake a new socket at
    /// the same address for it).
    sock: Py<PyWeakrefReference>,
}

/// The watcher's mutable part.
#[derive(Default)]
pub(crate) struct WatcherState {
    /// The read-side operation.
    pub(crate) reader: Option<Slot>,
    /// The write-side operation.
    pub(crate) writer: Option<Slot>,
    /// Who last armed the fd's entry (`SockWatcher::vouch`).
    armed: Option<Armed>,
}

impl WatcherState {
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
    /// The fd, and the waits on its sides.
    side: SideWaiter,
    /// The slots.
    pub(crate) state: Mutex<WatcherState>,
}

/// `fut.done()`.
pub(crate) fn future_done(fut: &Bound<'_, PyAny>) -> PyResult<bool> {
    fut.call_method0(intern!(fut.py(), "done"))?.is_truthy()
}

/// Whether `sock` still has `fd` (it was not closed or detached since).
fn still_has(sock: &Bound<'_, PyAny>, fd: RawFd) -> bool {
    sock.call_method0(intern!(sock.py(), "fileno"))
        .and_then(|v| v.extract::<RawFd>())
        .is_ok_and(|f| f == fd)
}

impl SockWatcher {
    pub(crate) fn new(fd: RawFd) -> Self {
        Self {
            side: SideWaiter::new(fd),
            state: Mutex::new(WatcherState::default()),
        }
    }

    fn id(&self) -> *const () {
        crate::event_loop::io::watcher_id(self)
    }

    /// Makes us the loop's waiter on one side of the fd (`trust`: see
    /// `vouch`), and remembers that `sock` armed the fd's entry.
    pub(crate) fn wait(
        &self,
        py: Python<'_>,
        lp: &LoopCore,
        (write, sock): (bool, &Bound<'_, PyAny>),
        me: Arc<Self>,
        trust: Option<usize>,
    ) -> PyResult<()> {
        let token = self.side.wait(py, lp, write, me, trust)?;
        if trust != Some(token) {
            self.armed_by(py, token, sock);
        }
        Ok(())
    }

    /// The token under which `sock` armed the fd's entry through this
    /// watcher, if it did (the last to arm it) and still has the fd. A
    /// socket object's fd only ever becomes -1, so it has had the fd, the
    /// same file, all along: the kernel's registration under that token,
    /// if the entry still has it (`io`: a file the kernel forgot gets a new
    /// token), is for the file now under the fd.
    pub(crate) fn vouch(&self, py: Python<'_>, sock: &Bound<'_, PyAny>) -> Option<usize> {
        let (token, weak) = {
            let st = self.state.lock();
            let armed = st.armed.as_ref()?;
            (armed.token, armed.sock.clone_ref(py))
        };
        let alive = weak.bind(py).upgrade()?;
        (alive.is(sock) && still_has(sock, self.side.fd())).then_some(token)
    }

    /// Records that `sock` armed the fd's entry under `token` (forgotten if
    /// `sock` cannot be weakly referenced: then no operation vouches).
    fn armed_by(&self, py: Python<'_>, token: usize, sock: &Bound<'_, PyAny>) {
        let same = {
            let st = self.state.lock();
            st.armed.as_ref().map(|a| a.sock.clone_ref(py))
        };
        let weak = match same {
            Some(w) if w.bind(py).upgrade().is_some_and(|s| s.is(sock)) => Some(w),
            _ => PyWeakrefReference::new(sock).ok().map(Bound::unbind),
        };
        let armed = weak.map(|sock| Armed { token, sock });
        let old = std::mem::replace(&mut self.state.lock().armed, armed);
        drop(old);
    }

    /// Stops the loop from calling us for one side (nothing waits there).
    fn unwatch(&self, py: Python<'_>, lp: &LoopCore, write: bool) {
        self.side.clear(py, lp, write, self.id());
    }

    /// Removes the slot `id` (if it is still there) and stops waiting on its
    /// side: a cancelled or abandoned operation.
    pub(crate) fn remove(&self, py: Python<'_>, lp: Option<&LoopCore>, id: u64, write: bool) {
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
                self.unwatch(py, lp, write);
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
    fn run_slot(&self, py: Python<'_>, lp: &LoopCore, write: bool) -> PyResult<bool> {
        let Some(mut slot) = self.state.lock().slot(write).take() else {
            self.unwatch(py, lp, write);
            return Ok(false);
        };
        let fut = slot.fut.bind(py).clone();
        if future_done(&fut)? {
            // Cancelled: the socket is not touched.
            self.unwatch(py, lp, write);
            drop(slot);
            return Ok(false);
        }
        let fd = self.side.fd();
        let attempt = if still_has(slot.sock.bind(py), fd) {
            slot.op.attempt(py, fd)
        } else {
            slot.op.attempt_closed(py)
        };
        let outcome = match attempt {
            Outcome::Pending | Outcome::Retry => {
                self.put_back(write, slot);
                return Ok(true);
            }
            Outcome::Failed(e) if must_propagate(py, &e) => {
                self.put_back(write, slot);
                return Err(e);
            }
            other => other,
        };
        if self.state.lock().slot(write).is_none() {
            self.unwatch(py, lp, write);
        }
        drop(slot);
        match outcome {
            Outcome::Done(v) => {
                fut.call_method1(intern!(py, "set_result"), (v,))?;
            }
            Outcome::Failed(e) => {
                fut.call_method1(intern!(py, "set_exception"), (e.value(py),))?;
            }
            Outcome::Pending | Outcome::Retry => unreachable!(),
        }
        Ok(false)
    }
}

impl IoWatcher for SockWatcher {
    fn on_ready(&self, py: Python<'_>, lp: &Bound<'_, LoopCore>, ready: Readiness) -> PyResult<()> {
        let core = lp.get();
        let mut pending = false;
        if ready.for_reader() {
            pending |= self.run_slot(py, core, false)?;
        }
        if ready.for_writer() {
            pending |= self.run_slot(py, core, true)?;
        }
        // An attempt that would block although the fd was reported ready
        // (EINTR, a racing reader, a Python attempt that chose to wait):
        // have the fd reported again if it stays ready, as a level-triggered
        // selector would.
        if pending {
            self.side.rearm(core)?;
        }
        Ok(())
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(st) = self.state.try_lock() else {
            return Ok(());
        };
        for slot in [&st.reader, &st.writer].into_iter().flatten() {
            visit.call(&slot.fut)?;
            visit.call(&slot.sock)?;
            slot.op.traverse(visit)?;
        }
        if let Some(armed) = &st.armed {
            visit.call(&armed.sock)?;
        }
        Ok(())
    }

    fn describe(&self, _py: Python<'_>) -> String {
        format!("a pending socket operation (fd {})", self.side.fd())
    }

    fn evicted(&self, _py: Python<'_>, write: bool) {
        // Replaced by add_reader/remove_reader or a transport: the
        // operation's future stays pending until cancelled, as in asyncio.
        let taken = self.state.lock().slot(write).take();
        drop(taken);
    }
}
