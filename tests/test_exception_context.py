"""The context a custom exception handler runs in, on both loops.

From 3.12 on (CPython gh-96704) the loop runs the handler in the context of
the failing task, or of the failing handle; before, in the caller's."""

import asyncio
import contextvars
import sys

var = contextvars.ContextVar("var", default="unset")

PY312 = sys.version_info >= (3, 12)


def test_handler_runs_in_failing_handle_context(loop):
    seen = []

    def handler(lp, context):
        seen.append((type(context["exception"]).__name__, var.get()))

    loop.set_exception_handler(handler)

    def fail():
        var.set("in-callback")
        raise ZeroDivisionError

    ctx = contextvars.copy_context()
    ctx.run(var.set, "handle")
    var.set("outside")
    loop.call_soon(fail, context=ctx)
    loop.call_later(0.001, fail, context=ctx)
    loop.run_until_complete(asyncio.sleep(0.02))
    expected = "in-callback" if PY312 else "outside"
    assert seen == [("ZeroDivisionError", expected)] * 2
    # The callback's change stayed in its context.
    assert var.get() == "outside"


def test_handler_runs_in_failing_task_context(loop):
    seen = []

    def handler(lp, context):
        seen.append(var.get())

    loop.set_exception_handler(handler)

    async def fail():
        var.set("in-task")
        raise ZeroDivisionError

    async def main():
        task = loop.create_task(fail())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert task.done()
        return task

    var.set("outside")
    task = loop.run_until_complete(main())
    del task  # "Task exception was never retrieved"
    import gc
    gc.collect()
    assert seen == ["in-task" if PY312 else "outside"]


def test_handler_error_while_handle_context_entered(loop):
    # A handler called from inside a running callback: on 3.12+ entering the
    # handle's context again fails, and the default handler reports that.
    calls = []

    def handler(lp, context):
        calls.append(context.get("message"))

    def report():
        loop.call_exception_handler({"message": "inner", "handle": h})

    h = loop.call_soon(report)
    loop.set_exception_handler(handler)
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.set_exception_handler(None)
    assert calls == ([] if PY312 else ["inner"])
