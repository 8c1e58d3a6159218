//! `loadgen`: the native load client of the oxloop benchmarks.
//!
//! Echo mode (default): `--conns` connections, each with exactly one request
//! of `--size` bytes in flight (closed loop).  A request is complete when all
//! its bytes have come back; then the next one is sent.  The run has three
//! phases: `--warmup` seconds unmeasured, `--duration` seconds measured, then
//! each connection finishes its request in flight, half-closes, and must see
//! a clean EOF with no byte beyond what it sent.  Echoes still missing
//! `--drain` seconds after the end are errors; a server that has not closed
//! `--eof-wait` seconds after the last echo is counted in `no_eof`.
//! Stdout gets `measure-start` and `measure-end` lines at the edges of the
//! measured window (the driver samples the server's CPU time there), then one
//! JSON object.  Exit status 1 on any error or wrong byte.
//!
//! Checking echoes: each request is stamped with its sequence number (first
//! and last 8 bytes) over a per-connection pattern, so stale, reordered,
//! duplicated or foreign bytes differ from what is expected.  `--verify
//! sample` (default) compares the first 4 requests of each connection and
//! every 16th, `all` every one, `none` none; unchecked echoes on TCP are
//! consumed with recv(MSG_TRUNC), which skips the copy to user space.
//!
//! Idle mode (`--idle N`): opens N connections (RLIMIT_NOFILE raised as
//! needed), proves each is served with a one-byte echo, prints `holding N`,
//! and keeps them open until stdin closes or `--hold` seconds pass.
//!
//! One thread, mio (epoll, edge-triggered): with the client pinned to its own
//! core it spends less per request than any Python server does.

use loadgen::{cpu_seconds, die, json_num, json_str, parse_size, raise_nofile, Endpoint, Opts, Sock};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: loadgen --addr HOST:PORT|unix:PATH [--conns 10] [--size 1KiB] [--warmup 0.5]
               [--duration 2] [--drain 5] [--eof-wait 1] [--verify sample|all|none]
       loadgen --addr ... --idle N [--hold 60]";

#[derive(PartialEq)]
enum Phase {
    /// Sending requests and reading echoes.
    Echoing,
    /// Past the end: write side shut, waiting for the server's EOF.
    Closing,
    Done,
}

struct Conn {
    sock: Sock,
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

#[derive(Default)]
struct Tally {
    measured: u64,
    total: u64,
    checked: u64,
    wrong: u64,
    first_wrong: Option<String>,
    errors: Vec<String>,
    lat_ns: Vec<u64>,
}

struct Run {
    size: usize,
    verify: String,
    start: Instant,
    end: Instant,
}

fn stamp(tx: &mut [u8], seq: u64) {
    let s = seq.to_le_bytes();
    let n = tx.len().min(8);
    tx[..n].copy_from_slice(&s[..n]);
    if tx.len() >= 16 {
        let len = tx.len();
        tx[len - 8..].copy_from_slice(&(!seq).to_le_bytes());
    }
}

impl Conn {
    fn next_request(&mut self, now: Instant, verify: &str) {
        self.seq += 1;
        self.check = match verify {
            "all" => true,
            "none" => false,
            _ => self.seq <= 4 || self.seq % 16 == 0,
        };
        stamp(&mut self.tx, self.seq);
        self.sent = 0;
        self.got = 0;
        self.began = now;
    }

    /// Move this connection forward until the socket would block.
    fn pump(&mut self, id: usize, run: &Run, scratch: &mut [u8], t: &mut Tally) -> Result<(), String> {
        loop {
            let mut moved = false;
            if self.phase == Phase::Echoing && self.sent < run.size && self.writable {
                match self.sock.write(&self.tx[self.sent..]) {
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
                let want = if self.phase == Phase::Echoing { run.size - self.got } else { scratch.len() };
                let buf = &mut scratch[..want.max(1)];
                let r = if self.check || self.phase == Phase::Closing { self.sock.read(buf) } else { self.sock.discard(buf) };
                match r {
                    Ok(0) if self.phase == Phase::Closing => {
                        self.phase = Phase::Done;
                        return Ok(());
                    }
                    Ok(0) => {
                        return Err(format!("server closed the connection ({} of {} bytes echoed)", self.got, run.size))
                    }
                    Ok(n) if self.phase == Phase::Closing => {
                        self.wrong(t, id, format!("{n} byte(s) after the last echo"));
                        self.phase = Phase::Done;
                        return Ok(());
                    }
                    Ok(n) => {
                        if self.got + n > self.sent {
                            self.wrong(t, id, format!("echo ran ahead of the request ({} > {})", self.got + n, self.sent));
                        } else if self.check && buf[..n] != self.tx[self.got..self.got + n] {
                            let off = (0..n).find(|&i| buf[i] != self.tx[self.got + i]).unwrap_or(0);
                            self.wrong(t, id, format!("request {} byte {}", self.seq, self.got + off));
                        }
                        self.got += n;
                        moved = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
            if self.phase == Phase::Echoing && self.got == run.size {
                let now = Instant::now();
                t.total += 1;
                t.checked += u64::from(self.check);
                if now >= run.start && now < run.end {
                    t.measured += 1;
                    t.lat_ns.push((now - self.began).as_nanos() as u64);
                }
                self.readable = false;
                if now >= run.end {
                    self.sock.shutdown_write().map_err(|e| format!("shutdown: {e}"))?;
                    self.phase = Phase::Closing;
                    self.readable = true;
                } else {
                    self.next_request(now, &run.verify);
                }
                moved = true;
            }
            if !moved || self.phase == Phase::Done {
                return Ok(());
            }
        }
    }

    fn wrong(&self, t: &mut Tally, id: usize, what: String) {
        t.wrong += 1;
        if t.first_wrong.is_none() {
            t.first_wrong = Some(format!("connection {id}: {what}"));
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
            Err(e) if t0.elapsed() > Duration::from_secs(1) => {
                println!("{{\"error\": {}}}", json_str(&format!("connect to {ep}: {e}")));
                std::process::exit(1)
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn marker(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

fn echo_mode(ep: &Endpoint, o: &Opts) -> i32 {
    let nconns: usize = o.num("conns", 10usize).max(1);
    let size = parse_size(o.get("size").unwrap_or("1KiB")).filter(|&s| s > 0).unwrap_or_else(|| die(USAGE));
    let warmup = Duration::from_secs_f64(o.num("warmup", 0.5f64));
    let duration = Duration::from_secs_f64(o.num("duration", 2.0f64));
    let drain = Duration::from_secs_f64(o.num("drain", 5.0f64));
    let eof_wait = Duration::from_secs_f64(o.num("eof-wait", 1.0f64));
    let verify = o.get("verify").unwrap_or("sample").to_string();
    if !["all", "sample", "none"].contains(&verify.as_str()) {
        die(USAGE);
    }
    raise_nofile(nconns as u64 + 64);

    let mut poll = Poll::new().expect("epoll_create");
    let mut conns = Vec::with_capacity(nconns);
    for id in 0..nconns {
        let sock = connect(ep);
        sock.set_nonblocking(true).expect("nonblocking");
        let tx = (0..size).map(|j| ((j * 7 + id * 13) % 251) as u8).collect();
        poll.registry()
            .register(&mut SourceFd(&sock.as_raw_fd()), Token(id), Interest::READABLE | Interest::WRITABLE)
            .expect("epoll_ctl");
        let now = Instant::now();
        conns.push(Conn { sock, tx, seq: 0, sent: 0, got: 0, began: now, check: true, readable: false, writable: true, phase: Phase::Echoing });
    }
    let t0 = Instant::now();
    let run = Run { size, verify, start: t0 + warmup, end: t0 + warmup + duration };
    let mut deadline = run.end + drain;
    let mut eof_deadline_set = false;
    let cpu0 = cpu_seconds();
    let mut t = Tally::default();
    let mut scratch = vec![0u8; size.max(64 * 1024)];
    let (mut started, mut ended) = (false, false);
    let (mut win_start, mut win_end) = (run.start, run.end);
    let mut cpu_window = (0.0, 0.0);
    for (id, c) in conns.iter_mut().enumerate() {
        c.next_request(t0, &run.verify);
        if let Err(e) = c.pump(id, &run, &mut scratch, &mut t) {
            t.errors.push(e);
            c.phase = Phase::Done;
        }
    }
    let mut events = Events::with_capacity(256);
    loop {
        let now = Instant::now();
        if !started && now >= run.start {
            started = true;
            win_start = now;
            cpu_window.0 = cpu_seconds();
            marker("measure-start");
        }
        if !ended && now >= run.end {
            ended = true;
            win_end = now;
            cpu_window.1 = cpu_seconds();
            marker("measure-end");
        }
        let live = conns.iter().filter(|c| c.phase != Phase::Done).count();
        if (live == 0 && ended) || now >= deadline {
            break;
        }
        if ended && !eof_deadline_set && conns.iter().all(|c| c.phase != Phase::Echoing) {
            // Every echo is in: give the server a bounded time to close.
            eof_deadline_set = true;
            deadline = deadline.min(now + eof_wait);
        }
        let next_edge = if !started { run.start } else if !ended { run.end } else { deadline };
        let timeout = next_edge.saturating_duration_since(now).min(Duration::from_millis(50));
        match poll.poll(&mut events, Some(timeout)) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("epoll_wait: {e}"),
            Ok(()) => {}
        }
        for ev in events.iter() {
            let id = ev.token().0;
            let c = &mut conns[id];
            if c.phase == Phase::Done {
                continue;
            }
            c.readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
            c.writable |= ev.is_writable() || ev.is_write_closed() || ev.is_error();
            if let Err(e) = c.pump(id, &run, &mut scratch, &mut t) {
                t.errors.push(e);
                c.phase = Phase::Done;
            }
        }
    }
    let stuck = conns.iter().filter(|c| c.phase == Phase::Echoing).count();
    let no_eof = conns.iter().filter(|c| c.phase == Phase::Closing).count();
    if stuck > 0 {
        t.errors.push(format!("{stuck} connection(s) still waiting for an echo {drain:?} after the end"));
    }
    if !started {
        marker("measure-start");
    }
    if !ended {
        marker("measure-end");
    }
    let window = (win_end - win_start).as_secs_f64();
    if !duration.is_zero() && t.measured == 0 && t.errors.is_empty() {
        t.errors.push("no request completed in the measured window".into());
    }
    t.lat_ns.sort_unstable();
    t.errors.sort();
    t.errors.dedup();
    let errors: Vec<String> = t.errors.iter().take(5).map(|e| json_str(e)).collect();
    let cpu_pct = if window > 0.0 { 100.0 * (cpu_window.1 - cpu_window.0) / window } else { f64::NAN };
    println!(
        "{{\"size\": {size}, \"conns\": {nconns}, \"window_s\": {}, \"requests\": {}, \"rps\": {}, \"total_requests\": {}, \
         \"checked\": {}, \"wrong\": {}, \"first_wrong\": {}, \"no_eof\": {no_eof}, \"errors\": [{}], \
         \"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, \"max_us\": {}, \"client_cpu_pct\": {}, \"client_cpu_s\": {}}}",
        json_num(window),
        t.measured,
        json_num(if window > 0.0 { t.measured as f64 / window } else { 0.0 }),
        t.total,
        t.checked,
        t.wrong,
        t.first_wrong.as_deref().map(json_str).unwrap_or_else(|| "null".into()),
        errors.join(", "),
        json_num(percentile_us(&t.lat_ns, 50.0)),
        json_num(percentile_us(&t.lat_ns, 90.0)),
        json_num(percentile_us(&t.lat_ns, 99.0)),
        json_num(percentile_us(&t.lat_ns, 100.0)),
        json_num(cpu_pct),
        json_num(cpu_seconds() - cpu0),
    );
    i32::from(!t.errors.is_empty() || t.wrong > 0)
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
    let o = Opts::from_args(&["addr", "conns", "size", "warmup", "duration", "drain", "eof-wait", "verify", "idle", "hold"], USAGE);
    let ep = Endpoint::parse(o.get("addr").unwrap_or_else(|| die(USAGE))).unwrap_or_else(|e| die(&e));
    let code = match o.get("idle") {
        Some(_) => idle_mode(&ep, o.num("idle", 10_000usize), &o),
        None => echo_mode(&ep, &o),
    };
    std::process::exit(code)
}
