//! Thin wrappers over the socket syscalls used by the low-level socket
//! operations (`sockops`) and the datagram transport (`udp`).
//!
//! Each call is non-blocking whatever the fd's mode (`MSG_DONTWAIT`), never
//! raises SIGPIPE (`MSG_NOSIGNAL`), and returns the raw `io::Error`, so the
//! caller decides what "would block" means. `EINTR` is reported as is: the
//! callers treat it like `EAGAIN` (wait for readiness), as asyncio does.

use std::io;
use std::mem;
use std::os::fd::RawFd;

#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

/// Whether the error means "try again when the fd is ready".
#[inline]
pub fn would_block(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR))
        || e.kind() == io::ErrorKind::WouldBlock
}

/// `recv(2)` into `len` bytes at `buf`.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes.
#[inline]
pub unsafe fn recv(fd: RawFd, buf: *mut u8, len: usize) -> io::Result<usize> {
    // SAFETY: the caller guarantees `buf` is writable for `len` bytes.
    let n = unsafe { libc::recv(fd, buf.cast(), len, libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `send(2)` of `data`.
#[inline]
pub fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is a valid slice for reads of its length.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), SEND_FLAGS) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A socket address as the kernel returned it.
pub struct RawAddr {
    /// The address storage.
    pub storage: libc::sockaddr_storage,
    /// How many bytes of `storage` are valid.
    pub len: libc::socklen_t,
}

/// `recvfrom(2)` into `buf`; the datagram size and the sender's address.
pub fn recvfrom(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, RawAddr)> {
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `buf` is writable for its length; `storage`/`len` describe a
    // writable sockaddr buffer of the right size.
    let n = unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok((n as usize, RawAddr { storage, len }))
    }
}

/// `sendto(2)` of `data` to `addr`.
pub fn sendto(fd: RawFd, data: &[u8], addr: &RawAddr) -> io::Result<usize> {
    // SAFETY: `data` is valid for reads of its length; `addr` holds `len`
    // initialised bytes of a sockaddr.
    let n = unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            SEND_FLAGS,
            (&addr.storage as *const libc::sockaddr_storage).cast(),
            addr.len,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Encodes a numeric IPv4/IPv6 address (what `socket.sendto` does for a
/// `(host, port[, flowinfo, scope_id])` tuple whose host `inet_pton`
/// accepts). None if `host` is not numeric for `family`.
pub fn inet_addr(
    family: libc::c_int,
    host: &str,
    port: u16,
    flowinfo: u32,
    scope_id: u32,
) -> Option<RawAddr> {
    let chost = std::ffi::CString::new(host).ok()?;
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let base = (&mut storage as *mut libc::sockaddr_storage).cast::<u8>();
    let len = match family {
        libc::AF_INET => {
            // SAFETY: storage is large and aligned enough for a sockaddr_in.
            let sin = unsafe { &mut *(base as *mut libc::sockaddr_in) };
            // SAFETY: `chost` is NUL-terminated; `sin_addr` is a writable
            // in_addr, what inet_pton(AF_INET) fills.
            let ok = unsafe {
                inet_pton(
                    libc::AF_INET,
                    chost.as_ptr(),
                    (&mut sin.sin_addr as *mut libc::in_addr).cast(),
                )
            };
            if ok != 1 {
                return None;
            }
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = port.to_be();
            mem::size_of::<libc::sockaddr_in>()
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(base as *mut libc::sockaddr_in6) };
            // SAFETY: as above; `sin6_addr` is a writable in6_addr.
            let ok = unsafe {
                inet_pton(
                    libc::AF_INET6,
                    chost.as_ptr(),
                    (&mut sin6.sin6_addr as *mut libc::in6_addr).cast(),
                )
            };
            if ok != 1 {
                return None;
            }
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = port.to_be();
            sin6.sin6_flowinfo = flowinfo.to_be();
            sin6.sin6_scope_id = scope_id;
            mem::size_of::<libc::sockaddr_in6>()
        }
        _ => return None,
    };
    Some(RawAddr {
        storage,
        len: len as libc::socklen_t,
    })
}

/// A decoded socket address, in the shapes Python's `socket` module uses.
pub enum Addr {
    /// No address (e.g. an unbound Unix datagram peer).
    None,
    /// `(host, port)`.
    V4(String, u16),
    /// `(host, port, flowinfo, scope_id)`.
    V6(String, u16, u32, u32),
    /// A Unix path (`str`).
    UnixPath(Vec<u8>),
    /// A Linux abstract Unix address (`bytes`, leading NUL included).
    UnixAbstract(Vec<u8>),
    /// A family we don't decode natively.
    Other,
}

extern "C" {
    /// POSIX `inet_pton(3)` (not bound by the `libc` crate).
    fn inet_pton(af: libc::c_int, src: *const libc::c_char, dst: *mut libc::c_void) -> libc::c_int;
    /// POSIX `inet_ntop(3)` (not bound by the `libc` crate).
    fn inet_ntop(
        af: libc::c_int,
        src: *const libc::c_void,
        dst: *mut libc::c_char,
        size: libc::socklen_t,
    ) -> *const libc::c_char;
}

fn ntop(family: libc::c_int, src: *const libc::c_void) -> String {
    let mut out = [0 as libc::c_char; 64];
    // SAFETY: `src` points at an in_addr/in6_addr matching `family`; `out`
    // is large enough for any textual IPv4/IPv6 address (46 bytes).
    let p = unsafe { inet_ntop(family, src, out.as_mut_ptr(), out.len() as libc::socklen_t) };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: inet_ntop wrote a NUL-terminated string into `out`.
    unsafe { std::ffi::CStr::from_ptr(out.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Decodes an address as `socket.recvfrom` would (glibc's `inet_ntop`, so
/// the text is exactly Python's).
pub fn decode(addr: &RawAddr) -> Addr {
    if addr.len == 0 {
        return Addr::None;
    }
    let family = addr.storage.ss_family as libc::c_int;
    let base = (&addr.storage as *const libc::sockaddr_storage).cast::<u8>();
    match family {
        libc::AF_INET => {
            // SAFETY: the kernel filled a sockaddr_in for AF_INET; storage is
            // large and aligned enough for it.
            let sin = unsafe { &*(base as *const libc::sockaddr_in) };
            let host = ntop(
                libc::AF_INET,
                (&sin.sin_addr as *const libc::in_addr).cast(),
            );
            Addr::V4(host, u16::from_be(sin.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(base as *const libc::sockaddr_in6) };
            let host = ntop(
                libc::AF_INET6,
                (&sin6.sin6_addr as *const libc::in6_addr).cast(),
            );
            Addr::V6(
                host,
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )
        }
        libc::AF_UNIX => {
            let off = mem::size_of::<libc::sa_family_t>();
            let len = (addr.len as usize).saturating_sub(off);
            // SAFETY: `len` bytes after the family field are within storage
            // (the kernel never reports more than it had room for).
            let path = unsafe { std::slice::from_raw_parts(base.add(off), len.min(108)) };
            if !path.is_empty() && path[0] == 0 {
                Addr::UnixAbstract(path.to_vec())
            } else {
                let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                Addr::UnixPath(path[..end].to_vec())
            }
        }
        _ => Addr::Other,
    }
}

/// `getsockopt(fd, SOL_SOCKET, SO_ERROR)`: the pending error, 0 if none.
pub fn take_error(fd: RawFd) -> io::Result<i32> {
    let mut err: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err`/`len` describe a writable int.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(take_error(b.as_raw_fd()).unwrap(), 0);
    }

    #[test]
    fn inet_addr_round_trips_and_rejects_names() {
        let a = inet_addr(libc::AF_INET, "127.0.0.1", 8080, 0, 0).unwrap();
        match decode(&a) {
            Addr::V4(h, p) => assert_eq!((h.as_str(), p), ("127.0.0.1", 8080)),
            _ => panic!("not v4"),
        }
        let a = inet_addr(libc::AF_INET6, "::1", 53, 7, 0).unwrap();
        match decode(&a) {
            Addr::V6(h, p, f, s) => assert_eq!((h.as_str(), p, f, s), ("::1", 53, 7, 0)),
            _ => panic!("not v6"),
        }
        assert!(inet_addr(libc::AF_INET, "localhost", 1, 0, 0).is_none());
        assert!(inet_addr(libc::AF_INET6, "127.0.0.1", 1, 0, 0).is_none());
        assert!(inet_addr(libc::AF_INET6, "fe80::1%lo", 1, 0, 0).is_none());
        assert!(inet_addr(libc::AF_INET, "1.2.3", 1, 0, 0).is_none());
    }
}
