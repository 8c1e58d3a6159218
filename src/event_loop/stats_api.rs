//! The Python face of loop statistics (`stats`): the `_stats_*` functions
//! `python/oxloop/_stats.py` calls to turn stats on and off, set the
//! blocking threshold, probe the running callback (the watchdog) and read
//! a snapshot (`loop.stats()`). None of them holds a lock while Python runs.
//! And the loop's way back into Python after a slow callback
//! (`LoopCore::after_timed`).

use std::sync::atomic::Ordering::Relaxed;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::histogram::bump;
use super::stats::{nanos, SlowEntry, Started};
use super::LoopCore;

/// `{"bytes_in": rx, "bytes_out": tx}`, as each transport's
/// `get_extra_info("oxloop_stats")` and the loop's totals say it.
pub(crate) fn bytes_dict(py: Python<'_>, rx: u64, tx: u64) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("bytes_in", rx)?;
    d.set_item("bytes_out", tx)?;
    Ok(d)
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// `Loop.enable_stats(on)`.
#[pyfunction]
pub(crate) fn _stats_enable(lp: &Bound<'_, LoopCore>, on: bool) {
    let this = lp.get();
    this.stats.set_enabled(this, on);
}

/// `Loop.reset_stats()`.
#[pyfunction]
pub(crate) fn _stats_reset(lp: &Bound<'_, LoopCore>) {
    lp.get().stats.reset();
}

/// Sets the blocking threshold in seconds (None or <= 0: off).
#[pyfunction]
#[pyo3(signature = (lp, seconds))]
pub(crate) fn _stats_set_blocking(lp: &Bound<'_, LoopCore>, seconds: Option<f64>) {
    let ns = match seconds {
        Some(x) if x > 0.0 && x.is_finite() => nanos(x).max(1),
        _ => 0,
    };
    let this = lp.get();
    this.stats.set_blocking(this, ns);
}

/// For the watchdog: (number of the running callback, its start or None,
/// the clock now, the loop thread's ident).
#[pyfunction]
pub(crate) fn _stats_probe(lp: &Bound<'_, LoopCore>) -> (u64, Option<f64>, f64, u64) {
    let this = lp.get();
    let s = &this.stats;
    let start = s.cur_start.load(Relaxed);
    (
        s.cur_seq.load(Relaxed),
        (start != 0).then(|| start as f64 / 1e9),
        this.clock.now(),
        s.thread_ident.load(Relaxed),
    )
}

/// What the core measured, as a dict (`Loop.stats()` adds to it).
#[pyfunction]
pub(crate) fn _stats_snapshot<'py>(lp: &Bound<'py, LoopCore>) -> PyResult<Bound<'py, PyDict>> {
    let py = lp.py();
    let this = lp.get();
    let s = &this.stats;
    let (ready, timers, fds) = {
        let st = this.state.lock();
        (st.ready.len(), st.timers.len(), st.io.len())
    };
    let cancelled = this
        .cancelled_timers
        .load(std::sync::atomic::Ordering::Relaxed);
    let slow = s.slow.lock().clone();
    let d = PyDict::new(py);
    d.set_item("enabled", s.enabled.load(Relaxed))?;
    // Every timed callback records one lag.
    let count = s.lag.count();
    d.set_item("callbacks", count)?;
    d.set_item("iterations", s.iterations.load(Relaxed))?;
    d.set_item("lag_p50_ms", ms(s.lag.quantile(0.5)))?;
    d.set_item("lag_p90_ms", ms(s.lag.quantile(0.9)))?;
    d.set_item("lag_p99_ms", ms(s.lag.quantile(0.99)))?;
    d.set_item("lag_max_ms", ms(s.lag.max.load(Relaxed)))?;
    d.set_item("lag_count", count)?;
    d.set_item("lag_sum_s", s.lag.sum.load(Relaxed) as f64 / 1e9)?;
    let busy = s.busy_ns.load(Relaxed) as f64 / 1e9;
    let idle = s.idle_ns.load(Relaxed) as f64 / 1e9;
    d.set_item("busy_s", busy)?;
    d.set_item("idle_s", idle)?;
    d.set_item(
        "busy_ratio",
        if busy + idle > 0.0 {
            busy / (busy + idle)
        } else {
            0.0
        },
    )?;
    d.set_item("ready", ready)?;
    d.set_item("timers", timers.saturating_sub(cancelled))?;
    d.set_item("fds", fds)?;
    let blocking = s.blocking_ns.load(Relaxed);
    d.set_item(
        "blocking_threshold",
        (blocking > 0).then(|| blocking as f64 / 1e9),
    )?;
    d.set_item("blocking_callbacks", s.blocked.load(Relaxed))?;
    let list = PyList::empty(py);
    for e in slow {
        let item = PyDict::new(py);
        item.set_item("duration_ms", e.seconds * 1e3)?;
        item.set_item("kind", e.kind)?;
        item.set_item("name", e.name)?;
        item.set_item("location", e.location)?;
        list.append(item)?;
    }
    d.set_item("slow_callbacks", list)?;
    // Totals, then per kind of transport.
    let tr = PyDict::new(py);
    let kinds = [("stream", &s.stream), ("pipe", &s.pipe), ("udp", &s.udp)];
    let (mut rx, mut tx) = (0u64, 0u64);
    for (name, count) in kinds {
        let (i, o) = count.read();
        rx = rx.wrapping_add(i);
        tx = tx.wrapping_add(o);
        tr.set_item(name, bytes_dict(py, i, o)?)?;
    }
    tr.set_item("bytes_in", rx)?;
    tr.set_item("bytes_out", tx)?;
    d.set_item("transports", tr)?;
    Ok(d)
}

impl LoopCore {
    /// After a timed callback (`handle`) or native watcher (`watcher`) that
    /// started as `started` at `at`, ended at `end` and that
    /// `LoopStats::end` found worth a look: keeps it if it is among the slowest (described by
    /// `Loop._stats_describe`) and reports it if it went past the blocking
    /// threshold (`Loop._stats_blocked`). Only the report's error is
    /// returned; a failed description is replaced by "?" unless it must
    /// propagate.
    #[cold]
    pub(super) fn after_timed(
        slf: &Bound<'_, Self>,
        handle: Option<&Py<crate::handles::Handle>>,
        watcher: Option<&dyn super::io::IoWatcher>,
        started: Started,
        at: u64,
        end: u64,
        n: u64,
    ) -> PyResult<()> {
        let s = &slf.get().stats;
        let took_ns = end.saturating_sub(at);
        let slow = took_ns > s.slow_floor.load(Relaxed);
        let blocked = started.seq() != 0 && took_ns >= s.blocking_ns.load(Relaxed);
        if blocked {
            bump(&s.blocked, 1);
        }
        let took = took_ns as f64 / 1e9;
        let py = slf.py();
        let (kind, name, location) = match (handle, watcher) {
            (Some(h), _) => match slf
                .call_method1(pyo3::intern!(py, "_stats_describe"), (h,))
                .and_then(|d| d.extract::<(String, String, String)>())
            {
                Ok(d) => d,
                Err(e) if crate::errors::must_propagate(py, &e) => return Err(e),
                Err(_) => ("callback".into(), "?".into(), String::new()),
            },
            (None, Some(w)) => ("io".into(), w.describe(py), String::new()),
            (None, None) => ("callback".into(), "?".into(), String::new()),
        };
        // A group: not one callback's time (see the module docs).
        let (kind, name) = if n > 1 {
            (
                "callbacks".into(),
                format!("{n} callbacks, the last {kind} {name}"),
            )
        } else {
            (kind, name)
        };
        if slow {
            s.add_slow(SlowEntry {
                seconds: took,
                kind: kind.clone(),
                name: name.clone(),
                location: location.clone(),
            });
        }
        if blocked {
            let handle = handle.map(|h| h.clone_ref(py));
            slf.call_method1(
                pyo3::intern!(py, "_stats_blocked"),
                (handle, started.seq(), took, kind, name, location),
            )?;
        }
        Ok(())
    }
}
