//! Module-level functions of `oxloop._core` for the syscalls the Python
//! half would otherwise make through `os` on the loop's thread.
//!
//! Why: tools such as `blockbuster` patch `os.stat`, `os.sendfile`,
//! `os.remove`... and fail any call made while a loop runs, exempting only
//! the stdlib's own asyncio files. These are the calls the stdlib loop
//! makes at the same places (unix-socket clean-up in `create_unix_server`
//! and `Server.close`, the stale-path check of `create_datagram_endpoint`,
//! `sock_sendfile`, the pipe transports' type check); made natively, with
//! the GIL released, they neither show up as Python calls nor stall other
//! threads. Reaping (`try_wait`) never blocks: it is `WNOHANG`.
//!
//! Errors become `OSError` subclasses with `errno`, `strerror` and, for
//! path calls, `filename`, as `os` raises them.

use std::os::fd::RawFd;

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

use crate::errors;
use crate::reactor::fs;

fn path_error(e: std::io::Error, path: &[u8]) -> PyErr {
    match e.raw_os_error() {
        Some(code) => {
            let name = String::from_utf8_lossy(path).into_owned();
            PyOSError::new_err((code, errors::strerror(code), name))
        }
        None => errors::os_error(e),
    }
}

/// `os.stat(path)`'s `(st_mode, st_ino)` (`path` as `os.fsencode` gives it).
#[pyfunction]
fn stat_path(py: Python<'_>, path: &[u8]) -> PyResult<(u32, u64)> {
    let owned = path.to_vec();
    let info = py
        .detach(move || fs::stat(&owned))
        .map_err(|e| path_error(e, path))?;
    Ok((info.mode, info.ino))
}

/// `os.fstat(fd)`'s `(st_mode, st_size)`.
#[pyfunction]
fn stat_fd(py: Python<'_>, fd: RawFd) -> PyResult<(u32, i64)> {
    let info = py.detach(|| fs::fstat(fd)).map_err(errors::os_error)?;
    Ok((info.mode, info.size))
}

/// Removes `path` if it is a socket (a stale unix-socket path), as asyncio's
/// `create_unix_server` and `create_datagram_endpoint` do before binding.
/// Raises `FileNotFoundError` if there is no such path.
#[pyfunction]
fn remove_socket_path(py: Python<'_>, path: &[u8]) -> PyResult<bool> {
    let owned = path.to_vec();
    let removed = py.detach(move || -> std::io::Result<bool> {
        if !fs::stat(&owned)?.is_socket() {
            return Ok(false);
        }
        fs::unlink(&owned).map(|()| true)
    });
    removed.map_err(|e| path_error(e, path))
}

/// Unlinks `path` if it is still the inode `ino` (a listener's socket file
/// at `Server.close`, as asyncio's `_stop_serving`). Errors are ignored, as
/// there: the path may be gone or replaced.
#[pyfunction]
fn unlink_if_inode(py: Python<'_>, path: &[u8], ino: u64) -> bool {
    let owned = path.to_vec();
    py.detach(move || match fs::stat(&owned) {
        Ok(info) if info.ino == ino => fs::unlink(&owned).is_ok(),
        _ => false,
    })
}

/// `os.sendfile(out_fd, in_fd, offset, count)`: bytes sent (0 at EOF);
/// `BlockingIOError` when the socket is full.
#[pyfunction]
fn sendfile(
    py: Python<'_>,
    out_fd: RawFd,
    in_fd: RawFd,
    offset: i64,
    count: usize,
) -> PyResult<usize> {
    py.detach(|| {
        let mut offset = offset;
        crate::reactor::net::sendfile(out_fd, in_fd, &mut offset, count)
    })
    .map_err(errors::os_error)
}

/// `waitpid(pid, WNOHANG)` as an exit code (`-signal` if killed), or None
/// while the child runs; `ChildProcessError` if it is not (or no longer)
/// a child of ours.
#[pyfunction]
fn try_wait(pid: i32) -> PyResult<Option<i32>> {
    fs::try_wait(pid).map_err(errors::os_error)
}

/// Adds the functions to `oxloop._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(stat_path, m)?)?;
    m.add_function(wrap_pyfunction!(stat_fd, m)?)?;
    m.add_function(wrap_pyfunction!(remove_socket_path, m)?)?;
    m.add_function(wrap_pyfunction!(unlink_if_inode, m)?)?;
    m.add_function(wrap_pyfunction!(sendfile, m)?)?;
    m.add_function(wrap_pyfunction!(try_wait, m)?)?;
    Ok(())
}
