"""Starting child processes off the loop's thread.

`subprocess.Popen` blocks its caller until the child has exec'd (it reads
the child's error pipe, and may run a `preexec_fn`). The stdlib loop makes
that call on the loop's thread, inside asyncio's own files, which tools such
as `blockbuster` exempt; oxloop makes it on one long-lived daemon thread per
process (the "spawner"), and the loop waits for the result with a future.

Design:
- One spawner thread per process, started on first use (and again in a
  forked child, where the parent's thread does not exist). It runs jobs
  from a `SimpleQueue` one after the other; it never exits, so a child that
  asks for `PR_SET_PDEATHSIG` in its `preexec_fn` (tied to the thread that
  forked it) lives as long as the process, as it would if the main thread
  had started it.
- `spawn(loop, ...)` queues a job and returns a future of the loop; the job
  runs `Popen` and hands the `Popen` (or the exception it raised) back with
  `call_soon_threadsafe`.
- Signals: Linux sends a child's SIGCHLD to the thread that forked it. The
  spawner blocks SIGCHLD while idle, so that it reaches a thread that can
  act on it (the loop's, blocked in its poll, for a `signal.signal`
  handler such as MultiLoopChildWatcher's). Around `Popen` the spawner
  takes the signal mask of the loop's thread, which the child inherits, as
  it would inherit it from the loop's thread with the stdlib loop.

Invariants:
- Every child started here is either handed to the loop or, when nobody
  can take it any more (the waiting task was cancelled, or the loop closed
  meanwhile), killed, its pipes closed and reaped on the spawner thread:
  no zombie, no `ResourceWarning`.
"""

import os
import queue
import signal
import subprocess
import threading

__all__ = ("spawn",)

_lock = threading.Lock()
_jobs = None   # the running spawner's queue
_owner = None  # the pid of the process whose thread serves _jobs


def _serve(jobs):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    while True:
        job = jobs.get()
        job()
        del job


def _submit(job):
    global _jobs, _owner
    with _lock:
        if _jobs is None or _owner != os.getpid():
            _jobs = queue.SimpleQueue()
            _owner = os.getpid()
            threading.Thread(target=_serve, args=(_jobs,), daemon=True,
                             name="oxloop-spawner").start()
        jobs = _jobs
    jobs.put(job)


def _discard(proc):
    """Kill, close and reap a child nobody will take (spawner thread)."""
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


def _deliver(fut, proc, exc):
    # On the loop's thread.
    if fut.cancelled():
        if proc is not None:
            _submit(lambda: _discard(proc))
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(proc)


def spawn(loop, args, kwargs):
    """A future of `subprocess.Popen(args, **kwargs)`, run on the spawner
    thread."""
    fut = loop.create_future()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())

    def job():
        proc = exc = None
        idle = signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        try:
            proc = subprocess.Popen(args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            exc = e
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, idle)
        try:
            loop.call_soon_threadsafe(_deliver, fut, proc, exc)
        except RuntimeError:
            # The loop was closed meanwhile.
            if proc is not None:
                _discard(proc)

    _submit(job)
    return fut
