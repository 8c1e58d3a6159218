"""oxloop's own public API: Loop, new_event_loop, EventLoopPolicy, install,
run. These run on oxloop only (every test name here contains 'oxloop' through
the module name, so ``-k oxloop`` selects them and ``-k asyncio`` does not)."""

import asyncio
import subprocess
import sys
import textwrap
import warnings

import pytest


def test_loop_class(oxloop):
    assert issubclass(oxloop.Loop, asyncio.AbstractEventLoop)
    loop = oxloop.new_event_loop()
    try:
        assert isinstance(loop, oxloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_new_event_loop_returns_fresh_loops(oxloop):
    a = oxloop.new_event_loop()
    b = oxloop.new_event_loop()
    try:
        assert a is not b
        assert not a.is_closed() and not a.is_running()
    finally:
        a.close()
        b.close()


# Policies are deprecated from 3.14 on (the public names warn) and gone from
# 3.16: the tests reach them through asyncio's non-warning names.
_AbstractPolicy = (getattr(asyncio.events, "_AbstractEventLoopPolicy", None)
                   or asyncio.events.AbstractEventLoopPolicy)
_get_policy = (getattr(asyncio.events, "_get_event_loop_policy", None)
               or asyncio.events.get_event_loop_policy)
_set_policy = (getattr(asyncio.events, "_set_event_loop_policy", None)
               or asyncio.events.set_event_loop_policy)


def test_policy(oxloop):
    policy = oxloop.EventLoopPolicy()
    assert isinstance(policy, _AbstractPolicy)
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, oxloop.Loop)
    finally:
        loop.close()


def test_policy_set_and_get_event_loop(oxloop):
    _set_policy(oxloop.EventLoopPolicy())
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, oxloop.Loop)
        asyncio.set_event_loop(loop)
        assert _get_policy().get_event_loop() is loop
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_install(oxloop):
    with warnings.catch_warnings():
        # No DeprecationWarning from oxloop's own use of the policy, 3.14 too.
        warnings.simplefilter("error")
        oxloop.install()
    assert isinstance(_get_policy(), oxloop.EventLoopPolicy)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, oxloop.Loop)
    finally:
        loop.close()


def test_install_then_stdlib_run(oxloop):
    oxloop.install()

    async def main():
        return type(asyncio.get_running_loop())

    assert issubclass(asyncio.run(main()), oxloop.Loop)


class _NoPolicyPlease(type(_get_policy())):
    """A policy that fails the test if anything asks it for a loop."""

    def get_event_loop(self):
        raise AssertionError("get_event_loop() went through the policy")

    def set_event_loop(self, loop):
        raise AssertionError("set_event_loop() went through the policy")

    def new_event_loop(self):
        raise AssertionError("new_event_loop() went through the policy")


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="3.9/3.10 have no loop_factory: asyncio.run and "
                           "oxloop.run set the policy's current loop there")
def test_run_and_loop_factory_do_not_use_the_policy(oxloop):
    async def main():
        return type(asyncio.get_running_loop())

    _set_policy(_NoPolicyPlease())
    assert oxloop.run(main()) is oxloop.Loop
    with asyncio.Runner(loop_factory=oxloop.new_event_loop) as runner:
        assert runner.run(main()) is oxloop.Loop
    if sys.version_info >= (3, 12):
        assert asyncio.run(main(), loop_factory=oxloop.new_event_loop) is oxloop.Loop
    loop = oxloop.new_event_loop()
    try:
        assert loop.run_until_complete(main()) is oxloop.Loop
    finally:
        loop.close()
    _set_policy(None)


_WITHOUT_POLICIES = textwrap.dedent("""\
    # What CPython 3.16 (its main branch) did: asyncio has no policies.
    import asyncio, asyncio.events
    for mod in (asyncio, asyncio.events):
        for name in ("AbstractEventLoopPolicy", "_AbstractEventLoopPolicy",
                     "BaseDefaultEventLoopPolicy", "_BaseDefaultEventLoopPolicy",
                     "DefaultEventLoopPolicy", "get_event_loop_policy",
                     "_get_event_loop_policy", "set_event_loop_policy",
                     "_set_event_loop_policy"):
            mod.__dict__.pop(name, None)
    import oxloop

    async def echo():
        async def handle(reader, writer):
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\\n")
        line = await reader.readline()
        writer.close()
        server.close()
        await server.wait_closed()
        return type(asyncio.get_running_loop()).__name__, line

    print(oxloop.run(echo()))
    with asyncio.Runner(loop_factory=oxloop.new_event_loop) as runner:
        print(runner.run(echo()))
    print("EventLoopPolicy" in oxloop.__all__)
    try:
        oxloop.EventLoopPolicy
    except AttributeError as exc:
        print("AttributeError:", exc)
    try:
        oxloop.install()
    except RuntimeError as exc:
        print("RuntimeError:", exc)
""")


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="3.9/3.10 have no loop_factory to run without policies")
def test_without_policies(oxloop):
    out = subprocess.run([sys.executable, "-W", "error", "-c", _WITHOUT_POLICIES],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:3] == ["('Loop', b'ping\\n')", "('Loop', b'ping\\n')", "False"]
    assert lines[3].startswith("AttributeError: oxloop.EventLoopPolicy: ")
    assert lines[4].startswith("RuntimeError: oxloop.install(): ")
    assert "loop_factory=oxloop.new_event_loop" in lines[4]


def test_run(oxloop):
    async def main(x):
        await asyncio.sleep(0.001)
        loop = asyncio.get_running_loop()
        return x, loop, loop.get_debug()

    value, loop, debug = oxloop.run(main(5))
    assert value == 5
    assert isinstance(loop, oxloop.Loop)
    assert loop.is_closed()
    assert debug is False


def test_run_debug(oxloop):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert oxloop.run(main(), debug=True) is True
    assert oxloop.run(main(), debug=False) is False


def test_run_propagates_exception(oxloop):
    async def main():
        raise ArithmeticError("from main")

    with pytest.raises(ArithmeticError, match="from main"):
        oxloop.run(main())


def test_run_rejects_non_coroutine(oxloop):
    # As asyncio.run(): ValueError up to 3.13, TypeError from 3.14 on (which
    # also accepts other awaitables).
    for bad in (42, asyncio.sleep):  # asyncio.sleep: a coroutine function
        with pytest.raises((ValueError, TypeError)) as stdlib:
            asyncio.run(bad)
        with pytest.raises(type(stdlib.value)):
            oxloop.run(bad)


def test_run_inside_running_loop(oxloop):
    async def inner():
        pass

    async def outer():
        coro = inner()
        try:
            with pytest.raises(RuntimeError):
                oxloop.run(coro)
        finally:
            coro.close()
        return "ok"

    assert oxloop.run(outer()) == "ok"


def test_run_cancels_leftover_tasks_and_shuts_down_asyncgens(oxloop):
    events = []

    async def forever():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("task-cancelled")
            raise

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append("agen-closed")

    gens = []

    async def main():
        asyncio.get_running_loop().create_task(forever())
        g = agen()
        gens.append(g)
        await g.__anext__()
        await asyncio.sleep(0)

    oxloop.run(main())
    assert sorted(events) == ["agen-closed", "task-cancelled"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is 3.11+")
def test_runner_with_oxloop_factory(oxloop):
    with asyncio.Runner(loop_factory=oxloop.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), oxloop.Loop)
        assert runner.run(asyncio.sleep(0, "x")) == "x"


def test_equal_deadline_timers_fire_in_scheduling_order(oxloop):
    # Stronger than asyncio (whose heap is not stable, see
    # test_scheduling.py::test_equal_deadlines_all_fire_in_same_iteration):
    # like uvloop/libuv, oxloop breaks deadline ties by scheduling order.
    loop = oxloop.new_event_loop()
    try:
        out = []
        when = loop.time() + 0.01
        for i in range(200):
            loop.call_at(when, out.append, i)
        loop.call_at(when + 0.01, loop.stop)
        loop.run_forever()
        assert out == list(range(200))
    finally:
        loop.close()


def test_oxloop_exports(oxloop):
    for name in ("Loop", "new_event_loop", "EventLoopPolicy", "install", "run"):
        assert hasattr(oxloop, name), name
    assert sorted(oxloop.__all__) == [
        "EventLoopPolicy", "Loop", "install", "new_event_loop", "run"]
