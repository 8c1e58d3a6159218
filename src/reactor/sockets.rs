//! The socket syscalls of the low-level socket operations (`sockops`) and
//! the datagram transport (`udp`), under the contract of `syscall`.
//!
//! Each call is non-blocking whatever the fd's mode (`MSG_DONTWAIT`: the
//! `sock_*` methods work on the user's socket, which may be blocking) and
//! never raises SIGPIPE (`MSG_NOSIGNAL`).

use std::io;
use std::os::fd::RawFd;

use super::addr::RawAddr;
use super::syscall::syscall;

#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

/// `recv(2)` into `len` bytes at `buf`.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes.
#[inline]
pub unsafe fn recv(fd: RawFd, buf: *mut u8, len: usize) -> io::Result<usize> {
    // SAFETY: the caller guarantees `buf` is writable for `len` bytes.
    syscall!(recv(fd, buf.cast(), len, libc::MSG_DONTWAIT))
}

/// `send(2)` of `data`.
#[inline]
pub fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is a valid slice for reads of its length.
    syscall!(send(fd, data.as_ptr().cast(), data.len(), SEND_FLAGS))
}

/// `recvfrom(2)` into `buf`; the datagram size and the sender's address.
pub fn recvfrom(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, RawAddr)> {
    let mut addr = RawAddr::empty();
    // SAFETY: `buf` is writable for its length; `addr` is writable sockaddr
    // storage of the length `addr.len` says.
    let n = syscall!(recvfrom(
        fd,
        buf.as_mut_ptr().cast(),
        buf.len(),
        libc::MSG_DONTWAIT,
        addr.as_mut_ptr(),
        &mut addr.len,
    ))?;
    Ok((n, addr))
}

/// `sendto(2)` of `data` to `addr`.
pub fn sendto(fd: RawFd, data: &[u8], addr: &RawAddr) -> io::Result<usize> {
    // SAFETY: `data` is valid for reads of its length; `addr` holds `len`
    // initialised bytes of a sockaddr.
    syscall!(sendto(
        fd,
        data.as_ptr().cast(),
        data.len(),
        SEND_FLAGS,
        addr.as_ptr(),
        addr.len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::addr::{decode, Addr};
    use crate::reactor::syscall::{take_error, would_block};
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn send_recv_and_would_block() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 8];
        // SAFETY: buf is writable for 8 bytes.
        let e = unsafe { recv(b.as_raw_fd(), buf.as_mut_ptr(), buf.len()) }.unwrap_err();
        assert!(would_block(&e));
        assert_eq!(send(a.as_raw_fd(), b"hey").unwrap(), 3);
        // SAFETY: as above.
        let n = unsafe { recv(b.as_raw_fd(), buf.as_mut_ptr(), buf.len()) }.unwrap();
        assert_eq!(&buf[..n], b"hey");
    }

    #[test]
    fn recvfrom_decodes_ipv4() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        b.set_nonblocking(false).unwrap();
        let mut buf = [0u8; 4];
        std::thread::sleep(std::time::Duration::from_millis(10));
        let (n, addr) = recvfrom(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(n, 1);
        match decode(&addr) {
            Addr::V4(h, p) => {
                assert_eq!(h, "127.0.0.1");
                assert_eq!(p, a.local_addr().unwrap().port());
            }
            _ => panic!("not v4"),
        }
        assert!(take_error(b.as_raw_fd()).unwrap().is_none());
    }
}
