//! `loadgen`: the native load client of the oxloop benchmarks.
//!
//! Echo mode (default): `--conns` connections, each with exactly one request
//! of `--size` bytes in flight (closed loop; see `loadgen::drive` for the
//! phases, the measured window and the output).  A request is complete when
//! all its bytes have come back; then the next one is sent.  At the end
//! each connection half-closes and must see a clean EOF with no byte beyond
//! what it sent.  With `--tls CAFILE` the connections speak TLS (rustls),
//! trusting only that CA and checking the server's name (`--server-name`,
//! default `localhost`); the end is then `close_notify`.
//!
//! Checking echoes: each request is stamped with its sequence number (first
//! and last 8 bytes) over a per-connection pattern, so stale, reordered,
//! duplicated or foreign bytes differ from what is expected.  `--verify
//! sample` (default) compares the first 4 requests of each connection and
//! every 16th, `all` every one, `none` none; unchecked echoes on plain TCP
//! are consumed with recv(MSG_TRUNC), which skips the copy to user space.
//!
//! HTTP mode (`--http PATH`): HTTP/1.1 keep-alive requests, GET (`--size 0`,
//! body must be `--expect`) or POST of `--size` bytes that must come back as
//! the body (see `loadgen::http`); `--tls` works there too.
//!
//! Idle mode (`--idle N`): opens N connections (RLIMIT_NOFILE raised as
//! needed), proves each is served with a one-byte echo, prints `holding N`,
//! and keeps them open until stdin closes or `--hold` seconds pass.
//!
//! `--gen-cert DIR` writes a throw-away CA (`ca.pem`) and a server
//! certificate for localhost/127.0.0.1 (`cert.pem`, `key.pem`) and exits.
//!
//! One thread, mio (epoll, edge-triggered): with the client pinned to its own
//! core it spends less per request than any Python server does.

use loadgen::drive::{drive, marker, Client, Ends, Phase, Run, Tally};
use loadgen::http::{Expect, HttpConn};
use loadgen::tls::{client_config, generate_cert, Stream};
use loadgen::{die, json_num, json_str, parse_size, raise_nofile, stamp, Endpoint, Opts, Sock};
use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: loadgen --addr HOST:PORT|unix:PATH [--conns 10] [--size 1KiB] [--warmup 0.5]
               [--duration 2] [--drain 5] [--eof-wait 1] [--verify sample|all|none]
               [--tls CAFILE [--server-name localhost]]
               [--http PATH [--expect BODY] [--host HOST]]
       loadgen --addr ... --idle N [--hold 60]
       loadgen --gen-cert DIR";

struct Conn {
    stream: Stream,
    /// The request being sent: the connection's pattern, stamped with `seq`.
    tx: Vec<u8>,
    seq: u64,
    sent: usize,
    got: usize,
    began: Instant,
    /// Whether this request's echo is compared byte for byte.
    check: bool,
    /// Edge-triggered readiness as last reported by epoll, cleared on
    /// WouldBlock.  `readable` is also cleared when a request completes: the
    /// server can only echo what was sent, so the next echo raises a new edge.
    readable: bool,
    writable: bool,
    phase: Phase,
}

impl Client for Conn {
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
        stamp(&mut self.tx, self.seq);
        self.sent = 0;
        self.got = 0;
        self.began = now;
    }

    fn pump(&mut self, id: usize, run: &Run, scratch: &mut [u8], t: &mut Tally) -> Result<(), String> {
        loop {
            let mut moved = false;
            if self.writable && self.stream.wants_flush() {
                // TLS records left over from the last write (or close_notify).
                match self.stream.flush_pending() {
                    Ok(()) => moved = true,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("write: {e}")),
                }
            }
            if self.phase == Phase::Busy && self.sent < run.size && self.writable {
                match self.stream.write(&self.tx[self.sent..]) {
                    Ok(0) => return Err("write returned 0".into()),
                    Ok(n) => {
                        self.sent += n;
                        moved = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("write: {e}")),
                }
            }
            if self.readable {
                // Never read past the current request: an extra byte must
                // show up as an error, not vanish into the next request.
                let want = if self.phase == Phase::Busy { run.size - self.got } else { scratch.len() };
                let buf = &mut scratch[..want.max(1)];
                let r = if self.check || self.phase == Phase::Closing { self.stream.read(buf) } else { self.stream.discard(buf) };
                match r {
                    Ok(0) if self.phase == Phase::Closing => {
                        self.phase = Phase::Done;
                        return Ok(());
                    }
                    Ok(0) => {
                        return Err(format!("server closed the connection ({} of {} bytes echoed)", self.got, run.size))
                    }
                    Ok(n) if self.phase == Phase::Closing => {
                        t.wrong(id, format!("{n} byte(s) after the last echo"));
                        self.phase = Phase::Done;
                        return Ok(());
                    }
                    Ok(n) => {
                        if self.got + n > self.sent {
                            t.wrong(id, format!("echo ran ahead of the request ({} > {})", self.got + n, self.sent));
                        } else if self.check && buf[..n] != self.tx[self.got..self.got + n] {
                            let off = (0..n).find(|&i| buf[i] != self.tx[self.got + i]).unwrap_or(0);
                            t.wrong(id, format!("request {} byte {}", self.seq, self.got + off));
                        }
                        self.got += n;
                        moved = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    // A TLS server that closes the socket without close_notify
                    // after the last echo: an EOF all the same.
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof && self.phase == Phase::Closing => {
                        self.phase = Phase::Done;
                        return Ok(());
                    }
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
            if self.phase == Phase::Busy && self.got == run.size {
                let now = Instant::now();
                t.complete(run, self.began, now, self.check);
                self.readable = false;
                if now >= run.end() {
                    self.stream.shutdown_write().map_err(|e| format!("shutdown: {e}"))?;
                    self.phase = Phase::Closing;
                    self.readable = true;
                } else {
                    self.start(now, run);
                }
                moved = true;
            }
            if !moved || self.phase == Phase::Done {
                return Ok(());
            }
        }
    }
}

/// Connect, retrying refusals for up to 1 s (the server said READY first,
/// so a longer refusal means it is gone).
fn connect(ep: &Endpoint) -> Sock {
    let t0 = Instant::now();
    loop {
        match ep.connect() {
            Ok(s) => return s,
            Err(e) if t0.elapsed() > Duration::from_secs(1) => fail_now(&format!("connect to {ep}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Print the error as the run's JSON result and exit with status 1.
fn fail_now(msg: &str) -> ! {
    println!("{{\"error\": {}}}", json_str(msg));
    std::process::exit(1)
}

fn run_mode(ep: &Endpoint, o: &Opts) -> i32 {
    let nconns: usize = o.num("conns", 10usize).max(1);
    let http = o.get("http").map(str::to_string);
    let size = parse_size(o.get("size").unwrap_or(if http.is_some() { "0" } else { "1KiB" }))
        .filter(|&s| s > 0 || http.is_some())
        .unwrap_or_else(|| die(USAGE));
    let warmup = Duration::from_secs_f64(o.num("warmup", 0.5f64));
    let duration = Duration::from_secs_f64(o.num("duration", 2.0f64));
    let ends = Ends {
        duration,
        drain: Duration::from_secs_f64(o.num("drain", 5.0f64)),
        eof_wait: Duration::from_secs_f64(o.num("eof-wait", 1.0f64)),
    };
    let verify = o.get("verify").unwrap_or("sample").to_string();
    if !["all", "sample", "none"].contains(&verify.as_str()) {
        die(USAGE);
    }
    let tls = o.get("tls").map(|ca| client_config(Path::new(ca)).unwrap_or_else(|e| fail_now(&e)));
    let server_name = o.get("server-name").unwrap_or("localhost");
    raise_nofile(nconns as u64 + 64);

    let mut poll = Poll::new().expect("epoll_create");
    let mut streams = Vec::with_capacity(nconns);
    for id in 0..nconns {
        let stream = Stream::new(connect(ep), tls.as_ref().map(|c| (c, server_name)))
            .unwrap_or_else(|e| fail_now(&format!("connection {id}: {e}")));
        poll.registry()
            .register(&mut SourceFd(&stream.sock().as_raw_fd()), Token(id), Interest::READABLE | Interest::WRITABLE)
            .expect("epoll_ctl");
        streams.push(stream);
    }
    let t0 = Instant::now();
    let run = Run::new(size, verify, t0 + warmup, duration, ends.drain);
    let mut scratch = vec![0u8; size.max(64 * 1024)];
    match http {
        Some(path) => {
            let expect = Rc::new(if size == 0 { Expect::Fixed(o.get("expect").unwrap_or("").as_bytes().to_vec()) } else { Expect::Echo });
            let host = o.get("host").map(str::to_string).unwrap_or_else(|| ep.to_string());
            let mut conns: Vec<HttpConn> = streams
                .into_iter()
                .enumerate()
                .map(|(id, s)| HttpConn::new(s, id, &host, &path, size, Rc::clone(&expect)))
                .collect();
            drive(&mut poll, &mut conns, &run, &ends, &mut scratch)
        }
        None => {
            let mut conns: Vec<Conn> = streams
                .into_iter()
                .enumerate()
                .map(|(id, stream)| Conn {
                    stream,
                    tx: (0..size).map(|j| ((j * 7 + id * 13) % 251) as u8).collect(),
                    seq: 0,
                    sent: 0,
                    got: 0,
                    began: t0,
                    check: true,
                    readable: false,
                    writable: true,
                    phase: Phase::Busy,
                })
                .collect();
            drive(&mut poll, &mut conns, &run, &ends, &mut scratch)
        }
    }
}

/// Open `n` connections in small batches (so a default listen backlog of
/// 100 never overflows), each proven live by a one-byte echo.
fn idle_mode(ep: &Endpoint, n: usize, o: &Opts) -> i32 {
    let hold = Duration::from_secs_f64(o.num("hold", 60.0f64));
    let limit = raise_nofile(n as u64 + 64);
    let fail = |msg: String| -> i32 {
        println!("{{\"error\": {}}}", json_str(&msg));
        1
    };
    if limit < n as u64 + 16 {
        return fail(format!("RLIMIT_NOFILE is {limit}, too low for {n} connections"));
    }
    let t0 = Instant::now();
    let mut socks: Vec<Sock> = Vec::with_capacity(n);
    while socks.len() < n {
        let batch = (n - socks.len()).min(50);
        let first = socks.len();
        for _ in 0..batch {
            let mut s = connect(ep);
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            if let Err(e) = s.write_all(b"Z") {
                return fail(format!("connection {}: write: {e}", socks.len()));
            }
            socks.push(s);
        }
        for (i, s) in socks[first..].iter_mut().enumerate() {
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(1) if b[0] == b'Z' => {}
                Ok(1) => return fail(format!("connection {}: echoed {:?}, expected 'Z'", first + i, b[0])),
                Ok(_) => return fail(format!("connection {}: closed by the server", first + i)),
                Err(e) => return fail(format!("connection {}: no echo: {e}", first + i)),
            }
        }
    }
    let connect_s = t0.elapsed().as_secs_f64();
    marker(&format!("holding {n}"));
    // Hold until the driver closes our stdin, or `hold` passes.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(hold);
    println!("{{\"idle\": {n}, \"connect_s\": {}}}", json_num(connect_s));
    drop(socks);
    0
}

fn main() {
    let o = Opts::from_args(
        &[
            "addr", "conns", "size", "warmup", "duration", "drain", "eof-wait", "verify", "idle", "hold", "tls",
            "server-name", "http", "expect", "host", "gen-cert",
        ],
        USAGE,
    );
    if let Some(dir) = o.get("gen-cert") {
        if let Err(e) = generate_cert(Path::new(dir)) {
            die(&format!("--gen-cert: {e}"));
        }
        return;
    }
    let ep = Endpoint::parse(o.get("addr").unwrap_or_else(|| die(USAGE))).unwrap_or_else(|e| die(&e));
    let code = match o.get("idle") {
        Some(_) => idle_mode(&ep, o.num("idle", 10_000usize), &o),
        None => run_mode(&ep, &o),
    };
    std::process::exit(code)
}
