//! Thin, safe wrappers over the socket syscalls that stream transports and
//! servers make on their hot paths.
//!
//! Each function takes a raw fd that the caller keeps open for the duration
//! of the call (transports own their fd and close it only after they stopped
//! using it), retries on `EINTR`, and returns `io::Error` for the caller to
//! convert at the Python boundary. `WouldBlock` is an ordinary outcome.

use std::io::{self, IoSlice};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use socket2::SockAddr;

/// `MSG_NOSIGNAL` where it exists (Python ignores SIGPIPE anyway).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0;

/// At most this many slices per `sendmsg` (Linux's `UIO_MAXIOV` is 1024).
pub const MAX_IOV: usize = 64;

fn retry<F: FnMut() -> isize>(mut f: F) -> io::Result<usize> {
    loop {
        let n = f();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `recv(fd, buf)`: 0 means EOF.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable region of `buf.len()` bytes for the
    // whole call; `fd` is open (caller's contract).
    retry(|| unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) })
}

/// `recv` into raw memory (a Python buffer the caller holds a view of).
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes for the whole call.
pub unsafe fn recv_raw(fd: RawFd, ptr: *mut u8, len: usize) -> io::Result<usize> {
    // SAFETY: the caller guarantees `ptr..ptr+len` is writable.
    retry(|| unsafe { libc::recv(fd, ptr.cast(), len, 0) })
}

/// `send(fd, data)`: the number of bytes the kernel took.
pub fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is valid for reads of `data.len()` bytes.
    retry(|| unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), SEND_FLAGS) })
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
    retry(|| unsafe { libc::sendmsg(fd, &msg, SEND_FLAGS) })
}

/// `shutdown(fd, SHUT_WR)`.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain syscall on an fd number.
    retry(|| unsafe { libc::shutdown(fd, libc::SHUT_WR) } as isize).map(drop)
}

/// Accepts one connection as a non-blocking, close-on-exec socket.
pub fn accept(fd: RawFd) -> io::Result<(OwnedFd, SockAddr)> {
    // SAFETY: `SockAddr::try_init` hands us zeroed storage and its length
    // for the kernel to fill in; the returned fd is new and ours.
    let (new_fd, addr) = unsafe {
        SockAddr::try_init(|storage, len| loop {
            #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
            let r = libc::accept4(
                fd,
                storage.cast(),
                len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            );
            #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
            let r = libc::accept(fd, storage.cast(), len);
            if r >= 0 {
                return Ok(r);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        })?
    };
    // SAFETY: `accept` returned a fresh fd that nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(new_fd) };
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
    let n = retry(|| unsafe { libc::sendfile(out_fd, in_fd, &mut off, count) })?;
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
    if unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_SET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The socket's local address.
pub fn local_addr(fd: RawFd) -> io::Result<SockAddr> {
    // SAFETY: storage and length come from `try_init`.
    unsafe {
        SockAddr::try_init(|storage, len| {
            if libc::getsockname(fd, storage.cast(), len) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        })
    }
    .map(|((), a)| a)
}

/// The socket's peer address.
pub fn peer_addr(fd: RawFd) -> io::Result<SockAddr> {
    // SAFETY: storage and length come from `try_init`.
    unsafe {
        SockAddr::try_init(|storage, len| {
            if libc::getpeername(fd, storage.cast(), len) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        })
    }
    .map(|((), a)| a)
}

/// `SO_ERROR`, cleared by reading it.
pub fn take_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err`/`len` are live locals of the sizes we pass.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
}

/// Sets `TCP_NODELAY`.
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a live c_int of the size we pass.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
