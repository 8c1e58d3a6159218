//! HTTP/1.1 keep-alive mode of the load client: one request in flight per
//! connection, as `wrk` does, but every answer is checked.
//!
//! With `--size 0` each request is `GET PATH` and the answer's body must be
//! exactly `--expect`; with `--size N` it is `POST PATH` with an N-byte body
//! (the connection's pattern, stamped with the request's sequence number
//! like the echo mode's) and the answer's body must be that body.  Every
//! answer must be `200`, carry a `Content-Length` (chunked answers are
//! refused: the servers measured here do not send them for these bodies),
//! keep the connection open, and be followed by no stray byte.  Status,
//! length and framing are checked on every answer; body bytes on the
//! answers `--verify` selects (see `Run::checks`).

use crate::drive::{Client, Phase, Run, Tally};
use crate::stamp;
use crate::tls::Stream;
use std::io::ErrorKind;
use std::time::Instant;

/// What an answer's body must be.
pub enum Expect {
    /// The same bytes every time (GET).
    Fixed(Vec<u8>),
    /// The request's body (POST echo).
    Echo,
}

pub struct HttpConn {
    stream: Stream,
    /// Request head + body; the body starts at `body_at`.
    tx: Vec<u8>,
    body_at: usize,
    expect: std::rc::Rc<Expect>,
    /// The answer received so far.
    rx: Vec<u8>,
    /// Length of the answer's head (through the blank line) once parsed,
    /// and the total length it announces.
    head: Option<(usize, usize)>,
    seq: u64,
    sent: usize,
    began: Instant,
    check: bool,
    readable: bool,
    writable: bool,
    phase: Phase,
}

impl HttpConn {
    pub fn new(
        stream: Stream,
        id: usize,
        host: &str,
        path: &str,
        size: usize,
        expect: std::rc::Rc<Expect>,
    ) -> HttpConn {
        let mut tx = if size == 0 {
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: oxloop-loadgen\r\n\r\n").into_bytes()
        } else {
            format!(
                "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: oxloop-loadgen\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
            )
            .into_bytes()
        };
        let body_at = tx.len();
        tx.extend((0..size).map(|j| ((j * 7 + id * 13) % 251) as u8));
        HttpConn {
            stream,
            tx,
            body_at,
            expect,
            rx: Vec::with_capacity(size + 1024),
            head: None,
            seq: 0,
            sent: 0,
            began: Instant::now(),
            check: true,
            readable: false,
            writable: true,
            phase: Phase::Busy,
        }
    }

    /// Parse the head once complete: the answer's total length, or what is wrong.
    fn parse_head(&self, end: usize) -> Result<usize, String> {
        let text = String::from_utf8_lossy(&self.rx[..end]);
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap_or("");
        if !status.starts_with("HTTP/1.1 200 ") && status != "HTTP/1.1 200" {
            return Err(format!("request {}: status line {status:?}", self.seq));
        }
        let mut length = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => {
                    return Err(format!("request {}: Transfer-Encoding {value:?} (expected Content-Length)", self.seq))
                }
                "connection" if value.eq_ignore_ascii_case("close") => {
                    return Err(format!("request {}: the server closes the connection (Connection: close)", self.seq))
                }
                _ => {}
            }
        }
        let length = length.ok_or_else(|| format!("request {}: no Content-Length", self.seq))?;
        Ok(end + length)
    }

    /// The whole answer is in `rx`: check it.
    fn check_answer(&self, id: usize, head_len: usize, t: &mut Tally) {
        let body = &self.rx[head_len..];
        let want: &[u8] = match &*self.expect {
            Expect::Fixed(b) => b,
            Expect::Echo => &self.tx[self.body_at..],
        };
        if body.len() != want.len() {
            t.wrong(id, format!("request {}: body of {} bytes, expected {}", self.seq, body.len(), want.len()));
        } else if self.check && body != want {
            let off = (0..body.len()).find(|&i| body[i] != want[i]).unwrap_or(0);
            t.wrong(id, format!("request {}: body byte {off} differs", self.seq));
        }
    }
}

impl Client for HttpConn {
    fn phase(&self) -> Phase {
        self.phase
    }

    fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }

    fn ready(&mut self, readable: bool, writable: bool) {
        self.readable |= readable;
        self.writable |= writable;
    }

    fn start(&mut self, now: Instant, run: &Run) {
        self.seq += 1;
        self.check = run.checks(self.seq);
        if self.tx.len() > self.body_at {
            let body_at = self.body_at;
            stamp(&mut self.tx[body_at..], self.seq);
        }
        self.sent = 0;
        self.rx.clear();
        self.head = None;
        self.began = now;
    }

    fn pump(&mut self, id: usize, run: &Run, scratch: &mut [u8], t: &mut Tally) -> Result<(), String> {
        loop {
            let mut moved = false;
            if self.writable && (self.sent < self.tx.len() || self.stream.wants_flush()) {
                let r = if self.sent < self.tx.len() {
                    self.stream.write(&self.tx[self.sent..])
                } else {
                    self.stream.flush_pending().map(|()| 0)
                };
                match r {
                    Ok(0) if self.sent < self.tx.len() => return Err("write returned 0".into()),
                    Ok(n) => {
                        self.sent += n;
                        moved = n > 0;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("write: {e}")),
                }
            }
            if self.readable {
                match self.stream.read(scratch) {
                    Ok(0) => return Err(format!("request {}: the server closed the connection", self.seq)),
                    Ok(n) => {
                        self.rx.extend_from_slice(&scratch[..n]);
                        moved = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
            if self.head.is_none() {
                if let Some(i) = self.rx.windows(4).position(|w| w == b"\r\n\r\n") {
                    match self.parse_head(i + 4) {
                        Ok(total) => self.head = Some((i + 4, total)),
                        Err(what) => {
                            t.wrong(id, what.clone());
                            return Err(what);
                        }
                    }
                } else if self.rx.len() > 64 * 1024 {
                    return Err(format!("request {}: no end of the answer's head in 64 KiB", self.seq));
                }
            }
            if let Some((head_len, total)) = self.head {
                if self.rx.len() > total {
                    t.wrong(id, format!("request {}: {} byte(s) after the answer", self.seq, self.rx.len() - total));
                    self.rx.truncate(total);
                }
                if self.rx.len() == total && self.sent == self.tx.len() {
                    self.check_answer(id, head_len, t);
                    let now = Instant::now();
                    t.complete(run, self.began, now, self.check);
                    // Nothing more can come before the next request: the
                    // next answer raises a new edge.
                    self.readable = false;
                    if now >= run.end() {
                        self.phase = Phase::Done;
                        return Ok(());
                    }
                    self.start(now, run);
                    moved = true;
                }
            }
            if !moved {
                return Ok(());
            }
        }
    }
}
