"""oxloop's own public API: Loop, new_event_loop, EventLoopPolicy, install,
run. These run on oxloop only (every test name here contains 'oxloop' through
the module name, so ``-k oxloop`` selects them and ``-k asyncio`` does not)."""

import asyncio
import sys

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


def test_policy(oxloop):
    policy = oxloop.EventLoopPolicy()
    assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, oxloop.Loop)
    finally:
        loop.close()


def test_policy_set_and_get_event_loop(oxloop):
    asyncio.set_event_loop_policy(oxloop.EventLoopPolicy())
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, oxloop.Loop)
        asyncio.set_event_loop(loop)
        assert asyncio.get_event_loop_policy().get_event_loop() is loop
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_install(oxloop):
    oxloop.install()
    assert isinstance(asyncio.get_event_loop_policy(), oxloop.EventLoopPolicy)
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
    # asyncio.run() raises ValueError for a non-coroutine
    with pytest.raises(ValueError):
        oxloop.run(42)
    with pytest.raises(ValueError):
        oxloop.run(asyncio.sleep)  # a coroutine function, not a coroutine


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
