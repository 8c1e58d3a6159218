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
//! Idle entries (socket operations between two waits, as the stream
//! transports keep their interest between two reads):
//! - When a socket operation's waiter leaves its side (it finished or was
//!   cancelled), the direction stays registered with the kernel (no
//!   `epoll_ctl`), and an entry left with no waiter at all stays in the
//!   table, *idle*. An idle side is nobody: `remove_reader` on it returns
//!   false, `add_reader` sets a callback on it (and re-arms), an entry
//!   with no waiter keeps no file object (asyncio's key is gone), a
//!   transport taking the fd evicts it. Idle entries do not count in
//!   `is_empty`/`len` (the loop still skips a zero-timeout poll).
//! - The next socket operation on that side parks without a syscall when
//!   its socket vouches for the registration (`set_waiter`'s `trust`: the
//!   token that operation's watcher armed is still the entry's, and the
//!   same socket object, which still has the fd, armed it; see `sockops`).
//!   That is safe with edge-triggered polling only because every socket
//!   operation tries its syscall, and saw it would block, before it parks:
//!   an edge that came while the side was idle was dropped, but what it
//!   announced was read by that attempt, and anything that comes after
//!   the attempt raises a new edge, reported by a poll that can only run
//!   after the operation parked (the same thread). An operation that did
//!   not see it would block (not tried first, `InterruptedError`) and every
//!   callback re-arm instead.
//! - An idle side that the kernel reports ready is disarmed (its direction
//!   dropped, the entry removed if nothing is left): at most one spurious
//!   report per idle period (an always-writable socket would otherwise
//!   wake the loop at every ACK). A failed disarm (the fd was closed)
//!   removes the entry. So an idle entry lives until its side fires, the
//!   fd is watched again (re-armed, or registered afresh if the number was
//!   reused), a transport takes it, `remove_reader`/`remove_writer`, or
//!   `drain` at close: at most one per fd number, bounded by the process's
//!   fd table.
//!
//! Invariants:
//! - The reactor watches an fd for the directions its entry's `want` says,
//!   and `want` covers every side that has a waiter; only idle sides of a
//!   `Shared` entry (above) may be watched with no waiter. An entry with
//!   no want is removed and deregistered.
//! - A token names one registration of one file: a `Shared` entry whose
//!   re-arm finds that the kernel does not know the file now under its fd
//!   (`ENOENT`: closed, maybe reused) gets a new token before the fd is
//!   registered afresh (`modify_shared`), so an event of the old file (one
//!   still open elsewhere, dup'ed or inherited, keeps its registration and
//!   the old token) is never acted upon for the new one. Registering a
//!   file the kernel still has (`EEXIST`) replaces its token
//!   (`Reactor::register`).
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
    /// A `Shared` entry a socket operation left with no waiter, still
    /// armed (counted in `IoTable::idle`; see the module docs).
    pub(crate) idle: bool,
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
    /// How many entries are idle (no waiter; see the module docs).
    idle: usize,
}

/// Why a waiter could not be set.
pub(crate) enum SetError {
    /// A native watcher owns the fd (its description).
    Taken(String),
    /// The OS refused the fd.
    Os(std::io::Error),
}

impl IoTable {
    /// Whether no fd has a waiter (idle entries do not count).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.len() == self.idle
    }

    /// The number of watched fds (idle entries do not count).
    pub(crate) fn len(&self) -> usize {
        self.entries.len() - self.idle
    }

    /// The number of idle entries (for tests).
    pub(crate) fn idle_len(&self) -> usize {
        self.idle
    }

    /// Re-arms the `Shared` entry under `token` for `want` (recorded), and
    /// returns its token: a new one if the kernel did not know the file now
    /// under the fd (see the module docs). On failure the entry is left
    /// for the caller to evict.
    fn modify_shared(
        &mut self,
        reactor: &Reactor,
        token: usize,
        want: Want,
    ) -> std::io::Result<usize> {
        let Some(entry) = self.entries.get_mut(&token) else {
            return Ok(token);
        };
        entry.want = want;
        let fd = entry.fd;
        match reactor.modify(fd, token, want) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other.map(|()| token),
        }
        let new = self.next_token;
        reactor.register(fd, new, want)?;
        self.next_token += 1;
        let entry = self.entries.remove(&token).expect("looked up above");
        self.entries.insert(new, entry);
        self.by_fd.insert(fd, new);
        Ok(new)
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
        if entry.idle {
            self.idle -= 1;
        }
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
    /// native waiter parking again), and returns the entry's token. A new
    /// entry, or an idle one, keeps `fileobj`. `trust`: the token a socket
    /// operation that tried first vouches for (module docs); if it is the
    /// entry's and the fd is watched for that side already, no syscall.
    /// Fails if a native watcher owns `fd`, or if the OS refuses the fd:
    /// then, as asyncio's selector does when `epoll_ctl` fails, the fd's
    /// entry is dropped whole (returned too).
    pub(crate) fn set_waiter(
        &mut self,
        py: Python<'_>,
        reactor: &Reactor,
        (fd, fileobj): (RawFd, Option<Py<PyAny>>),
        write: bool,
        waiter: Waiter,
        trust: Option<usize>,
    ) -> (Replaced, Result<usize, SetError>) {
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
                idle: false,
            };
            return match self.insert(reactor, entry) {
                Ok(token) => (replaced, Ok(token)),
                Err((e, entry)) => {
                    push_entry(&mut replaced, entry);
                    (replaced, Err(SetError::Os(e)))
                }
            };
        };
        let entry = self
            .entries
            .get_mut(&token)
            .expect("by_fd and entries agree");
        if entry.idle {
            // As a new entry: asyncio's key was gone.
            entry.idle = false;
            self.idle -= 1;
            replaced
                .objs
                .extend(std::mem::replace(&mut entry.fileobj, fileobj));
        } else {
            replaced.objs.extend(fileobj);
        }
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
        if trust == Some(token) && entry.want.covers(want) {
            return (replaced, Ok(token)); // armed and vouched for
        }
        match self.modify_shared(reactor, token, want) {
            Ok(token) => (replaced, Ok(token)),
            Err(e) => {
                self.evict(reactor, token, &mut replaced);
                (replaced, Err(SetError::Os(e)))
            }
        }
    }

    /// Removes the reader or writer side of `fd` and returns what waited
    /// there. With `only`, removes it only if that native waiter is still
    /// the one there (a socket operation that finished or was cancelled),
    /// and an fd a native watcher owns is left alone; the side stays armed,
    /// idle (module docs: no syscall). Without `only` (`remove_reader`), the
    /// fd is watched for the sides that still have a waiter, or dropped; a
    /// native owner is an error (`Taken`), and so is an fd the OS no longer
    /// knows while the other side still waits: as asyncio's selector does
    /// when `epoll_ctl` fails, the entry is then dropped whole (returned).
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
        if let Some(id) = only {
            if !side.as_ref().is_some_and(|w| w.is(id)) {
                return (replaced, Ok(()));
            }
            replaced.push(side.take(), write);
            if reader.is_none() && writer.is_none() {
                // asyncio's key is gone: so is its file object.
                replaced.objs.extend(entry.fileobj.take());
                entry.idle = true;
                self.idle += 1;
            }
            return (replaced, Ok(()));
        }
        replaced.push(side.take(), write);
        match Want::from_flags(reader.is_some(), writer.is_some()) {
            Some(want) => {
                if let Err(e) = self.modify_shared(reactor, token, want) {
                    self.evict(reactor, token, &mut replaced);
                    return (replaced, Err(SetError::Os(e)));
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
            idle: false,
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
    /// A `Shared` entry may get a new token (`modify_shared`).
    pub(crate) fn rearm_native(&mut self, reactor: &Reactor, token: usize) -> std::io::Result<()> {
        match self.entries.get(&token) {
            Some(e) if matches!(e.kind, IoKind::Shared { .. }) => {
                let want = e.want;
                self.modify_shared(reactor, token, want).map(drop)
            }
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
        let armed = entry.want;
        let (reader, writer) = match &mut entry.kind {
            IoKind::Native(w) => {
                natives.push((token, w.clone(), ready));
                return;
            }
            IoKind::Shared { reader, writer } => (reader, writer),
        };
        let mut callbacks = false;
        // Idle sides (armed, no waiter) reported ready: (read, write).
        let mut idle_fired = [false, false];
        let mut called: Option<(Arc<dyn IoWatcher>, Readiness)> = None;
        for (i, side, fire, part, dir) in [
            (
                0,
                reader,
                ready.for_reader(),
                ready.reader_part(),
                Want::Read,
            ),
            (
                1,
                writer,
                ready.for_writer(),
                ready.writer_part(),
                Want::Write,
            ),
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
                None if fire && armed.covers(dir) => idle_fired[i] = true,
                _ => {}
            }
        }
        if let Some((w, r)) = called {
            natives.push((token, w, r));
        }
        if !callbacks && idle_fired == [false, false] {
            return; // native waiters re-arm for themselves
        }
        let (reader, writer) = match &entry.kind {
            IoKind::Shared { reader, writer } => (reader.is_some(), writer.is_some()),
            IoKind::Native(_) => unreachable!(),
        };
        // Callbacks: level-triggered emulation, for the sides with a waiter.
        // Else an idle side fired: disarm it (module docs).
        let now = if callbacks {
            Want::from_flags(reader, writer)
        } else {
            armed.without(idle_fired[0], idle_fired[1])
        };
        let idle = entry.idle;
        let remove = match now {
            None => true,
            // A failed disarm: the fd was closed; nobody waits on it.
            Some(now) => self.modify_shared(reactor, token, now).is_err() && idle,
        };
        if remove {
            if let Some(e) = self.remove_token(reactor, token) {
                garbage.extend(e.fileobj);
            }
        }
    }

    /// Empties the table (loop close / GC clear), deregistering every fd.
    pub(crate) fn drain(&mut self, reactor: &Reactor) -> Vec<IoEntry> {
        self.by_fd.clear();
        self.idle = 0;
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
