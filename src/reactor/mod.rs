//! The reactor: readiness polling over `mio`, and the only module that talks
//! to the OS about file descriptors.
//!
//! Design:
//! - One `mio::Poll` per loop. `wait()` blocks in `epoll_wait`/`kevent` and is
//!   always called with the GIL released; the `Poll` sits behind a mutex that
//!   only the loop's own thread ever takes.
//! - Registration goes through a cloned `mio::Registry`, which needs no lock
//!   (it only issues `epoll_ctl`/`kevent` calls).
//! - mio is edge-triggered. Users of `add_reader`/`add_writer` expect asyncio's
//!   level-triggered semantics, so the loop re-arms those fds after each event
//!   (`rearm`, an `EPOLL_CTL_MOD`): if the fd is still ready when the loop next
//!   polls, it is reported again. Native transports read and write until
//!   `WouldBlock` and need no re-arming.
//! - A `mio::Waker` (an eventfd on Linux) lets any thread interrupt `wait()`.
//! - `close()` (from `loop.close()`) closes the poller, the registry's
//!   duplicate of it and the waker at once, as asyncio closes its selector
//!   and self-pipe: a closed loop holds no fd. The registry and the waker
//!   sit behind a read-write lock so that no thread can use an fd number
//!   while it is being closed (and maybe reused); after `close()` every
//!   operation fails with `EBADF`, except `wake()`, which has nothing to
//!   wake and succeeds.
//! - Every raw syscall of the crate is in this module, under one contract
//!   (`syscall`: `-1` is `errno`'s `io::Error`, `EINTR` is retried, so
//!   callers see `WouldBlock` and nothing else to wait on). Addresses are
//!   decoded and encoded in one place (`addr`).
//! - Unix only for now (raw fds, `libc` calls); `crate::portability` lists
//!   what a Windows port changes here.

pub mod addr;
pub mod clock;
pub mod fs;
pub mod net;
pub mod pipes;
pub mod syscall;

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use parking_lot::{Mutex, RwLock};

/// The token reserved for the waker.
const WAKER_TOKEN: Token = Token(usize::MAX);

/// What an fd was found ready for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness(u8);

impl Readiness {
    pub const READABLE: u8 = 1;
    pub const WRITABLE: u8 = 2;
    pub const READ_CLOSED: u8 = 4;
    pub const WRITE_CLOSED: u8 = 8;
    pub const ERROR: u8 = 16;

    pub fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// Readable, at EOF, or in error: a reader should run.
    #[inline]
    pub fn for_reader(self) -> bool {
        self.0 & (Self::READABLE | Self::READ_CLOSED | Self::ERROR) != 0
    }

    /// Writable, closed for writing, or in error: a writer should run.
    #[inline]
    pub fn for_writer(self) -> bool {
        self.0 & (Self::WRITABLE | Self::WRITE_CLOSED | Self::ERROR) != 0
    }

    /// The part of this readiness a reader acts on (an error goes to both).
    #[inline]
    pub fn reader_part(self) -> Self {
        Self(self.0 & (Self::READABLE | Self::READ_CLOSED | Self::ERROR))
    }

    /// The part of this readiness a writer acts on (an error goes to both).
    #[inline]
    pub fn writer_part(self) -> Self {
        Self(self.0 & (Self::WRITABLE | Self::WRITE_CLOSED | Self::ERROR))
    }

    #[inline]
    pub fn is_error(self) -> bool {
        self.0 & Self::ERROR != 0
    }

    #[inline]
    pub fn is_read_closed(self) -> bool {
        self.0 & Self::READ_CLOSED != 0
    }
}

/// Which directions an fd is watched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Read,
    Write,
    Both,
}

impl Want {
    /// The combination of wanting reads and writes, if any.
    pub fn from_flags(read: bool, write: bool) -> Option<Want> {
        match (read, write) {
            (true, true) => Some(Want::Both),
            (true, false) => Some(Want::Read),
            (false, true) => Some(Want::Write),
            (false, false) => None,
        }
    }

    /// Whether watching for `self` reports every direction `other` needs.
    #[inline]
    pub fn covers(self, other: Want) -> bool {
        self == Want::Both || self == other
    }

    /// `self` without the directions of `other` (None if nothing is left).
    pub fn without(self, read: bool, write: bool) -> Option<Want> {
        let (r, w) = match self {
            Want::Read => (true, false),
            Want::Write => (false, true),
            Want::Both => (true, true),
        };
        Want::from_flags(r && !read, w && !write)
    }

    fn interest(self) -> Interest {
        match self {
            Want::Read => Interest::READABLE,
            Want::Write => Interest::WRITABLE,
            Want::Both => Interest::READABLE | Interest::WRITABLE,
        }
    }
}

/// The poller, its event buffer, the registry and the waker of one loop.
pub struct Reactor {
    /// The poller and its event buffer; locked only by `wait()` and
    /// `close()`. `None` once closed.
    poll: Mutex<Option<(Poll, Events)>>,
    /// For (re/de)registration while another thread may be in `wait()`,
    /// and the waker that interrupts `wait()` from any thread. `None` once
    /// closed.
    handles: RwLock<Option<(Registry, Waker)>>,
    /// The `epoll_ctl`/`kevent` changes asked for so far (for tests and
    /// introspection: `LoopCore._reactor_ctl_calls`).
    ctl_calls: AtomicU64,
}

fn closed() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

impl Reactor {
    pub fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(&registry, WAKER_TOKEN)?;
        Ok(Self {
            poll: Mutex::new(Some((poll, Events::with_capacity(1024)))),
            handles: RwLock::new(Some((registry, waker))),
            ctl_calls: AtomicU64::new(0),
        })
    }

    /// Closes the poller and the waker (their fds). Call when no `wait()`
    /// is in progress (the loop is not running).
    pub fn close(&self) {
        let handles = self.handles.write().take();
        drop(handles);
        let poll = self.poll.lock().take();
        drop(poll);
    }

    /// Runs `f` with the registry, or fails with `EBADF` once closed.
    fn with_registry<T>(&self, f: impl FnOnce(&Registry) -> io::Result<T>) -> io::Result<T> {
        self.ctl_calls.fetch_add(1, Ordering::Relaxed);
        match &*self.handles.read() {
            Some((registry, _)) => f(registry),
            None => Err(closed()),
        }
    }

    /// Waits up to `timeout` (forever if None) and appends `(token,
    /// readiness)` for each ready fd to `out`. Wake-ups are not reported.
    /// Call with the GIL released.
    pub fn wait(
        &self,
        timeout: Option<Duration>,
        out: &mut Vec<(usize, Readiness)>,
    ) -> io::Result<()> {
        let mut guard = self.poll.lock();
        let (poll, events) = guard.as_mut().ok_or_else(closed)?;
        poll.poll(events, timeout)?;
        for ev in events.iter() {
            if ev.token() == WAKER_TOKEN {
                continue;
            }
            let mut bits = 0;
            if ev.is_readable() {
                bits |= Readiness::READABLE;
            }
            if ev.is_writable() {
                bits |= Readiness::WRITABLE;
            }
            if ev.is_read_closed() {
                bits |= Readiness::READ_CLOSED;
            }
            if ev.is_write_closed() {
                bits |= Readiness::WRITE_CLOSED;
            }
            if ev.is_error() {
                bits |= Readiness::ERROR;
            }
            out.push((ev.token().0, Readiness(bits)));
        }
        Ok(())
    }

    /// Starts watching `fd` under `token`. If the kernel still has this
    /// very file registered under `fd` (`EEXIST`: an entry the loop gave up
    /// without the kernel forgetting it, e.g. a socket detached and
    /// wrapped again), the registration is changed to `token` and `want`
    /// instead, so the old token is never reported again.
    pub fn register(&self, fd: RawFd, token: usize, want: Want) -> io::Result<()> {
        match self.with_registry(|r| r.register(&mut SourceFd(&fd), Token(token), want.interest()))
        {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => self.modify(fd, token, want),
            other => other,
        }
    }

    /// Changes what `fd` is watched for and re-arms it, without falling
    /// back to registering: `ENOENT` says the kernel does not have the file
    /// now under `fd` registered (the fd was closed, maybe reused), which
    /// the caller wants to know (see `event_loop::io`, new tokens).
    pub fn modify(&self, fd: RawFd, token: usize, want: Want) -> io::Result<()> {
        self.with_registry(|r| r.reregister(&mut SourceFd(&fd), Token(token), want.interest()))
    }

    /// The `epoll_ctl`/`kevent` changes asked for since the reactor was made.
    pub fn ctl_calls(&self) -> u64 {
        self.ctl_calls.load(Ordering::Relaxed)
    }

    /// Changes what `fd` is watched for. Also re-arms it: if the fd is ready
    /// now, the next `wait()` reports it again (level-triggered emulation).
    /// An fd that was closed and reopened since it was registered (so the
    /// kernel forgot it) is registered afresh under the same token: for
    /// owners that never close their fd while registered (native
    /// watchers); shared entries use `modify` and take a new token.
    pub fn rearm(&self, fd: RawFd, token: usize, want: Want) -> io::Result<()> {
        match self.modify(fd, token, want) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.register(fd, token, want),
            other => other,
        }
    }

    /// Stops watching `fd`. Errors (a closed fd) are ignored: the kernel
    /// already forgot a closed fd.
    pub fn deregister(&self, fd: RawFd) {
        let _ = self.with_registry(|r| r.deregister(&mut SourceFd(&fd)));
    }

    /// Interrupts a `wait()` in progress (or the next one).
    pub fn wake(&self) -> io::Result<()> {
        match &*self.handles.read() {
            Some((_, waker)) => waker.wake(),
            None => Ok(()),
        }
    }
}

/// Socket syscall wrappers for the low-level socket operations and UDP.
pub mod sockets;

pub use syscall::{take_error, would_block};

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn readable_is_reported_and_rearm_is_level_triggered() {
        let r = Reactor::new().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        r.register(b.as_raw_fd(), 7, Want::Read).unwrap();
        let mut out = Vec::new();
        r.wait(Some(Duration::from_millis(0)), &mut out).unwrap();
        assert!(out.is_empty());
        a.write_all(b"x").unwrap();
        r.wait(Some(Duration::from_secs(5)), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 7);
        assert!(out[0].1.for_reader());
        // Edge-triggered: nothing new without re-arming...
        out.clear();
        r.wait(Some(Duration::from_millis(0)), &mut out).unwrap();
        assert!(out.is_empty());
        // ...but re-arming reports the unread byte again.
        r.rearm(b.as_raw_fd(), 7, Want::Read).unwrap();
        r.wait(Some(Duration::from_millis(0)), &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn register_over_a_live_registration_takes_the_new_token() {
        let r = Reactor::new().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        r.register(b.as_raw_fd(), 1, Want::Read).unwrap();
        r.register(b.as_raw_fd(), 2, Want::Read).unwrap(); // EEXIST: MOD
        let before = r.ctl_calls();
        a.write_all(b"x").unwrap();
        let mut out = Vec::new();
        r.wait(Some(Duration::from_secs(5)), &mut out).unwrap();
        assert_eq!(out.iter().map(|e| e.0).collect::<Vec<_>>(), vec![2]);
        // modify() does not register: a closed fd's number says ENOENT/EBADF.
        let (c, _d) = UnixStream::pair().unwrap();
        assert!(r.modify(c.as_raw_fd(), 3, Want::Read).is_err());
        assert_eq!(r.ctl_calls(), before + 1);
    }

    #[test]
    fn closed_reactor_fails_cleanly() {
        // (That close() releases the fds is tested in Python, where no
        // other test opens fds concurrently.)
        let r = Reactor::new().unwrap();
        r.close();
        let (_a, b) = UnixStream::pair().unwrap();
        let err = r.register(b.as_raw_fd(), 1, Want::Read).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        let mut out = Vec::new();
        assert!(r.wait(Some(Duration::ZERO), &mut out).is_err());
        r.wake().unwrap();
        r.deregister(b.as_raw_fd());
    }

    #[test]
    fn waker_interrupts_wait_and_is_not_reported() {
        let r = std::sync::Arc::new(Reactor::new().unwrap());
        let r2 = r.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            r2.wake().unwrap();
        });
        let mut out = Vec::new();
        let start = std::time::Instant::now();
        r.wait(Some(Duration::from_secs(10)), &mut out).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(out.is_empty());
        t.join().unwrap();
    }
}
