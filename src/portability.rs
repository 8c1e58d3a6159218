//! The two ports oxloop is designed for but cannot build or test here:
//! free-threaded CPython (`gil_used = false`) and Windows. Each is a
//! checklist against the invariants the modules' own docs state: `[x]` is
//! true of the code today (keep it so), `[ ]` is work left for the port.
//! This module holds no code.
//!
//! # Free-threaded CPython (3.13t, 3.14t)
//!
//! Today `_core` is declared with PyO3's default, `gil_used = true`: a
//! free-threaded interpreter that imports it turns the GIL back on (with a
//! `RuntimeWarning`), so oxloop is correct there, only not parallel. What the
//! GIL gives oxloop today, and what replaces it:
//! - Two threads never ran methods of the same object at once. Without the
//!   GIL they can: each object's own lock or atomics must serialize them.
//! - A reference count or a GC bit read under the GIL stayed put. Without
//!   it another thread can change them in between (and `Py_REFCNT` is the
//!   sum of a thread-local and a shared count, not an exact number).
//! - The collector ran while every other thread waited for the GIL. Without
//!   it the collector stops the world: it waits until each attached thread
//!   reaches a safepoint (a call into the interpreter) or detaches, then runs
//!   `__traverse__` with all of them paused wherever they were.
//!
//! Already safe:
//! - [x] Every pyclass is `frozen` and keeps its mutable state behind a
//!   `parking_lot::Mutex` or atomics (`LoopCore::state`, the transports'
//!   state, `Handle::flags`, `SockOps`' tables), so PyO3 accepts them as
//!   `Sync` and concurrent calls are serialized by those locks, not by the
//!   GIL. Exception: a handle's callback slot (`handles::CallbackCell`) is
//!   guarded by the GIL alone (see the to-do list).
//! - [x] No Rust lock is held while Python code runs or a Python object is
//!   dropped (`event_loop`, `handles`, `transports` invariants). Free
//!   threading needs exactly this: a thread holding a lock never reaches a
//!   safepoint, so the stop-the-world pause never catches it inside a
//!   critical section, and a thread waiting for that lock waits only for
//!   Python-free code. (`ProtoKind::of` runs a new
//!   protocol's `isinstance`/`getattr` before the transport lock is taken;
//!   `tests/net/test_protocol_reentry.py` holds it to that.)
//! - [x] `__traverse__` takes locks only with `try_lock` and reports nothing
//!   when one is busy (missing a report is always safe).
//! - [x] The reactor waits detached (`py.detach` around `Reactor::wait`), so
//!   a loop blocked in `epoll_wait` never holds up a stop-the-world pause.
//! - [x] The cross-thread entry points, `call_soon_threadsafe` and
//!   `Handle.cancel()`, go through the `state` mutex and the handle's
//!   `AcqRel` flag updates; a cancel racing the timer heap's removal counts
//!   once (`handles` invariants).
//! - [x] Scratch buffers are per thread (`thread_local!` read buffers and
//!   `Handle`'s repr guard); lazily imported objects are `PyOnceLock`s;
//!   `contextvars.Context` entry is per thread (`PyContext_Enter`).
//!
//! To do, then `#[pymodule(gil_used = false)]` in `lib.rs`:
//! - [ ] `event_loop::custody::release` decides whether to re-track a handle
//!   from `Py_REFCNT(p) > 1`. On a free-threaded build that count is not
//!   exact, and a weak reference can make a new strong one in another thread
//!   between the check and the drop: a handle could end up held but
//!   untracked (a cycle through it would leak; no crash, since tracking is
//!   a bit there). Under `cfg(Py_GIL_DISABLED)`: re-track every handle
//!   someone else may hold (`PyUnstable_Object_IsUniquelyReferenced` on
//!   3.14t), or keep one-shot handles tracked and measure the collector's
//!   cost.
//! - [ ] `handles::CallbackCell` (a handle's callback, taken on every run
//!   and cancel) relies on the GIL to serialize its accesses. Without it a
//!   `cancel()` from another thread can race the loop's run: put the slot
//!   behind a lock or an atomic take (a pointer swapped out once) under
//!   `cfg(Py_GIL_DISABLED)`.
//! - [ ] `handles::free_list` keeps its lists in a static that only the
//!   GIL guards (tp_alloc/tp_dealloc of the three handle types). Without it
//!   two threads can pop or push at once: make the lists per thread (as
//!   CPython's own free lists are on 3.13t), or leave the types' generic
//!   slots in place under `cfg(Py_GIL_DISABLED)`.
//! - [ ] Buffers exported by mutable objects (`transports::BufView::as_slice`
//!   on a `bytearray`, the datagram `sendto` slice, `sock_recv_into`, a
//!   `BufferedProtocol`'s `get_buffer()` in `transports/read.rs`): with the
//!   GIL nothing else ran while Rust read or wrote that memory; without it
//!   another thread may write the `bytearray` while we hold it as `&[u8]`,
//!   which is undefined behaviour in Rust. Pass raw pointers straight to the
//!   syscalls (as CPython's socket module does) or copy; never form a
//!   `&[u8]`/`&mut [u8]` over memory a mutable object exported.
//! - [ ] The `Relaxed` flags (`LoopCore::debug`, `closed`, `running`,
//!   `stopping`) are hints read outside `state`; check that no reader on
//!   another thread relies on them to see other data (e.g. `closed` in the
//!   thread-safe paths), else make them `Acquire`/`Release` or read them
//!   under `state`.
//! - [ ] The Python half (`python/oxloop`) keeps its state in instance
//!   dicts, lists and sets that only the loop's thread touches (asyncio's
//!   contract), except what other threads reach through
//!   `call_soon_threadsafe`: executor callbacks, the subprocess waiter
//!   threads, `shutdown_default_executor`'s thread. Audit those for
//!   check-then-act on shared containers; finalizers (`__del__` of loops
//!   and transports) may run on any thread.
//! - [ ] Tests on a free-threaded build: the pytest suite and the
//!   conformance gate with `PYTHON_GIL=0`; a test that `import oxloop`
//!   leaves `sys._is_gil_enabled()` false; a stress test with threads
//!   hammering one loop through `call_soon_threadsafe` and
//!   `Handle.cancel()` while it runs; `scripts/wheels.sh` builds a
//!   `cp314t` wheel (maturin tags it from the interpreter).
//!
//! # Windows
//!
//! Designed for, not built: the crate is `cfg(unix)` in practice. asyncio's
//! Windows default is the proactor loop (IOCP, no `add_reader`); oxloop would
//! be a selector-style loop like asyncio's `SelectorEventLoop` on Windows,
//! which supports sockets only, no pipes, signals or subprocesses.
//! - [x] The loop core (`event_loop`: ready queue, timers, handles, custody)
//!   and the wake-up (`mio::Waker`) are platform-free.
//! - [x] `parking_lot`, `socket2` and `mio`'s socket types support Windows.
//! - [ ] `reactor`: registration uses `mio::unix::SourceFd` on raw fds. On
//!   Windows, mio polls sockets through AFD and only registers its own
//!   socket types: wrap each `SOCKET` in a `mio::net` type
//!   (`from_raw_socket`) without taking ownership, keyed by `RawSocket`
//!   (64-bit) rather than `RawFd`; `add_reader` on a non-socket raises as
//!   `SelectorEventLoop` does. The level-triggered re-arm (`rearm`) needs
//!   checking against AFD's one-shot reporting.
//! - [ ] `reactor::net`, `reactor::sockets`: the `libc` calls (`recv`,
//!   `send`, `sendmsg`, `accept4`, `shutdown`, `getsockopt`) go through
//!   `socket2` or `windows-sys` (`WSARecv`/`WSASend`); errors come from
//!   `WSAGetLastError` (`WSAEWOULDBLOCK` is would-block); `sendfile` becomes
//!   `TransmitFile` or the read-and-send fallback that asyncio uses.
//! - [ ] `reactor::pipes`, `transports::pipe*`, `python/oxloop/_pipes.py`:
//!   `connect_read_pipe`/`connect_write_pipe` and subprocess pipes are
//!   unsupported there (raise `NotImplementedError`, as
//!   `SelectorEventLoop` on Windows does), or go through
//!   `mio::windows::NamedPipe`.
//! - [ ] `reactor::clock` is `cfg(unix)` only: Windows needs
//!   `QueryPerformanceCounter`, which is what `time.monotonic()` reads there.
//! - [ ] `python/oxloop/_signals.py`: `add_signal_handler` raises
//!   `NotImplementedError` on Windows (as asyncio does);
//!   `_subprocess.py` (pidfds, `waitpid`) is Unix-only: subprocesses raise
//!   `NotImplementedError` as in `SelectorEventLoop`, or get a proactor
//!   later. AF_UNIX paths (`create_unix_server`/`_connection`) stay
//!   Unix-only.
//! - [ ] Build and CI: a Windows runner with MSVC (zig and manylinux do not
//!   apply); `pyproject.toml` gains the Windows classifier only then; the
//!   tests that use `fork`, signals, pipes or Unix sockets are marked for
//!   POSIX.
