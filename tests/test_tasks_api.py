"""create_task's keywords across CPython versions, eager tasks, the Task class
asyncio is using, and 3.14's call-graph introspection; on both loops.

What create_task accepts follows the installed asyncio: 3.13.3+ and 3.14
forward every keyword (`name`, `context`, `eager_start`, ...) to the task
factory, or to `asyncio.Task`; older versions take `name` and `context` only.
"""

import asyncio
import contextvars
import inspect
import io
import sys

import pytest

from helpers import PY312

# What the installed asyncio does (the stdlib half of each test checks that
# this reading of it is right).
FORWARDS_KWARGS = bool(
    asyncio.base_events.BaseEventLoop.create_task.__code__.co_flags
    & inspect.CO_VARKEYWORDS)
PY314 = sys.version_info >= (3, 14)

VAR = contextvars.ContextVar("VAR", default="default")


async def _value():
    return VAR.get()


def _recording_factory(calls):
    def factory(loop, coro, **kwargs):
        calls.append(dict(kwargs))
        kwargs.pop("eager_start", None)
        return asyncio.Task(coro, loop=loop, **kwargs)
    return factory


@pytest.mark.skipif(not FORWARDS_KWARGS,
                    reason="asyncio forwards create_task's keywords from 3.13.3 on")
def test_create_task_forwards_every_keyword_to_the_factory(loop):
    calls = []
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "in ctx")

    async def main():
        loop.set_task_factory(_recording_factory(calls))
        t1 = loop.create_task(_value(), name="n1", context=ctx, eager_start=False)
        t2 = loop.create_task(_value())
        t3 = loop.create_task(_value(), name=None)
        return t1, await t1, await t2, await t3

    t1, v1, v2, v3 = loop.run_until_complete(main())
    # Exactly what the caller passed: nothing added, nothing dropped.
    assert calls == [{"name": "n1", "context": ctx, "eager_start": False}, {},
                     {"name": None}]
    assert t1.get_name() == "n1"
    assert (v1, v2, v3) == ("in ctx", "default", "default")


@pytest.mark.skipif(FORWARDS_KWARGS,
                    reason="this asyncio forwards create_task's keywords")
def test_create_task_refuses_unknown_keywords(loop):
    calls = []

    async def main():
        coro = _value()
        with pytest.raises(TypeError, match="eager_start"):
            loop.create_task(coro, eager_start=True)
        coro.close()
        loop.set_task_factory(_recording_factory(calls))
        coro = _value()
        with pytest.raises(TypeError, match="eager_start"):
            loop.create_task(coro, eager_start=True)
        coro.close()
        # The factory gets (loop, coro), plus context= when one is given; the
        # name is set on the task afterwards.
        t = loop.create_task(_value(), name="legacy")
        assert await t == "default"
        assert t.get_name() == "legacy"

    loop.run_until_complete(main())
    assert calls == [{}]


@pytest.mark.skipif(not FORWARDS_KWARGS or not PY312,
                    reason="create_task(eager_start=) is 3.13.3+/3.14")
@pytest.mark.parametrize("eager", [True, False])
def test_create_task_eager_start_without_factory(loop, eager):
    steps = []

    async def child():
        steps.append("child starts")
        await asyncio.sleep(0)
        steps.append("child ends")
        return "done"

    async def main():
        t = loop.create_task(child(), eager_start=eager, name="eager-or-not")
        steps.append("created")
        assert t.get_name() == "eager-or-not"
        return await t

    assert loop.run_until_complete(main()) == "done"
    if eager:
        assert steps == ["child starts", "created", "child ends"]
    else:
        assert steps == ["created", "child starts", "child ends"]


@pytest.mark.skipif(not PY312, reason="eager task factories are 3.12+")
def test_eager_task_factory(loop):
    loop.set_task_factory(asyncio.eager_task_factory)
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "eager ctx")

    async def immediate():
        return VAR.get()

    async def main():
        # A coroutine that never suspends is done when create_task returns,
        # and keeps its name and context.
        t = loop.create_task(immediate(), name="imm", context=ctx)
        assert t.done()
        assert t.get_name() == "imm"
        assert t.result() == "eager ctx"
        # One that suspends runs on as a normal task.
        t2 = loop.create_task(asyncio.sleep(0.01, result="later"))
        assert not t2.done()
        assert t2 in asyncio.all_tasks()
        return await t2

    assert loop.run_until_complete(main()) == "later"


@pytest.mark.skipif(not PY312, reason="create_eager_task_factory is 3.12+")
def test_create_eager_task_factory_with_custom_task(loop):
    made = []

    class MyTask(asyncio.Task):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("eager_start"))
            super().__init__(*args, **kwargs)

    async def main():
        loop.set_task_factory(asyncio.create_eager_task_factory(MyTask))
        t = asyncio.create_task(_value(), name="mine")
        assert isinstance(t, MyTask)
        assert t.done()
        return t.get_name(), t.result()

    assert loop.run_until_complete(main()) == ("mine", "default")
    assert made == [True]


def test_tasks_and_futures_use_the_current_asyncio_classes(loop, monkeypatch):
    # asyncio reads tasks.Task and futures.Future at each call; programs
    # (and CPython's own tests) swap in the pure-Python classes.
    monkeypatch.setattr(asyncio.tasks, "Task", asyncio.tasks._PyTask)
    monkeypatch.setattr(asyncio.futures, "Future", asyncio.futures._PyFuture)

    async def main():
        fut = loop.create_future()
        task = loop.create_task(_value(), name="py")
        fut.set_result(await task)
        return type(fut), type(task), await fut

    assert loop.run_until_complete(main()) == (
        asyncio.futures._PyFuture, asyncio.tasks._PyTask, "default")


# -- 3.14: call-graph introspection --------------------------------------------

@pytest.mark.skipif(not PY314, reason="asyncio.capture_call_graph is 3.14+")
def test_capture_and_print_call_graph(loop):
    ready = asyncio.Event()
    graphs = {}

    async def leaf():
        graphs["leaf"] = asyncio.capture_call_graph()
        buf = io.StringIO()
        asyncio.print_call_graph(file=buf)
        graphs["printed"] = buf.getvalue()
        ready.set()
        await asyncio.sleep(3600)

    async def middle():
        async with asyncio.TaskGroup() as tg:
            tg.create_task(leaf(), name="leaf-task")

    async def main():
        outer = asyncio.create_task(middle(), name="middle-task")
        await ready.wait()
        # Another task's graph, seen from outside while it waits.
        graphs["outer"] = asyncio.capture_call_graph(outer)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer

    loop.run_until_complete(main())

    leaf_graph = graphs["leaf"]
    assert leaf_graph.future.get_name() == "leaf-task"
    assert [f.frame.f_code.co_name for f in leaf_graph.call_stack][:1] == ["leaf"]
    # leaf-task is awaited by the TaskGroup in middle-task.
    assert [g.future.get_name() for g in leaf_graph.awaited_by] == ["middle-task"]
    printed = graphs["printed"]
    assert "leaf-task" in printed and "middle-task" in printed
    outer_graph = graphs["outer"]
    assert outer_graph.future.get_name() == "middle-task"
    names = [f.frame.f_code.co_name for f in outer_graph.call_stack]
    assert "middle" in names
