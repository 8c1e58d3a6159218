"""Running and stopping: run_forever, stop, run_until_complete, re-entrancy,
close(), use after close, Runner."""

import asyncio
import gc
import sys

import pytest

from helpers import PY311, run_briefly

# -- stop / run_forever ----------------------------------------------------


def test_stop_inside_callback_finishes_the_iteration(loop):
    out = []

    def stopper():
        out.append("stopper")
        loop.stop()
        loop.call_soon(out.append, "scheduled-after-stop")

    loop.call_soon(out.append, "before")
    loop.call_soon(stopper)
    loop.call_soon(out.append, "same-iteration")
    loop.run_forever()
    assert out == ["before", "stopper", "same-iteration"]
    assert not loop.is_running()

    # run_forever again continues with what is left.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["before", "stopper", "same-iteration", "scheduled-after-stop"]


def test_stop_keeps_pending_timers(loop):
    out = []
    loop.call_later(0.3, out.append, "timer")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == []
    loop.call_later(0.35, loop.stop)
    loop.run_forever()
    assert out == ["timer"]


def test_stop_before_run_forever_runs_one_iteration(loop):
    out = []

    def first():
        out.append("first")
        loop.call_soon(out.append, "next-iteration")

    loop.call_soon(first)
    loop.call_soon(out.append, "second")
    loop.stop()
    loop.run_forever()
    assert out == ["first", "second"]
    # The stop request was consumed: the next run_forever needs a new one.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["first", "second", "next-iteration"]


def test_stop_before_run_forever_with_nothing_ready_returns(loop):
    loop.stop()
    loop.run_forever()
    assert not loop.is_running()


def test_stop_twice_is_one_stop(loop):
    out = []

    def cb():
        loop.stop()
        loop.stop()
        loop.call_soon(out.append, "later")

    loop.call_soon(cb)
    loop.run_forever()
    assert out == []
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["later"]


def test_stop_from_timer(loop):
    t0 = loop.time()
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert loop.time() - t0 >= 0.02 - 1e-3


def test_is_running(loop):
    seen = []
    assert not loop.is_running()
    loop.call_soon(lambda: seen.append(loop.is_running()))
    run_briefly(loop)
    assert seen == [True]
    assert not loop.is_running()


def test_running_loop_is_set_while_running(loop):
    seen = []

    def cb():
        seen.append(asyncio.get_running_loop())
        seen.append(asyncio.get_event_loop())
        seen.append(asyncio._get_running_loop())

    loop.call_soon(cb)
    run_briefly(loop)
    assert seen == [loop, loop, loop]
    assert asyncio._get_running_loop() is None
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()


def test_running_loop_is_reset_after_exception(loop):
    def boom():
        raise KeyboardInterrupt

    loop.call_soon(boom)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert asyncio._get_running_loop() is None
    assert not loop.is_running()


# -- run_until_complete ----------------------------------------------------


def test_run_until_complete_coroutine(loop):
    async def coro(x):
        await asyncio.sleep(0)
        return x * 2

    assert loop.run_until_complete(coro(21)) == 42


def test_run_until_complete_future(loop):
    fut = loop.create_future()
    loop.call_later(0.01, fut.set_result, "done")
    assert loop.run_until_complete(fut) == "done"


def test_run_until_complete_done_future(loop):
    fut = loop.create_future()
    fut.set_result(7)
    assert loop.run_until_complete(fut) == 7


def test_run_until_complete_task(loop):
    async def coro():
        return "task-result"

    task = loop.create_task(coro())
    assert loop.run_until_complete(task) == "task-result"
    assert task.done()


def test_run_until_complete_awaitable(loop):
    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "awaited"

    assert loop.run_until_complete(Awaitable()) == "awaited"


def test_run_until_complete_raises_exception(loop):
    class MyError(Exception):
        pass

    async def coro():
        await asyncio.sleep(0)
        raise MyError("boom")

    with pytest.raises(MyError, match="boom"):
        loop.run_until_complete(coro())

    fut = loop.create_future()
    loop.call_soon(fut.set_exception, MyError("fut"))
    with pytest.raises(MyError, match="fut"):
        loop.run_until_complete(fut)


def test_run_until_complete_cancelled(loop):
    fut = loop.create_future()
    loop.call_soon(fut.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(fut)


def test_run_until_complete_non_awaitable(loop):
    with pytest.raises(TypeError):
        loop.run_until_complete(42)
    with pytest.raises(TypeError):
        loop.run_until_complete(lambda: None)


def test_run_until_complete_stopped_early(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed."):
        loop.run_until_complete(fut)
    fut.cancel()


def test_run_until_complete_runs_loop_again(loop):
    async def coro(x):
        return x

    for i in range(5):
        assert loop.run_until_complete(coro(i)) == i


def test_run_until_complete_future_of_other_loop(loop, loop_factory):
    other = loop_factory()
    fut = other.create_future()
    with pytest.raises(ValueError, match="The future belongs to a different loop"):
        loop.run_until_complete(fut)


def test_run_until_complete_keyboard_interrupt_in_coroutine(loop):
    async def coro():
        await asyncio.sleep(0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(coro())
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, "still-usable")) == "still-usable"


def test_run_until_complete_system_exit_in_coroutine(loop):
    async def coro():
        raise SystemExit(3)

    with pytest.raises(SystemExit) as info:
        loop.run_until_complete(coro())
    assert info.value.code == 3


# -- re-entrancy -----------------------------------------------------------


def test_run_forever_inside_running_loop(loop):
    errors = []

    def cb():
        try:
            loop.run_forever()
        except RuntimeError as e:
            errors.append(str(e))

    loop.call_soon(cb)
    run_briefly(loop)
    assert errors == ["This event loop is already running"]


def test_run_until_complete_inside_running_loop(loop):
    async def inner():
        return 1

    async def outer():
        coro = inner()
        try:
            with pytest.raises(RuntimeError, match="This event loop is already running"):
                loop.run_until_complete(coro)
        finally:
            coro.close()
        return "ok"

    assert loop.run_until_complete(outer()) == "ok"
    assert not loop.is_running()


def test_other_loop_cannot_run_inside_running_loop(loop, loop_factory, loop_kind, request):
    if loop_kind == "asyncio" and sys.version_info >= (3, 13):
        # CPython 3.13's run_forever runs its cleanup even when the
        # "another loop is running" check fails, which unregisters the outer
        # running loop: the stdlib half then hangs. oxloop keeps 3.11's
        # behaviour, which this test pins.
        request.applymarker(pytest.mark.xfail(
            run=False, reason="CPython 3.13 stdlib: failed nested run_forever "
                              "clears the running loop"))
    other = loop_factory()

    async def outer():
        with pytest.raises(
            RuntimeError, match="Cannot run the event loop while another loop is running"
        ):
            other.run_forever()
        fut = other.create_future()
        with pytest.raises(
            RuntimeError, match="Cannot run the event loop while another loop is running"
        ):
            other.run_until_complete(fut)
        fut.cancel()
        return "ok"

    assert loop.run_until_complete(outer()) == "ok"
    assert not other.is_running()
    # The nested attempt left both loops usable.
    assert other.run_until_complete(asyncio.sleep(0, 5)) == 5


def test_stdlib_loop_and_this_loop_cannot_nest(loop):
    # Mixing kinds: neither loop may run while the other runs in this thread.
    other = asyncio.SelectorEventLoop()
    try:

        async def in_this_loop():
            with pytest.raises(RuntimeError, match="another loop is running"):
                other.run_forever()
            return "ok"

        async def in_stdlib_loop():
            with pytest.raises(RuntimeError, match="another loop is running"):
                loop.run_forever()
            return "ok"

        assert loop.run_until_complete(in_this_loop()) == "ok"
        assert other.run_until_complete(in_stdlib_loop()) == "ok"
        assert not loop.is_running() and not other.is_running()
    finally:
        other.close()


# -- close -----------------------------------------------------------------


def test_close_twice(loop):
    assert not loop.is_closed()
    loop.close()
    assert loop.is_closed()
    loop.close()
    assert loop.is_closed()


def test_close_running_loop_raises(loop):
    errors = []

    def cb():
        try:
            loop.close()
        except RuntimeError as e:
            errors.append(str(e))

    loop.call_soon(cb)
    run_briefly(loop)
    assert errors == ["Cannot close a running event loop"]
    assert not loop.is_closed()


def test_close_drops_pending_callbacks(loop):
    out = []
    loop.call_soon(out.append, 1)
    loop.call_later(0, out.append, 2)
    loop.close()
    assert out == []


CLOSED = "Event loop is closed"


def _noop():
    pass


@pytest.mark.parametrize(
    "call",
    [
        lambda loop: loop.call_soon(_noop),
        lambda loop: loop.call_later(0, _noop),
        lambda loop: loop.call_later(1, _noop),
        lambda loop: loop.call_at(0, _noop),
        lambda loop: loop.call_soon_threadsafe(_noop),
        lambda loop: loop.run_forever(),
        lambda loop: loop.run_in_executor(None, _noop),
    ],
    ids=["call_soon", "call_later0", "call_later1", "call_at", "call_soon_threadsafe",
         "run_forever", "run_in_executor"],
)
def test_use_after_close(loop, call):
    loop.close()
    with pytest.raises(RuntimeError, match=CLOSED):
        call(loop)


def test_run_until_complete_after_close(loop):
    loop.close()
    coro = asyncio.sleep(0)
    try:
        with pytest.raises(RuntimeError, match=CLOSED):
            loop.run_until_complete(coro)
    finally:
        coro.close()
    fut = asyncio.Future(loop=loop)
    with pytest.raises(RuntimeError, match=CLOSED):
        loop.run_until_complete(fut)


def test_create_task_after_close(loop):
    loop.close()

    async def coro():
        pass

    c = coro()
    try:
        with pytest.raises(RuntimeError, match=CLOSED):
            loop.create_task(c)
    finally:
        c.close()


def test_close_then_shutdown_coroutines_cannot_run(loop):
    loop.close()
    coro = loop.shutdown_asyncgens()
    try:
        with pytest.raises(RuntimeError, match=CLOSED):
            loop.run_until_complete(coro)
    finally:
        coro.close()


def test_unawaited_shutdown_asyncgens_warns_under_the_stdlib_name(loop):
    # What asyncio.Runner.close() leaves on a loop closed under it;
    # pytest-asyncio filters this warning by the stdlib coroutine's name.
    loop.close()
    coro = loop.shutdown_asyncgens()
    with pytest.raises(RuntimeError, match=CLOSED):
        loop.run_until_complete(coro)
    with pytest.warns(RuntimeWarning) as caught:
        del coro
        gc.collect()
    assert [str(w.message) for w in caught] == [
        "coroutine 'BaseEventLoop.shutdown_asyncgens' was never awaited"]


def test_close_inside_run_until_complete_callback_fails_then_closes(loop):
    async def main():
        with pytest.raises(RuntimeError):
            loop.close()
        return 1

    assert loop.run_until_complete(main()) == 1
    loop.close()
    assert loop.is_closed()


def test_repr_of_loop(loop):
    r = repr(loop)
    assert isinstance(r, str) and r
    loop.close()
    assert isinstance(repr(loop), str)


# -- asyncio.run / Runner --------------------------------------------------


@pytest.mark.skipif(not PY311, reason="asyncio.Runner is new in Python 3.11")
def test_runner_with_loop_factory(loop_factory):
    async def main():
        running = asyncio.get_running_loop()
        await asyncio.sleep(0)
        return running

    with asyncio.Runner(loop_factory=loop_factory.raw) as runner:
        running = runner.run(main())
        assert running is runner.get_loop()
        assert isinstance(running, asyncio.AbstractEventLoop)
        assert runner.run(asyncio.sleep(0, "again")) == "again"
    assert running.is_closed()


@pytest.mark.skipif(not PY311, reason="asyncio.Runner is new in Python 3.11")
def test_runner_propagates_exception_and_closes(loop_factory):
    async def main():
        raise ZeroDivisionError

    with asyncio.Runner(loop_factory=loop_factory.raw) as runner:
        with pytest.raises(ZeroDivisionError):
            runner.run(main())
        used = runner.get_loop()
    assert used.is_closed()


@pytest.mark.skipif(not PY311, reason="asyncio.Runner is new in Python 3.11")
def test_runner_cancels_leftover_tasks(loop_factory):
    cancelled = []

    async def forever():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(0.01)

    with asyncio.Runner(loop_factory=loop_factory.raw) as runner:
        runner.run(main())
    assert cancelled == [True]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_stdlib_run_with_loop_factory(loop_factory):
    async def main():
        return type(asyncio.get_running_loop())

    kind = asyncio.run(main(), loop_factory=loop_factory.raw)
    assert issubclass(kind, asyncio.AbstractEventLoop)
