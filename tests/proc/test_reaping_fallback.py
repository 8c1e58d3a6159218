"""oxloop's child reaping without pidfds (waiter thread per child), and the
hand-over of still-running children to reaper threads when the loop closes.
oxloop-only: these are its own strategies (the stdlib delegates to its
child watchers, tested in test_subprocess.py on both loops)."""

import asyncio
import os
import signal
import threading

import pytest
from test_subprocess import GUARD, PY, wait_gone


@pytest.fixture
def no_pidfd(monkeypatch):
    monkeypatch.delattr(os, "pidfd_open", raising=False)


def test_waiter_thread_reaps_children(oxloop, no_pidfd):
    async def main():
        procs = [await asyncio.create_subprocess_exec(
                     PY, "-c", f"import sys; sys.exit({i})")
                 for i in range(5)]
        codes = await asyncio.wait_for(
            asyncio.gather(*(p.wait() for p in procs)), GUARD)
        assert codes == list(range(5))
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; print(sys.stdin.read().upper())",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(b"abc"), GUARD)
        assert out == b"ABC\n" and proc.returncode == 0
        return [p.pid for p in procs] + [proc.pid]

    for pid in oxloop.run(main()):
        wait_gone(pid)


@pytest.mark.parametrize("pidfd", [True, False])
def test_close_hands_running_children_to_reapers(oxloop, monkeypatch, pidfd):
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    elif not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd_open")
    loop = oxloop.new_event_loop()

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import time; time.sleep(60)")
        return proc

    proc = loop.run_until_complete(main())
    loop.close()
    os.kill(proc.pid, signal.SIGKILL)
    wait_gone(proc.pid)
    for thread in threading.enumerate():
        if thread.name.startswith("oxloop-waitpid"):
            thread.join(GUARD)
    proc._transport.close()  # its loop is gone; only drop the pipes
