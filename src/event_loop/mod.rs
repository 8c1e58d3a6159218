//! The event loop core: ready queue, timer heap, clock and the I/O table,
//! driven by `run_forever`.
//!
//! `LoopCore` is the Rust half of `oxloop.Loop`; the Python half
//! (`python/oxloop/_loop.py`) subclasses it together with
//! `asyncio.AbstractEventLoop` and carries the long tail of the API.
//!
//! Invariants:
//! - `state` is locked only for short, Python-free sections: no Python code
//!   runs, no Python object is created and none is dropped while it is held
//!   (a drop can run `__del__`, which can re-enter the loop). Objects taken
//!   out under the lock are dropped after it is released.
//! - The GIL and every lock are released while the reactor waits.
//! - `call_soon_threadsafe` pushes onto the same ready queue as `call_soon`
//!   (so callbacks keep the order in which they were scheduled), then wakes
//!   the reactor if, and only if, the loop is waiting in it (`polling`)
//!   and nobody woke it yet (`wake_pending`). Both flags live under the same
//!   lock as the queue, so a wake-up is never lost.
//! - One iteration (`run_once`) is asyncio's `_run_once`: sweep cancelled
//!   timers, poll (timeout 0 if callbacks are ready or the loop is stopping),
//!   queue the I/O callbacks, move due timers to the ready queue, then run
//!   exactly the callbacks that were ready at that point, in FIFO order.

mod batch;
mod callbacks;
mod clock;
pub(crate) mod custody;
pub(crate) mod fastcall;
mod histogram;
pub(crate) mod io;
mod native;
pub(crate) mod registration;
mod run;
pub(crate) mod stats;
pub(crate) mod stats_api;
pub(crate) mod timers;
mod user_clock;
mod virtual_time;
mod waiters;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::ThreadId;

use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::errors;
use crate::handles::{Handle, TimerHandle};
use crate::reactor::Reactor;
use clock::Clock;
use io::IoTable;
use timers::TimerHeap;

/// A Python object argument.
type Obj<'py> = Bound<'py, PyAny>;
/// A `*args` tuple.
type Args<'py> = Bound<'py, PyTuple>;

pub(crate) use registration::{Registration, SideWaiter};

/// The loop state that is touched on the loop's thread (and, for the ready
/// queue and the wake flags, by `call_soon_threadsafe` from others).
#[derive(Default)]
pub(crate) struct State {
    /// Callbacks to run, in order.
    pub(crate) ready: VecDeque<Py<Handle>>,
    /// Scheduled timers.
    pub(crate) timers: TimerHeap<Py<Handle>>,
    /// Watched fds.
    pub(crate) io: IoTable,
    /// The loop is (about to be) blocked in the reactor.
    pub(crate) polling: bool,
    /// Someone already woke the reactor during this wait.
    pub(crate) wake_pending: bool,
}

/// The native core of an oxloop event loop.
#[pyclass(frozen, subclass, weakref, module = "oxloop._core")]
pub struct LoopCore {
    /// Queues, timers, fds and wake flags.
    pub(crate) state: Mutex<State>,
    /// The poller.
    pub(crate) reactor: Reactor,
    /// `time()`.
    pub(crate) clock: Clock,
    /// `time` is overridden (`user_clock::INSTANCE | TYPE` bits): the
    /// scheduler calls `self.time()` instead of reading `clock`.
    pub(crate) user_clock: AtomicU8,
    /// Cancelled timers still in the heap (shared with each `TimerHandle`).
    pub(crate) cancelled_timers: Arc<AtomicUsize>,
    /// `get_debug()`.
    pub(crate) debug: AtomicBool,
    /// `is_closed()`.
    pub(crate) closed: AtomicBool,
    /// `is_running()`.
    pub(crate) running: AtomicBool,
    /// `stop()` was called; `run_forever` returns after this iteration.
    pub(crate) stopping: AtomicBool,
    /// The thread running the loop (for debug mode's thread check).
    pub(crate) owner: Mutex<Option<ThreadId>>,
    /// `set_task_factory()`'s factory.
    pub(crate) task_factory: Mutex<Option<Py<PyAny>>>,
    /// Virtual time only: executor jobs and child processes still running
    /// (the clock does not jump while there are any).
    pub(crate) real_jobs: AtomicUsize,
    /// Virtual time only: real seconds of quiet the loop waits for its fds
    /// before the clock jumps (an `f64`'s bits).
    pub(crate) io_grace: std::sync::atomic::AtomicU64,
    /// `loop.stats()`'s measurements and the blocking detector's state.
    pub(crate) stats: stats::LoopStats,
}

/// `asyncio.futures` and `asyncio.tasks`. Like the stdlib loop, the loop
/// reads `futures.Future` and `tasks.Task` from them at every call (the C
/// types unless someone swapped in others, as CPython's own tests do with
/// the pure-Python ones), so only the modules are cached.
static FUTURES_MODULE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static TASKS_MODULE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Whether asyncio's `create_task` forwards every keyword (3.13.3+, 3.14+:
/// `create_task(coro, **kwargs)`) rather than taking `name` and `context`.
static TASK_KWARGS_FORWARDED: PyOnceLock<bool> = PyOnceLock::new();

fn task_kwargs_forwarded(py: Python<'_>) -> PyResult<bool> {
    TASK_KWARGS_FORWARDED
        .get_or_try_init(py, || {
            let flags: u32 = py
                .import("asyncio.base_events")?
                .getattr("BaseEventLoop")?
                .getattr("create_task")?
                .getattr("__code__")?
                .getattr("co_flags")?
                .extract()?;
            const CO_VARKEYWORDS: u32 = 0x08;
            Ok::<bool, PyErr>(flags & CO_VARKEYWORDS != 0)
        })
        .copied()
}

fn asyncio_type<'py>(
    py: Python<'py>,
    cell: &PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &Bound<'py, pyo3::types::PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    let module = cell
        .get_or_try_init(py, || py.import(module).map(|m| m.into_any().unbind()))?
        .bind(py);
    // `module.name` of a plain module (its class not reassigned) is its
    // dict's entry: `ModuleType` has no attribute of these names, so the
    // generic lookup would find nothing before the dict. Reading the dict
    // directly skips that type walk (about 400 instructions a call); a
    // missing name or another module class takes the full `getattr`.
    // SAFETY: type checks and a dict read on live objects, GIL held.
    unsafe {
        if ffi::Py_TYPE(module.as_ptr()) == std::ptr::addr_of_mut!(ffi::PyModule_Type) {
            let dict = ffi::PyModule_GetDict(module.as_ptr());
            if !dict.is_null() {
                let found = ffi::PyDict_GetItemWithError(dict, name.as_ptr());
                if !found.is_null() {
                    return Ok(Bound::from_borrowed_ptr(py, found));
                }
                if !ffi::PyErr_Occurred().is_null() {
                    return Err(PyErr::fetch(py));
                }
            }
        }
    }
    module.getattr(name)
}

/// `("loop",)`: the keyword names of `Task(coro, loop=loop)`.
static LOOP_KWNAMES: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();

/// `Task(coro, loop=lp)` (`create_task` without keywords) as one
/// vectorcall with a static keyword-name tuple: no keyword dict is built,
/// and none unpacked again by the call (about 250 instructions a task).
fn new_task<'py>(
    py: Python<'py>,
    coro: &Bound<'py, PyAny>,
    lp: &Bound<'py, LoopCore>,
) -> PyResult<Bound<'py, PyAny>> {
    let task = asyncio_type(py, &TASKS_MODULE, "asyncio.tasks", intern!(py, "Task"))?;
    let kwnames = LOOP_KWNAMES
        .get_or_try_init(py, || {
            PyTuple::new(py, [pyo3::types::PyString::intern(py, "loop")]).map(Bound::unbind)
        })?
        .bind(py);
    let argv = [coro.as_ptr(), lp.as_ptr()];
    // SAFETY: GIL held; `argv` holds one positional and then one keyword
    // value, both borrowed for the call, the keyword named by the 1-tuple
    // `kwnames`; the result is a new reference or NULL with an exception
    // set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyObject_Vectorcall(task.as_ptr(), argv.as_ptr(), 1, kwnames.as_ptr()),
        )
    }
}

/// `call_soon`, `call_soon_threadsafe`, `call_later` and `call_at`: Python
/// reaches them through the raw fastcall entries of `fastcall`.
impl LoopCore {
    /// `call_soon` and, `THREADSAFE`, `call_soon_threadsafe`: the same
    /// checks (debug mode's thread check only for the former), the same
    /// queue; the latter wakes the reactor and, on 3.14+, makes asyncio's
    /// thread-safe handle (see `handles::threadsafe`).
    #[inline(always)]
    pub(crate) fn call_soon<const THREADSAFE: bool>(
        &self,
        py: Python<'_>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        self.check_closed()?;
        if self.debug.load(Ordering::Relaxed) {
            let method = if THREADSAFE {
                "call_soon_threadsafe"
            } else {
                self.check_thread()?;
                "call_soon"
            };
            Self::check_callback(py, &callback, method)?;
        }
        // A thread-safe handle's copied context is hidden from the
        // collector (bursts of them queue up); `call_soon`'s handles run
        // within the iteration and tasks give their own context.
        let base = self.new_handle(py, callback, args, context, THREADSAFE)?;
        let handle = if THREADSAFE && crate::handles::stdlib_threadsafe(py)?.is_some() {
            crate::handles::ThreadSafeHandle::create(py, base)?
                .into_super()
                .unbind()
        } else {
            Handle::untracked(py, base)?
        };
        self.push_ready(handle.clone_ref(py), THREADSAFE)?;
        Ok(handle)
    }

    /// `call_later`: on the loop's clock, or on `self.time()` where a
    /// user overrides it (`user_clock`), as asyncio's `call_later` reads it.
    pub(crate) fn call_later(
        slf: &Bound<'_, Self>,
        delay: Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let this = slf.get();
        if delay.is_none() {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        let delay: f64 = delay.extract()?;
        let now = Self::sched_now(slf, this.user_clock())?;
        this.call_at_f64(slf.py(), now + delay, callback, args, context, "call_later")
    }

    pub(crate) fn call_at(
        &self,
        py: Python<'_>,
        when: Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        if when.is_none() {
            return Err(PyTypeError::new_err("when cannot be None"));
        }
        let when: f64 = when.extract()?;
        self.call_at_f64(py, when, callback, args, context, "call_at")
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*, virtual_time=false))]
    fn py_new(cls: &Bound<'_, PyType>, virtual_time: bool) -> PyResult<Self> {
        let py = cls.py();
        let user_clock = if user_clock::type_overrides_time(cls)? {
            user_clock::TYPE
        } else {
            0
        };
        let monotonic: f64 = py.import("time")?.call_method0("monotonic")?.extract()?;
        Ok(Self {
            state: Mutex::new(State::default()),
            reactor: Reactor::new().map_err(errors::os_error)?,
            clock: Clock::anchored(monotonic, virtual_time),
            user_clock: AtomicU8::new(user_clock),
            cancelled_timers: Arc::new(AtomicUsize::new(0)),
            debug: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            running: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            owner: Mutex::new(None),
            task_factory: Mutex::new(None),
            real_jobs: AtomicUsize::new(0),
            io_grace: std::sync::atomic::AtomicU64::new(virtual_time::DEFAULT_IO_GRACE.to_bits()),
            stats: stats::LoopStats::new(),
        })
    }

    /// The loop's clock: `time.monotonic()` (plus the skipped time when
    /// the loop runs on virtual time).
    fn time(&self) -> f64 {
        self.clock.now()
    }

    /// `time` was assigned (`on`) or deleted on the instance
    /// (`Loop.__setattr__`/`__delattr__`; see `user_clock`).
    fn _set_instance_clock(&self, on: bool) {
        self.set_user_clock(user_clock::INSTANCE, on);
    }

    /// A new `asyncio.Future` bound to this loop.
    fn create_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "loop"), slf)?;
        asyncio_type(
            py,
            &FUTURES_MODULE,
            "asyncio.futures",
            intern!(py, "Future"),
        )?
        .call((), Some(&kwargs))
    }

    /// Schedules a coroutine as an `asyncio.Task` (or through the task
    /// factory), taking the keywords the installed asyncio takes: every one
    /// on 3.13.3+/3.14 (forwarded to `Task`), else `name` and `context`.
    /// Debug mode, task factories and a `loop=` keyword take the Python
    /// path (`_create_task_slow`).
    #[pyo3(signature = (coro, **kwargs))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: Bound<'py, PyAny>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        let forward = task_kwargs_forwarded(py)?;
        let loop_key = intern!(py, "loop");
        let mut slow = this.debug.load(Ordering::Relaxed) || this.task_factory.lock().is_some();
        if let Some(kw) = &kwargs {
            if forward {
                slow |= kw.contains(loop_key)?;
            } else {
                for key in kw.keys() {
                    if !(key.eq(intern!(py, "name"))? || key.eq(intern!(py, "context"))?) {
                        return Err(PyTypeError::new_err(format!(
                            "create_task() got an unexpected keyword argument '{key}'"
                        )));
                    }
                }
            }
        }
        if slow {
            let kwargs = kwargs.unwrap_or_else(|| PyDict::new(py));
            return slf.call_method1(intern!(py, "_create_task_slow"), (coro, kwargs));
        }
        let kwargs = match kwargs {
            Some(kw) => {
                if !forward {
                    // Older asyncio passes name/context only when given
                    // (3.9/3.10's Task has no `context`).
                    for key in [intern!(py, "name"), intern!(py, "context")] {
                        if kw.get_item(key)?.is_some_and(|v| v.is_none()) {
                            kw.del_item(key)?;
                        }
                    }
                }
                kw
            }
            None => return new_task(py, &coro, slf),
        };
        kwargs.set_item(loop_key, slf)?;
        asyncio_type(py, &TASKS_MODULE, "asyncio.tasks", intern!(py, "Task"))?
            .call((coro,), Some(&kwargs))
    }

    fn set_task_factory(&self, factory: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let factory = factory.filter(|f| !f.is_none());
        if let Some(f) = &factory {
            if !f.is_callable() {
                return Err(PyTypeError::new_err(
                    "task factory must be a callable or None",
                ));
            }
        }
        let old = std::mem::replace(&mut *self.task_factory.lock(), factory.map(Bound::unbind));
        drop(old);
        Ok(())
    }

    fn get_task_factory(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.task_factory.lock().as_ref().map(|f| f.clone_ref(py))
    }

    /// Stops the loop after the current iteration.
    fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn get_debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    /// Sets the native debug flag (`Loop.set_debug` does the rest).
    fn _set_debug_flag(&self, enabled: bool) {
        self.debug.store(enabled, Ordering::Relaxed);
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn add_reader(&self, fd: Obj<'_>, callback: Obj<'_>, args: Args<'_>) -> PyResult<()> {
        self.set_io_callback(fd.py(), &fd, callback, args, false)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn add_writer(&self, fd: Obj<'_>, callback: Obj<'_>, args: Args<'_>) -> PyResult<()> {
        self.set_io_callback(fd.py(), &fd, callback, args, true)
    }

    fn remove_reader(&self, py: Python<'_>, fd: Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_io_callback(py, &fd, false)
    }

    fn remove_writer(&self, py: Python<'_>, fd: Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_io_callback(py, &fd, true)
    }

    /// Wakes the loop if it is blocked in the reactor.
    fn _write_to_self(&self) -> PyResult<()> {
        self.reactor.wake().map_err(errors::os_error)
    }

    /// Runs iterations until `stop()`. `Loop.run_forever` does the checks and
    /// the asyncio bookkeeping around it.
    fn _run_forever_native(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        if this.running.swap(true, Ordering::AcqRel) {
            return Err(PyRuntimeError::new_err(
                "This event loop is already running",
            ));
        }
        if let Err(e) = Self::check_type_clock(slf) {
            this.running.store(false, Ordering::Release);
            return Err(e);
        }
        *this.owner.lock() = Some(std::thread::current().id());
        this.stats.run_starts();
        let mut scratch = batch::Scratch::new();
        let result = loop {
            if let Err(e) = Self::run_once(slf, &mut scratch) {
                break Err(e);
            }
            if this.stopping.load(Ordering::Relaxed) {
                break Ok(());
            }
        };
        this.stopping.store(false, Ordering::Relaxed);
        *this.owner.lock() = None;
        this.running.store(false, Ordering::Release);
        result
    }

    /// Marks the loop closed and drops everything queued.
    fn _close_native(&self) -> PyResult<()> {
        if self.running.load(Ordering::Relaxed) {
            return Err(PyRuntimeError::new_err("Cannot close a running event loop"));
        }
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.clear_everything();
        // As asyncio closes its selector and self-pipe: no fd outlives
        // close(), whenever the loop object itself goes.
        self.reactor.close();
        Ok(())
    }

    /// The number of callbacks ready to run (for tests and introspection).
    fn _ready_count(&self) -> usize {
        self.state.lock().ready.len()
    }

    /// The number of scheduled timers, cancelled ones included.
    fn _timer_count(&self) -> usize {
        self.state.lock().timers.len()
    }

    /// The `epoll_ctl`/`kevent` changes the reactor asked for so far, and
    /// the fds kept armed with no waiter (idle; see `io`): for tests.
    fn _io_ctl_counts(&self) -> (u64, usize) {
        let idle = self.state.lock().io.idle_len();
        (self.reactor.ctl_calls(), idle)
    }

    /// Whether the loop runs on virtual time.
    #[getter]
    fn virtual_time(&self) -> bool {
        self.clock.is_virtual()
    }

    /// Seconds the virtual clock has skipped so far (0.0 on real time).
    #[getter]
    fn virtual_time_skipped(&self) -> f64 {
        self.clock.offset()
    }

    /// Real seconds a virtual-time loop waits on its fds before jumping.
    #[getter]
    fn get_virtual_time_grace(&self) -> f64 {
        self.io_grace()
    }

    #[setter]
    fn set_virtual_time_grace(&self, seconds: f64) -> PyResult<()> {
        self.set_io_grace(seconds)
    }

    /// A real job (thread or child process) started: the clock holds still.
    fn _real_job_begin(&self) {
        self.real_jobs.fetch_add(1, Ordering::AcqRel);
    }

    /// A real job ended (from any thread).
    fn _real_job_end(&self) -> PyResult<()> {
        self.real_job_end().map_err(errors::os_error)
    }

    /// The number of real jobs running (for tests and introspection).
    fn _real_job_count(&self) -> usize {
        self.real_jobs.load(Ordering::Acquire)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(st) = self.state.try_lock() else {
            return Ok(());
        };
        for h in st.ready.iter().chain(st.timers.iter()) {
            custody::visit(h, &visit)?;
        }
        st.io.traverse(&visit)?;
        drop(st);
        if let Some(guard) = self.task_factory.try_lock() {
            if let Some(f) = &*guard {
                visit.call(f)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        self.clear_everything();
        let factory = self.task_factory.lock().take();
        drop(factory);
    }
}
