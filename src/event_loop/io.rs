//! The loop's table of watched file descriptors.
//!
//! Each fd has one entry, under a token that is never reused (so an event
//! that arrives for an entry removed in the same iteration finds nothing).
//! An entry is either
//! - `Shared`: one waiter per direction, as asyncio's selector keeps one
//!   reader and one writer per fd. A waiter is an `add_reader`/`add_writer`
//!   callback, or a native waiter for that one direction (a pending `sock_*`
//!   operation, see `sockops`). Setting a direction replaces whatever waited
//!   there, of either kind, as asyncio's `_add_reader` cancels the old
//!   reader: `add_reader` on an fd a `sock_recv` waits on takes its place
//!   (the operation's future then stays pending until cancelled), and
//!   `remove_reader` removes the operation's waiter and returns true.
//! - `Native`: a native watcher that owns the fd (a Rust transport, server
//!   or pipe). `add_reader` & co. on its fd are refused, as asyncio's
//!   `_ensure_fd_no_transport` does. Registering one on an fd that has a
//!   `Shared` entry evicts that entry: either the fd number was closed and
//!   reused (the entry is stale), or a transport takes over a socket and
//!   replaces its callbacks, as asyncio's transports do with `_add_reader`.
//!
//! Invariants:
//! - The reactor watches an fd exactly for the directions its entry wants;
//!   an entry that wants nothing is removed and deregistered. Every change
//!   of a `Shared` entry re-arms the fd, which registers it afresh if it was
//!   closed and reused since (the kernel forgot the old file).
//! - No Python code runs and no Python object is dropped under the loop's
//!   lock: what a change takes out is returned as `Replaced` and disposed of
//!   by the caller after the lock is released.
//! - A `Shared` entry's native waiters are visited by their owner (the
//!   loop's `SockOps`), not by `traverse`: one reference, one visit.
//! - An entry that `add_reader`/`add_writer` created with a file object
//!   keeps it, as asyncio's selector key does: once the object's `fileno()`
//!   is -1 (a closed socket), `remove_reader(sock)` still finds the entry by
//!   the object itself (`fd_of_fileobj`).

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

pub(crate) use super::waiters::{watcher_id, IoWatcher, Replaced, Waiter, Watch, Watched};
use crate::handles::Handle;
use crate::reactor::{Reactor, Readiness, Want};

/// Puts what a removed entry held into `out`.
fn push_entry(out: &mut Replaced, entry: IoEntry) {
    out.objs.extend(entry.fileobj);
    if let IoKind::Shared { reader, writer } = entry.kind {
        out.push(reader, false);
        out.push(writer, true);
    }
}

/// What to do with one watched fd.
pub(crate) enum IoKind {
    /// One waiter per direction (callbacks and socket operations).
    Shared {
        reader: Option<Waiter>,
        writer: Option<Waiter>,
    },
    /// A native watcher that owns the fd.
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
    /// The file object `add_reader`/`add_writer` created the entry with.
    pub(crate) fileobj: Option<Py<PyAny>>,
}

/// An entry's reader and writer slots.
type WaiterSlots<'a> = (&'a mut Option<Waiter>, &'a mut Option<Waiter>);

impl IoEntry {
    /// Its reader and writer slots, or the native watcher that owns the fd.
    fn waiters(&mut self) -> Result<WaiterSlots<'_>, &Arc<dyn IoWatcher>> {
        match &mut self.kind {
            IoKind::Shared { reader, writer } => Ok((reader, writer)),
            IoKind::Native(w) => Err(w),
        }
    }
}

/// A native watcher to call: the token of its entry, itself and what it
/// is to act on.
pub(crate) type NativeCall = (usize, Arc<dyn IoWatcher>, Readiness);

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

/// Why a waiter could not be set.
pub(crate) enum SetError {
    /// A native watcher owns the fd (its description).
    Taken(String),
    /// The OS refused the fd.
    Os(std::io::Error),
}

impl IoTable {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of watched fds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry of a token `by_fd` gave.
    fn entry_of(&mut self, token: usize) -> &mut IoEntry {
        let entry = self.entries.get_mut(&token);
        entry.expect("by_fd and entries agree")
    }

    /// Registers a new entry; on failure the entry is given back.
    fn insert(
        &mut self,
        reactor: &Reactor,
        entry: IoEntry,
    ) -> Result<usize, (std::io::Error, IoEntry)> {
        let token = self.next_token;
        if let Err(e) = reactor.register(entry.fd, token, entry.want) {
            return Err((e, entry));
        }
        self.next_token += 1;
        self.by_fd.insert(entry.fd, token);
        self.entries.insert(token, entry);
        Ok(token)
    }

    /// The fd of the entry created with the file object `obj` (compared by
    /// identity; no Python code runs).
    pub(crate) fn fd_of_fileobj(&self, obj: *mut pyo3::ffi::PyObject) -> Option<RawFd> {
        self.entries
            .values()
            .find(|e| e.fileobj.as_ref().is_some_and(|f| f.as_ptr() == obj))
            .map(|e| e.fd)
    }

    fn remove_token(&mut self, reactor: &Reactor, token: usize) -> Option<IoEntry> {
        let entry = self.entries.remove(&token)?;
        self.by_fd.remove(&entry.fd);
        reactor.deregister(entry.fd);
        Some(entry)
    }

    /// Removes an entry whole, what it held into `out`.
    fn evict(&mut self, reactor: &Reactor, token: usize, out: &mut Replaced) {
        if let Some(entry) = self.remove_token(reactor, token) {
            push_entry(out, entry);
        }
    }

    /// Puts `waiter` on the reader (`write == false`) or writer side of
    /// `fd`, replacing what waited there (returned, unless it was this very
    /// native waiter parking again). A new entry keeps `fileobj`. Fails if
    /// a native watcher owns `fd`, or if the OS refuses the fd: then, as
    /// asyncio's selector does when `epoll_ctl` fails, the fd's entry is
    /// dropped whole (returned too).
    pub(crate) fn set_waiter(
        &mut self,
        py: Python<'_>,
        reactor: &Reactor,
        (fd, fileobj): (RawFd, Option<Py<PyAny>>),
        write: bool,
        waiter: Waiter,
    ) -> (Replaced, Result<(), SetError>) {
        let mut replaced = Replaced::default();
        let Some(&token) = self.by_fd.get(&fd) else {
            let (reader, writer, want) = if write {
                (None, Some(waiter), Want::Write)
            } else {
                (Some(waiter), None, Want::Read)
            };
            let entry = IoEntry {
                fd,
                want,
                kind: IoKind::Shared { reader, writer },
                fileobj,
            };
            return match self.insert(reactor, entry) {
                Ok(_) => (replaced, Ok(())),
                Err((e, entry)) => {
                    push_entry(&mut replaced, entry);
                    (replaced, Err(SetError::Os(e)))
                }
            };
        };
        replaced.objs.extend(fileobj);
        let entry = self.entry_of(token);
        let (reader, writer) = match entry.waiters() {
            Ok(both) => both,
            Err(w) => {
                let who = w.describe(py);
                replaced.push(Some(waiter), write);
                return (replaced, Err(SetError::Taken(who)));
            }
        };
        let side = if write { &mut *writer } else { &mut *reader };
        let id = match &waiter {
            Waiter::Native(w) => Some(Arc::as_ptr(w) as *const ()),
            Waiter::Callback(_) => None,
        };
        match side.replace(waiter) {
            Some(old) if id.is_some_and(|id| old.is(id)) => {}
            old => replaced.push(old, write),
        }
        let want = Want::from_flags(reader.is_some(), writer.is_some()).expect("one was just set");
        entry.want = want;
        if let Err(e) = reactor.rearm(fd, token, want) {
            self.evict(reactor, token, &mut replaced);
            return (replaced, Err(SetError::Os(e)));
        }
        (replaced, Ok(()))
    }

    /// Removes the reader or writer side of `fd` and returns what waited
    /// there. With `only`, removes it only if that native waiter is still
    /// the one there (a socket operation that finished or was cancelled),
    /// and an fd a native watcher owns is left alone; without, that is an
    /// error (`Taken`), and so is an fd the OS no longer knows while the
    /// other side still waits: as asyncio's selector does when `epoll_ctl`
    /// fails, the entry is then dropped whole (returned).
    pub(crate) fn remove_waiter(
        &mut self,
        py: Python<'_>,
        reactor: &Reactor,
        fd: RawFd,
        write: bool,
        only: Option<*const ()>,
    ) -> (Replaced, Result<(), SetError>) {
        let mut replaced = Replaced::default();
        let Some(&token) = self.by_fd.get(&fd) else {
            return (replaced, Ok(()));
        };
        let entry = self.entry_of(token);
        let (reader, writer) = match entry.waiters() {
            Ok(both) => both,
            Err(_) if only.is_some() => return (replaced, Ok(())),
            Err(w) => return (replaced, Err(SetError::Taken(w.describe(py)))),
        };
        let side = if write { &mut *writer } else { &mut *reader };
        if only.is_some_and(|id| !side.as_ref().is_some_and(|w| w.is(id))) {
            return (replaced, Ok(()));
        }
        replaced.push(side.take(), write);
        match Want::from_flags(reader.is_some(), writer.is_some()) {
            Some(want) => {
                entry.want = want;
                if let Err(e) = reactor.rearm(fd, token, want) {
                    if only.is_none() {
                        self.evict(reactor, token, &mut replaced);
                        return (replaced, Err(SetError::Os(e)));
                    }
                }
            }
            None => self.evict(reactor, token, &mut replaced),
        }
        (replaced, Ok(()))
    }

    /// Registers a native watcher that owns `fd`; fails if another one
    /// owns it already. A `Shared` entry on `fd` is evicted (returned).
    pub(crate) fn add_native(
        &mut self,
        reactor: &Reactor,
        fd: RawFd,
        want: Want,
        watcher: Arc<dyn IoWatcher>,
    ) -> (Replaced, std::io::Result<usize>) {
        let mut replaced = Replaced::default();
        if let Some(&token) = self.by_fd.get(&fd) {
            if matches!(
                self.entries.get(&token).map(|e| &e.kind),
                Some(IoKind::Native(_))
            ) {
                let e = std::io::Error::from_raw_os_error(libc::EEXIST);
                return (replaced, Err(e));
            }
            self.evict(reactor, token, &mut replaced);
        }
        let entry = IoEntry {
            fd,
            want,
            kind: IoKind::Native(watcher),
            fileobj: None,
        };
        let result = self.insert(reactor, entry).map_err(|(e, _)| e);
        (replaced, result)
    }

    /// Changes the directions a native watcher waits for.
    pub(crate) fn set_native_want(
        &mut self,
        reactor: &Reactor,
        token: usize,
        want: Want,
    ) -> std::io::Result<()> {
        if let Some(entry) = self.entries.get_mut(&token) {
            if entry.want != want {
                entry.want = want;
                reactor.rearm(entry.fd, token, want)?;
            }
        }
        Ok(())
    }

    /// Re-arms the fd under `token` so that the next poll reports it again
    /// if it is still ready (a native watcher that stopped reading early).
    pub(crate) fn rearm_native(&mut self, reactor: &Reactor, token: usize) -> std::io::Result<()> {
        match self.entries.get(&token) {
            Some(entry) => reactor.rearm(entry.fd, token, entry.want),
            None => Ok(()),
        }
    }

    /// Re-arms `fd` (a socket operation that is still pending although its
    /// fd was reported ready).
    pub(crate) fn rearm_fd(&mut self, reactor: &Reactor, fd: RawFd) -> std::io::Result<()> {
        match self.by_fd.get(&fd) {
            Some(&token) => self.rearm_native(reactor, token),
            None => Ok(()),
        }
    }

    /// Removes the entry under `token` (a native watcher going away).
    pub(crate) fn remove(&mut self, reactor: &Reactor, token: usize) -> Option<IoEntry> {
        self.remove_token(reactor, token)
    }

    /// Resolves an event. Callbacks that should run are appended to `ready`
    /// (as asyncio does, they run with the other ready callbacks) and the
    /// fd is re-armed (level-triggered emulation); cancelled callbacks are
    /// dropped from the entry into `garbage`. Native watchers to call are
    /// appended to `natives` (one call per watcher, with the readiness of
    /// the sides it waits on).
    pub(crate) fn dispatch(
        &mut self,
        py: Python<'_>,
        reactor: &Reactor,
        (token, ready): (usize, Readiness),
        queue: &mut std::collections::VecDeque<Py<Handle>>,
        garbage: &mut Vec<Py<PyAny>>,
        natives: &mut Vec<NativeCall>,
    ) {
        let Some(entry) = self.entries.get_mut(&token) else {
            return;
        };
        let (reader, writer) = match &mut entry.kind {
            IoKind::Native(w) => {
                natives.push((token, w.clone(), ready));
                return;
            }
            IoKind::Shared { reader, writer } => (reader, writer),
        };
        let mut callbacks = false;
        let mut called: Option<(Arc<dyn IoWatcher>, Readiness)> = None;
        for (side, fire, part) in [
            (reader, ready.for_reader(), ready.reader_part()),
            (writer, ready.for_writer(), ready.writer_part()),
        ] {
            match side {
                Some(Waiter::Callback(h)) => {
                    callbacks = true;
                    if !fire {
                        continue;
                    }
                    if h.get().is_cancelled() {
                        if let Some(Waiter::Callback(h)) = side.take() {
                            garbage.push(h.into_any());
                        }
                    } else {
                        queue.push_back(h.clone_ref(py));
                    }
                }
                Some(Waiter::Native(w)) if fire => match &called {
                    // One watcher on both sides: one call with both.
                    Some((c, _)) if Arc::ptr_eq(c, w) => called = Some((c.clone(), ready)),
                    Some((c, r)) => {
                        natives.push((token, c.clone(), *r));
                        called = Some((w.clone(), part));
                    }
                    None => called = Some((w.clone(), part)),
                },
                _ => {}
            }
        }
        if let Some((w, r)) = called {
            natives.push((token, w, r));
        }
        if !callbacks {
            return; // native waiters re-arm for themselves
        }
        let (fd, reader, writer) = match &entry.kind {
            IoKind::Shared { reader, writer } => (entry.fd, reader.is_some(), writer.is_some()),
            IoKind::Native(_) => unreachable!(),
        };
        match Want::from_flags(reader, writer) {
            None => {
                if let Some(e) = self.remove_token(reactor, token) {
                    garbage.extend(e.fileobj);
                }
            }
            Some(now) => {
                entry.want = now;
                let _ = reactor.rearm(fd, token, now);
            }
        }
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
            if let Some(f) = &e.fileobj {
                visit.call(f)?;
            }
            match &e.kind {
                IoKind::Shared { reader, writer } => {
                    for side in [reader, writer] {
                        if let Some(Waiter::Callback(h)) = side {
                            visit.call(h)?;
                        }
                    }
                }
                IoKind::Native(w) => w.traverse(visit)?,
            }
        }
        Ok(())
    }
}
