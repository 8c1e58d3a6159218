//! `StreamTransport`: the native core of one TCP or Unix stream connection
//! (asyncio's `_SelectorSocketTransport`). See the module docs of
//! `transports` for the design and invariants.
//!
//! The loop calls it through `event_loop::io::Watch` (its `Watched` impl,
//! in `stream_api.rs`, dispatches to the read and write paths).
//!
//! Interest in the reactor follows the state: `Read` while reading,
//! `Write` while data is buffered, `Both` for both; a registered transport
//! that wants neither stays registered for `Write` (which stays quiet on an
//! idle socket), so the fd is claimed until `connection_lost`.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;
use pyo3::prelude::*;

use super::core::ByteCore;
use super::recv_bytes::ReadSizeHint;
use super::stream_state::{LazyAddr, Sock, StreamState};
use crate::event_loop::io::Watch;
use crate::event_loop::LoopCore;
use crate::reactor::addr::{self, RawAddr};
use crate::reactor::net;
use crate::reactor::Want;

/// The native core of a stream transport.
#[pyclass(frozen, module = "oxloop._core")]
pub struct StreamTransport {
    /// Everything; see `StreamState`.
    pub(crate) st: Mutex<StreamState>,
    /// How large this connection's reads have been (outside `st`: only the
    /// read path, on the loop thread, uses it).
    pub(crate) read_hint: ReadSizeHint,
    /// Bytes received (written only on the loop's thread).
    pub(crate) bytes_in: AtomicU64,
    /// Bytes sent (written only on the loop's thread).
    pub(crate) bytes_out: AtomicU64,
}

/// Adds `n` to a single-writer counter.
#[inline]
fn add(c: &AtomicU64, n: usize) {
    c.store(c.load(Relaxed).wrapping_add(n as u64), Relaxed);
}

impl StreamTransport {
    pub(crate) fn with_state(st: StreamState) -> Self {
        Self {
            st: Mutex::new(st),
            read_hint: ReadSizeHint::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }

    /// Counts `n` bytes received (the loop's total is counted by `Watch`).
    #[inline]
    pub(crate) fn count_in(&self, n: usize) {
        add(&self.bytes_in, n);
    }

    /// Counts `n` bytes sent, here and in the loop's total.
    #[inline]
    pub(crate) fn count_out(&self, lp: Option<&Py<LoopCore>>, n: usize) {
        add(&self.bytes_out, n);
        if let Some(lp) = lp {
            lp.get().stats.stream.add_out(n);
        }
    }
}

impl StreamTransport {
    pub(crate) fn new_state(
        lp: Py<LoopCore>,
        fd: RawFd,
        sock: Sock,
        peer: Option<RawAddr>,
        unix: bool,
    ) -> StreamState {
        let sockname = LazyAddr::of(addr::local_addr(fd));
        let peername = LazyAddr::of(peer.ok_or(()).or_else(|()| addr::peer_addr(fd)));
        StreamState {
            core: ByteCore::new(fd, lp),
            sock_kind: (0, libc::SOCK_STREAM, 0),
            sock,
            kind: None,
            server: None,
            read_eof: false,
            eof: false,
            sockname,
            peername,
            extra_socket: None,
            empty_waiter: None,
            sendfile: None,
            unix,
            unsendable: None,
        }
    }

    /// A transport for a connection accepted by a server.
    pub(crate) fn accepted(
        py: Python<'_>,
        lp: Py<LoopCore>,
        fd: OwnedFd,
        peer: RawAddr,
        nodelay: bool,
        proto: i32,
    ) -> PyResult<Py<Self>> {
        let raw = fd.as_raw_fd();
        if nodelay {
            let _ = net::set_nodelay(raw);
        }
        let family = peer.family();
        let unix = family == libc::AF_UNIX;
        let mut st = Self::new_state(lp, raw, Sock::Rust(fd), Some(peer), unix);
        st.sock_kind = (family, libc::SOCK_STREAM, proto);
        Py::new(py, Self::with_state(st))
    }

    /// Makes the reactor watch what the state needs.
    pub(crate) fn sync_interest(slf: &Bound<'_, Self>, st: &mut StreamState) -> PyResult<()> {
        let py = slf.py();
        if matches!(st.sock, Sock::Closed) {
            return Ok(());
        }
        let read = st.reading_active();
        let write = !st.wbuf.is_empty() || st.sendfile.is_some();
        let want = match Want::from_flags(read, write) {
            Some(w) => w,
            None if st.reg.is_registered() => Want::Write,
            None => return Ok(()),
        };
        let Some(lp) = st.lp(py) else { return Ok(()) };
        let fd = st.fd;
        st.reg.set_interest(lp.get(), fd, want, || Watch::of(slf))
    }
}
