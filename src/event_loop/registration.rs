//! `Registration`: a native resource's claim on its fd in the loop's table,
//! the one way transports, pipes, datagram endpoints and listeners talk to
//! the reactor (as every tokio resource goes through its `Registration`).
//!
//! A resource keeps one `Registration` in its state, next to the fd it
//! owns, and tells it the directions it wants (`set_interest`); the first
//! call claims the fd (an `IoKind::Native` entry, see `io`), later calls
//! change what the reactor watches and cost no syscall when nothing
//! changed. `rearm` has the next poll report the fd again if it is still
//! ready (a resource that stopped reading before `WouldBlock`, for
//! fairness). `take` + `deregister` give the fd up.
//!
//! Socket operations (`sockops`) do not own their fd: they wait on one side
//! of a shared entry, next to `add_reader`/`add_writer` callbacks, through
//! `SideWaiter`; between two waits the side stays armed, idle, and the
//! next wait costs no syscall when the operation vouches for it (see `io`).
//!
//! Invariants:
//! - `token` is `Some` exactly while the loop's table has the resource's
//!   entry (or the loop emptied its table on close), and `interest` is
//!   then what that entry watches. Unregistered, `interest` is `None`.
//! - The table's entry holds the resource's watcher (which holds the
//!   resource), so the entry is what keeps a registered resource alive:
//!   deregistering drops that reference. `deregister` drops it after the
//!   loop's lock; a caller that holds its own lock may call it only if
//!   the resource is alive without the entry (it is borrowed, `slf`), or
//!   else must release its lock first (`UdpInner`, whose watcher is
//!   itself).
//! - The loop is passed in, not kept: each resource keeps its loop where
//!   its other references are (and clears it with them on close).
//! - A `Registration` dropped while registered leaves the entry to the
//!   loop, which drops it on close; resources deregister before they
//!   close their fd, so that a reused fd number is never watched for them.

use std::os::fd::RawFd;
use std::sync::Arc;

use pyo3::prelude::*;

use super::io::{IoWatcher, SetError, Waiter};
use super::LoopCore;
use crate::errors;
use crate::reactor::Want;

/// A resource's claim on the fd it owns.
#[derive(Debug, Default)]
pub(crate) struct Registration {
    /// The entry's token in the loop's table while registered.
    token: Option<usize>,
    /// What the reactor watches the fd for while registered.
    interest: Option<Want>,
}

impl Registration {
    /// Not registered yet.
    pub(crate) const fn new() -> Self {
        Self {
            token: None,
            interest: None,
        }
    }

    /// Whether the loop watches the fd for this resource.
    #[inline]
    pub(crate) fn is_registered(&self) -> bool {
        self.token.is_some()
    }

    /// What the reactor watches the fd for (`None` while unregistered).
    #[inline]
    pub(crate) fn interest(&self) -> Option<Want> {
        self.interest
    }

    /// Watches `fd` for `want`: registers it the first time (with the
    /// watcher `watcher()` makes; fails with `FileExistsError` if another
    /// native watcher owns `fd`, and replaces the callbacks and socket
    /// operations that waited on it), else changes the interest if it
    /// differs. On failure the registration is unchanged.
    #[inline]
    pub(crate) fn set_interest(
        &mut self,
        lp: &LoopCore,
        fd: RawFd,
        want: Want,
        watcher: impl FnOnce() -> Arc<dyn IoWatcher>,
    ) -> PyResult<()> {
        match self.token {
            // The common case: nothing changes.
            Some(_) if self.interest == Some(want) => return Ok(()),
            Some(token) => change(lp, token, want)?,
            None => self.token = Some(register(lp, fd, want, watcher())?),
        }
        self.interest = Some(want);
        Ok(())
    }

    /// Has the next poll report the fd again if it is still ready.
    pub(crate) fn rearm(&self, lp: &LoopCore) -> PyResult<()> {
        let Some(token) = self.token else {
            return Ok(());
        };
        let result = lp.state.lock().io.rearm_native(&lp.reactor, token);
        result.map_err(errors::os_error)
    }

    /// Moves the claim out, leaving this one unregistered: taken under the
    /// resource's lock, deregistered after it.
    #[must_use = "deregister what was taken"]
    pub(crate) fn take(&mut self) -> Self {
        std::mem::take(self)
    }

    /// Gives the fd up (nothing if unregistered). The entry, and with it
    /// the table's reference to the watcher, is dropped after the loop's
    /// lock.
    pub(crate) fn deregister(self, lp: &LoopCore) {
        if let Some(token) = self.token {
            let removed = lp.state.lock().io.remove(&lp.reactor, token);
            drop(removed);
        }
    }
}

/// Changes what the entry under `token` watches.
fn change(lp: &LoopCore, token: usize, want: Want) -> PyResult<()> {
    let result = lp.state.lock().io.set_native_want(&lp.reactor, token, want);
    result.map_err(errors::os_error)
}

/// Adds the native entry for `fd`; what waited on it is disposed of.
fn register(lp: &LoopCore, fd: RawFd, want: Want, watcher: Arc<dyn IoWatcher>) -> PyResult<usize> {
    lp.check_closed()?;
    let (evicted, result) = lp
        .state
        .lock()
        .io
        .add_native(&lp.reactor, fd, want, watcher);
    if !evicted.is_empty() {
        // The caller may hold its own lock here. What is disposed of
        // (callbacks and pending operations of a stale or taken-over fd)
        // was created before this watcher and holds no reference to it, so
        // nothing it releases can re-enter the caller.
        Python::attach(|py| evicted.dispose(py));
    }
    result.map_err(errors::os_error)
}

/// A socket operation's wait on one side of an fd it does not own (the
/// loop's `SockOps`, one per fd): the fd's entry is shared with
/// `add_reader`/`add_writer` callbacks, one waiter per side.
pub(crate) struct SideWaiter {
    /// The fd waited on.
    fd: RawFd,
}

impl SideWaiter {
    pub(crate) const fn new(fd: RawFd) -> Self {
        Self { fd }
    }

    /// The fd waited on.
    #[inline]
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// Makes `watcher` the waiter on the reader (`write == false`) or
    /// writer side, replacing a callback or waiter there, as asyncio's
    /// `_add_reader`/`_add_writer` do, and returns the token of the fd's
    /// entry. `trust`: the token the caller vouches is still registered
    /// for the file now under the fd (`io::IoTable::set_waiter`: then no
    /// syscall if it watches that side already). Fails with asyncio's
    /// `RuntimeError` if a transport owns the fd, or with the OS error.
    pub(crate) fn wait(
        &self,
        py: Python<'_>,
        lp: &LoopCore,
        write: bool,
        watcher: Arc<dyn IoWatcher>,
        trust: Option<usize>,
    ) -> PyResult<usize> {
        lp.check_closed()?;
        let (replaced, result) = lp.state.lock().io.set_waiter(
            py,
            &lp.reactor,
            (self.fd, None),
            write,
            Waiter::Native(watcher),
            trust,
        );
        replaced.dispose(py);
        match result {
            Ok(token) => Ok(token),
            Err(SetError::Taken(who)) => Err(errors::fd_taken(self.fd, &who)),
            Err(SetError::Os(e)) => Err(errors::os_error(e)),
        }
    }

    /// Takes the waiter `id` (see `io::watcher_id`) off one side, if it is
    /// still the one there. The side stays armed, idle (see `io`).
    pub(crate) fn clear(&self, py: Python<'_>, lp: &LoopCore, write: bool, id: *const ()) {
        let (removed, _) =
            lp.state
                .lock()
                .io
                .remove_waiter(py, &lp.reactor, self.fd, write, Some(id));
        removed.forget();
    }

    /// Has the next poll report the fd again if it is still ready.
    pub(crate) fn rearm(&self, lp: &LoopCore) -> PyResult<()> {
        let result = lp.state.lock().io.rearm_fd(&lp.reactor, self.fd);
        result.map_err(errors::os_error)
    }
}
