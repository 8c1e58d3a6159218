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

#[test]
fn a_run_of_short_callbacks_is_timed_in_groups() {
    let s = LoopStats::new();
    let mut at = 1_000;
    let mut short = |s: &LoopStats, n: u64| {
        let started = Started { at, seq: 0 };
        at += n * 100;
        s.end(&started, at)
    };
    for _ in 0..GROUP_AFTER {
        assert!(!s.in_group());
        assert_eq!(short(&s, 1), 0);
    }
    // Now a group: GROUP - 1 readings skipped, then one.
    for _ in 0..GROUP - 1 {
        assert!(s.in_group());
    }
    assert!(!s.in_group());
    assert_eq!(short(&s, GROUP), 0);
    // A slow group is reported with its size and ends the run.
    for _ in 0..GROUP - 1 {
        assert!(s.in_group());
    }
    let started = Started { at: 0, seq: 0 };
    assert_eq!(s.end(&started, SLOW_MIN_NS + 1), GROUP);
    assert!(!s.in_group());
    assert_eq!(s.streak.load(Relaxed), 0);
}

#[test]
fn one_threshold_covers_slow_and_blocking() {
    let s = LoopStats::new();
    assert_eq!(s.look_ns.load(Relaxed), SLOW_MIN_NS + 1);
    s.blocking_ns.store(50, Relaxed);
    s.update_look();
    let started = Started { at: 1000, seq: 1 };
    assert_eq!(s.end(&started, 1049), 0);
    assert_eq!(s.end(&started, 1050), 1);
    s.blocking_ns.store(0, Relaxed);
    s.update_look();
    assert_eq!(s.end(&started, 1000 + SLOW_MIN_NS), 0);
    assert_eq!(s.end(&started, 1001 + SLOW_MIN_NS), 1);
}
