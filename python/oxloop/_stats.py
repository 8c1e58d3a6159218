"""Loop statistics and the blocking-call detector (the Python half).

The core (``src/event_loop/stats/mod.rs``) measures: lag, callback durations,
busy and idle time, the slowest callbacks, bytes through stream, pipe and
datagram transports (totals and per kind under "transports").
Here: the public methods (``enable_stats``, ``stats``, ``reset_stats``,
``set_blocking_threshold``), how a slow callback is described (qualified
name and file:line), and the watchdog thread that samples the loop
thread's Python stack while one callback holds the loop.

The watchdog: a daemon thread that holds only a weak reference to its loop.
It asks the core which callback runs and since when (``_stats_probe``, no
lock), then sleeps until that callback would reach the threshold (at most a
quarter threshold); when one has run past the threshold it takes the loop
thread's frame (``sys._current_frames()``) and keeps the stack for that
callback. A callback that blocks in C code while holding the
GIL cannot be sampled until it lets go of it (``time.sleep``, socket and
file calls do). When the callback ends, the loop (on its own thread) hands
the report to ``call_exception_handler`` with the stack and the full
duration; a callback the watchdog could not sample is reported too, without
a stack.
"""

import functools
import math
import os
import sys
import threading
import traceback
import weakref
from asyncio import tasks

from . import _core

__all__ = ("StatsMixin",)


def _env_flag(name):
    if sys.flags.ignore_environment:
        return None
    return os.environ.get(name) or None


def _location(code, line=None):
    return f"{code.co_filename}:{line if line is not None else code.co_firstlineno}"


def _describe_coro(coro):
    """(qualified name, file:line where it is suspended now)."""
    name = getattr(coro, "__qualname__", None) or type(coro).__qualname__
    frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
    if frame is not None:
        return name, _location(frame.f_code, frame.f_lineno)
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    return name, _location(code) if code is not None else ""


def _describe_callable(cb):
    """(qualified name, file:line of its definition or "")."""
    while isinstance(cb, functools.partial):
        cb = cb.func
    func = getattr(cb, "__func__", cb)
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    code = getattr(func, "__code__", None)
    if code is None:  # a callable object: where its __call__ is
        code = getattr(vars(type(func)).get("__call__"), "__code__", None)
    return name, _location(code) if code is not None else ""


def _task_of(handle):
    owner = getattr(handle._callback, "__self__", None)
    return owner if isinstance(owner, tasks.Task) else None


class _Watchdog:
    """Samples the loop thread's stack while a callback blocks the loop."""

    def __init__(self, loop, threshold):
        self._loop = weakref.ref(loop)
        self.threshold = threshold
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending = {}  # callback number -> StackSummary
        self._taken = 0  # highest callback number the loop reported
        self._thread = threading.Thread(
            target=self._run, name="oxloop-watchdog", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()

    def _run(self):
        interval = min(max(self.threshold / 4, 0.001), 0.25)
        wait = interval
        while not self._stop.wait(wait):
            loop = self._loop()
            if loop is None or loop.is_closed():
                return
            wait = self._check(loop, interval)
            del loop

    def _check(self, loop, interval):
        # Samples the running callback if it is past the threshold; returns
        # how long to wait: until the running one reaches it, at most
        # `interval`.
        seq, start, now, ident = _core._stats_probe(loop)
        if start is None:
            return interval
        due = start + self.threshold - now
        if due > 0:
            return min(due + 0.0005, interval)
        with self._lock:
            if seq <= self._taken or seq in self._pending:
                return interval
        frame = sys._current_frames().get(ident)
        if frame is None:
            return interval
        stack = _callback_stack(frame)
        del frame
        # Still the same callback? Otherwise the stack is someone else's.
        if _core._stats_probe(loop)[:2] == (seq, start):
            with self._lock:
                if seq > self._taken:
                    self._pending[seq] = stack
        return interval

    def take(self, seq):
        """The stack sampled for callback `seq` (None if none)."""
        with self._lock:
            self._taken = max(self._taken, seq)
            stack = self._pending.pop(seq, None)
            for old in [s for s in self._pending if s <= seq]:
                del self._pending[old]
        return stack


def _run_forever_code():
    from ._loop import Loop

    return Loop.run_forever.__code__


def _callback_stack(frame):
    """The stack from the callback down to `frame` (the loop's own frames
    below the callback are left out)."""
    stop = _run_forever_code()
    frames = []
    while frame is not None and frame.f_code is not stop:
        frames.append((frame, frame.f_lineno))
        frame = frame.f_back
    frames.reverse()
    return traceback.StackSummary.extract(iter(frames))


class StatsMixin:
    """``loop.stats()`` and the blocking-call detector."""

    _stats_watchdog = None

    def _stats_init(self):
        if _env_flag("OXLOOP_STATS") not in (None, "0"):
            self.enable_stats(True)
        threshold = _env_flag("OXLOOP_BLOCKING_THRESHOLD")
        if threshold:
            self.set_blocking_threshold(float(threshold))

    def enable_stats(self, enabled=True):
        """Turn the loop's measurements on (or off). Off costs nothing."""
        _core._stats_enable(self, bool(enabled))

    def reset_stats(self):
        """Forget what was measured so far (the byte totals stay)."""
        _core._stats_reset(self)

    def stats(self):
        """A plain dict of what the loop measured since stats were enabled
        (or reset). Callable from any thread. See README, "Inside the loop"."""
        return _core._stats_snapshot(self)

    def set_blocking_threshold(self, seconds):
        """Report any callback that holds the loop for `seconds` or more,
        with the stack where it was stuck (None or 0: stop)."""
        if seconds is not None:
            seconds = float(seconds)
            if not (seconds > 0 and math.isfinite(seconds)):
                seconds = None
        old, self._stats_watchdog = self._stats_watchdog, None
        if old is not None:
            old.stop()
        _core._stats_set_blocking(self, seconds)
        if seconds is not None:
            self._stats_watchdog = _Watchdog(self, seconds)

    def get_blocking_threshold(self):
        wd = self._stats_watchdog
        return wd.threshold if wd is not None else None

    # -- called by the core --------------------------------------------

    def _stats_describe(self, handle):
        # (kind, qualified name, file:line) of a callback that just ran.
        task = _task_of(handle)
        if task is not None:
            name, where = _describe_coro(task.get_coro())
            return "task", name, where
        cb = handle._callback
        if cb is None:
            return "callback", repr(handle), ""
        name, where = _describe_callable(cb)
        return "callback", name, where

    def _stats_blocked(self, handle, seq, seconds, kind, name, where):
        # A callback held the loop past the blocking threshold.
        wd = self._stats_watchdog
        stack = wd.take(seq) if wd is not None and seq else None
        if stack:
            last = stack[-1]
            at = f"{last.filename}:{last.lineno}"
            how = f"blocked at {at}"
        else:
            at = None
            how = ("no stack was sampled (it ended before the watchdog "
                   "looked, or held the GIL)")
        what = f"{kind} {name}" + (f" ({where})" if where else "")
        context = {
            "message": f"Executing {what} blocked the loop for "
                       f"{seconds:.3f} seconds; {how}",
            "duration": seconds,
            "stack": stack,
            "blocking_location": at,
        }
        if handle is not None:
            context["handle"] = handle
            task = _task_of(handle)
            if task is not None:
                context["task"] = task
        self.call_exception_handler(context)
