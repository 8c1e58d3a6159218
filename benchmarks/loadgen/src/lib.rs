//! Pieces shared by `loadgen` (the load client) and `echo-ceiling` (the
//! pure-Rust echo server that bounds what any loop can reach).
//!
//! Sockets are plain `std` sockets in non-blocking mode, registered with mio
//! through `SourceFd`, so one `Sock` type serves TCP and Unix streams alike.
//! `tls::Stream` puts TLS (rustls) over a `Sock`; `drive` is the closed-loop
//! run that the echo and HTTP (`http`) modes share.

pub mod drive;
pub mod http;
pub mod tls;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

/// `HOST:PORT` (TCP) or `unix:/path` (Unix stream socket).
#[derive(Clone, Debug)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let mut addrs = text.to_socket_addrs().map_err(|e| format!("bad address {text:?}: {e}"))?;
        addrs.next().map(Endpoint::Tcp).ok_or_else(|| format!("{text:?} resolves to nothing"))
    }

    /// Blocking connect; the caller chooses blocking mode afterwards.
    pub fn connect(&self) -> io::Result<Sock> {
        match self {
            Endpoint::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Ok(Sock::Tcp(s))
            }
            Endpoint::Unix(p) => Ok(Sock::Unix(UnixStream::connect(p)?)),
        }
    }

    pub fn listen(&self) -> io::Result<Listener> {
        match self {
            Endpoint::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a)?)),
            Endpoint::Unix(p) => {
                let _ = std::fs::remove_file(p);
                Ok(Listener::Unix(UnixListener::bind(p)?))
            }
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A connected stream socket of either family.
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_nonblocking(on),
            Sock::Unix(s) => s.set_nonblocking(on),
        }
    }

    pub fn set_read_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(t),
            Sock::Unix(s) => s.set_read_timeout(t),
        }
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Sock::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }

    /// Consume up to `scratch.len()` received bytes without looking at them.
    /// On TCP, `recv(MSG_TRUNC)` drops them inside the kernel (no copy to
    /// user space), which keeps the client cheaper than the server it
    /// measures.  Unix stream sockets do not support that: plain read.
    pub fn discard(&mut self, scratch: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => {
                // SAFETY: the pointer and length describe `scratch`, which we
                // borrow mutably for the duration of the call.
                let n = unsafe {
                    libc::recv(
                        s.as_raw_fd(),
                        scratch.as_mut_ptr().cast(),
                        scratch.len(),
                        libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }
            Sock::Unix(s) => s.read(scratch),
        }
    }
}

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Sock::Tcp(s) => s.as_raw_fd(),
            Sock::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    pub fn accept(&self) -> io::Result<Sock> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                Ok(Sock::Tcp(s))
            }
            Listener::Unix(l) => Ok(Sock::Unix(l.accept()?.0)),
        }
    }

    pub fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l) => l.set_nonblocking(true),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// `--name value` options; `--flag` alone means "true".
pub struct Opts(Vec<(String, String)>);

impl Opts {
    /// Parse the process arguments, rejecting names not in `known`.
    pub fn from_args(known: &[&str], usage: &str) -> Opts {
        let mut out = Vec::new();
        let mut args = std::env::args().skip(1).peekable();
        while let Some(a) = args.next() {
            let Some(name) = a.strip_prefix("--") else { die(&format!("unexpected {a:?}\n{usage}")) };
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None if args.peek().is_some_and(|n| !n.starts_with("--")) => {
                    (name.to_string(), args.next().unwrap_or_default())
                }
                None => (name.to_string(), "true".to_string()),
            };
            if name == "help" {
                println!("{usage}");
                std::process::exit(0);
            }
            if !known.contains(&name.as_str()) {
                die(&format!("unknown option --{name}\n{usage}"));
            }
            out.push((name, value));
        }
        Opts(out)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.get(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| die(&format!("--{name}: bad number {v:?}"))),
        }
    }
}

pub fn die(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(2)
}

/// `1024`, `1k`, `10KiB`, `1MiB` -> bytes.
pub fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim().to_ascii_lowercase();
    let units: [(&str, usize); 6] =
        [("kib", 1 << 10), ("mib", 1 << 20), ("kb", 1 << 10), ("mb", 1 << 20), ("k", 1 << 10), ("m", 1 << 20)];
    for (suffix, mult) in units {
        if let Some(n) = t.strip_suffix(suffix) {
            return n.trim().parse::<usize>().ok().map(|n| n * mult);
        }
    }
    t.parse().ok()
}

/// Raise the soft RLIMIT_NOFILE to at least `want` (capped at the hard
/// limit).  Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit only read/write the struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        lim.rlim_cur
    }
}

/// User + system CPU seconds of this process (all threads).
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we own.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        secs(ru.ru_utime) + secs(ru.ru_stime)
    }
}

/// Stamp request number `seq` on a request's bytes (first and last 8), so
/// that stale, reordered, duplicated or foreign bytes differ from it.
pub fn stamp(tx: &mut [u8], seq: u64) {
    let s = seq.to_le_bytes();
    let n = tx.len().min(8);
    tx[..n].copy_from_slice(&s[..n]);
    if tx.len() >= 16 {
        let len = tx.len();
        tx[len - 8..].copy_from_slice(&(!seq).to_le_bytes());
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number (NaN/inf become null).
pub fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".to_string()
    }
}
