"""Resources are freed when asyncio frees them: `loop.close()` releases the
loop's fds at once, a closed loop is freed by reference counting alone
(nothing keeps it alive after `asyncio.run`, `asyncio.Runner`, `oxloop.run`),
and failure paths leave no `ResourceWarning` the stdlib does not give."""

import asyncio
import contextlib
import gc
import os
import socket
import subprocess
import sys
import warnings
import weakref

import pytest

from helpers import PY311, loop_factory_callable, make_loop

PY = sys.executable


@contextlib.contextmanager
def gc_disabled():
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_close_releases_fds_at_once(loop_kind):
    with gc_disabled():
        before = open_fds()
        loops = [make_loop(loop_kind) for _ in range(50)]
        assert open_fds() > before
        for lp in loops:
            lp.run_until_complete(asyncio.sleep(0))
            lp.close()
        assert open_fds() == before
        del loops
        assert open_fds() == before


def _runner_cases(loop_kind):
    factory = loop_factory_callable(loop_kind)

    def with_runner(main):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())

    cases = {"Runner": with_runner}
    if loop_kind == "oxloop":
        import oxloop

        cases["oxloop.run"] = lambda main: oxloop.run(main())
    return cases


@pytest.mark.skipif(not PY311, reason="asyncio.Runner is 3.11+")
@pytest.mark.parametrize("how", ["Runner", "oxloop.run"])
@pytest.mark.parametrize("work", ["sleep", "socket_ops", "server"])
def test_nothing_keeps_the_loop_alive_after_the_runner(loop_kind, how, work):
    cases = _runner_cases(loop_kind)
    if how not in cases:
        pytest.skip(f"{how} is oxloop's")
    refs = []

    async def main():
        lp = asyncio.get_running_loop()
        refs.append(weakref.ref(lp))
        if work == "sleep":
            await asyncio.sleep(0)
        elif work == "socket_ops":
            a, b = socket.socketpair()
            with a, b:
                a.setblocking(False)
                b.setblocking(False)
                await lp.sock_sendall(a, b"x")
                assert await lp.sock_recv(b, 1) == b"x"
        else:
            server = await asyncio.start_server(lambda r, w: w.close(),
                                                "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            await w.wait_closed()
            server.close()
            await server.wait_closed()

    with gc_disabled():
        cases[how](main)
        assert refs[0]() is None, (
            "the loop is still alive; referrers: "
            f"{[type(r).__name__ for r in gc.get_referrers(refs[0]())]}")


@pytest.fixture
def no_resource_warnings():
    """Fails the test on any ResourceWarning, including those raised in
    __del__ (unraisable), even with the GC disabled."""
    caught = []
    old_hook = sys.unraisablehook

    def hook(unraisable):
        caught.append(repr(unraisable.exc_value))

    sys.unraisablehook = hook
    try:
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter("always", ResourceWarning)
            yield
            gc.collect()
        caught.extend(str(w.message) for w in ws
                      if issubclass(w.category, ResourceWarning))
    finally:
        sys.unraisablehook = old_hook
    assert caught == []


def test_create_server_on_a_taken_port_with_several_hosts(
        loop, no_resource_warnings):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    hosts = ["127.0.0.1", "localhost"]
    if socket.has_ipv6:
        hosts.insert(0, "::1")

    async def main():
        with pytest.raises(OSError):
            await loop.create_server(asyncio.Protocol, hosts, port)
        with pytest.raises(OSError):
            await loop.create_server(asyncio.Protocol, None, port)

    with taken, gc_disabled():
        loop.run_until_complete(main())


def test_failed_connections_and_endpoints(loop, no_resource_warnings, tmp_path):
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))

    async def main():
        with pytest.raises(OSError):
            await loop.create_connection(asyncio.Protocol, "localhost", port)
        with pytest.raises(OSError):
            await loop.create_connection(asyncio.Protocol, "localhost", port,
                                         happy_eyeballs_delay=0.01)
        with pytest.raises(OSError):
            await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=udp.getsockname())
        with pytest.raises(OSError):
            await loop.create_unix_server(
                asyncio.Protocol, str(tmp_path / "no" / "such" / "dir"))
        with pytest.raises(OSError):
            await loop.create_unix_connection(
                asyncio.Protocol, str(tmp_path / "nobody"))

    with udp, gc_disabled():
        loop.run_until_complete(main())


@pytest.mark.parametrize("steps", [0, 1, 2, 5, 20])
def test_cancelled_process_creation_leaves_nothing(loop, no_resource_warnings,
                                                   steps):
    async def main():
        task = asyncio.ensure_future(asyncio.create_subprocess_exec(
            PY, "-c", "import time; time.sleep(30)", stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        try:
            proc = await task
        except asyncio.CancelledError:
            return
        proc.kill()
        await proc.communicate()

    with gc_disabled():
        loop.run_until_complete(asyncio.wait_for(main(), 60))


def test_process_whose_transport_is_closed(loop, no_resource_warnings):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import time; time.sleep(30)", stdout=subprocess.PIPE)
        proc._transport.close()
        assert await proc.wait() != 0

    with gc_disabled():
        loop.run_until_complete(asyncio.wait_for(main(), 60))
