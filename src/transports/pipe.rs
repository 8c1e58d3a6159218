//! `PipeTransport`: the native core of a pipe transport (asyncio's
//! `_UnixReadPipeTransport` / `_UnixWritePipeTransport`), for
//! `loop.connect_read_pipe` / `loop.connect_write_pipe` and the pipes of
//! subprocesses.
//!
//! Design:
//! - One class, two directions (`writable`). The Python object user code
//!   sees is a thin `asyncio.ReadTransport`/`WriteTransport` subclass
//!   (`python/oxloop/_pipes.py`) that checks the fd type, holds
//!   `get_extra_info('pipe')` and binds the core's methods onto itself.
//! - Shared with the stream transports: the state and behaviour of
//!   `core.rs` (`ByteCore`, `ByteTransport`: fatal errors, `connection_lost`,
//!   the start of reading, pause/resume, the write-buffer limits and flow
//!   control, and the Python methods of that surface), the write buffer
//!   (`flow.rs`), the per-thread read buffer (`with_read_buf`), the loop's
//!   native watcher API (`event_loop::io::Watch`, `Registration`). The
//!   syscalls are `read`/`write`/`writev` (`reactor::pipes`), which also
//!   work on sockets and character devices.
//! - Layers: this file (the state, the type, its interest in the reactor),
//!   `pipe_io.rs` (the read and write paths, closing), `pipe_api.rs` (the
//!   `#[pymethods]` and the loop's entry, `Watched`); each uses only the
//!   ones before it.
//! - Read side: one `read` per readiness event, then the fd is re-armed
//!   (a tty returns a line per read, so a short read does not prove the fd
//!   drained). EOF schedules `eof_received` and then `connection_lost(None)`
//!   (a pipe has no half-open state).
//! - Write side: `write()` tries the fd at once and buffers the rest;
//!   buffered chunks go out with `writev` until `WouldBlock` (mio is
//!   edge-triggered). A write pipe over a FIFO or socket is also watched for
//!   readability, which on a write end means the reader went away: the
//!   transport closes, with `BrokenPipeError()` if data was still buffered
//!   (asyncio's rule).
//! - Contexts: reads (and a write end's close detection) run in `read_ctx`,
//!   taken where asyncio adds its reader (`_start_io`, `resume_reading`);
//!   the flush of buffered data in `write_ctx`, taken by the `write()` that
//!   started buffering (see `crate::contexts`).
//!
//! Invariants:
//! - The mutex is never held while Python code runs (protocol callbacks
//!   re-enter the transport).
//! - The fd is deregistered before the pipe object is closed, and is closed
//!   only by `_call_connection_lost` (or `_dispose` for an unclosed
//!   transport being collected).
//! - `connection_lost` is scheduled at most once (`lost_scheduled`); after
//!   it ran the core drops its loop, wrapper, protocol and pipe.

use std::os::fd::RawFd;

use parking_lot::Mutex;
use pyo3::prelude::*;

use super::core::{deref_to_byte_core, ByteCore};
use crate::event_loop::io::Watch;
use crate::event_loop::stats::ByteCount;
use crate::event_loop::LoopCore;
use crate::reactor::Want;

/// The mutable state of a pipe transport: the `ByteCore` (its `closing`
/// is set by `close()`/`write_eof()` too; its `conn_lost` counts writes
/// after the connection was lost; its `ctx` is always None) and the pipe's
/// own fields.
pub(crate) struct PipeState {
    /// What a stream transport keeps too (`PipeState` derefs to it).
    pub(super) core: ByteCore,
    /// The pipe object (`get_extra_info('pipe')`), closed with the transport.
    pub(super) pipe: Option<Py<PyAny>>,
    /// Write pipe (else read pipe).
    pub(super) writable: bool,
    /// Write pipe: watch the fd for readability to see the reader go away.
    pub(super) watch_close: bool,
    /// `connection_lost` was scheduled or called.
    pub(super) lost_scheduled: bool,
}

deref_to_byte_core!(PipeState);

impl PipeState {
    /// What the reactor should watch for now.
    pub(super) fn wanted(&self) -> Option<Want> {
        if self.fd < 0 || self.lost_scheduled || !self.started {
            return None;
        }
        if self.writable {
            Want::from_flags(self.watch_close, !self.wbuf.is_empty())
        } else if !self.paused && !self.closing {
            Some(Want::Read)
        } else {
            None
        }
    }
}

/// The native core of a pipe transport.
#[pyclass(frozen, module = "oxloop._core")]
pub struct PipeTransport {
    /// Everything; see `PipeState`.
    pub(super) st: Mutex<PipeState>,
    /// Bytes read and written (the loop counts its total too).
    pub(super) bytes: ByteCount,
}

impl PipeTransport {
    /// A transport over `pipe`, whose fd is `fd`.
    pub(super) fn new(
        lp: Py<LoopCore>,
        pipe: Py<PyAny>,
        fd: RawFd,
        writable: bool,
        watch_close: bool,
    ) -> Self {
        Self {
            bytes: ByteCount::default(),
            st: Mutex::new(PipeState {
                core: ByteCore::new(fd, lp),
                pipe: Some(pipe),
                writable,
                watch_close: writable && watch_close,
                lost_scheduled: false,
            }),
        }
    }

    /// Counts `n` bytes read, here and in the loop's total.
    pub(super) fn count_in(&self, st: &PipeState, n: usize) {
        self.bytes.add_in(n);
        if let Some(lp) = &st.lp {
            lp.get().stats.pipe.add_in(n);
        }
    }

    /// Counts `n` bytes written, here and in the loop's total.
    pub(super) fn count_out(&self, st: &PipeState, n: usize) {
        self.bytes.add_out(n);
        if let Some(lp) = &st.lp {
            lp.get().stats.pipe.add_out(n);
        }
    }

    /// Makes the reactor watch what the state needs.
    pub(super) fn sync_interest(slf: &Bound<'_, Self>, st: &mut PipeState) -> PyResult<()> {
        let py = slf.py();
        let want = st.wanted();
        let Some(lp) = st.lp(py) else { return Ok(()) };
        match want {
            Some(w) => {
                let fd = st.fd;
                st.reg.set_interest(lp.get(), fd, w, || Watch::of(slf))
            }
            // `slf` keeps the transport alive without the entry.
            None => {
                st.reg.take().deregister(lp.get());
                Ok(())
            }
        }
    }
}
