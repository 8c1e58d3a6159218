//! The one contract of every raw syscall in the crate (they all live in
//! `reactor`): `syscall!(name(args...))` calls `libc::name`, turns `-1`
//! into the `io::Error` of `errno`, and retries on `EINTR`.
//!
//! Why retry `EINTR` everywhere: every fd the loop touches is non-blocking
//! (or the call says `MSG_DONTWAIT`), so an interrupted call is retried at
//! once and either succeeds or reports `WouldBlock`, which the caller
//! handles by waiting for readiness; reporting `EINTR` as "would block"
//! instead (as asyncio does for its `sock_*` calls) ends in the same state
//! after one more poll. Python's signal handlers run at the next bytecode
//! boundary either way. So `EINTR` never leaves `reactor`, and
//! `would_block` is only `EAGAIN`/`EWOULDBLOCK`.
//!
//! The invoking code writes the `// SAFETY:` comment for the call (the
//! macro's `unsafe` block is the call and nothing else).

use std::io;
use std::mem;
use std::os::fd::RawFd;

/// Calls `libc::$name($args...)` under the contract above; the result is
/// `io::Result<usize>` (the call's non-negative return value).
macro_rules! syscall {
    ($name:ident ( $($arg:expr),* $(,)? )) => {
        $crate::reactor::syscall::retry(|| {
            #[allow(unused_unsafe, clippy::undocumented_unsafe_blocks)]
            let r = unsafe { libc::$name($($arg),*) };
            r as isize
        })
    };
}
pub(crate) use syscall;

/// Runs `f` until it returns something other than `-1`/`EINTR`; `-1`
/// becomes the `io::Error` of `errno`.
#[inline]
pub(crate) fn retry(mut f: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = f();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Whether the error means "try again when the fd is ready".
#[inline]
pub fn would_block(e: &io::Error) -> bool {
    // `EAGAIN` first: the common case, without `kind()`'s errno table.
    e.raw_os_error() == Some(libc::EAGAIN) || e.kind() == io::ErrorKind::WouldBlock
}

/// `getsockopt(fd, SOL_SOCKET, SO_ERROR)`: the socket's pending error
/// (cleared by reading it), `None` if there is none.
pub fn take_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let mut err: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err`/`len` are live locals describing a writable c_int.
    syscall!(getsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_ERROR,
        (&mut err as *mut libc::c_int).cast(),
        &mut len,
    ))?;
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn errors_come_from_errno_and_take_error_reads_so_error() {
        let e = syscall!(close(-1)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        assert!(!would_block(&e));
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(take_error(a.as_raw_fd()).unwrap().is_none());
        assert!(take_error(-1).is_err());
    }
}
