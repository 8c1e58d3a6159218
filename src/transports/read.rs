//! The read side of `StreamTransport`: readiness → `recv` into the shared
//! buffer (or the `BufferedProtocol`'s own buffer) → the protocol, EOF and
//! its half-close rule (`eof_received()` true keeps the transport open).
//!
//! Edge-triggered: reads go on while they fill the buffer, up to
//! `MAX_READS` per event (then the fd is re-armed for fairness); a short
//! read means the socket's queue was drained. Data that arrived with a
//! hang-up is delivered now and the EOF in the next iteration (re-armed),
//! as asyncio's one-read-per-iteration does.

use std::io::ErrorKind;
use std::os::fd::RawFd;

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;

use super::recv_bytes::{tune_malloc, Received, LARGE_READ};
use super::stream::StreamTransport;
use super::stream_state::ProtoKind;
use super::{logger, BufView};
use crate::errors;
use crate::event_loop::LoopCore;
use crate::reactor::net::{self};
use crate::reactor::Readiness;

/// Reads per readiness event before the fd is re-armed (fairness).
const MAX_READS: usize = 16;

impl StreamTransport {
    pub(crate) fn handle_read(
        slf: &Bound<'_, Self>,
        lp: &Bound<'_, LoopCore>,
        ready: Readiness,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let keep_going = ready.is_read_closed() || ready.is_error();
        for _ in 0..MAX_READS {
            let (fd, kind) = {
                let st = this.st.lock();
                if !st.reading_active() {
                    return Ok(());
                }
                let kind = match &st.kind {
                    Some(ProtoKind::Plain(f)) => ProtoKind::Plain(f.clone_ref(py)),
                    Some(ProtoKind::Buffered(g, u)) => {
                        ProtoKind::Buffered(g.clone_ref(py), u.clone_ref(py))
                    }
                    Some(ProtoKind::Lazy(b)) => ProtoKind::Lazy(*b),
                    None => return Ok(()),
                };
                (st.fd, kind)
            };
            let full = match kind {
                ProtoKind::Plain(cb) => Self::read_plain(slf, fd, cb.bind(py))?,
                ProtoKind::Buffered(g, u) => Self::read_buffered(slf, fd, g.bind(py), u.bind(py))?,
                ProtoKind::Lazy(buffered) => {
                    let proto = this.st.lock().protocol.as_ref().map(|p| p.clone_ref(py));
                    let Some(proto) = proto else { return Ok(()) };
                    let proto = proto.bind(py);
                    if buffered {
                        let g = proto.getattr("get_buffer");
                        let u = proto.getattr("buffer_updated");
                        match (g, u) {
                            (Ok(g), Ok(u)) => Self::read_buffered(slf, fd, &g, &u)?,
                            (Err(e), _) | (_, Err(e)) => {
                                Self::fatal_error(
                                    slf,
                                    e,
                                    "Fatal error: protocol.get_buffer() call failed.",
                                )?;
                                None
                            }
                        }
                    } else {
                        match proto.getattr("data_received") {
                            Ok(cb) => Self::read_plain(slf, fd, &cb)?,
                            Err(e) => {
                                Self::fatal_error(
                                    slf,
                                    e,
                                    "Fatal error: protocol.data_received() call failed.",
                                )?;
                                None
                            }
                        }
                    }
                }
            };
            match full {
                Some(true) => continue,
                // Data came with a hang-up or error: the EOF (or error) is
                // for the next iteration, as in asyncio; re-arm to see it.
                Some(false) if keep_going => break,
                _ => return Ok(()),
            }
        }
        this.st.lock().reg.rearm(lp.get())
    }

    /// One `recv` + `data_received`. `Some(full)` if data came (full: the
    /// read filled the buffer); `None` to stop reading.
    pub(crate) fn read_plain(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        cb: &Bound<'_, PyAny>,
    ) -> PyResult<Option<bool>> {
        let py = slf.py();
        // SAFETY (of the closure's call): `recv_bytes` offers `len` writable
        // bytes at `ptr` for the duration of the call.
        let got = slf
            .get()
            .read_hint
            .read(py, |ptr, len| unsafe { net::recv_raw(fd, ptr, len) })?;
        if let Received::Data(data, _) = &got {
            slf.get().count_in(data.as_bytes().len());
        }
        match got {
            Received::Data(data, full) => match cb.call1((data,)) {
                Ok(_) => Ok(Some(full)),
                Err(e) => {
                    Self::fatal_error(
                        slf,
                        e,
                        "Fatal error: protocol.data_received() call failed.",
                    )?;
                    Ok(None)
                }
            },
            Received::Eof => Self::on_eof(slf).map(|()| None),
            Received::Failed(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
            Received::Failed(e) => Self::fatal_error(
                slf,
                errors::os_error(e),
                "Fatal read error on socket transport",
            )
            .map(|()| None),
        }
    }

    /// `get_buffer` + `recv_into` + `buffer_updated`.
    pub(crate) fn read_buffered(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        get_buffer: &Bound<'_, PyAny>,
        updated: &Bound<'_, PyAny>,
    ) -> PyResult<Option<bool>> {
        let buf = match get_buffer.call1((-1,)) {
            Ok(b) => b,
            Err(e) => {
                Self::fatal_error(slf, e, "Fatal error: protocol.get_buffer() call failed.")?;
                return Ok(None);
            }
        };
        let view = match BufView::get(&buf, true) {
            Ok(v) => v,
            Err(e) => {
                Self::fatal_error(slf, e, "Fatal read error on socket transport")?;
                return Ok(None);
            }
        };
        if view.is_empty() {
            drop(view);
            let e = PyRuntimeError::new_err("get_buffer() returned an empty buffer");
            Self::fatal_error(slf, e, "Fatal error: protocol.get_buffer() call failed.")?;
            return Ok(None);
        }
        let cap = view.len();
        // SAFETY: `view` is a live writable view of `cap` contiguous bytes
        // and stays alive (pinning the exporter's memory) for the call.
        let r = unsafe { net::recv_raw(fd, view.as_ptr(), cap) };
        if let Ok(n) = r {
            slf.get().count_in(n);
            if n >= LARGE_READ {
                // The protocol copies large reads out (see `tune_malloc`).
                tune_malloc();
            }
        }
        drop(view);
        drop(buf);
        match r {
            Ok(0) => Self::on_eof(slf).map(|()| None),
            Ok(n) => match updated.call1((n,)) {
                Ok(_) => Ok(Some(n == cap)),
                Err(e) => {
                    Self::fatal_error(
                        slf,
                        e,
                        "Fatal error: protocol.buffer_updated() call failed.",
                    )?;
                    Ok(None)
                }
            },
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
            Err(e) => Self::fatal_error(
                slf,
                errors::os_error(e),
                "Fatal read error on socket transport",
            )
            .map(|()| None),
        }
    }

    pub(crate) fn on_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (proto, wrapper, debug) = {
            let st = slf.get().st.lock();
            let debug = st.lp.as_ref().is_some_and(|l| l.get().debug_enabled());
            (
                st.protocol.as_ref().map(|p| p.clone_ref(py)),
                st.wrapper.as_ref().map(|w| w.clone_ref(py)),
                debug,
            )
        };
        let Some(proto) = proto else { return Ok(()) };
        if debug {
            logger(py)?.call_method1("debug", ("%r received EOF", wrapper))?;
        }
        let keep_open = proto
            .bind(py)
            .call_method0(intern!(py, "eof_received"))
            .and_then(|v| v.is_truthy());
        match keep_open {
            Err(e) => {
                Self::fatal_error(slf, e, "Fatal error: protocol.eof_received() call failed.")
            }
            Ok(true) => {
                let mut st = slf.get().st.lock();
                st.read_eof = true;
                Self::sync_interest(slf, &mut st)
            }
            Ok(false) => Self::do_close(slf),
        }
    }
}
