//! Socket addresses: the one decoder of what the kernel returns
//! (`decode`, glibc's `inet_ntop`, so the text is exactly Python's
//! `socket` module's) and the one encoder of numeric addresses
//! (`inet_addr`), with `getsockname`/`getpeername`.

use std::io;
use std::mem;
use std::os::fd::RawFd;

use super::syscall::syscall;

/// A socket address as the kernel returned it (or as `inet_addr` built it).
pub struct RawAddr {
    /// The address storage.
    pub storage: libc::sockaddr_storage,
    /// How many bytes of `storage` are valid.
    pub len: libc::socklen_t,
}

impl RawAddr {
    /// Zeroed storage with its whole size as the length: room for the
    /// kernel to fill in (`accept`, `recvfrom`, `getsockname`).
    pub fn empty() -> Self {
        Self {
            // SAFETY: an all-zero sockaddr_storage is a valid value.
            storage: unsafe { mem::zeroed() },
            len: mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    /// The storage as the `sockaddr *` the kernel fills in.
    pub fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.storage as *mut libc::sockaddr_storage).cast()
    }

    /// The storage as the `const sockaddr *` the kernel reads.
    pub fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }

    /// The address family (`AF_*`).
    pub fn family(&self) -> libc::c_int {
        self.storage.ss_family as libc::c_int
    }
}

/// The socket's local address (`getsockname`).
pub fn local_addr(fd: RawFd) -> io::Result<RawAddr> {
    let mut addr = RawAddr::empty();
    // SAFETY: `addr` is writable storage of the length `addr.len` says.
    syscall!(getsockname(fd, addr.as_mut_ptr(), &mut addr.len))?;
    Ok(addr)
}

/// The socket's peer address (`getpeername`).
pub fn peer_addr(fd: RawFd) -> io::Result<RawAddr> {
    let mut addr = RawAddr::empty();
    // SAFETY: as in `local_addr`.
    syscall!(getpeername(fd, addr.as_mut_ptr(), &mut addr.len))?;
    Ok(addr)
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

/// A socket address kept compact, as a transport holds its own names
/// until someone asks (`SockAddr::decode` then gives `Addr`, whose Python
/// form `transports::addr_to_py` builds). The same values as `decode`
/// gives for the `RawAddr` it was made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SockAddr {
    /// No address (an empty one, e.g. an unbound Unix datagram peer).
    None,
    /// An IPv4 address and port (host byte order).
    V4 {
        /// The address, network byte order (an `in_addr`).
        ip: [u8; 4],
        /// The port.
        port: u16,
    },
    /// An IPv6 address, port, flow info and scope id (host byte order).
    V6 {
        /// The address (an `in6_addr`).
        ip: [u8; 16],
        /// The port.
        port: u16,
        /// `sin6_flowinfo`.
        flowinfo: u32,
        /// `sin6_scope_id`.
        scope_id: u32,
    },
    /// A Unix address: the path up to its first NUL, or (a leading NUL) a
    /// Linux abstract name with every byte the kernel reported; empty for
    /// an unnamed socket.
    Unix(Box<[u8]>),
    /// A family we don't decode natively.
    Other,
}

impl SockAddr {
    /// The compact form of what the kernel returned.
    pub fn from_raw(addr: &RawAddr) -> Self {
        if addr.len == 0 {
            return Self::None;
        }
        let base = (&addr.storage as *const libc::sockaddr_storage).cast::<u8>();
        match addr.family() {
            libc::AF_INET => {
                // SAFETY: the kernel filled a sockaddr_in for AF_INET; storage
                // is large and aligned enough for it.
                let sin = unsafe { &*(base as *const libc::sockaddr_in) };
                Self::V4 {
                    ip: sin.sin_addr.s_addr.to_ne_bytes(),
                    port: u16::from_be(sin.sin_port),
                }
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe { &*(base as *const libc::sockaddr_in6) };
                Self::V6 {
                    ip: sin6.sin6_addr.s6_addr,
                    port: u16::from_be(sin6.sin6_port),
                    flowinfo: u32::from_be(sin6.sin6_flowinfo),
                    scope_id: sin6.sin6_scope_id,
                }
            }
            libc::AF_UNIX => match decode(addr) {
                Addr::UnixAbstract(b) | Addr::UnixPath(b) => Self::Unix(b.into_boxed_slice()),
                _ => Self::Other,
            },
            _ => Self::Other,
        }
    }

    /// The decoded form (host text as glibc's `inet_ntop` writes it, as
    /// Python's `socket` module shows it).
    pub fn decode(&self) -> Addr {
        match self {
            Self::None => Addr::None,
            Self::V4 { ip, port } => {
                let a = libc::in_addr {
                    s_addr: u32::from_ne_bytes(*ip),
                };
                Addr::V4(
                    ntop(libc::AF_INET, (&a as *const libc::in_addr).cast()),
                    *port,
                )
            }
            Self::V6 {
                ip,
                port,
                flowinfo,
                scope_id,
            } => {
                let a = libc::in6_addr { s6_addr: *ip };
                Addr::V6(
                    ntop(libc::AF_INET6, (&a as *const libc::in6_addr).cast()),
                    *port,
                    *flowinfo,
                    *scope_id,
                )
            }
            Self::Unix(b) if b.first() == Some(&0) => Addr::UnixAbstract(b.to_vec()),
            Self::Unix(b) => Addr::UnixPath(b.to_vec()),
            Self::Other => Addr::Other,
        }
    }
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
#[inline(always)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

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

    /// What `decode` gives, as comparable values.
    fn plain(a: Addr) -> (u8, String, u16, u32, u32, Vec<u8>) {
        match a {
            Addr::None => (0, String::new(), 0, 0, 0, vec![]),
            Addr::V4(h, p) => (1, h, p, 0, 0, vec![]),
            Addr::V6(h, p, f, s) => (2, h, p, f, s, vec![]),
            Addr::UnixPath(b) => (3, String::new(), 0, 0, 0, b),
            Addr::UnixAbstract(b) => (4, String::new(), 0, 0, 0, b),
            Addr::Other => (5, String::new(), 0, 0, 0, vec![]),
        }
    }

    /// A Unix address of `path` (`len` bytes of it reported).
    fn unix_raw(path: &[u8]) -> RawAddr {
        let mut a = RawAddr::empty();
        a.storage.ss_family = libc::AF_UNIX as libc::sa_family_t;
        let off = mem::size_of::<libc::sa_family_t>();
        let base = a.as_mut_ptr().cast::<u8>();
        // SAFETY: `path` fits in sun_path (the tests pass short ones).
        unsafe { std::ptr::copy_nonoverlapping(path.as_ptr(), base.add(off), path.len()) };
        a.len = (off + path.len()) as libc::socklen_t;
        a
    }

    #[test]
    fn compact_addresses_decode_as_raw_ones() {
        let mut raws = vec![
            inet_addr(libc::AF_INET, "127.0.0.1", 8080, 0, 0).unwrap(),
            inet_addr(libc::AF_INET, "10.1.2.3", 0, 0, 0).unwrap(),
            inet_addr(libc::AF_INET6, "::1", 53, 7, 0).unwrap(),
            inet_addr(libc::AF_INET6, "fe80::fc00:ff:fe00:1", 443, 0x12345, 4).unwrap(),
            inet_addr(libc::AF_INET6, "::ffff:1.2.3.4", 1, 0, 0).unwrap(),
            unix_raw(b"/tmp/x.sock"),
            unix_raw(b"/tmp/\xff\xfe\0junk"),
            unix_raw(b"\0abstract\0with nul"),
            unix_raw(b""),
        ];
        let mut empty = RawAddr::empty();
        empty.len = 0;
        raws.push(empty);
        for raw in &raws {
            let compact = SockAddr::from_raw(raw);
            assert_eq!(plain(compact.decode()), plain(decode(raw)));
        }
        let abs = SockAddr::from_raw(&unix_raw(b"\0ab\0c"));
        assert!(matches!(abs.decode(), Addr::UnixAbstract(b) if b == b"\0ab\0c"));
        let unnamed = SockAddr::from_raw(&unix_raw(b""));
        assert!(matches!(unnamed.decode(), Addr::UnixPath(b) if b.is_empty()));
    }

    #[test]
    fn compact_address_size() {
        // What a transport holds per name instead of a Python tuple.
        let size = mem::size_of::<SockAddr>();
        println!("size_of::<SockAddr>() = {size}");
        assert!(size <= 32, "{size}");
    }

    #[test]
    fn local_and_peer_addresses_decode() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        match decode(&local_addr(l.as_raw_fd()).unwrap()) {
            Addr::V4(h, p) => assert_eq!((h.as_str(), p), ("127.0.0.1", port)),
            _ => panic!("not v4"),
        }
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = peer_addr(a.as_raw_fd()).unwrap();
        assert_eq!(peer.family(), libc::AF_UNIX);
        assert!(matches!(decode(&peer), Addr::UnixPath(p) if p.is_empty()));
    }
}
