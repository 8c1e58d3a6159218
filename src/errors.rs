//! Errors, converted to Python exactly once, at the boundary, into the
//! exceptions asyncio raises in the same situation.

use std::io;

use pyo3::exceptions::PyRuntimeError;
use pyo3::PyErr;

/// `RuntimeError('Event loop is closed')`, as asyncio's `_check_closed`.
pub fn loop_closed() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

/// An OS error as the matching `OSError` subclass (`ConnectionResetError`,
/// `PermissionError`, ...), with its errno.
pub fn os_error(e: io::Error) -> PyErr {
    PyErr::from(e)
}

/// `add_reader`/`add_writer` on an fd a transport owns, as asyncio's
/// `_ensure_fd_no_transport`.
pub fn fd_taken(fd: i32, who: &str) -> PyErr {
    PyRuntimeError::new_err(format!("File descriptor {fd} is used by {who}"))
}
