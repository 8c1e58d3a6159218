"""Virtual time (`oxloop.new_event_loop(virtual_time=True)`): idle waits for
timers are skipped, real I/O, threads and child processes keep real time.
oxloop only (the stdlib loop has no virtual time); where a behaviour must
match the stdlib loop (timer order, what a timeout raises) the test says so.

The wall-clock bounds here are loose on purpose (the suite runs on a loaded
2-core machine): a skipped hour must take well under a second, not 1 ms.
"""

import asyncio
import socket
import sys
import threading
import time

import pytest


@pytest.fixture
def vloop(oxloop):
    loop = oxloop.new_event_loop(virtual_time=True)
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    yield loop
    try:
        if not loop.is_closed():
            loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    assert not errors, errors


def test_oxloop_virtual_time_flags(oxloop):
    real = oxloop.new_event_loop()
    virtual = oxloop.new_event_loop(virtual_time=True)
    try:
        assert real.virtual_time is False
        assert virtual.virtual_time is True
        assert real.virtual_time_skipped == 0.0
        assert virtual.virtual_time_skipped == 0.0
        assert virtual.virtual_time_grace == pytest.approx(0.05)
        virtual.virtual_time_grace = 0.5
        assert virtual.virtual_time_grace == 0.5
        for bad in (-1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError):
                virtual.virtual_time_grace = bad
        with pytest.raises(TypeError):
            oxloop.Loop(True)  # keyword only
    finally:
        real.close()
        virtual.close()


def test_oxloop_real_loop_does_not_jump(oxloop):
    loop = oxloop.new_event_loop()
    try:
        t0 = time.monotonic()
        loop.run_until_complete(asyncio.sleep(0.05))
        assert time.monotonic() - t0 >= 0.05
        assert loop.virtual_time_skipped == 0.0
        assert abs(loop.time() - time.monotonic()) < 0.5
    finally:
        loop.close()


def test_oxloop_virtual_hour_in_under_a_second_while_echoing(vloop):
    # The done-when test: a virtual hour, and a real socket still echoes.
    async def main():
        async def echo(reader, writer):
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = vloop.time()
        w0 = time.monotonic()
        await asyncio.sleep(3600)
        slept = vloop.time() - t0
        writer.write(b"still here")
        await writer.drain()
        echoed = await asyncio.wait_for(reader.readexactly(10), 60)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return slept, echoed, time.monotonic() - w0

    slept, echoed, wall = vloop.run_until_complete(main())
    assert slept >= 3600
    assert slept < 3600 + 5
    assert echoed == b"still here"
    assert wall < 1.0
    assert vloop.virtual_time_skipped >= 3599


def test_oxloop_virtual_time_never_goes_back(vloop):
    seen = []

    async def main():
        for delay in (10, 0, 0.5, 3600, 1e-6, 86400 * 365):
            seen.append(vloop.time())
            await asyncio.sleep(delay)
            seen.append(vloop.time())
            assert seen[-1] - seen[-2] >= delay

    w0 = time.monotonic()
    vloop.run_until_complete(main())
    assert time.monotonic() - w0 < 1.0
    assert seen == sorted(seen)
    # time() is the real clock plus what was skipped.
    assert abs(vloop.time() - vloop.virtual_time_skipped
               - time.monotonic()) < 0.5


@pytest.mark.parametrize("kind", ["asyncio", "oxloop-virtual"])
def test_oxloop_virtual_timers_fire_in_order_and_on_time(kind, oxloop):
    # The same program on the stdlib loop (real time, short delays) and on
    # virtual time (the same delays x 1000): same order, same lateness rule.
    scale = 0.001 if kind == "asyncio" else 1.0
    if kind == "asyncio":
        loop = asyncio.SelectorEventLoop()
    else:
        loop = oxloop.new_event_loop(virtual_time=True)
    fired = []
    try:
        start = loop.time()
        for name, delay in [("c", 30), ("a", 10), ("b", 20), ("a2", 10)]:
            when = start + delay * scale
            loop.call_at(when, lambda n=name, w=when: fired.append(
                (n, loop.time() >= w)))
        loop.call_at(start + 40 * scale, loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    assert fired == [("a", True), ("a2", True), ("b", True), ("c", True)]


def test_oxloop_virtual_timeouts_and_retries(vloop):
    async def never():
        await asyncio.Event().wait()

    async def flaky(attempts):
        attempts.append(vloop.time())
        if len(attempts) < 6:
            raise ConnectionError("try again")
        return "ok"

    async def main():
        t0 = vloop.time()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(never(), 120)
        assert 120 <= vloop.time() - t0 < 121
        if sys.version_info >= (3, 11):
            t1 = vloop.time()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(30):
                    await never()
            assert 30 <= vloop.time() - t1 < 31
        attempts = []
        delay = 1.0
        while True:
            try:
                result = await flaky(attempts)
                break
            except ConnectionError:
                await asyncio.sleep(delay)
                delay *= 2
        gaps = [b - a for a, b in zip(attempts, attempts[1:])]
        return result, gaps

    w0 = time.monotonic()
    result, gaps = vloop.run_until_complete(main())
    assert time.monotonic() - w0 < 1.0
    assert result == "ok"
    assert [round(g) for g in gaps] == [1, 2, 4, 8, 16]


def test_oxloop_virtual_clock_holds_while_executor_job_runs(vloop):
    # A thread is real work: a timeout must not fire before the job has
    # really run that long, and must fire once it has.
    async def main():
        w0 = time.monotonic()
        done = await asyncio.wait_for(
            vloop.run_in_executor(None, time.sleep, 0.3), 3600)
        assert done is None
        took = time.monotonic() - w0
        assert took >= 0.3
        assert vloop._real_job_count() == 0
        release = threading.Event()
        w1 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                vloop.run_in_executor(None, release.wait, 30), 0.2)
        assert time.monotonic() - w1 >= 0.2
        assert vloop._real_job_count() == 1  # still running
        release.set()
        # Once the job ended, the clock may jump again.
        while vloop._real_job_count():
            await asyncio.sleep(0)
        w2 = time.monotonic()
        await asyncio.sleep(600)
        assert time.monotonic() - w2 < 0.5

    vloop.run_until_complete(main())


def test_oxloop_virtual_clock_holds_while_child_runs(vloop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c",
            "import time; time.sleep(0.3); print('late', flush=True)",
            stdout=asyncio.subprocess.PIPE)
        w0 = time.monotonic()
        out, _ = await asyncio.wait_for(proc.communicate(), 5)
        assert out.strip() == b"late"
        assert proc.returncode == 0
        assert time.monotonic() - w0 > 0.1  # really waited for the child
        assert vloop._real_job_count() == 0
        w1 = time.monotonic()
        await asyncio.sleep(3600)
        assert time.monotonic() - w1 < 0.5

    vloop.run_until_complete(main())


def test_oxloop_virtual_grace_for_fds(vloop):
    # With an fd watched, the loop waits `virtual_time_grace` real seconds
    # of quiet before jumping; with none, it jumps at once.
    a, b = socket.socketpair()
    try:
        async def sleep_wall(seconds):
            w0 = time.monotonic()
            await asyncio.sleep(seconds)
            return time.monotonic() - w0

        vloop.virtual_time_grace = 1.0
        assert vloop.run_until_complete(sleep_wall(100)) < 0.5
        vloop.add_reader(a.fileno(), a.recv, 1)
        try:
            wall = vloop.run_until_complete(sleep_wall(100))
        finally:
            vloop.remove_reader(a.fileno())
        assert 1.0 <= wall < 5.0
    finally:
        a.close()
        b.close()


def test_oxloop_virtual_traffic_during_grace_keeps_real_time(vloop):
    # Data that arrives within the grace period is read, not timed out.
    vloop.virtual_time_grace = 5.0
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        async def main():
            timer = threading.Timer(0.1, b.send, (b"hello",))
            timer.start()
            try:
                w0 = time.monotonic()
                data = await asyncio.wait_for(vloop.sock_recv(a, 5), 3600)
                return data, time.monotonic() - w0
            finally:
                timer.join()

        data, wall = vloop.run_until_complete(main())
        assert data == b"hello"
        assert wall < 5.0
        assert vloop.virtual_time_skipped == 0.0
    finally:
        a.close()
        b.close()


def test_oxloop_virtual_threadsafe_wakeup_cancels_the_jump(vloop):
    # A call_soon_threadsafe during the grace wait wakes the loop; the clock
    # does not jump that turn.
    vloop.virtual_time_grace = 5.0
    a, b = socket.socketpair()
    try:
        vloop.add_reader(a.fileno(), lambda: None)

        async def main():
            fut = vloop.create_future()
            threading.Timer(0.1, vloop.call_soon_threadsafe,
                            (fut.set_result, "woken")).start()
            return await asyncio.wait_for(fut, 3600)

        assert vloop.run_until_complete(main()) == "woken"
        assert vloop.virtual_time_skipped == 0.0
        vloop.remove_reader(a.fileno())
    finally:
        a.close()
        b.close()


@pytest.mark.skipif(sys.version_info >= (3, 12),
                    reason="child watchers are gone from 3.12 on")
def test_oxloop_virtual_clock_holds_for_a_watcher_child(vloop):
    # A child reaped by an installed child watcher (3.9-3.11) holds the
    # clock still too.
    watcher = asyncio.ThreadedChildWatcher()
    asyncio.set_child_watcher(watcher)
    try:
        async def main():
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c",
                "import time; time.sleep(0.3); print('late', flush=True)",
                stdout=asyncio.subprocess.PIPE)
            out, _ = await asyncio.wait_for(proc.communicate(), 5)
            assert out.strip() == b"late"
            assert vloop._real_job_count() == 0

        vloop.run_until_complete(main())
    finally:
        asyncio.set_child_watcher(None)
