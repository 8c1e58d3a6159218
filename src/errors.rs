//! Errors, converted to Python exactly once, at the boundary, into the
//! exceptions asyncio raises in the same situation.

use std::io;

use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyRuntimeError, PySystemExit};
use pyo3::{PyErr, Python};

/// `RuntimeError('Event loop is closed')`, as asyncio's `_check_closed`.
pub fn loop_closed() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

/// An OS error as Python builds it: `OSError(errno, strerror)`, which
/// CPython turns into the matching subclass (`ConnectionResetError`,
/// `PermissionError`, ...) with `errno` and `strerror` set.
pub fn os_error(e: io::Error) -> PyErr {
    match e.raw_os_error() {
        Some(code) => PyOSError::new_err((code, strerror(code))),
        None => PyErr::from(e),
    }
}

/// The text CPython puts in `strerror` ("Bad file descriptor").
pub fn strerror(code: i32) -> String {
    let text = io::Error::from_raw_os_error(code).to_string();
    // std appends " (os error N)"; Python does not.
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// KeyboardInterrupt and SystemExit leave the loop (as in asyncio); every
/// other exception from a callback goes to the exception handler.
pub fn must_propagate(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<PyKeyboardInterrupt>(py) || e.is_instance_of::<PySystemExit>(py)
}

/// `add_reader`/`add_writer` on an fd a transport owns, as asyncio's
/// `_ensure_fd_no_transport`.
pub fn fd_taken(fd: i32, who: &str) -> PyErr {
    PyRuntimeError::new_err(format!("File descriptor {fd} is used by {who}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn strerror_has_no_rust_suffix() {
        assert_eq!(super::strerror(libc::EBADF), "Bad file descriptor");
    }
}
