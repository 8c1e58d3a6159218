//! Thin, safe wrappers over the syscalls pipe transports make: plain
//! `read(2)`, `write(2)` and `writev(2)`, which work on pipes, sockets and
//! character devices alike (the socket calls in `net` fail with `ENOTSOCK`
//! on a pipe).
//!
//! Same contract as `net`: the caller keeps the fd open for the duration of
//! the call; the calls follow `syscall`'s contract.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use super::net::MAX_IOV;
use super::syscall::syscall;

/// `read(fd, buf)`: 0 means EOF.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable region of `buf.len()` bytes for the
    // whole call; `fd` is open (caller's contract).
    syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len()))
}

/// `write(fd, data)`: the number of bytes the kernel took.
pub fn write(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is valid for reads of `data.len()` bytes.
    syscall!(write(fd, data.as_ptr().cast(), data.len()))
}

/// Gathered write of up to `MAX_IOV` slices (`writev`).
pub fn write_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    if bufs.len() == 1 {
        return write(fd, &bufs[0]);
    }
    let n = bufs.len().min(MAX_IOV);
    // SAFETY: `IoSlice` is ABI-compatible with `struct iovec` on Unix; the
    // `n` slices borrowed from `bufs` stay alive for the whole call.
    syscall!(writev(
        fd,
        bufs.as_ptr().cast::<libc::iovec>(),
        n as libc::c_int
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_round_trip_and_would_block() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two fds pipe(2) writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (r, w) = (fds[0], fds[1]);
        // SAFETY: plain fcntl on fds we own.
        unsafe { libc::fcntl(r, libc::F_SETFL, libc::O_NONBLOCK) };
        assert_eq!(
            write_vectored(w, &[IoSlice::new(b"ab"), IoSlice::new(b"cd")]).unwrap(),
            4
        );
        let mut buf = [0u8; 8];
        assert_eq!(read(r, &mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"abcd");
        assert_eq!(
            read(r, &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        // SAFETY: closing fds we own, once.
        unsafe {
            libc::close(w);
        }
        assert_eq!(read(r, &mut buf).unwrap(), 0);
        // SAFETY: as above.
        unsafe {
            libc::close(r);
        }
    }
}
