"""Subprocesses on both loops: exec/shell, communicate with large data,
returncodes, signals, many children, cancellation and loop close without
zombies, argument errors, protocol callback order."""

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest

GUARD = 60
PY = sys.executable


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, GUARD))


def is_gone(pid):
    """True once `pid` is neither running nor a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "X"
    except (FileNotFoundError, ProcessLookupError):
        # Gone before the open, or between the open and the read (ESRCH).
        return True


def wait_gone(pid, timeout=GUARD):
    deadline = time.monotonic() + timeout
    while not is_gone(pid):
        assert time.monotonic() < deadline, f"pid {pid} was never reaped"
        time.sleep(0.01)


def test_exec_communicate_large_both_ways(loop):
    data = os.urandom(6 * 1024 * 1024)

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; d = sys.stdin.buffer.read(); "
            "sys.stdout.buffer.write(d); sys.stderr.buffer.write(d[::-1])",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        out, err = await proc.communicate(data)
        assert out == data
        assert err == data[::-1]
        assert proc.returncode == 0

    run(loop, main())


def test_shell_returncode_and_stderr_to_stdout(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "echo out; echo err 1>&2; exit 7",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, err = await proc.communicate()
        assert sorted(out.split()) == [b"err", b"out"]
        assert err is None
        assert proc.returncode == 7
        assert await proc.wait() == 7

    run(loop, main())


@pytest.mark.blocking_on_purpose
def test_devnull_and_fd_redirection(loop):
    rfd, wfd = os.pipe()

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; print(sys.stdin.read() == '')",
            stdin=subprocess.DEVNULL, stdout=wfd)
        assert await proc.wait() == 0
        os.close(wfd)
        assert os.read(rfd, 100) == b"True\n"

    try:
        run(loop, main())
    finally:
        os.close(rfd)


@pytest.mark.blocking_on_purpose
def test_pass_fds_and_start_new_session(loop):
    rfd, wfd = os.pipe()

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", f"import os; os.write({wfd}, str(os.getsid(0)).encode())",
            pass_fds=(wfd,), start_new_session=True)
        assert await proc.wait() == 0
        os.close(wfd)
        sid = int(os.read(rfd, 100))
        assert sid == proc.pid  # the child leads its own session

    try:
        run(loop, main())
    finally:
        os.close(rfd)


@pytest.mark.parametrize("how,sig", [("kill", signal.SIGKILL),
                                     ("terminate", signal.SIGTERM),
                                     ("send_signal", signal.SIGINT)])
def test_kill_terminate_send_signal(loop, how, sig):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            # A shell's background job starts with SIGINT ignored, and the
            # child would inherit that: give it Python's usual handler.
            PY, "-c", "import signal, sys, time; "
            "signal.signal(signal.SIGINT, signal.default_int_handler); "
            "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(60)",
            stdout=subprocess.PIPE)
        assert await proc.stdout.readline() == b"ready\n"
        if how == "send_signal":
            proc.send_signal(sig)
        else:
            getattr(proc, how)()
        assert await proc.wait() == -sig

    run(loop, main())


def test_many_concurrent_processes(loop):
    async def one(i):
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; sys.stdout.write(sys.argv[1])", str(i),
            stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        return int(out), proc.returncode

    async def main():
        results = await asyncio.gather(*(one(i) for i in range(50)))
        assert results == [(i, 0) for i in range(50)]

    run(loop, main())


def test_cancel_wait_and_communicate_leave_no_zombie(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import time; time.sleep(60)",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for make in (proc.wait, proc.communicate):
            task = asyncio.ensure_future(make())
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert proc.returncode is None
        proc.kill()
        assert await proc.wait() == -signal.SIGKILL
        return proc.pid

    pid = run(loop, main())
    wait_gone(pid)


def test_protocol_callback_order(loop):
    class Proto(asyncio.SubprocessProtocol):
        def __init__(self):
            self.events = []
            self.done = loop.create_future()

        def connection_made(self, transport):
            self.events.append("made")

        def pipe_data_received(self, fd, data):
            if ("data", fd) not in self.events:
                self.events.append(("data", fd))

        def pipe_connection_lost(self, fd, exc):
            self.events.append(("pipe_lost", fd, exc))

        def process_exited(self):
            self.events.append("exited")

        def connection_lost(self, exc):
            self.events.append(("lost", exc))
            self.done.set_result(None)

    async def main():
        tr, proto = await loop.subprocess_exec(
            Proto, PY, "-c", "print('hi')", stdin=None,
            stderr=subprocess.DEVNULL)
        assert tr.get_pid() > 0
        assert tr.get_pipe_transport(0) is None
        assert tr.get_pipe_transport(1) is not None
        await proto.done
        assert tr.get_returncode() == 0
        tr.close()
        ev = proto.events
        assert ev[0] == "made"
        assert ev[-1] == ("lost", None)
        assert ("data", 1) in ev and ("pipe_lost", 1, None) in ev
        assert ev.index(("data", 1)) < ev.index(("pipe_lost", 1, None))
        assert "exited" in ev

    run(loop, main())


def test_argument_errors(loop):
    async def main():
        proto = asyncio.SubprocessProtocol
        for kwargs in ({"universal_newlines": True}, {"bufsize": 1},
                       {"text": True}, {"encoding": "utf-8"},
                       {"errors": "strict"}, {"shell": True}):
            with pytest.raises(ValueError):
                await loop.subprocess_exec(proto, PY, "-c", "pass", **kwargs)
        for kwargs in ({"universal_newlines": True}, {"bufsize": 1},
                       {"shell": False}):
            with pytest.raises(ValueError):
                await loop.subprocess_shell(proto, "true", **kwargs)
        with pytest.raises(ValueError):
            await loop.subprocess_shell(proto, ["true"])
        with pytest.raises(FileNotFoundError):
            await loop.subprocess_exec(proto, "/nonexistent/program")

    run(loop, main())


def forgets_children_at_close(kind):
    return (kind == "asyncio" and sys.version_info >= (3, 12)
            and hasattr(os, "pidfd_open"))


def test_close_loop_with_running_child(loop_factory):
    lp = loop_factory()

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import time; time.sleep(60)")
        return proc

    proc = run(lp, main())
    pid = proc.pid
    lp.close()  # must not crash, nor leave the child unreaped
    os.kill(pid, signal.SIGKILL)
    if forgets_children_at_close(loop_factory.kind):
        # The stdlib's pidfd watcher (3.12, 3.13; on 3.14 its pidfd reader)
        # forgets its children when the loop closes: reap this one here.
        # oxloop always reaps.
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    wait_gone(pid)
    for thread in threading.enumerate():
        if "waitpid" in thread.name:  # the reaper threads of both loops
            thread.join(GUARD)
    with warnings.catch_warnings():
        # the transport was never closed (its loop is gone)
        warnings.simplefilter("ignore", ResourceWarning)
        del proc
        gc.collect()


WATCHERS = ["SafeChildWatcher", "FastChildWatcher", "PidfdChildWatcher",
            "ThreadedChildWatcher", "MultiLoopChildWatcher"]


HAS_WATCHERS = hasattr(asyncio, "AbstractChildWatcher")  # gone in 3.14


@pytest.mark.skipif(not HAS_WATCHERS, reason="no child watchers (3.14+)")
@pytest.mark.parametrize("name", WATCHERS)
def test_installed_child_watcher_is_used(loop, name):
    if name == "PidfdChildWatcher" and not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd_open")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        watcher = getattr(asyncio, name)()
        asyncio.set_event_loop(loop)
        watcher.attach_loop(loop)
        asyncio.get_event_loop_policy().set_child_watcher(watcher)
    added = []
    orig = watcher.add_child_handler

    def spy(pid, callback, *args):
        added.append(pid)
        return orig(pid, callback, *args)

    watcher.add_child_handler = spy

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; sys.exit(3)")
        assert await proc.wait() == 3
        assert added == [proc.pid]

    try:
        run(loop, main())
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.get_event_loop_policy().set_child_watcher(None)
            watcher.close()


@pytest.mark.skipif(not HAS_WATCHERS, reason="no child watchers (3.14+)")
@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is 3.11+")
def test_inactive_child_watcher_refuses_before_spawning(loop_factory):
    # As 3.12's GenericWatcherTests: the watcher is entered, asked whether
    # it is active and left with the RuntimeError; no child is started.
    calls = []

    with warnings.catch_warnings():
        # (subclassing AbstractChildWatcher warns on 3.12+)
        warnings.simplefilter("ignore", DeprecationWarning)

        class Inactive(asyncio.AbstractChildWatcher):
            def add_child_handler(self, pid, callback, *args):
                calls.append("add_child_handler")

            def remove_child_handler(self, pid):
                calls.append("remove_child_handler")

            def attach_loop(self, loop):
                calls.append("attach_loop")

            def close(self):
                calls.append("close")

            def is_active(self):
                calls.append("is_active")
                return False

            def __enter__(self):
                calls.append("enter")
                # 3.12+ asyncio ignores what __enter__ returns (3.12's test
                # uses a mock, whose __enter__ gives another mock); 3.11
                # uses it.
                return self if sys.version_info < (3, 12) else None

            def __exit__(self, *exc):
                calls.append(("exit", exc[0]))

        watcher = Inactive()

    async def main():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_child_watcher(watcher)
        with pytest.raises(RuntimeError, match="not activated"):
            await asyncio.create_subprocess_exec(PY, "-c", "pass")

    try:
        with asyncio.Runner(loop_factory=loop_factory.raw) as runner:
            runner.run(main())
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.get_event_loop_policy()._watcher = None
    assert calls == ["enter", "is_active", ("exit", RuntimeError)]


@pytest.mark.skipif(not HAS_WATCHERS, reason="no child watchers (3.14+)")
@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is 3.11+")
def test_policy_get_child_watcher_is_honoured(loop_factory):
    # A policy whose get_child_watcher gives a watcher of its own (with no
    # set_child_watcher call) is asked for it, as the stdlib loop asks.
    added = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        watcher = asyncio.ThreadedChildWatcher()
    orig = watcher.add_child_handler

    def spy(pid, callback, *args):
        added.append(pid)
        return orig(pid, callback, *args)

    watcher.add_child_handler = spy

    class Policy(asyncio.DefaultEventLoopPolicy):
        def get_child_watcher(self):
            return watcher

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; sys.exit(5)")
        assert await proc.wait() == 5
        assert added == [proc.pid]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(Policy())
    try:
        with asyncio.Runner(loop_factory=loop_factory.raw) as runner:
            runner.run(main())
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(None)
            watcher.close()
