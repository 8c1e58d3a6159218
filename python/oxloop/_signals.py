"""Unix signal handlers for oxloop (`loop.add_signal_handler`).

`SignalsMixin` is one of `oxloop.Loop`'s bases.

Design: Python's C-level signal handler writes the signal number into the
fd given to `signal.set_wakeup_fd`. The mixin owns a non-blocking
socketpair: its write end is the wakeup fd, its read end is watched by the
loop with `add_reader`. So a signal that arrives while the loop blocks in the
reactor's poll wakes it; the reader drains the bytes and schedules each
handler with `call_soon` in the context captured at `add_signal_handler`
(the "handle" of asyncio runs through the ready queue the same way). The
Python-level handler installed with `signal.signal` is a no-op: its only
job is to make CPython write to the wakeup fd.

Invariants:
- `_sig_handlers` is non-empty iff the socketpair exists, is watched and
  is the process's wakeup fd (set by this loop).
- When the last handler is removed (or the loop closes) the reader is
  removed, the wakeup fd in place before the first handler is restored and
  the socketpair is closed.
- Removing a SIGINT handler restores `signal.default_int_handler`; any
  other signal gets `SIG_DFL`, as asyncio does.
"""

import contextvars
import errno
import logging
import signal
import socket
import sys
import warnings
from asyncio import coroutines

__all__ = ("SignalsMixin",)

# asyncio.iscoroutinefunction warns from 3.14 on; asyncio calls this twin.
_iscoroutinefunction = getattr(coroutines, "_iscoroutinefunction",
                               coroutines.iscoroutinefunction)

logger = logging.getLogger("asyncio")


def _sighandler_noop(signum, frame):
    """Dummy handler: CPython writes the number to the wakeup fd."""


class SignalsMixin:
    """add_signal_handler and remove_signal_handler (Unix only)."""

    __slots__ = ()

    def _sig_state(self):
        # The mixin has no __init__: the table is made on first use.
        return self.__dict__.setdefault("_sig_handlers", {})

    def _sig_check(self, sig):
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig, callback, *args):
        """Add a handler for a signal. UNIX only.

        Raise ValueError if the signal number is invalid or uncatchable.
        Raise RuntimeError if there is a problem setting up the handler.
        """
        if (coroutines.iscoroutine(callback)
                or _iscoroutinefunction(callback)):
            raise TypeError("coroutines cannot be used "
                            "with add_signal_handler()")
        self._sig_check(sig)
        self._check_closed()
        handlers = self._sig_state()
        first = not handlers
        if first:
            rsock, wsock = socket.socketpair()
            rsock.setblocking(False)
            wsock.setblocking(False)
            try:
                # Raises ValueError outside the main thread: a loop running
                # in another thread cannot add a signal handler.
                prev = signal.set_wakeup_fd(wsock.fileno())
            except (ValueError, OSError) as exc:
                rsock.close()
                wsock.close()
                raise RuntimeError(str(exc))
            self.__dict__["_sig_socks"] = (rsock, wsock, prev)
            self.add_reader(rsock.fileno(), self._sig_read)
        else:
            # As asyncio: (re)install the wakeup fd each time, which also
            # refuses a call from another thread.
            try:
                signal.set_wakeup_fd(self.__dict__["_sig_socks"][1].fileno())
            except (ValueError, OSError) as exc:
                raise RuntimeError(str(exc))
        handlers[sig] = (callback, args, contextvars.copy_context())
        try:
            signal.signal(sig, _sighandler_noop)
            # SA_RESTART limits EINTR in blocking calls.
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del handlers[sig]
            if not handlers:
                self._sig_teardown()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught")
            raise

    def _sig_read(self):
        rsock = self.__dict__["_sig_socks"][0]
        while True:
            try:
                data = rsock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            handlers = self._sig_state()
            for signum in data:
                entry = handlers.get(signum)
                if entry is None:
                    continue  # removed meanwhile, or not ours
                callback, args, context = entry
                self.call_soon(callback, *args, context=context)

    def _sig_teardown(self):
        socks = self.__dict__.pop("_sig_socks", None)
        if socks is None:
            return
        rsock, wsock, prev = socks
        try:
            current = signal.set_wakeup_fd(prev)
            if current != wsock.fileno():
                # Someone replaced our wakeup fd since: leave theirs.
                signal.set_wakeup_fd(current)
        except (ValueError, OSError) as exc:
            logger.info("set_wakeup_fd(%s) failed: %s", prev, exc)
        if not self.is_closed():
            self.remove_reader(rsock.fileno())
        rsock.close()
        wsock.close()

    def remove_signal_handler(self, sig):
        """Remove a handler for a signal. UNIX only.

        Return True if a signal handler was removed, False if not.
        """
        self._sig_check(sig)
        handlers = self._sig_state()
        try:
            del handlers[sig]
        except KeyError:
            return False
        handler = (signal.default_int_handler if sig == signal.SIGINT
                   else signal.SIG_DFL)
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught")
            raise
        finally:
            if not handlers:
                self._sig_teardown()
        return True

    def _sig_close(self):
        """Called by `Loop.close()`: remove every signal handler."""
        handlers = self._sig_state()
        if not handlers:
            return
        if sys.is_finalizing():
            warnings.warn(f"Closing the loop {self!r} on interpreter "
                          f"shutdown stage, skipping signal handlers removal",
                          ResourceWarning, source=self, stacklevel=1)
            handlers.clear()
            return
        for sig in list(handlers):
            self.remove_signal_handler(sig)
