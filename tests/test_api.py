"""Futures, tasks, task factories, async generators and the loop's
AbstractEventLoop surface."""

import asyncio
import contextvars
import gc
import inspect
import sys

import pytest

from helpers import PY311, run_briefly

VAR = contextvars.ContextVar("VAR", default="default")


def test_loop_is_an_abstract_event_loop(loop):
    assert isinstance(loop, asyncio.AbstractEventLoop)


# -- futures ---------------------------------------------------------------------


def test_create_future(loop):
    fut = loop.create_future()
    assert asyncio.isfuture(fut)
    assert fut.get_loop() is loop
    assert not fut.done()
    fut.set_result(3)
    assert fut.result() == 3


def test_future_callbacks_scheduled_on_loop(loop):
    fut = loop.create_future()
    out = []
    fut.add_done_callback(lambda f: out.append(f.result()))
    fut.set_result("r")
    assert out == []  # done callbacks are scheduled with call_soon
    run_briefly(loop)
    assert out == ["r"]


def test_future_done_callback_context(loop):
    fut = loop.create_future()
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "cb-ctx")
    seen = []
    fut.add_done_callback(lambda f: seen.append(VAR.get()), context=ctx)
    fut.set_result(None)
    run_briefly(loop)
    assert seen == ["cb-ctx"]


def test_wrap_future_binds_to_loop(loop):
    import concurrent.futures

    cf = concurrent.futures.Future()
    fut = asyncio.wrap_future(cf, loop=loop)
    assert fut.get_loop() is loop
    cf.set_result("wrapped")
    assert loop.run_until_complete(fut) == "wrapped"


# -- tasks -----------------------------------------------------------------------


def test_create_task(loop):
    async def coro():
        return asyncio.current_task()

    task = loop.create_task(coro())
    assert isinstance(task, asyncio.Task)
    assert task.get_loop() is loop
    assert loop.run_until_complete(task) is task


def test_create_task_name(loop):
    async def coro():
        pass

    task = loop.create_task(coro(), name="my-task")
    assert task.get_name() == "my-task"
    unnamed = loop.create_task(coro())
    assert unnamed.get_name().startswith("Task-")
    loop.run_until_complete(task)
    loop.run_until_complete(unnamed)


@pytest.mark.skipif(not PY311, reason="create_task(context=) is new in Python 3.11")
def test_create_task_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "task-ctx")

    async def coro():
        seen = VAR.get()
        VAR.set("changed-in-task")
        return seen

    task = loop.create_task(coro(), context=ctx)
    assert loop.run_until_complete(task) == "task-ctx"
    assert ctx[VAR] == "changed-in-task"
    assert VAR.get() == "default"


def test_create_task_copies_current_context(loop):
    async def coro():
        return VAR.get()

    token = VAR.set("outer")
    try:
        task = loop.create_task(coro())
    finally:
        VAR.reset(token)
    assert loop.run_until_complete(task) == "outer"


def test_create_task_rejects_non_coroutine(loop):
    with pytest.raises(TypeError):
        loop.create_task(lambda: None)
    with pytest.raises(TypeError):
        loop.create_task(42)


def test_tasks_interleave(loop):
    out = []

    async def worker(name):
        for i in range(3):
            out.append((name, i))
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(worker("a"), worker("b"))

    loop.run_until_complete(main())
    assert out == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]


def test_task_cancel(loop):
    async def sleeper():
        await asyncio.sleep(3600)

    task = loop.create_task(sleeper())
    run_briefly(loop)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert task.cancelled()


def test_all_tasks_of_loop(loop):
    async def sleeper():
        await asyncio.sleep(3600)

    task = loop.create_task(sleeper())
    assert asyncio.all_tasks(loop) == {task}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert asyncio.all_tasks(loop) == set()


def test_sleep_and_wait_for(loop):
    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.01)
        return await asyncio.wait_for(asyncio.sleep(0, "in-time"), 5)

    assert loop.run_until_complete(main()) == "in-time"


# -- task factory ------------------------------------------------------------------


def test_task_factory(loop):
    calls = []

    class MyTask(asyncio.Task):
        pass

    def factory(lp, coro, **kwargs):
        calls.append((lp, kwargs))
        return MyTask(coro, loop=lp, **kwargs)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def coro():
        return 1

    task = loop.create_task(coro(), name="factory-task")
    assert isinstance(task, MyTask)
    assert task.get_name() == "factory-task"
    assert loop.run_until_complete(task) == 1
    # asyncio 3.13.3+/3.14 hands the name to the factory; before, it set it
    # on the task afterwards.
    forwards = (asyncio.base_events.BaseEventLoop.create_task.__code__.co_flags
                & inspect.CO_VARKEYWORDS)
    assert calls == [(loop, {"name": "factory-task"} if forwards else {})]

    # run_until_complete(coroutine) goes through the factory too
    assert isinstance(loop.run_until_complete(_current_task()), MyTask)

    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    plain = loop.create_task(coro())
    assert type(plain) is not MyTask
    loop.run_until_complete(plain)


async def _current_task():
    return asyncio.current_task()


@pytest.mark.skipif(not PY311, reason="create_task(context=) is new in Python 3.11")
def test_task_factory_gets_context(loop):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append(kwargs)
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    ctx = contextvars.copy_context()

    async def coro():
        pass

    loop.run_until_complete(loop.create_task(coro(), context=ctx))
    assert calls == [{"context": ctx}]


def test_set_task_factory_non_callable(loop):
    with pytest.raises(TypeError, match="task factory must be a callable or None"):
        loop.set_task_factory(1)
    assert loop.get_task_factory() is None


# -- async generators ----------------------------------------------------------------


def test_shutdown_asyncgens_finalizes_suspended_generator(loop):
    events = []

    async def agen():
        try:
            events.append("started")
            yield 1
            yield 2
        finally:
            events.append("finalized")
            await asyncio.sleep(0)  # aclose() may await
            events.append("finalized-after-await")

    gen = agen()

    async def main():
        return await gen.__anext__()

    assert loop.run_until_complete(main()) == 1
    assert events == ["started"]
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert events == ["started", "finalized", "finalized-after-await"]
    assert gen.ag_frame is None  # closed


def test_shutdown_asyncgens_reports_errors(loop, expect_errors):
    async def agen():
        try:
            yield 1
        finally:
            raise ValueError("error while closing")

    gen = agen()

    async def main():
        return await gen.__anext__()

    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    [ctx] = expect_errors()
    assert ctx["message"].startswith("an error occurred during closing of asynchronous generator")
    assert isinstance(ctx["exception"], ValueError)
    assert ctx["asyncgen"] is gen


def test_shutdown_asyncgens_without_generators(loop):
    loop.run_until_complete(loop.shutdown_asyncgens())


def test_asyncgen_first_iterated_after_shutdown_warns(loop):
    loop.run_until_complete(loop.shutdown_asyncgens())

    async def agen():
        yield 1

    async def main():
        gen = agen()
        try:
            return await gen.__anext__()
        finally:
            await gen.aclose()

    with pytest.warns(ResourceWarning, match="was scheduled after loop.shutdown_asyncgens"):
        loop.run_until_complete(main())


def test_dropped_asyncgen_is_finalized_by_loop(loop):
    events = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append("finalized")

    async def main():
        gen = agen()
        await gen.__anext__()
        del gen
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert events == ["finalized"]


def test_asyncgen_hooks_installed_only_while_running(loop):
    saved = sys.get_asyncgen_hooks()
    seen = []

    async def main():
        seen.append(sys.get_asyncgen_hooks())

    loop.run_until_complete(main())
    assert sys.get_asyncgen_hooks() == saved
    [hooks] = seen
    assert hooks.firstiter is not None and hooks.finalizer is not None
    assert hooks != saved


def test_asyncgen_hooks_restored_after_exception(loop):
    saved = sys.get_asyncgen_hooks()

    def bad():
        raise KeyboardInterrupt

    loop.call_soon(bad)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert sys.get_asyncgen_hooks() == saved


def test_asyncgen_hooks_custom_outer_hooks_restored(loop):
    def firstiter(agen):
        pass

    def finalizer(agen):
        pass

    saved = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=finalizer)
    try:
        seen = []

        async def main():
            seen.append(sys.get_asyncgen_hooks())

        loop.run_until_complete(main())
        assert seen[0].firstiter is not firstiter
        assert sys.get_asyncgen_hooks() == (firstiter, finalizer)
    finally:
        sys.set_asyncgen_hooks(*saved)


# -- coroutine helpers on the loop ------------------------------------------------------


def test_async_for_and_async_with(loop):
    class CM:
        async def __aenter__(self):
            await asyncio.sleep(0)
            return "entered"

        async def __aexit__(self, *exc):
            return False

    async def agen():
        for i in range(3):
            await asyncio.sleep(0)
            yield i

    async def main():
        async with CM() as v:
            return v, [i async for i in agen()]

    assert loop.run_until_complete(main()) == ("entered", [0, 1, 2])


def test_gather_many_tasks(loop):
    async def one(i):
        await asyncio.sleep(0)
        return i

    async def main():
        return await asyncio.gather(*(one(i) for i in range(500)))

    assert loop.run_until_complete(main()) == list(range(500))


def test_queue_and_event_on_loop(loop):
    async def main():
        q = asyncio.Queue()
        ev = asyncio.Event()

        async def producer():
            for i in range(5):
                await q.put(i)
            ev.set()

        t = asyncio.ensure_future(producer())
        await ev.wait()
        await t
        return [q.get_nowait() for _ in range(5)]

    assert loop.run_until_complete(main()) == [0, 1, 2, 3, 4]
