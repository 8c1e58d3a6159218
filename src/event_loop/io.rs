//! The loop's table of watched file descriptors.
//!
//! Each fd has one entry, under a token that is never reused (so an event
//! that arrives for an entry removed in the same iteration finds nothing).
//! An entry is either a pair of `add_reader`/`add_writer` callbacks, or a
//! native watcher (a Rust transport, server or socket operation) that the
//! loop calls directly when the fd is ready.
//!
//! Invariant: the reactor watches an fd exactly for the directions its entry
//! wants; an entry that wants nothing is removed and deregistered.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use super::LoopCore;
use crate::handles::Handle;
use crate::reactor::{Reactor, Readiness, Want};

/// Something native that wants to hear when an fd is ready.
pub trait IoWatcher: Send + Sync {
    /// Called on the loop's thread, with the GIL held, when the fd is ready.
    /// An error is reported to the loop's exception handler (or propagated,
    /// for `KeyboardInterrupt`/`SystemExit`).
    fn on_ready(&self, py: Python<'_>, lp: &Bound<'_, LoopCore>, ready: Readiness) -> PyResult<()>;

    /// Visits the Python objects the watcher holds.
    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError>;

    /// What `add_reader` says when the fd is taken (e.g. "transport <...>").
    fn describe(&self, py: Python<'_>) -> String;
}

/// What to do with one watched fd.
pub(crate) enum IoKind {
    /// `add_reader`/`add_writer` callbacks.
    Callbacks {
        reader: Option<Py<Handle>>,
        writer: Option<Py<Handle>>,
    },
    /// A native watcher.
    Native(Arc<dyn IoWatcher>),
}

/// One watched fd.
pub(crate) struct IoEntry {
    /// The fd.
    pub(crate) fd: RawFd,
    /// The directions the reactor watches.
    pub(crate) want: Want,
    /// Who is told.
    pub(crate) kind: IoKind,
}

/// What an event resolved to; acted on outside the loop's lock.
pub(crate) enum Dispatch {
    Nothing,
    Native(Arc<dyn IoWatcher>),
}

/// All fds the loop watches.
#[derive(Default)]
pub(crate) struct IoTable {
    /// Entries by token.
    entries: HashMap<usize, IoEntry>,
    /// Token by fd.
    by_fd: HashMap<RawFd, usize>,
    /// The next token to hand out.
    next_token: usize,
}

impl IoTable {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of watched fds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn entry_for_fd(&self, fd: RawFd) -> Option<&IoEntry> {
        self.by_fd.get(&fd).and_then(|t| self.entries.get(t))
    }

    fn insert(
        &mut self,
        reactor: &Reactor,
        fd: RawFd,
        want: Want,
        kind: IoKind,
    ) -> std::io::Result<usize> {
        let token = self.next_token;
        reactor.register(fd, token, want)?;
        self.next_token += 1;
        self.entries.insert(token, IoEntry { fd, want, kind });
        self.by_fd.insert(fd, token);
        Ok(token)
    }

    fn remove_token(&mut self, reactor: &Reactor, token: usize) -> Option<IoEntry> {
        let entry = self.entries.remove(&token)?;
        self.by_fd.remove(&entry.fd);
        reactor.deregister(entry.fd);
        Some(entry)
    }

    /// Sets the reader (`write == false`) or writer callback of `fd`.
    /// Returns the handle it replaces. Fails if a native watcher owns `fd`
    /// (the `Err(Some(description))`) or the OS refuses the fd.
    pub(crate) fn set_callback(
        &mut self,
        py: Python<'_>,
        reactor: &Reactor,
        fd: RawFd,
        write: bool,
        handle: Py<Handle>,
    ) -> Result<Option<Py<Handle>>, SetError> {
        if let Some(&token) = self.by_fd.get(&fd) {
            let entry = self
                .entries
                .get_mut(&token)
                .expect("by_fd and entries agree");
            let (reader, writer) = match &mut entry.kind {
                IoKind::Callbacks { reader, writer } => (reader, writer),
                IoKind::Native(w) => return Err(SetError::Taken(w.describe(py))),
            };
            let old = if write {
                writer.replace(handle)
            } else {
                reader.replace(handle)
            };
            let want =
                Want::from_flags(reader.is_some(), writer.is_some()).expect("one was just set");
            entry.want = want;
            reactor.rearm(fd, token, want).map_err(SetError::Os)?;
            return Ok(old);
        }
        let (reader, writer, want) = if write {
            (None, Some(handle), Want::Write)
        } else {
            (Some(handle), None, Want::Read)
        };
        self.insert(reactor, fd, want, IoKind::Callbacks { reader, writer })
            .map_err(SetError::Os)?;
        Ok(None)
    }

    /// Removes the reader or writer callback of `fd`; returns it. A native
    /// watcher on `fd` is an error (its description).
    pub(crate) fn remove_callback(
        &mut self,
        py: Python<'_>,
        reactor: &Reactor,
        fd: RawFd,
        write: bool,
    ) -> Result<Option<Py<Handle>>, String> {
        let Some(&token) = self.by_fd.get(&fd) else {
            return Ok(None);
        };
        let entry = self
            .entries
            .get_mut(&token)
            .expect("by_fd and entries agree");
        let (reader, writer) = match &mut entry.kind {
            IoKind::Callbacks { reader, writer } => (reader, writer),
            IoKind::Native(w) => return Err(w.describe(py)),
        };
        let old = if write { writer.take() } else { reader.take() };
        if old.is_none() {
            return Ok(None);
        }
        match Want::from_flags(reader.is_some(), writer.is_some()) {
            Some(want) => {
                entry.want = want;
                // An error here means the fd is gone; the kernel forgot it.
                let _ = reactor.rearm(fd, token, want);
            }
            None => {
                self.remove_token(reactor, token);
            }
        }
        Ok(old)
    }

    /// Registers a native watcher for `fd`; fails if `fd` is watched already.
    pub(crate) fn add_native(
        &mut self,
        reactor: &Reactor,
        fd: RawFd,
        want: Want,
        watcher: Arc<dyn IoWatcher>,
    ) -> std::io::Result<usize> {
        if self.by_fd.contains_key(&fd) {
            return Err(std::io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.insert(reactor, fd, want, IoKind::Native(watcher))
    }

    /// Changes the directions a native watcher waits for (`None`: stop
    /// watching but keep the entry... which the table does not allow, so
    /// `None` removes it).
    pub(crate) fn set_native_want(
        &mut self,
        reactor: &Reactor,
        token: usize,
        want: Option<Want>,
    ) -> std::io::Result<Option<IoEntry>> {
        match want {
            None => Ok(self.remove_token(reactor, token)),
            Some(want) => {
                if let Some(entry) = self.entries.get_mut(&token) {
                    if entry.want != want {
                        entry.want = want;
                        reactor.rearm(entry.fd, token, want)?;
                    }
                }
                Ok(None)
            }
        }
    }

    /// Re-arms the fd under `token` so that the next poll reports it again
    /// if it is still ready (a native watcher that stopped reading early).
    pub(crate) fn rearm_native(&mut self, reactor: &Reactor, token: usize) -> std::io::Result<()> {
        match self.entries.get(&token) {
            Some(entry) => reactor.rearm(entry.fd, token, entry.want),
            None => Ok(()),
        }
    }

    /// Removes the entry under `token` (a native watcher going away).
    pub(crate) fn remove(&mut self, reactor: &Reactor, token: usize) -> Option<IoEntry> {
        self.remove_token(reactor, token)
    }

    /// Resolves an event. Callbacks that should run are appended to `ready`
    /// (as asyncio does, they run with the other ready callbacks), the fd is
    /// re-armed (level-triggered emulation), and cancelled callbacks are
    /// dropped from the entry into `garbage`.
    pub(crate) fn dispatch(
        &mut self,
        py: Python<'_>,
        reactor: &Reactor,
        token: usize,
        ready: Readiness,
        queue: &mut std::collections::VecDeque<Py<Handle>>,
        garbage: &mut Vec<Py<Handle>>,
    ) -> Dispatch {
        let Some(entry) = self.entries.get_mut(&token) else {
            return Dispatch::Nothing;
        };
        let (reader, writer) = match &mut entry.kind {
            IoKind::Native(w) => return Dispatch::Native(w.clone()),
            IoKind::Callbacks { reader, writer } => (reader, writer),
        };
        for (slot, fire) in [(reader, ready.for_reader()), (writer, ready.for_writer())] {
            if !fire {
                continue;
            }
            if let Some(h) = slot.as_ref() {
                if h.get().is_cancelled() {
                    garbage.extend(slot.take());
                } else {
                    queue.push_back(h.clone_ref(py));
                }
            }
        }
        let (fd, want) = (entry.fd, entry.want);
        let (reader, writer) = match &entry.kind {
            IoKind::Callbacks { reader, writer } => (reader.is_some(), writer.is_some()),
            IoKind::Native(_) => unreachable!(),
        };
        match Want::from_flags(reader, writer) {
            None => {
                self.remove_token(reactor, token);
            }
            Some(now) => {
                if let Some(e) = self.entries.get_mut(&token) {
                    e.want = now;
                }
                let _ = want;
                let _ = reactor.rearm(fd, token, now);
            }
        }
        Dispatch::Nothing
    }

    /// Empties the table (loop close / GC clear), deregistering every fd.
    pub(crate) fn drain(&mut self, reactor: &Reactor) -> Vec<IoEntry> {
        self.by_fd.clear();
        self.entries
            .drain()
            .map(|(_, e)| {
                reactor.deregister(e.fd);
                e
            })
            .collect()
    }

    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        for e in self.entries.values() {
            match &e.kind {
                IoKind::Callbacks { reader, writer } => {
                    if let Some(h) = reader {
                        visit.call(h)?;
                    }
                    if let Some(h) = writer {
                        visit.call(h)?;
                    }
                }
                IoKind::Native(w) => w.traverse(visit)?,
            }
        }
        Ok(())
    }
}

/// Why a callback could not be set.
pub(crate) enum SetError {
    /// A native watcher owns the fd (its description).
    Taken(String),
    /// The OS refused the fd.
    Os(std::io::Error),
}
