//! The write buffer of a stream transport and its flow-control thresholds.
//!
//! Data the kernel did not take at once is queued as chunks: small pieces
//! are copied and coalesced into owned blocks; a large immutable `bytes` is
//! kept by reference (no copy). `fill_iov` hands the queued bytes to one
//! gathered send; `consume` drops what was sent.
//!
//! Flow control is asyncio's `_FlowControlMixin`: the protocol is paused
//! when the buffered size goes above `high`, resumed when it falls to `low`
//! or below; defaults high = 64 KiB, low = high / 4.

use std::collections::VecDeque;
use std::io::IoSlice;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::{PyTraverseError, PyVisit};

use crate::reactor::net::MAX_IOV;

/// A `bytes` at least this large is queued by reference, not copied.
const SHARE_MIN: usize = 16 * 1024;
/// Owned blocks grow up to this size when small writes are coalesced.
const BLOCK: usize = 64 * 1024;

/// One queued piece of data.
enum Chunk {
    /// Copied bytes.
    Owned(Vec<u8>),
    /// A Python `bytes`, from byte `start` on.
    Shared(Py<PyBytes>, usize),
}

/// Queued outgoing bytes.
#[derive(Default)]
pub struct WriteBuffer {
    /// The chunks, oldest first.
    chunks: VecDeque<Chunk>,
    /// How many bytes of the front `Owned` chunk were sent already.
    head: usize,
    /// Total bytes queued.
    len: usize,
}

impl WriteBuffer {
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a copy of `data`.
    pub fn push_copy(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        let single = self.chunks.len() == 1;
        if let Some(Chunk::Owned(last)) = self.chunks.back_mut() {
            // The front chunk may be partly sent; appending is still fine.
            let used = if single {
                last.len() - self.head
            } else {
                last.len()
            };
            if used + data.len() <= BLOCK {
                last.extend_from_slice(data);
                return;
            }
        }
        self.chunks.push_back(Chunk::Owned(data.to_vec()));
    }

    /// Queues `data[start..]` of a Python `bytes`, by reference if it is
    /// large enough, else as a copy.
    pub fn push_bytes(&mut self, data: &Bound<'_, PyBytes>, start: usize) {
        let bytes = &data.as_bytes()[start..];
        if bytes.len() < SHARE_MIN {
            self.push_copy(bytes);
            return;
        }
        self.len += bytes.len();
        self.chunks
            .push_back(Chunk::Shared(data.clone().unbind(), start));
    }

    /// Fills `iov` with the queued bytes (at most `MAX_IOV` slices); returns
    /// the number of slices and of bytes offered.
    pub fn fill_iov<'a>(
        &'a self,
        py: Python<'a>,
        iov: &mut [IoSlice<'a>; MAX_IOV],
    ) -> (usize, usize) {
        let mut n = 0;
        let mut total = 0;
        for (i, chunk) in self.chunks.iter().enumerate() {
            if n == MAX_IOV {
                break;
            }
            let slice: &'a [u8] = match chunk {
                Chunk::Owned(v) => {
                    if i == 0 {
                        &v[self.head..]
                    } else {
                        &v[..]
                    }
                }
                Chunk::Shared(b, start) => &b.as_bytes(py)[*start..],
            };
            iov[n] = IoSlice::new(slice);
            total += slice.len();
            n += 1;
        }
        (n, total)
    }

    /// Drops the first `n` bytes (they were sent). Returns dropped shared
    /// chunks for the caller to release (they are Python objects).
    pub fn consume(&mut self, mut n: usize, released: &mut Vec<Py<PyBytes>>) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let avail = match front {
                Chunk::Owned(v) => v.len() - self.head,
                Chunk::Shared(b, start) => b_len(b) - *start,
            };
            if n < avail {
                match front {
                    Chunk::Owned(_) => self.head += n,
                    Chunk::Shared(_, start) => *start += n,
                }
                return;
            }
            n -= avail;
            self.head = 0;
            if let Some(Chunk::Shared(b, _)) = self.chunks.pop_front() {
                released.push(b);
            }
        }
    }

    /// Empties the buffer; returns the shared chunks to release.
    pub fn clear(&mut self, released: &mut Vec<Py<PyBytes>>) {
        for c in self.chunks.drain(..) {
            if let Chunk::Shared(b, _) = c {
                released.push(b);
            }
        }
        self.head = 0;
        self.len = 0;
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        for c in &self.chunks {
            if let Chunk::Shared(b, _) = c {
                visit.call(b)?;
            }
        }
        Ok(())
    }
}

/// The length of a `bytes` without needing a `Python` token (it is
/// immutable, so its size is fixed).
fn b_len(b: &Py<PyBytes>) -> usize {
    // SAFETY: `b` is a live bytes object (we hold a reference); reading the
    // size field of an immutable object needs no GIL-protected state.
    unsafe { pyo3::ffi::PyBytes_Size(b.as_ptr()) as usize }
}

/// Write-buffer thresholds and whether the protocol is paused.
pub struct FlowControl {
    /// Pause the protocol above this many buffered bytes.
    pub high: usize,
    /// Resume it at or below this many.
    pub low: usize,
    /// `pause_writing()` was called and `resume_writing()` not yet.
    pub paused: bool,
}

impl Default for FlowControl {
    fn default() -> Self {
        Self {
            high: 64 * 1024,
            low: 16 * 1024,
            paused: false,
        }
    }
}

impl FlowControl {
    /// asyncio's `_set_write_buffer_limits` rule; `Err` carries the message
    /// of its `ValueError`.
    pub fn set_limits(&mut self, high: Option<i64>, low: Option<i64>) -> Result<(), String> {
        let high = match (high, low) {
            (None, None) => 64 * 1024,
            (None, Some(low)) => 4 * low,
            (Some(h), _) => h,
        };
        let low = low.unwrap_or(high / 4);
        if !(high >= low && low >= 0) {
            return Err(format!("high ({high}) must be >= low ({low}) must be >= 0"));
        }
        self.high = high as usize;
        self.low = low as usize;
        Ok(())
    }

    /// Whether the protocol must be paused now.
    #[inline]
    pub fn should_pause(&self, size: usize) -> bool {
        !self.paused && size > self.high
    }

    /// Whether the protocol must be resumed now.
    #[inline]
    pub fn should_resume(&self, size: usize) -> bool {
        self.paused && size <= self.low
    }

    /// Moves to paused (`pause`) or resumed if the buffer size calls for it;
    /// returns whether it did, i.e. whether the protocol must be told.
    #[inline]
    pub fn transition(&mut self, pause: bool, size: usize) -> bool {
        let go = if pause {
            self.should_pause(size)
        } else {
            self.should_resume(size)
        };
        if go {
            self.paused = pause;
        }
        go
    }
}

/// Tells the protocol to pause (`pause`) or resume writing. As in asyncio, an
/// exception from it goes to the loop's exception handler (with the
/// transport and protocol in the context); KeyboardInterrupt and SystemExit
/// propagate.
pub fn notify_protocol(
    py: Python<'_>,
    pause: bool,
    protocol: Py<PyAny>,
    transport: Option<Py<PyAny>>,
    lp: Option<Bound<'_, crate::event_loop::LoopCore>>,
) -> PyResult<()> {
    let (method, message) = if pause {
        (
            pyo3::intern!(py, "pause_writing"),
            "protocol.pause_writing() failed",
        )
    } else {
        (
            pyo3::intern!(py, "resume_writing"),
            "protocol.resume_writing() failed",
        )
    };
    let Err(e) = protocol.bind(py).call_method0(method) else {
        return Ok(());
    };
    if crate::errors::must_propagate(py, &e) {
        return Err(e);
    }
    if let Some(lp) = lp {
        let ctx = pyo3::types::PyDict::new(py);
        ctx.set_item("message", message)?;
        ctx.set_item("exception", e.value(py))?;
        ctx.set_item("transport", transport)?;
        ctx.set_item("protocol", protocol)?;
        lp.call_method1(pyo3::intern!(py, "call_exception_handler"), (ctx,))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_asyncio() {
        let mut f = FlowControl::default();
        assert_eq!((f.low, f.high), (16 * 1024, 64 * 1024));
        f.set_limits(Some(100), None).unwrap();
        assert_eq!((f.low, f.high), (25, 100));
        f.set_limits(None, Some(10)).unwrap();
        assert_eq!((f.low, f.high), (10, 40));
        assert!(f.set_limits(Some(1), Some(2)).is_err());
        assert!(f.set_limits(Some(-1), None).is_err());
        assert!(f.should_pause(41) && !f.should_pause(40));
        f.paused = true;
        assert!(f.should_resume(10) && !f.should_resume(11));
    }

    #[test]
    fn owned_chunks_coalesce_and_consume() {
        let mut b = WriteBuffer::default();
        let mut released = Vec::new();
        b.push_copy(b"hello ");
        b.push_copy(b"world");
        assert_eq!(b.len(), 11);
        assert_eq!(b.chunks.len(), 1); // coalesced
        b.consume(3, &mut released);
        assert_eq!(b.len(), 8);
        b.push_copy(&vec![7u8; BLOCK]); // too big to coalesce
        assert_eq!(b.chunks.len(), 2);
        b.consume(8, &mut released);
        assert_eq!(b.len(), BLOCK);
        assert_eq!(b.chunks.len(), 1);
        b.consume(BLOCK, &mut released);
        assert!(b.is_empty() && b.chunks.is_empty() && released.is_empty());
    }
}
