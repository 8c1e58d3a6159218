//! Virtual time: the clock jumps over idle waits.
//!
//! A loop made with `virtual_time=True` runs like any other until it has
//! nothing to do but wait for its next timer. Then, instead of sleeping
//! until the deadline, it moves its clock (`Clock::advance_to`) to the
//! deadline and runs the timer at once. What may still make progress in
//! real time decides whether, and when, it jumps:
//!
//! - Real jobs (`real_jobs`: executor jobs started by `run_in_executor`,
//!   the executor's shutdown thread, child processes the loop watches): the
//!   clock does not jump while any runs; the loop waits in real time, as a
//!   real loop would, so a `wait_for` on a thread or a child never times out
//!   before the work really took that long.
//! - Watched fds (sockets, pipes, servers, `add_reader`): the loop first
//!   waits up to `io_grace` real seconds (default `DEFAULT_IO_GRACE`); only
//!   if no fd became ready and nothing was queued meanwhile does the clock
//!   jump. Traffic that keeps coming keeps the clock real.
//! - Neither: the jump is immediate, without a system call.
//!
//! Invariants: the offset only grows, so `time()` never goes backwards; the
//! clock moves only here, between the poll and the timer step of
//! `run_once`, never while a callback runs. A real-time loop never comes
//! here: `run_once` tests `Clock::is_virtual` first.

use std::sync::atomic::Ordering;

use super::LoopCore;

/// Default real seconds a virtual-time loop waits on its fds before jumping.
pub(crate) const DEFAULT_IO_GRACE: f64 = 0.05;

impl LoopCore {
    /// How long a virtual-time loop really waits for its next timer, which
    /// is `secs` real seconds away (> 0) at `when`: the real wait, and the
    /// deadline to jump to if the wait ends quietly.
    pub(super) fn virtual_wait(&self, io_empty: bool, when: f64, secs: f64) -> (f64, Option<f64>) {
        if secs <= 0.0 || self.real_jobs.load(Ordering::Acquire) > 0 {
            return (secs, None);
        }
        let grace = if io_empty { 0.0 } else { self.io_grace() };
        if grace >= secs {
            (secs, None)
        } else {
            (grace, Some(when))
        }
    }

    /// After the poll: jumps to `when` unless the wait was not quiet: `due`
    /// counts what is to run now (callbacks queued by ready fds, by
    /// signal handlers or from other threads, and native watchers), and a
    /// real job may have started meanwhile. Returns whether it jumped (the
    /// loop's statistics then read the clock afresh and count the skipped
    /// time as idle).
    pub(super) fn virtual_jump(&self, due: usize, when: f64) -> bool {
        if due > 0 || self.real_jobs.load(Ordering::Acquire) > 0 {
            return false;
        }
        self.clock.advance_to(when) > 0.0
    }

    /// Wakes the reactor if the loop waits in it and nobody woke it yet.
    fn wake_if_polling(&self) -> std::io::Result<()> {
        let must_wake = {
            let mut st = self.state.lock();
            let must = st.polling && !st.wake_pending;
            st.wake_pending |= must;
            must
        };
        if must_wake {
            self.reactor.wake()?;
        }
        Ok(())
    }

    /// Sets the real seconds a virtual-time loop waits on its fds.
    pub(super) fn set_io_grace(&self, seconds: f64) -> pyo3::PyResult<()> {
        if !(seconds >= 0.0 && seconds.is_finite()) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "virtual_time_grace must be a finite number >= 0, got {seconds}"
            )));
        }
        self.io_grace.store(seconds.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// The real seconds a virtual-time loop waits on its fds.
    pub(super) fn io_grace(&self) -> f64 {
        f64::from_bits(self.io_grace.load(Ordering::Relaxed))
    }

    /// A real job (thread or child process) ended, maybe on another thread:
    /// the loop re-decides its wait.
    pub(super) fn real_job_end(&self) -> std::io::Result<()> {
        let _ = self
            .real_jobs
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.wake_if_polling()
    }
}
