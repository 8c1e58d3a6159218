//! The closed-loop run shared by the client's echo and HTTP modes.
//!
//! Each connection (a `Client`) has exactly one request in flight.  The run
//! has three phases: `warmup` unmeasured, `duration` measured, then each
//! connection finishes its request in flight and either stops (HTTP) or
//! half-closes and waits for the server's EOF (echo).  Requests still
//! missing `drain` after the end are errors; connections whose server has
//! not closed `eof_wait` after the last answer are counted in `no_eof`.
//! Stdout gets `measure-start` and `measure-end` at the edges of the
//! measured window (the driver samples the server's CPU time there), then
//! one JSON object; the exit status is 1 on any error or wrong byte.
//!
//! Readiness is edge-triggered (mio): a client keeps its own `readable` /
//! `writable` flags, set from events and cleared when the socket says
//! WouldBlock, and `pump` moves it forward until it would block.

use crate::{cpu_seconds, json_num, json_str};
use mio::{Events, Poll};
use std::cell::Cell;
use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

#[derive(PartialEq, Clone, Copy, Debug)]
pub enum Phase {
    /// Sending requests and reading answers.
    Busy,
    /// Past the end: our side closed, waiting for the server's EOF.
    Closing,
    Done,
}

/// Timing of the run, shared by all connections.
pub struct Run {
    /// Bytes per request (echo size, or HTTP request body).
    pub size: usize,
    /// `all`, `sample` (first 4 requests of each connection and every
    /// 16th) or `none`: which answers are compared byte for byte.
    pub verify: String,
    pub start: Instant,
    /// End of the measured window: `start + duration`, moved later (at most
    /// by `drain`) while no request has completed inside it, so that a
    /// short window on a starved machine measures something instead of
    /// failing; a server that answers nothing still fails.
    pub end: Cell<Instant>,
    /// How late `end` may move.
    pub latest_end: Instant,
}

impl Run {
    /// `stretch`: how far `end` may move (see `end`); zero for a warm-up run.
    pub fn new(size: usize, verify: String, start: Instant, duration: Duration, stretch: Duration) -> Run {
        let stretch = if duration.is_zero() { Duration::ZERO } else { stretch };
        Run { size, verify, start, end: Cell::new(start + duration), latest_end: start + duration + stretch }
    }

    pub fn end(&self) -> Instant {
        self.end.get()
    }

    /// Whether request number `seq` (from 1) of a connection is checked.
    pub fn checks(&self, seq: u64) -> bool {
        match self.verify.as_str() {
            "all" => true,
            "none" => false,
            _ => seq <= 4 || seq.is_multiple_of(16),
        }
    }
}

/// What the connections report, summed.
#[derive(Default)]
pub struct Tally {
    pub measured: u64,
    pub total: u64,
    pub checked: u64,
    pub wrong: u64,
    pub first_wrong: Option<String>,
    pub errors: Vec<String>,
    pub lat_ns: Vec<u64>,
}

impl Tally {
    pub fn wrong(&mut self, id: usize, what: String) {
        self.wrong += 1;
        if self.first_wrong.is_none() {
            self.first_wrong = Some(format!("connection {id}: {what}"));
        }
    }

    /// A request that began at `began` is complete now.
    pub fn complete(&mut self, run: &Run, began: Instant, now: Instant, checked: bool) {
        if self.measured == 0 && now >= run.start && now >= run.end() && now < run.latest_end {
            run.end.set(now + Duration::from_micros(1)); // the first answer of a stretched window
        }
        self.total += 1;
        self.checked += u64::from(checked);
        if now >= run.start && now < run.end() {
            self.measured += 1;
            self.lat_ns.push((now - began).as_nanos() as u64);
        }
    }
}

/// One connection of the closed loop.
pub trait Client {
    fn phase(&self) -> Phase;
    fn set_phase(&mut self, phase: Phase);
    /// Readiness from an epoll event (or-ed into the client's flags).
    fn ready(&mut self, readable: bool, writable: bool);
    /// Send the first request.
    fn start(&mut self, now: Instant, run: &Run);
    /// Move forward until the socket would block.
    fn pump(&mut self, id: usize, run: &Run, scratch: &mut [u8], t: &mut Tally) -> Result<(), String>;
}

/// Limits of the run's end.
pub struct Ends {
    pub duration: Duration,
    pub drain: Duration,
    pub eof_wait: Duration,
}

fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i] as f64 / 1000.0
}

pub fn marker(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Run `conns` (registered with `poll`, tokens = their index) to the end,
/// print the result; returns the exit status.
pub fn drive<C: Client>(poll: &mut Poll, conns: &mut [C], run: &Run, ends: &Ends, scratch: &mut [u8]) -> i32 {
    let t0 = Instant::now();
    let mut deadline = run.latest_end + ends.drain;
    let mut eof_deadline_set = false;
    let cpu0 = cpu_seconds();
    let mut t = Tally::default();
    let (mut started, mut ended) = (false, false);
    let (mut win_start, mut win_end) = (run.start, run.end());
    let mut cpu_window = (0.0, 0.0);
    for (id, c) in conns.iter_mut().enumerate() {
        c.start(t0, run);
        if let Err(e) = c.pump(id, run, scratch, &mut t) {
            t.errors.push(e);
            c.set_phase(Phase::Done);
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
        if !ended && now >= run.end() && t.measured == 0 && now < run.latest_end {
            run.end.set(now + Duration::from_millis(20)); // nothing measured yet: wait for one answer
        }
        if !ended && now >= run.end() {
            ended = true;
            win_end = now;
            cpu_window.1 = cpu_seconds();
            marker("measure-end");
        }
        let live = conns.iter().filter(|c| c.phase() != Phase::Done).count();
        if (live == 0 && ended) || now >= deadline {
            break;
        }
        if ended && !eof_deadline_set && conns.iter().all(|c| c.phase() != Phase::Busy) {
            // Every answer is in: give the server a bounded time to close.
            eof_deadline_set = true;
            deadline = deadline.min(now + ends.eof_wait);
        }
        let next_edge = if !started {
            run.start
        } else if !ended {
            run.end()
        } else {
            deadline
        };
        let timeout = next_edge.saturating_duration_since(now).min(Duration::from_millis(50));
        match poll.poll(&mut events, Some(timeout)) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("epoll_wait: {e}"),
            Ok(()) => {}
        }
        for ev in events.iter() {
            let id = ev.token().0;
            let c = &mut conns[id];
            if c.phase() == Phase::Done {
                continue;
            }
            c.ready(
                ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                ev.is_writable() || ev.is_write_closed() || ev.is_error(),
            );
            if let Err(e) = c.pump(id, run, scratch, &mut t) {
                t.errors.push(e);
                c.set_phase(Phase::Done);
            }
        }
    }
    let stuck = conns.iter().filter(|c| c.phase() == Phase::Busy).count();
    let no_eof = conns.iter().filter(|c| c.phase() == Phase::Closing).count();
    if stuck > 0 {
        t.errors.push(format!("{stuck} connection(s) still waiting for an answer {:?} after the end", ends.drain));
    }
    if !started {
        marker("measure-start");
    }
    if !ended {
        marker("measure-end");
    }
    let window = (win_end - win_start).as_secs_f64();
    if !ends.duration.is_zero() && t.measured == 0 && t.errors.is_empty() {
        t.errors.push("no request completed in the measured window".into());
    }
    t.lat_ns.sort_unstable();
    t.errors.sort();
    t.errors.dedup();
    let errors: Vec<String> = t.errors.iter().take(5).map(|e| json_str(e)).collect();
    let cpu_pct = if window > 0.0 { 100.0 * (cpu_window.1 - cpu_window.0) / window } else { f64::NAN };
    println!(
        "{{\"size\": {}, \"conns\": {}, \"window_s\": {}, \"requests\": {}, \"rps\": {}, \"total_requests\": {}, \
         \"checked\": {}, \"wrong\": {}, \"first_wrong\": {}, \"no_eof\": {no_eof}, \"errors\": [{}], \
         \"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, \"max_us\": {}, \"client_cpu_pct\": {}, \"client_cpu_s\": {}}}",
        run.size,
        conns.len(),
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
