//! Unit tests of `LoopStats` (the slowest callbacks kept, groups, the
//! one threshold).

use super::*;

#[test]
fn slow_keeps_the_longest() {
    let s = LoopStats::new();
    for i in 0..30 {
        s.add_slow(SlowEntry {
            seconds: (i % 15) as f64,
            kind: "callback".into(),
            name: format!("f{i}"),
            location: String::new(),
        });
    }
    let slow = s.slow.lock();
    assert_eq!(slow.len(), SLOW_KEEP);
    assert_eq!(slow[0].seconds, 14.0);
    assert_eq!(slow[SLOW_KEEP - 1].seconds, 10.0);
    assert_eq!(s.slow_floor.load(Relaxed), nanos(10.0));
    assert_eq!(s.look_ns.load(Relaxed), nanos(10.0) + 1);
}

/// A loop's clock in a test: callbacks of `each` ns run back to back and
/// the clock is read only when `LoopStats::begin` says so.
struct Run {
    clock: u64,
    pending: u64,
}

impl Run {
    /// A run at clock 1,000 after the `GROUP_AFTER` short callbacks that
    /// are each timed (each reads the clock).
    fn past_streak(s: &LoopStats) -> Self {
        let mut run = Run {
            clock: 1_000,
            pending: 0,
        };
        for _ in 0..GROUP_AFTER {
            assert_eq!(run.step(s, 100), (true, 0));
        }
        run
    }

    /// One callback of `each` ns: (whether the clock was read after it,
    /// what `end` returned).
    fn step(&mut self, s: &LoopStats, each: u64) -> (bool, u64) {
        let started = s.begin(self.clock, 0);
        self.pending += 1;
        if !started.read() {
            return (false, 0);
        }
        let (at, end) = (self.clock, self.clock + self.pending * each);
        self.pending = 0;
        self.clock = end;
        (true, s.end(started, at, end))
    }
}

#[test]
fn a_run_of_short_callbacks_is_timed_in_groups_that_grow() {
    let s = LoopStats::new();
    let mut run = Run::past_streak(&s);
    // Now groups of 8, 16, 32, 32: one reading after each.
    for size in [GROUP, 2 * GROUP, GROUP_MAX, GROUP_MAX] {
        for _ in 0..size - 1 {
            assert_eq!(run.step(&s, 100), (false, 0));
        }
        assert_eq!(run.step(&s, 100), (true, 0), "group of {size}");
    }
    // A slow group is reported with its size and ends the run.
    for _ in 0..GROUP_MAX - 1 {
        assert_eq!(run.step(&s, 100), (false, 0));
    }
    assert_eq!(run.step(&s, SLOW_MIN_NS), (true, GROUP_MAX));
    assert_eq!(s.streak.load(Relaxed), 0);
    assert_eq!(run.step(&s, 100), (true, 0));
    // Busy time: every callback's, readings back to back; lags of 0
    // are counted, in nothing but their count.
    assert_eq!(s.busy_ns.load(Relaxed), run.clock - 1_000);
    let callbacks = GROUP_AFTER + GROUP * 3 + GROUP_MAX * 3 + 1;
    assert_eq!(s.lag.count(), callbacks);
    assert_eq!((s.lag.sum.load(Relaxed), s.lag.max.load(Relaxed)), (0, 0));
}

#[test]
fn natives_are_timed_singly() {
    let s = LoopStats::new();
    let run = Run::past_streak(&s);
    let w = s.begin_single(run.clock, 7);
    assert!(w.read());
    assert_eq!(s.end(w, run.clock, run.clock + 100), 0);
    assert_eq!(s.lag.sum.load(Relaxed), 7);
}

#[test]
fn one_threshold_covers_slow_and_blocking() {
    let s = LoopStats::new();
    assert_eq!(s.look_ns.load(Relaxed), SLOW_MIN_NS + 1);
    s.blocking_ns.store(50, Relaxed);
    s.update_look();
    let started = Started(1);
    assert_eq!(s.end(started, 1000, 1049), 0);
    assert_eq!(s.end(started, 1000, 1050), 1);
    s.blocking_ns.store(0, Relaxed);
    s.update_look();
    assert_eq!(s.end(started, 1000, 1000 + SLOW_MIN_NS), 0);
    assert_eq!(s.end(started, 1000, 1001 + SLOW_MIN_NS), 1);
}
