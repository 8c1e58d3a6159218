//! Reading a stream into the `bytes` that `data_received` gets.
//!
//! Two ways, chosen per transport from the size of its previous read:
//! - small reads (the common request/response case) land in the per-thread
//!   read buffer (`with_read_buf`) and are copied into a `bytes` of exactly
//!   their size: one small allocation, one small copy;
//! - after a read of at least `LARGE_READ` bytes, the next read goes straight
//!   into a fresh `bytes` of `DIRECT_MAX` bytes, shrunk to what arrived
//!   (in place: `realloc` to a smaller size splits the block). Not "twice
//!   the last read": after a short tail (100 KiB arriving as 64 + 36 KiB)
//!   that capped the next reads below the message size, so every message
//!   took two reads, two `data_received` and two sends. At 100 KiB
//!   messages the copy out of the shared buffer was ~10 % of the server's
//!   CPU (`perf record` of `benchmarks/echo_server.py --mode protocol`).
//!
//! `DIRECT_MAX` stays under glibc's default mmap threshold (128 KiB): a
//! larger `bytes` (asyncio's `sock.recv(256 KiB)`) is an `mmap` per read,
//! shrunk with `mremap` and freed with `munmap`, and the fresh pages fault
//! in the `recv`: measured 4x the server CPU per 100 KiB request.
//!
//! Large transient buffers and glibc's heap: the `bytes` of a large read,
//! the stdlib's `StreamReader` buffer and the copies user code makes live
//! for one request and are freed, at the top of the heap. glibc's default
//! trim threshold (128 KiB) then gives the top back to the kernel at every
//! free (`brk`) and the next request faults the pages in again, zeroed:
//! `perf record` of `echo_server.py --mode streams` at 100 KiB showed
//! `exc_page_fault` and the copies into fresh pages as the largest costs,
//! `strace -c` ~0.8 `brk` per request, and the server's CPU per request
//! fell from ~56 to ~34 µs with the thresholds raised. The stdlib's loop
//! gets raised thresholds by accident: its `sock.recv(256 KiB)` is an
//! `mmap`ped block, and freeing one makes glibc raise its mmap threshold
//! to that block's size and its trim threshold to twice that ("dynamic
//! mmap threshold", mallopt(3)). `tune_malloc` does the same on purpose,
//! once per process, the first time a large read happens: one `malloc` +
//! `free` of `MALLOC_BUMP` bytes. A process that set the thresholds itself
//! (`mallopt`, `MALLOC_*_THRESHOLD_`, `GLIBC_TUNABLES`) keeps its own:
//! glibc stops adjusting them then.
//!
//! The bytes object is written through CPython's `PyBytesWriter` API (3.15;
//! PyO3 supplies it on older versions over `_PyBytes_Resize`), so no
//! half-built `bytes` is ever visible to Python.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::with_read_buf;

/// A read at least this large makes the next one go straight into a `bytes`.
pub const LARGE_READ: usize = 16 * 1024;

/// The largest `bytes` a direct read allocates (under the mmap threshold,
/// leaving room for the object header and malloc's own).
pub const DIRECT_MAX: usize = 120 * 1024;

/// The block whose `free` raises glibc's mmap threshold to ~1 MiB and its
/// trim threshold to ~2 MiB (see the module docs: 256 KiB, what the stdlib
/// gets, still trimmed at every request with 10 connections of 100 KiB).
const MALLOC_BUMP: usize = 1024 * 1024;

/// Raises glibc's dynamic malloc thresholds, once per process (see the
/// module docs). Elsewhere, nothing.
#[inline]
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: a plain malloc/free pair; the pointer is never read
            // or written (`black_box` keeps the pair from being optimised
            // away: the point is glibc seeing the `free` of an mmapped block).
            unsafe {
                let p = std::hint::black_box(libc::malloc(MALLOC_BUMP));
                libc::free(p);
            }
        });
    }
}

/// What one read gave.
pub enum Received<'py> {
    /// Data; `full` when the read filled the space offered (more may wait).
    Data(Bound<'py, PyBytes>, bool),
    /// The peer closed its side (a zero-byte read).
    Eof,
    /// The read failed (including `WouldBlock`).
    Failed(io::Error),
}

/// The per-transport memory of how large reads have been.
#[derive(Default)]
pub struct ReadSizeHint {
    /// The size of the previous read.
    last: AtomicUsize,
}

impl ReadSizeHint {
    /// Reads once with `read(ptr, len)` (a `recv` or `read` into `len`
    /// writable bytes at `ptr`) and makes the `bytes` for the protocol.
    pub fn read<'py>(
        &self,
        py: Python<'py>,
        read: impl FnOnce(*mut u8, usize) -> io::Result<usize>,
    ) -> PyResult<Received<'py>> {
        let last = self.last.load(Ordering::Relaxed);
        let got = if last >= LARGE_READ {
            tune_malloc();
            read_direct(py, DIRECT_MAX, read)?
        } else {
            with_read_buf(|buf| match read(buf.as_mut_ptr(), buf.len()) {
                Ok(0) => Received::Eof,
                Ok(n) => Received::Data(PyBytes::new(py, &buf[..n]), n == buf.len()),
                Err(e) => Received::Failed(e),
            })
        };
        if let Received::Data(data, _) = &got {
            self.last.store(data.as_bytes().len(), Ordering::Relaxed);
        }
        Ok(got)
    }
}

/// One read straight into a new `bytes` of `cap` bytes, shrunk to fit.
fn read_direct<'py>(
    py: Python<'py>,
    cap: usize,
    read: impl FnOnce(*mut u8, usize) -> io::Result<usize>,
) -> PyResult<Received<'py>> {
    // SAFETY: a size >= 0; a null result means a Python error is set.
    let writer = unsafe { ffi::compat::PyBytesWriter_Create(cap as ffi::Py_ssize_t) };
    if writer.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `writer` is live; its data area holds `cap` bytes.
    let ptr = unsafe { ffi::compat::PyBytesWriter_GetData(writer) }.cast::<u8>();
    let n = match read(ptr, cap) {
        Ok(n) if n > 0 => n,
        other => {
            // SAFETY: `writer` is live and not used after this.
            unsafe { ffi::compat::PyBytesWriter_Discard(writer) };
            return Ok(match other {
                Ok(_) => Received::Eof,
                Err(e) => Received::Failed(e),
            });
        }
    };
    // SAFETY: `writer` is live, `n` <= its size; it is consumed here. A null
    // result means a Python error is set.
    let obj = unsafe { ffi::compat::PyBytesWriter_FinishWithSize(writer, n as ffi::Py_ssize_t) };
    if obj.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `obj` is a new, owned reference to a `bytes` object.
    let data = unsafe { Bound::from_owned_ptr(py, obj).cast_into_unchecked::<PyBytes>() };
    Ok(Received::Data(data, n == cap))
}
