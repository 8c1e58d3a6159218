//! Low-level socket operations (`loop.sock_recv`, `sock_recv_into`,
//! `sock_sendall`, and the generic waiter behind `sock_accept`,
//! `sock_connect`, `sock_recvfrom*`, `sock_sendto` and `sock_sendfile`).
//!
//! Design:
//! - Each call returns a `SockOp`, a native coroutine (it has `send`,
//!   `throw`, `close` and `__await__`, so `asyncio.iscoroutine` accepts it
//!   and `create_task`/`wait_for`/`await` all work). Like an `async def`, it
//!   does nothing until first stepped.
//! - The first step runs asyncio's checks (SSL socket: `TypeError`; debug
//!   mode and a socket with a timeout: `ValueError`), then tries the syscall
//!   at once (`MSG_DONTWAIT`, so even a blocking socket never blocks the
//!   loop). If it completes, the coroutine returns without creating a
//!   future. Otherwise it creates a stdlib future, parks the operation in
//!   the fd's `SockWatcher` (see `watcher`) and yields the future to the
//!   task, exactly as `Future.__await__` would.
//! - The watcher is the loop's waiter on one side of the fd, in the fd's
//!   shared entry beside any `add_reader`/`add_writer` callback of the other
//!   side (see `event_loop::io`). The loop calls it directly when the fd is
//!   ready (no Python `add_reader` round trip, no handle); it retries the
//!   syscall, resolves the future with `set_result`/`set_exception` and
//!   leaves that side, so the fd is free again: no reader or writer is
//!   left, but the side stays armed with the kernel, idle, as the stream
//!   transports keep theirs (`event_loop::io`). The next operation that
//!   tried its syscall and saw it would block parks there with no
//!   `epoll_ctl` when its socket vouches for the registration
//!   (`SockWatcher::vouch`); that every native operation tries before it
//!   parks is what makes dropping an edge that came while idle safe.
//! - As in asyncio, the operation's waiter is a reader/writer like any
//!   other: `add_reader`/`remove_reader` (and the writer ones) on the fd
//!   replace or remove it and its future stays pending until cancelled; a
//!   `sock_*` call replaces an `add_reader` callback; a transport taking
//!   the fd replaces both.
//! - Cancellation: a done future is never read for (see `watcher`), and the
//!   coroutine removes its slot when the task throws the `CancelledError`
//!   in, when it is closed, or when it is dropped.
//!
//! `SockOps` is the per-loop object that owns the watchers (one per fd,
//! reused) and holds the loop; `SocketsMixin` (python/oxloop/_sockets.py)
//! creates it and exposes its methods as the loop's `sock_*` methods.

mod watcher;

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::{
    PyBaseException, PyRuntimeError, PyStopIteration, PyTypeError, PyValueError,
};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::event_loop::io::IoWatcher;
use crate::event_loop::LoopCore;
pub(crate) use watcher::{future_done, Op, Outcome, Slot, SockWatcher};

/// A Python object argument.
type Obj<'py> = Bound<'py, PyAny>;

/// The per-loop owner of the socket-operation watchers.
#[pyclass(frozen, module = "oxloop._core")]
pub struct SockOps {
    /// The loop (cleared by the GC; the loop holds us in its `__dict__`).
    lp: Mutex<Option<Py<LoopCore>>>,
    /// One watcher per fd, kept for reuse.
    watchers: Mutex<HashMap<RawFd, Arc<SockWatcher>>>,
    /// The stdlib future class (`asyncio.Future`).
    future_type: Py<PyAny>,
    /// `("loop",)`: the keyword names of `Future(loop=...)`.
    kw_loop: Py<PyTuple>,
    /// `ssl.SSLSocket`, if the ssl module is available.
    ssl_socket: Option<Py<PyAny>>,
    /// The next operation id.
    next_id: AtomicU64,
}

/// `StopIteration(value)`: how a coroutine returns `value`.
pub(crate) fn stop_iteration(py: Python<'_>, value: Py<PyAny>) -> PyErr {
    match py.get_type::<PyStopIteration>().call1((value,)) {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

impl SockOps {
    fn loop_ref(&self, py: Python<'_>) -> PyResult<Py<LoopCore>> {
        self.lp
            .lock()
            .as_ref()
            .map(|l| l.clone_ref(py))
            .ok_or_else(crate::errors::loop_closed)
    }

    /// `asyncio.Future(loop=lp)` through one vectorcall.
    fn new_future<'py>(
        &self,
        py: Python<'py>,
        lp: &Bound<'py, LoopCore>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut args = [std::ptr::null_mut(), lp.as_ptr()];
        // SAFETY: `args[1..]` holds one borrowed keyword value matching the
        // one name in `kw_loop`; slot 0 is scratch space that
        // PY_VECTORCALL_ARGUMENTS_OFFSET allows the callee to use. Returns a
        // new reference or NULL with an exception set; GIL held.
        unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyObject_Vectorcall(
                    self.future_type.as_ptr(),
                    args.as_mut_ptr().add(1),
                    ffi::PY_VECTORCALL_ARGUMENTS_OFFSET,
                    self.kw_loop.as_ptr(),
                ),
            )
        }
    }

    fn watcher_for(&self, fd: RawFd) -> Arc<SockWatcher> {
        self.watchers
            .lock()
            .entry(fd)
            .or_insert_with(|| Arc::new(SockWatcher::new(fd)))
            .clone()
    }

    /// asyncio's `_check_ssl_socket` and the debug-mode blocking check.
    fn check_socket(&self, py: Python<'_>, lp: &LoopCore, sock: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Some(t) = &self.ssl_socket {
            if sock.is_instance(t.bind(py))? {
                return Err(PyTypeError::new_err("Socket cannot be of type SSLSocket"));
            }
        }
        if lp.debug_enabled() {
            let t = sock.call_method0(intern!(py, "gettimeout"))?;
            if t.is_none() || t.extract::<f64>()? != 0.0 {
                return Err(PyValueError::new_err("the socket must be non-blocking"));
            }
        }
        Ok(())
    }

    /// Parks `slot` in the watcher of `fd` and makes it the loop's waiter
    /// on the slot's side of the fd. A slot already there (a second
    /// operation in the same direction) is replaced, and so is an
    /// `add_reader`/`add_writer` callback, as asyncio's `_add_reader`/
    /// `_add_writer` replace the old reader or writer.
    /// `tried`: the operation's attempt just saw the fd would block, so
    /// its socket may vouch for the fd's armed entry (`SockWatcher::vouch`;
    /// `event_loop::io`, idle entries: then the wait costs no syscall).
    fn park(
        &self,
        py: Python<'_>,
        lp: &LoopCore,
        (fd, write): (RawFd, bool),
        slot: Slot,
        tried: bool,
    ) -> PyResult<Arc<SockWatcher>> {
        let w = self.watcher_for(fd);
        let sock = slot.sock.clone_ref(py);
        let sock = sock.bind(py);
        let trust = if tried { w.vouch(py, sock) } else { None };
        let id = slot.id;
        let replaced = w.state.lock().slot(write).replace(slot);
        drop(replaced);
        if let Err(e) = w.wait(py, lp, (write, sock), w.clone(), trust) {
            w.remove(py, None, id, write);
            return Err(e);
        }
        Ok(w)
    }

    /// A native operation (`sock_recv`, `sock_recv_into`, `sock_sendall`):
    /// tried at once, waiting for the readiness its kind needs.
    fn native(
        slf: &Bound<'_, Self>,
        sock: Obj<'_>,
        op: Op,
        name: &Bound<'_, PyString>,
    ) -> SockCoro {
        let write = op.writes();
        Self::op(slf, sock, op, write, true, name.clone().unbind())
    }

    fn op(
        slf: &Bound<'_, Self>,
        sock: Bound<'_, PyAny>,
        op: Op,
        write: bool,
        try_first: bool,
        name: Py<PyString>,
    ) -> SockCoro {
        SockCoro {
            name,
            ops: slf.clone().unbind(),
            sock: Some(sock.unbind()),
            state: CoroState::Init {
                op,
                write,
                try_first,
            },
        }
    }
}

#[pymethods]
impl SockOps {
    #[new]
    fn py_new(py: Python<'_>, lp: Bound<'_, LoopCore>) -> PyResult<Self> {
        let future_type = py.import("asyncio")?.getattr("Future")?.unbind();
        let ssl_socket = py
            .import("ssl")
            .and_then(|m| m.getattr("SSLSocket"))
            .ok()
            .map(Bound::unbind);
        Ok(Self {
            lp: Mutex::new(Some(lp.unbind())),
            watchers: Mutex::new(HashMap::new()),
            future_type,
            kw_loop: PyTuple::new(py, [PyString::new(py, "loop")])?.unbind(),
            ssl_socket,
            next_id: AtomicU64::new(1),
        })
    }

    /// `loop.sock_recv(sock, n)`.
    fn sock_recv(slf: &Bound<'_, Self>, sock: Bound<'_, PyAny>, n: isize) -> PyResult<SockCoro> {
        if n < 0 {
            return Err(PyValueError::new_err("negative buffersize in recv"));
        }
        let op = Op::Recv { n: n as usize };
        Ok(Self::native(slf, sock, op, intern!(slf.py(), "sock_recv")))
    }

    /// `loop.sock_recv_into(sock, buf)`.
    fn sock_recv_into(slf: &Bound<'_, Self>, sock: Obj<'_>, buf: Obj<'_>) -> SockCoro {
        let name = intern!(slf.py(), "sock_recv_into");
        Self::native(slf, sock, Op::recv_into(buf), name)
    }

    /// `loop.sock_sendall(sock, data)`.
    fn sock_sendall(slf: &Bound<'_, Self>, sock: Obj<'_>, data: Obj<'_>) -> SockCoro {
        let name = intern!(slf.py(), "sock_sendall");
        Self::native(slf, sock, Op::send_all(data), name)
    }

    /// A coroutine that calls `attempt()` (at once if `try_first`, else
    /// first when the fd is ready for `write`/read) until it stops raising
    /// `BlockingIOError`/`InterruptedError`, and returns its result. `name`
    /// is the coroutine's `__name__` (task reprs show it).
    #[pyo3(signature = (sock, write, attempt, try_first=true, name=None))]
    fn wait_call(
        slf: &Bound<'_, Self>,
        sock: Bound<'_, PyAny>,
        write: bool,
        attempt: Bound<'_, PyAny>,
        try_first: bool,
        name: Option<Bound<'_, PyString>>,
    ) -> SockCoro {
        let name = name
            .unwrap_or_else(|| intern!(slf.py(), "sock_op").clone())
            .unbind();
        let op = Op::Call {
            attempt: attempt.unbind(),
        };
        Self::op(slf, sock, op, write, try_first, name)
    }

    /// The number of fds with a pending operation (for tests).
    fn _pending_fds(&self) -> usize {
        self.watchers
            .lock()
            .values()
            .filter(|w| {
                let st = w.state.lock();
                st.reader.is_some() || st.writer.is_some()
            })
            .count()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(lp) = self.lp.try_lock() {
            if let Some(l) = &*lp {
                visit.call(l)?;
            }
        }
        visit.call(&self.future_type)?;
        if let Some(t) = &self.ssl_socket {
            visit.call(t)?;
        }
        if let Some(ws) = self.watchers.try_lock() {
            for w in ws.values() {
                w.traverse(&visit)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let lp = self.lp.lock().take();
        let ws: Vec<_> = self.watchers.lock().drain().map(|(_, w)| w).collect();
        let states: Vec<_> = ws
            .iter()
            .map(|w| std::mem::take(&mut *w.state.lock()))
            .collect();
        drop(states);
        drop(ws);
        drop(lp);
    }

    /// Forgets the loop and the pending operations' futures (called by
    /// `Loop.close()`), so that the loop and its `SockOps` form no cycle:
    /// a closed loop is freed by reference counting alone, as asyncio's.
    fn _detach(&self) {
        self.__clear__();
    }
}

/// Where a `SockOp` coroutine is.
enum CoroState {
    /// Not started.
    Init {
        /// The operation.
        op: Op,
        /// Whether it waits for writability (else readability).
        write: bool,
        /// Whether to try the syscall before waiting.
        try_first: bool,
    },
    /// Parked in a watcher; the task waits on `fut`.
    Waiting {
        /// The future the task waits on.
        fut: Py<PyAny>,
        /// The watcher holding the slot.
        watcher: Arc<SockWatcher>,
        /// The slot's id.
        id: u64,
        /// The slot's direction.
        write: bool,
    },
    /// Returned, raised or closed.
    Done,
}

/// A pending low-level socket operation: a native coroutine.
#[pyclass(module = "oxloop._core", name = "SockOp")]
pub struct SockCoro {
    /// The operation's name (`sock_recv`, ...), for reprs.
    name: Py<PyString>,
    /// The loop's `SockOps`.
    ops: Py<SockOps>,
    /// The socket, until the operation starts.
    sock: Option<Py<PyAny>>,
    /// Progress.
    state: CoroState,
}

/// The exception `throw(typ, val, tb)` raises, as a generator's throw does.
fn thrown(typ: &Bound<'_, PyAny>, val: Option<&Bound<'_, PyAny>>) -> PyErr {
    if let Some(v) = val.filter(|v| !v.is_none()) {
        if v.is_instance_of::<PyBaseException>() {
            return PyErr::from_value(v.clone());
        }
        if typ.is_instance_of::<PyType>() {
            return match typ.call1((v,)) {
                Ok(e) => PyErr::from_value(e),
                Err(e) => e,
            };
        }
    }
    if typ.is_instance_of::<PyBaseException>() {
        return PyErr::from_value(typ.clone());
    }
    if let Ok(t) = typ.cast::<PyType>() {
        if t.is_subclass_of::<PyBaseException>().unwrap_or(false) {
            return match t.call0() {
                Ok(e) => PyErr::from_value(e),
                Err(e) => e,
            };
        }
    }
    let name = typ
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    PyTypeError::new_err(format!(
        "exceptions must be classes or instances deriving from BaseException, not {name}"
    ))
}

impl SockCoro {
    fn start(
        &mut self,
        py: Python<'_>,
        mut op: Op,
        write: bool,
        try_first: bool,
    ) -> PyResult<Option<Py<PyAny>>> {
        let ops_obj = self.ops.clone_ref(py);
        let ops = ops_obj.get();
        let lp = ops.loop_ref(py)?;
        let lp = lp.bind(py);
        let core = lp.get();
        let sock = self.sock.take().expect("set until started");
        let sock = sock.bind(py);
        ops.check_socket(py, core, sock)?;
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        op.prepare(py)?;
        let mut tried = false;
        if try_first {
            match op.attempt(py, fd) {
                Outcome::Done(v) => return Err(stop_iteration(py, v)),
                Outcome::Failed(e) => return Err(e),
                Outcome::Pending => tried = true,
                Outcome::Retry => {}
            }
        }
        let fut = ops.new_future(py, lp)?;
        let id = ops.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            id,
            fut: fut.clone().unbind(),
            op,
            sock: sock.clone().unbind(),
        };
        let watcher = ops.park(py, core, (fd, write), slot, tried)?;
        self.state = CoroState::Waiting {
            fut: fut.clone().unbind(),
            watcher,
            id,
            write,
        };
        fut.setattr(intern!(py, "_asyncio_future_blocking"), true)?;
        Ok(Some(fut.unbind()))
    }

    fn step(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match std::mem::replace(&mut self.state, CoroState::Done) {
            CoroState::Init {
                op,
                write,
                try_first,
            } => self.start(py, op, write, try_first),
            CoroState::Waiting {
                fut,
                watcher,
                id,
                write,
            } => {
                let f = fut.bind(py);
                if !future_done(f)? {
                    self.state = CoroState::Waiting {
                        fut,
                        watcher,
                        id,
                        write,
                    };
                    return Err(PyRuntimeError::new_err("await wasn't used with future"));
                }
                self.release(py, &watcher, id, write);
                let value = f.call_method0(intern!(py, "result"))?;
                Err(stop_iteration(py, value.unbind()))
            }
            CoroState::Done => Err(PyRuntimeError::new_err(
                "cannot reuse already awaited coroutine",
            )),
        }
    }

    fn release(&self, py: Python<'_>, watcher: &SockWatcher, id: u64, write: bool) {
        let lp = self.ops.get().lp.lock().as_ref().map(|l| l.clone_ref(py));
        watcher.remove(py, lp.as_ref().map(|l| l.get()), id, write);
    }

    /// Gives up a pending operation: its slot goes, the fd is released.
    fn abandon(&mut self, py: Python<'_>) {
        if let CoroState::Waiting {
            watcher, id, write, ..
        } = std::mem::replace(&mut self.state, CoroState::Done)
        {
            self.release(py, &watcher, id, write);
        }
        self.sock = None;
    }
}

#[pymethods]
impl SockCoro {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.step(py)
    }

    fn send(&mut self, py: Python<'_>, _value: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match self.step(py)? {
            Some(v) => Ok(v),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    #[pyo3(signature = (typ, val=None, tb=None))]
    fn throw(
        &mut self,
        py: Python<'_>,
        typ: Bound<'_, PyAny>,
        val: Option<Bound<'_, PyAny>>,
        tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let _ = tb;
        self.abandon(py);
        Err(thrown(&typ, val.as_ref()))
    }

    fn close(&mut self, py: Python<'_>) {
        self.abandon(py);
    }

    #[getter]
    fn __name__(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }

    #[getter]
    fn __qualname__(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = match self.state {
            CoroState::Init { .. } => "created",
            CoroState::Waiting { .. } => "waiting",
            CoroState::Done => "done",
        };
        format!("<oxloop {} coroutine {}>", self.name.bind(py), state)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.ops)?;
        if let Some(s) = &self.sock {
            visit.call(s)?;
        }
        match &self.state {
            CoroState::Init { op, .. } => op.traverse(&visit),
            CoroState::Waiting { fut, .. } => visit.call(fut),
            CoroState::Done => Ok(()),
        }
    }

    fn __clear__(&mut self, py: Python<'_>) {
        self.abandon(py);
    }
}

impl Drop for SockCoro {
    fn drop(&mut self) {
        if matches!(self.state, CoroState::Waiting { .. }) {
            // The coroutine was dropped while waiting (its task was
            // destroyed): release the fd.
            Python::try_attach(|py| self.abandon(py));
        }
    }
}
