//! The state of a `StreamTransport` (see `stream.rs`): who owns the
//! socket, how data reaches the protocol, the `sendfile` in progress, and
//! `StreamState`, everything the transport's mutex guards (a `ByteCore`, see
//! `core.rs`, and the stream's own fields).

use std::os::fd::{OwnedFd, RawFd};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::{intern, PyTraverseError, PyVisit};

use super::core::{deref_to_byte_core, ByteCore, CoreRefs};
use super::pyobjs::set_exception_unless_done;
use crate::event_loop::LoopCore;
use crate::reactor::addr::{RawAddr, SockAddr};
use crate::reactor::net;

/// Who owns the socket.
pub(crate) enum Sock {
    /// The transport (an accepted connection).
    Rust(OwnedFd),
    /// A `socket.socket` (passed in, or made for `get_extra_info`).
    Python(Py<PyAny>),
    /// Closed.
    Closed,
}

impl Sock {
    /// Closes the socket, whoever owns it.
    pub(crate) fn close(self, py: Python<'_>) -> PyResult<()> {
        match self {
            Sock::Rust(fd) => {
                drop(fd);
                Ok(())
            }
            Sock::Python(s) => s.bind(py).call_method0(intern!(py, "close")).map(drop),
            Sock::Closed => Ok(()),
        }
    }
}

/// How data reaches the protocol; methods looked up once per protocol.
pub(crate) enum ProtoKind {
    /// `Protocol.data_received`.
    Plain(Py<PyAny>),
    /// `BufferedProtocol.get_buffer` and `buffer_updated`.
    Buffered(Py<PyAny>, Py<PyAny>),
    /// The methods were missing at `set_protocol`; look them up each time
    /// (the lookup raises the error asyncio would). `true`: buffered.
    Lazy(bool),
}

/// `asyncio.BufferedProtocol`, imported once.
static BUFFERED_PROTOCOL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

impl ProtoKind {
    /// How reads reach `protocol` (its hot methods, looked up once). This
    /// runs Python (`isinstance` may read `__class__`, a lookup may run a
    /// property or `__getattribute__` that uses this very transport), so it
    /// is called with the transport's lock free; the caller stores the
    /// result under the lock (`StreamState::install_protocol`).
    pub(crate) fn of(py: Python<'_>, protocol: &Bound<'_, PyAny>) -> PyResult<Self> {
        let buffered_type = BUFFERED_PROTOCOL.get_or_try_init(py, || {
            py.import("asyncio.protocols")?
                .getattr("BufferedProtocol")
                .map(Bound::unbind)
        })?;
        Ok(if protocol.is_instance(buffered_type.bind(py))? {
            match (
                protocol.getattr(intern!(py, "get_buffer")),
                protocol.getattr(intern!(py, "buffer_updated")),
            ) {
                (Ok(g), Ok(u)) => Self::Buffered(g.unbind(), u.unbind()),
                _ => Self::Lazy(true),
            }
        } else {
            match protocol.getattr(intern!(py, "data_received")) {
                Ok(d) => Self::Plain(d.unbind()),
                Err(_) => Self::Lazy(false),
            }
        })
    }
}

/// A socket name (`sockname`, `peername`) as the transport keeps it:
/// the compact address read when the transport was made (as asyncio reads
/// both into `_extra` at construction, so they outlive the socket), turned
/// into its Python value on the first `get_extra_info` and that value kept,
/// so every later call returns the same object, as asyncio's dict does.
/// An idle connection whose names nobody asks for holds no Python objects
/// for them.
pub(crate) enum LazyAddr {
    /// Not asked for yet.
    Raw(SockAddr),
    /// The Python value (`None` if the name could not be read).
    Py(Py<PyAny>),
}

impl LazyAddr {
    /// What `getsockname`/`getpeername` returned; a failed call is
    /// `None`, as asyncio stores for a `socket.error`.
    pub(crate) fn of(addr: std::io::Result<RawAddr>) -> Self {
        Self::Raw(match addr {
            Ok(a) => SockAddr::from_raw(&a),
            Err(_) => SockAddr::None,
        })
    }

    /// The Python object, if built already.
    pub(crate) fn built(&self) -> Option<&Py<PyAny>> {
        match self {
            Self::Py(o) => Some(o),
            Self::Raw(_) => None,
        }
    }
}

/// The mutable state of a transport: the `ByteCore` and the stream's own.
pub(crate) struct StreamState {
    /// What a pipe transport keeps too (`StreamState` derefs to it).
    pub(crate) core: ByteCore,
    /// `(family, type, proto)` of the socket, for the `socket` extra of a
    /// connection closed before anyone asked for it.
    pub(crate) sock_kind: (i32, i32, i32),
    /// The socket's owner.
    pub(crate) sock: Sock,
    /// The protocol's methods reads call, looked up once.
    pub(crate) kind: Option<ProtoKind>,
    /// The `Server` that accepted the connection.
    pub(crate) server: Option<Py<PyAny>>,
    /// EOF received and the protocol kept the transport half-open.
    pub(crate) read_eof: bool,
    /// `write_eof()` was called.
    pub(crate) eof: bool,
    /// `get_extra_info('sockname')`, read when the transport was made.
    pub(crate) sockname: LazyAddr,
    /// `get_extra_info('peername')`, read when the transport was made.
    pub(crate) peername: LazyAddr,
    /// `get_extra_info('socket')`, made on first use.
    pub(crate) extra_socket: Option<Py<PyAny>>,
    /// Resolved when the write buffer is empty (used by `sendfile`).
    pub(crate) empty_waiter: Option<Py<PyAny>>,
    /// The `sendfile` in progress (boxed: rare, and every connection
    /// holds the field).
    pub(crate) sendfile: Option<Box<SendfileOp>>,
    /// A Unix socket (`UnixTransport` in descriptions, else
    /// `TCPTransport`).
    pub(crate) unix: bool,
    /// 3.12+: a buffered chunk that cannot be sent (a non-contiguous
    /// memoryview); the next flush fails with this error, as asyncio's.
    pub(crate) unsendable: Option<Py<PyAny>>,
}

impl StreamState {
    /// Stores a protocol and its `ProtoKind::of` (Python-free); returns
    /// the old ones, to be dropped once the lock is released.
    pub(crate) fn install_protocol(
        &mut self,
        protocol: Py<PyAny>,
        kind: ProtoKind,
    ) -> (Option<Py<PyAny>>, Option<ProtoKind>) {
        (self.protocol.replace(protocol), self.kind.replace(kind))
    }

    /// Takes the references the transport lets go of once
    /// `connection_lost` has run (`__clear__` takes these and the socket's
    /// extras); drop them after the lock is released.
    pub(crate) fn take_refs(&mut self) -> StreamRefs {
        StreamRefs {
            core: self.core.take_refs(),
            kind: self.kind.take(),
            server: self.server.take(),
            empty_waiter: self.empty_waiter.take(),
            sendfile: self.sendfile.take(),
        }
    }

    #[inline]
    pub(crate) fn reading_active(&self) -> bool {
        self.started && !self.paused && !self.closing && !self.read_eof && self.conn_lost == 0
    }

    /// The transport's class name, for descriptions.
    pub(crate) fn class_name(&self) -> &'static str {
        if self.unix {
            "UnixTransport"
        } else {
            "TCPTransport"
        }
    }
}

deref_to_byte_core!(StreamState);

/// The references `StreamState::take_refs` took (some are only held, to be
/// dropped where no lock is held).
#[allow(dead_code, reason = "fields held only to be dropped later")]
pub(crate) struct StreamRefs {
    /// The `ByteCore`'s.
    pub(crate) core: CoreRefs,
    /// The protocol's methods.
    pub(crate) kind: Option<ProtoKind>,
    /// The `Server` to detach from.
    pub(crate) server: Option<Py<PyAny>>,
    /// The empty waiter to fail.
    pub(crate) empty_waiter: Option<Py<PyAny>>,
    /// The `sendfile` to abandon.
    pub(crate) sendfile: Option<Box<SendfileOp>>,
}

/// A `sendfile` in progress.
pub(crate) struct SendfileOp {
    /// The file's fd (the Python side keeps the file open).
    pub(super) in_fd: RawFd,
    /// Where the next byte comes from.
    pub(super) offset: i64,
    /// Where the operation started.
    pub(super) start: i64,
    /// Bytes to send (None: to the end of the file).
    pub(super) count: Option<u64>,
    /// Bytes sent so far.
    pub(super) sent: u64,
    /// Resolved with `sent`.
    pub(super) fut: Py<PyAny>,
}

impl SendfileOp {
    /// Sends `count` bytes (0: to the end) of `in_fd` from `offset`;
    /// `fut` gets the number of bytes sent.
    pub(crate) fn new(in_fd: RawFd, offset: i64, count: u64, fut: Py<PyAny>) -> Self {
        Self {
            in_fd,
            offset,
            start: offset,
            count: (count > 0).then_some(count),
            sent: 0,
            fut,
        }
    }

    /// Visits the future.
    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.fut)
    }

    /// Sets the file's position past the bytes sent, as asyncio does.
    pub(super) fn update_filepos(&self) {
        if self.sent > 0 {
            // As asyncio: best effort (the file may be closed already).
            let _ = net::seek_set(self.in_fd, self.start + self.sent as i64);
        }
    }

    /// The connection went away mid-operation.
    pub(crate) fn abandon(self, py: Python<'_>, _lp: Option<&Bound<'_, LoopCore>>) -> PyResult<()> {
        self.update_filepos();
        let e = pyo3::exceptions::PyConnectionError::new_err("Connection is closed by peer");
        set_exception_unless_done(self.fut.bind(py), e.value(py))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_sizes() {
        // What every connection holds natively (see issue 9's memory row).
        println!("StreamState = {}", std::mem::size_of::<StreamState>());
        println!("ByteCore = {}", std::mem::size_of::<ByteCore>());
        println!("LazyAddr = {}", std::mem::size_of::<LazyAddr>());
        println!("Sock = {}", std::mem::size_of::<Sock>());
        println!("ProtoKind = {}", std::mem::size_of::<Option<ProtoKind>>());
        println!(
            "StreamTransport = {}",
            std::mem::size_of::<super::super::stream::StreamTransport>()
        );
        assert!(std::mem::size_of::<LazyAddr>() <= 32);
    }
}
