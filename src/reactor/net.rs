//! The socket syscalls that stream transports and servers make on their
//! hot paths, under the contract of `syscall`.
//!
//! Each function takes a raw fd that the caller keeps open for the duration
//! of the call (transports own their fd and close it only after they stopped
//! using it) and returns `io::Error` for the caller to convert at the Python
//! boundary. `WouldBlock` is an ordinary outcome.

use std::io::{self, IoSlice};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::addr::RawAddr;
use super::syscall::syscall;

/// `MSG_NOSIGNAL` where it exists (Python ignores SIGPIPE anyway).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0;

/// At most this many slices per `sendmsg` (Linux's `UIO_MAXIOV` is 1024).
pub const MAX_IOV: usize = 64;

/// `recv(fd, buf)`: 0 means EOF.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable region of `buf.len()` bytes for the
    // whole call; `fd` is open (caller's contract).
    syscall!(recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0))
}

/// `recv` into raw memory (a Python buffer the caller holds a view of).
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes for the whole call.
pub unsafe fn recv_raw(fd: RawFd, ptr: *mut u8, len: usize) -> io::Result<usize> {
    // SAFETY: the caller guarantees `ptr..ptr+len` is writable.
    syscall!(recv(fd, ptr.cast(), len, 0))
}

/// `send(fd, data)`: the number of bytes the kernel took.
pub fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is valid for reads of `data.len()` bytes.
    syscall!(send(fd, data.as_ptr().cast(), data.len(), SEND_FLAGS))
}

/// Gathered send of up to `MAX_IOV` slices (`sendmsg`).
pub fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    if bufs.len() == 1 {
        return send(fd, &bufs[0]);
    }
    let n = bufs.len().min(MAX_IOV);
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `struct iovec` on Unix.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = n as _;
    // SAFETY: `msg` points at `n` live iovecs borrowed from `bufs`.
    syscall!(sendmsg(fd, &msg, SEND_FLAGS))
}

/// `shutdown(fd, SHUT_WR)`.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain syscall on an fd number.
    syscall!(shutdown(fd, libc::SHUT_WR)).map(drop)
}

/// Accepts one connection as a non-blocking, close-on-exec socket.
pub fn accept(fd: RawFd) -> io::Result<(OwnedFd, RawAddr)> {
    let mut addr = RawAddr::empty();
    // SAFETY: `addr` is writable sockaddr storage of the length `addr.len`
    // says; the returned fd is new and ours.
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    let new_fd = syscall!(accept4(
        fd,
        addr.as_mut_ptr(),
        &mut addr.len,
        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
    ))?;
    // SAFETY: as above.
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    let new_fd = syscall!(accept(fd, addr.as_mut_ptr(), &mut addr.len))?;
    // SAFETY: `accept` returned a fresh fd that nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(new_fd as RawFd) };
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        let s = socket2::SockRef::from(&owned);
        s.set_nonblocking(true)?;
        s.set_cloexec(true)?;
    }
    Ok((owned, addr))
}

/// `sendfile(out_fd, in_fd, &offset, count)`; advances `offset`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn sendfile(out_fd: RawFd, in_fd: RawFd, offset: &mut i64, count: usize) -> io::Result<usize> {
    let mut off: libc::off_t = *offset as libc::off_t;
    // SAFETY: `off` is a live local the kernel updates; fds are numbers.
    let n = syscall!(sendfile(out_fd, in_fd, &mut off, count))?;
    *offset = off as i64;
    Ok(n)
}

/// `sendfile` is only wired up on Linux; elsewhere the caller falls back.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn sendfile(
    _out_fd: RawFd,
    _in_fd: RawFd,
    _offset: &mut i64,
    _count: usize,
) -> io::Result<usize> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// `lseek(fd, pos, SEEK_SET)` (a file's position after `sendfile`).
pub fn seek_set(fd: RawFd, pos: i64) -> io::Result<()> {
    // SAFETY: plain syscall on an fd number.
    syscall!(lseek(fd, pos as libc::off_t, libc::SEEK_SET)).map(drop)
}

/// Sets `TCP_NODELAY`.
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a live c_int of the size we pass.
    syscall!(setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        (&one as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
    ))
    .map(drop)
}
