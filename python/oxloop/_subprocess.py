"""Subprocesses for oxloop (`subprocess_exec`, `subprocess_shell`).

`SubprocessMixin` is one of `oxloop.Loop`'s bases; `asyncio.
create_subprocess_exec/shell` reach it through the public loop API.

Design:
- The transport is asyncio's `unix_events._UnixSubprocessTransport` (a
  `base_subprocess.BaseSubprocessTransport` over `subprocess.Popen`),
  imported at runtime, whose `_start` takes a `Popen` that the spawner
  thread (`_spawn.py`) created: the loop's thread never waits for a child
  to exec. It needs only public loop API (`create_future`,
  `create_task`, `call_soon`, `connect_read_pipe`/`connect_write_pipe`, ...),
  so its pipes are oxloop's pipe transports, and it gives asyncio's
  callback order: `connection_made`, the pipes' `pipe_data_received`/
  `pipe_connection_lost`, `process_exited`, then `connection_lost` once
  the process has exited and every pipe is closed.
- Reaping never blocks the loop. On Linux ≥ 5.3 the child's pidfd
  (`os.pidfd_open`) is watched with `add_reader`; it becomes readable when
  the child exits and a native `waitpid(WNOHANG)` (`_core.try_wait`)
  collects the status. Where pidfds are missing, a daemon thread per child
  blocks in `waitpid` and hands the status back with `call_soon_threadsafe`
  (asyncio's ThreadedChildWatcher strategy).
- Child watchers (Python < 3.14): a watcher a program put in the policy
  (`asyncio.set_child_watcher`, `policy.set_child_watcher`), or the one a
  custom policy's `get_child_watcher` gives, is used as the stdlib loop uses
  it: entered around the spawn, refused if inactive, given each child with
  `add_child_handler`. With the stdlib's default policy and no watcher set,
  the loop reaps its children itself, as above (the stdlib would make its
  default watcher, which does the same).
- The status reaches the transport one iteration later
  (`call_soon(transp._process_exited, rc)`), as asyncio's watcher callback
  does, so pipe data already read is delivered first.

Invariants:
- Every child this loop started is reaped exactly once: by its pidfd
  watcher, its waiter thread, the installed child watcher, or, when the
  loop closes with the child still running, by a waiter thread started at
  close (the transport is then never told: the loop is gone). No zombie
  is left behind.
- A status that `Popen.poll()` collected first (`ChildProcessError` from
  `waitpid`) is taken from `Popen.returncode`.
"""

import contextvars
import os
import subprocess
import sys
import threading
import warnings
from asyncio import events, unix_events

from . import _core, _spawn

__all__ = ("SubprocessMixin",)

_PY312 = sys.version_info >= (3, 12)


def _reap_blocking(pid):
    """Block until `pid` exits (off the loop's thread); its exit code, or
    None if it was reaped elsewhere (e.g. by `Popen.poll()`)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status)


def _installed_watcher():
    """The child watcher the program chose (Python < 3.14), or None: one
    set in the policy, or one that the policy's own `get_child_watcher`
    gives (not the stdlib's, which would make a default watcher)."""
    if not hasattr(events, "get_child_watcher"):
        return None  # 3.14+: no child watchers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        policy = events.get_event_loop_policy()
        if getattr(policy, "_watcher", None) is None:
            getter = getattr(type(policy), "get_child_watcher", None)
            stdlib = (events.AbstractEventLoopPolicy.get_child_watcher,
                      unix_events._UnixDefaultEventLoopPolicy
                      .get_child_watcher)
            if getter is None or getter in stdlib:
                return None
        return events.get_child_watcher()


class _SpawnedTransport(unix_events._UnixSubprocessTransport):
    """asyncio's subprocess transport over a child that was already
    started (by the spawner thread)."""

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, *,
               _oxloop_popen, **kwargs):
        self._proc = _oxloop_popen


class SubprocessMixin:
    """subprocess_exec and subprocess_shell (Unix only)."""

    __slots__ = ()

    @staticmethod
    def _proc_check_rest(bufsize, text, encoding, errors):
        if bufsize != 0:
            raise ValueError("bufsize must be 0")
        if text:
            raise ValueError("text must be False")
        if encoding is not None:
            raise ValueError("encoding must be None")
        if errors is not None:
            raise ValueError("errors must be None")

    async def subprocess_shell(self, protocol_factory, cmd, *,
                               stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE,
                               universal_newlines=False, shell=True,
                               bufsize=0, encoding=None, errors=None,
                               text=None, **kwargs):
        """Run `cmd` through the shell; return (transport, protocol)."""
        if not isinstance(cmd, (bytes, str)):
            raise ValueError("cmd must be a string")
        if universal_newlines:
            raise ValueError("universal_newlines must be False")
        if not shell:
            raise ValueError("shell must be True")
        self._proc_check_rest(bufsize, text, encoding, errors)
        protocol = protocol_factory()
        transport = await self._proc_make_transport(
            protocol, cmd, True, stdin, stdout, stderr, bufsize, **kwargs)
        return transport, protocol

    async def subprocess_exec(self, protocol_factory, program, *args,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE,
                              universal_newlines=False, shell=False,
                              bufsize=0, encoding=None, errors=None,
                              text=None, **kwargs):
        """Run `program` with `args`; return (transport, protocol)."""
        if universal_newlines:
            raise ValueError("universal_newlines must be False")
        if shell:
            raise ValueError("shell must be False")
        self._proc_check_rest(bufsize, text, encoding, errors)
        protocol = protocol_factory()
        transport = await self._proc_make_transport(
            protocol, (program,) + args, False, stdin, stdout, stderr,
            bufsize, **kwargs)
        return transport, protocol

    # -- transport and reaping ---------------------------------------------

    def _proc_children(self):
        # The mixin has no __init__: the table is made on first use.
        return self.__dict__.setdefault("_proc_watched", {})

    async def _proc_make_transport(self, protocol, args, shell, stdin,
                                   stdout, stderr, bufsize, extra=None,
                                   **kwargs):
        watcher = _installed_watcher()
        if watcher is not None:
            # As asyncio: < 3.12 uses what __enter__ returns, 3.12+ the
            # watcher itself.
            with watcher as entered:
                if not _PY312:
                    watcher = entered
                if not watcher.is_active():
                    raise RuntimeError(
                        "asyncio.get_child_watcher() is not activated, "
                        "subprocess support is not installed.")
                return await self._proc_start(
                    watcher, protocol, args, shell, stdin, stdout, stderr,
                    bufsize, extra, kwargs)
        return await self._proc_start(None, protocol, args, shell, stdin,
                                      stdout, stderr, bufsize, extra, kwargs)

    async def _proc_start(self, watcher, protocol, args, shell, stdin,
                          stdout, stderr, bufsize, extra, kwargs):
        waiter = self.create_future()
        popen = await _spawn.spawn(self, args, dict(
            kwargs, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr,
            universal_newlines=False, bufsize=bufsize))
        transp = _SpawnedTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize,
            waiter=waiter, extra=extra, _oxloop_popen=popen)
        pid = transp.get_pid()
        if watcher is not None:
            if self.virtual_time:
                self._real_job_begin()  # ended by _child_watcher_callback
            watcher.add_child_handler(pid, self._child_watcher_callback,
                                      transp)
        else:
            self._proc_watch(pid, transp)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

    # asyncio's PidfdChildWatcher (Python < 3.12) drives its pidfds through
    # the loop's private readiness API.

    def _add_reader(self, fd, callback, *args):
        self._check_closed()
        self.add_reader(fd, callback, *args)

    def _remove_reader(self, fd):
        if self.is_closed():
            return False
        return self.remove_reader(fd)

    def _child_watcher_callback(self, pid, returncode, transp):
        # Called by an installed child watcher, maybe from another thread.
        try:
            self.call_soon_threadsafe(self.call_soon, transp._process_exited,
                                      returncode)
        finally:
            if self.virtual_time:
                self._real_job_end()  # after the exit is queued

    def _proc_watch(self, pid, transp):
        if self.virtual_time:
            # A running child holds the virtual clock still; the count
            # drops when it is reaped (_proc_exited_soon) or handed off at
            # close.
            self._real_job_begin()
        pidfd = -1
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                pidfd = -1
        if pidfd >= 0:
            self._proc_children()[pid] = (pidfd, transp)
            self.add_reader(pidfd, self._proc_pidfd_ready, pid)
            return
        thread = threading.Thread(target=self._proc_wait_thread,
                                  args=(pid, transp), daemon=True,
                                  name=f"oxloop-waitpid-{pid}")
        thread.start()

    def _proc_pidfd_ready(self, pid):
        entry = self._proc_children().get(pid)
        if entry is None:
            return
        pidfd, transp = entry
        try:
            returncode = _core.try_wait(pid)
        except ChildProcessError:
            returncode = transp._proc.returncode
            if returncode is None:
                returncode = 255
        else:
            if returncode is None:
                return  # not exited yet (spurious wake-up)
        del self._proc_children()[pid]
        self.remove_reader(pidfd)
        os.close(pidfd)
        # Up to 3.11 the stdlib reaps with a thread (ThreadedChildWatcher),
        # so process_exited and connection_lost see a new thread's empty
        # context; from 3.12 on, its pidfd watcher's reader: this one.
        context = None if _PY312 else contextvars.Context()
        self._proc_exited_soon(transp, returncode, context)

    def _proc_wait_thread(self, pid, transp):
        returncode = _reap_blocking(pid)
        if returncode is None:
            returncode = transp._proc.returncode
            if returncode is None:
                returncode = 255
        try:
            self.call_soon_threadsafe(self._proc_exited_soon, transp,
                                      returncode)
        except RuntimeError:
            pass  # the loop was closed meanwhile

    def _proc_exited_soon(self, transp, returncode, context=None):
        if self.virtual_time:
            self._real_job_end()
        self.call_soon(transp._process_exited, returncode, context=context)

    def _proc_close(self):
        """Called by `Loop.close()`: children still running are handed to
        waiter threads so that they are reaped once they exit."""
        children = self._proc_children()
        while children:
            pid, (pidfd, _transp) = children.popitem()
            if self.virtual_time:
                self._real_job_end()
            self.remove_reader(pidfd)
            os.close(pidfd)
            threading.Thread(target=_reap_blocking, args=(pid,), daemon=True,
                             name=f"oxloop-waitpid-{pid}").start()
