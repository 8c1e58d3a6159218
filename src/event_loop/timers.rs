//! The timer heap.
//!
//! A binary min-heap keyed by `(when, seq)`: `seq` is a counter taken at
//! insertion, so timers with equal deadlines fire in the order they were
//! scheduled (asyncio's `heapq` gives no such promise; we do).
//!
//! A NaN deadline sorts first: asyncio's `when >= end_time` test is false for
//! NaN, so the stdlib fires such a timer at once, and so do we.
//!
//! The heap is generic so that it can be unit-tested without Python.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One scheduled item.
struct Entry<T> {
    /// `(when, seq)` as one integer: the deadline (NaN replaced by -inf)
    /// mapped to a `u64` that sorts as `f64::total_cmp` does (`ordered`),
    /// in the high half; the insertion counter, so that ties on the
    /// deadline fire in insertion order, in the low half. One integer
    /// compare per heap step instead of a float compare and a tie-break.
    key: u128,
    /// The scheduled item.
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest on top.
        other.key.cmp(&self.key)
    }
}

const SIGN: u64 = 1 << 63;

/// `when`'s bits mapped so that unsigned order is `f64::total_cmp`'s
/// order: negatives have every bit flipped, non-negatives the sign set.
fn ordered(when: f64) -> u64 {
    let bits = when.to_bits();
    if bits & SIGN != 0 {
        !bits
    } else {
        bits | SIGN
    }
}

/// The inverse of `ordered`.
fn unordered(key: u64) -> f64 {
    f64::from_bits(if key & SIGN != 0 { key & !SIGN } else { !key })
}

/// Timers ordered by deadline, then by scheduling order.
pub struct TimerHeap<T> {
    /// The heap proper.
    heap: BinaryHeap<Entry<T>>,
    /// The next insertion counter.
    seq: u64,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

fn key_of(when: f64) -> f64 {
    if when.is_nan() {
        f64::NEG_INFINITY
    } else {
        when
    }
}

impl<T> TimerHeap<T> {
    /// Schedules `item` at `when`.
    pub fn push(&mut self, when: f64, item: T) {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.heap.push(Entry {
            key: (u128::from(ordered(key_of(when))) << 64) | u128::from(seq),
            item,
        });
    }

    /// The earliest deadline (NaN shows as -inf), if any.
    pub fn peek_when(&self) -> Option<f64> {
        self.heap.peek().map(|e| unordered((e.key >> 64) as u64))
    }

    /// The earliest item, if any.
    pub fn peek(&self) -> Option<&T> {
        self.heap.peek().map(|e| &e.item)
    }

    /// Removes and returns the earliest item.
    pub fn pop(&mut self) -> Option<T> {
        self.heap.pop().map(|e| e.item)
    }

    /// Removes and returns the earliest item if its deadline is before `end`.
    pub fn pop_due(&mut self, end: f64) -> Option<T> {
        match self.heap.peek() {
            Some(e) if unordered((e.key >> 64) as u64) < end => self.heap.pop().map(|e| e.item),
            _ => None,
        }
    }

    /// Number of scheduled items (cancelled ones included until removed).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Keeps the items for which `keep` is true; the others are appended to
    /// `removed` (so the caller can drop them outside any lock).
    pub fn retain_into(&mut self, mut keep: impl FnMut(&T) -> bool, removed: &mut Vec<T>) {
        let entries = std::mem::take(&mut self.heap).into_vec();
        let mut kept = Vec::with_capacity(entries.len());
        for e in entries {
            if keep(&e.item) {
                kept.push(e);
            } else {
                removed.push(e.item);
            }
        }
        self.heap = BinaryHeap::from(kept);
    }

    /// Removes every item, appending them to `out`.
    pub fn drain_into(&mut self, out: &mut Vec<T>) {
        out.extend(
            std::mem::take(&mut self.heap)
                .into_vec()
                .into_iter()
                .map(|e| e.item),
        );
    }

    /// Visits every item (for the garbage collector).
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|e| &e.item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_keys_sort_as_total_cmp_and_round_trip() {
        let xs = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -f64::MIN_POSITIVE,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            1.0,
            1.0 + f64::EPSILON,
            1e300,
            f64::INFINITY,
        ];
        for a in xs {
            assert_eq!(unordered(ordered(a)).to_bits(), a.to_bits());
            for b in xs {
                assert_eq!(ordered(a).cmp(&ordered(b)), a.total_cmp(&b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn negative_deadlines_come_first() {
        let mut h = TimerHeap::default();
        h.push(0.5, "c");
        h.push(-3.0, "a");
        h.push(-0.5, "b");
        assert_eq!(h.peek_when(), Some(-3.0));
        assert_eq!(h.pop_due(-1.0), Some("a"));
        assert_eq!(h.pop_due(-1.0), None);
        assert_eq!(h.pop(), Some("b"));
        assert_eq!(h.pop(), Some("c"));
    }

    #[test]
    fn earliest_first() {
        let mut h = TimerHeap::default();
        h.push(3.0, "c");
        h.push(1.0, "a");
        h.push(2.0, "b");
        assert_eq!(h.pop(), Some("a"));
        assert_eq!(h.pop(), Some("b"));
        assert_eq!(h.pop(), Some("c"));
        assert_eq!(h.pop(), None);
    }

    #[test]
    fn equal_deadlines_fire_in_scheduling_order() {
        let mut h = TimerHeap::default();
        for i in 0..1000 {
            h.push(5.0, i);
        }
        h.push(1.0, -1);
        assert_eq!(h.pop(), Some(-1));
        for i in 0..1000 {
            assert_eq!(h.pop(), Some(i));
        }
    }

    #[test]
    fn pop_due_respects_end() {
        let mut h = TimerHeap::default();
        h.push(1.0, 1);
        h.push(2.0, 2);
        assert_eq!(h.pop_due(1.5), Some(1));
        assert_eq!(h.pop_due(1.5), None);
        assert_eq!(h.pop_due(2.0), None, "deadline equal to end is not due");
        assert_eq!(h.pop_due(2.0000001), Some(2));
    }

    #[test]
    fn nan_is_due_at_once_and_inf_never() {
        let mut h = TimerHeap::default();
        h.push(f64::INFINITY, "inf");
        h.push(f64::NAN, "nan");
        assert_eq!(h.pop_due(0.0), Some("nan"));
        assert_eq!(h.pop_due(1e300), None);
        assert_eq!(h.peek_when(), Some(f64::INFINITY));
    }

    #[test]
    fn retain_keeps_order() {
        let mut h = TimerHeap::default();
        for i in 0..10 {
            h.push((i % 3) as f64, i);
        }
        let mut removed = Vec::new();
        h.retain_into(|x| x % 2 == 0, &mut removed);
        assert_eq!(removed.len(), 5);
        let mut out = Vec::new();
        while let Some(x) = h.pop() {
            out.push(x);
        }
        assert_eq!(out, vec![0, 6, 4, 2, 8]);
    }
}
