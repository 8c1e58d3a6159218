"""Errors: exceptions in callbacks, the exception-handler API,
KeyboardInterrupt/SystemExit, debug mode and its checks."""

import asyncio
import gc
import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest

from helpers import run_briefly

# -- exceptions raised by callbacks ------------------------------------------


def test_callback_exception_goes_to_handler_and_loop_goes_on(loop, expect_errors):
    out = []
    err = ZeroDivisionError("cb failed")

    def bad():
        raise err

    h = loop.call_soon(bad)
    loop.call_soon(out.append, "same-iteration")
    loop.call_later(0.01, out.append, "later")
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert out == ["same-iteration", "later"]
    [ctx] = expect_errors()
    assert set(ctx) == {"message", "exception", "handle"}
    assert ctx["exception"] is err
    assert ctx["handle"] is h
    assert ctx["message"].startswith("Exception in callback ")
    assert "bad" in ctx["message"]


def test_timer_callback_exception_context(loop, expect_errors):
    err = ValueError("timer failed")

    def bad_timer():
        raise err

    h = loop.call_later(0, bad_timer)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    [ctx] = expect_errors()
    assert set(ctx) == {"message", "exception", "handle"}
    assert ctx["exception"] is err
    assert ctx["handle"] is h
    assert ctx["message"].startswith("Exception in callback ")


def test_many_failing_callbacks_each_reported(loop, expect_errors):
    def bad(i):
        raise RuntimeError(i)

    for i in range(10):
        loop.call_soon(bad, i)
    run_briefly(loop)
    errors = expect_errors()
    assert [e["exception"].args[0] for e in errors] == list(range(10))


def test_custom_base_exception_in_callback_goes_to_handler(loop, expect_errors):
    class MyBase(BaseException):
        pass

    out = []

    def bad():
        raise MyBase()

    loop.call_soon(bad)
    loop.call_soon(out.append, "after")
    run_briefly(loop)
    assert out == ["after"]
    [ctx] = expect_errors()
    assert isinstance(ctx["exception"], MyBase)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_propagate_from_run_forever(loop, exc_type):
    out = []

    def bad():
        raise exc_type()

    loop.call_soon(bad)
    loop.call_soon(out.append, "after")
    with pytest.raises(exc_type):
        loop.run_forever()
    assert not loop.is_running()
    # The rest of the interrupted iteration is still queued.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["after"]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_propagate_from_timer(loop, exc_type):
    def bad():
        raise exc_type()

    loop.call_later(0.01, bad)
    fut = loop.create_future()
    with pytest.raises(exc_type):
        loop.run_until_complete(fut)
    assert not loop.is_running()
    fut.cancel()


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_from_callback_during_run_until_complete(loop, exc_type):
    def bad():
        raise exc_type()

    async def main():
        loop.call_soon(bad)
        await asyncio.sleep(1)

    with pytest.raises(exc_type):
        loop.run_until_complete(main())
    assert not loop.is_running()
    # The interrupted task is still pending; let it finish.
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    loop.run_until_complete(asyncio.sleep(0))


def test_task_exception_never_retrieved(loop, expect_errors):
    async def fail():
        raise LookupError("never retrieved")

    task = loop.create_task(fail())
    run_briefly(loop, 2)
    assert task.done()
    del task
    gc.collect()
    [ctx] = expect_errors()
    assert ctx["message"] == "Task exception was never retrieved"
    assert isinstance(ctx["exception"], LookupError)
    assert "future" in ctx


# -- exception-handler API -----------------------------------------------------


def test_get_set_exception_handler(loop):
    def handler(lp, ctx):
        pass

    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None
    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


def test_set_exception_handler_non_callable(loop):
    with pytest.raises(TypeError, match="A callable object or None is expected"):
        loop.set_exception_handler("not callable")
    with pytest.raises(TypeError):
        loop.set_exception_handler(42)


def test_handler_receives_loop_and_context(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append((lp, ctx)))
    err = OSError("x")

    def bad():
        raise err

    loop.call_soon(bad)
    run_briefly(loop)
    assert len(calls) == 1
    assert calls[0][0] is loop
    assert calls[0][1]["exception"] is err


def test_call_exception_handler_custom_context(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))
    ctx = {"message": "custom", "custom_key": 123}
    loop.call_exception_handler(ctx)
    assert calls == [{"message": "custom", "custom_key": 123}]


def test_default_exception_handler_logs(loop, caplog):
    loop.set_exception_handler(None)
    err = ZeroDivisionError("logged")

    def bad():
        raise err

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(bad)
        run_briefly(loop)
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    rec = records[0]
    assert rec.levelno == logging.ERROR
    assert rec.getMessage().startswith("Exception in callback ")
    assert "handle:" in rec.getMessage()
    assert rec.exc_info is not None and rec.exc_info[1] is err


def test_default_exception_handler_called_directly(loop, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({"message": "direct message", "extra": "xyz"})
        loop.default_exception_handler({})
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert msgs[0].startswith("direct message")
    assert "extra: 'xyz'" in msgs[0]
    assert msgs[1].startswith("Unhandled exception in event loop")


def test_call_exception_handler_without_handler_logs(loop, caplog):
    loop.set_exception_handler(None)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "via call_exception_handler"})
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(msgs) == 1 and msgs[0].startswith("via call_exception_handler")


def test_handler_that_raises_is_logged_and_loop_goes_on(loop, caplog):
    def broken_handler(lp, ctx):
        raise RuntimeError("handler is broken")

    loop.set_exception_handler(broken_handler)
    out = []

    def bad():
        raise ValueError("original")

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(bad)
        loop.call_soon(out.append, "after")
        loop.call_later(0.01, out.append, "later")
        loop.call_later(0.02, loop.stop)
        loop.run_forever()
    assert out == ["after", "later"]
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].getMessage().startswith("Unhandled error in exception handler")
    assert isinstance(records[0].exc_info[1], RuntimeError)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_handler_raising_keyboard_interrupt_propagates(loop, exc_type):
    def handler(lp, ctx):
        raise exc_type()

    loop.set_exception_handler(handler)

    def bad():
        raise ValueError

    loop.call_soon(bad)
    with pytest.raises(exc_type):
        loop.run_forever()
    assert not loop.is_running()


def test_handler_can_defer_to_default(loop, caplog):
    seen = []

    def handler(lp, ctx):
        seen.append(ctx["message"])
        lp.default_exception_handler(ctx)

    loop.set_exception_handler(handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "deferred"})
    assert seen == ["deferred"]
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == ["deferred"]


# -- debug mode ------------------------------------------------------------------


def test_get_set_debug(loop):
    # The test runner does not set PYTHONASYNCIODEBUG / -X dev.
    expected_default = bool(sys.flags.dev_mode or os.environ.get("PYTHONASYNCIODEBUG"))
    assert loop.get_debug() is expected_default
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_debug_mode_can_run(loop):
    loop.set_debug(True)

    async def main():
        await asyncio.sleep(0)
        return "debug-ok"

    assert loop.run_until_complete(main()) == "debug-ok"


def _debug_in_subprocess(loop_kind, env_update, extra_args=()):
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from helpers import make_loop
        loop = make_loop({loop_kind!r})
        print(loop.get_debug())
        loop.close()
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    env.update(env_update)
    proc = subprocess.run(
        [sys.executable, *extra_args, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_debug_env_var_enables_debug(loop_kind):
    assert _debug_in_subprocess(loop_kind, {"PYTHONASYNCIODEBUG": "1"}) == "True"
    assert _debug_in_subprocess(loop_kind, {}) == "False"


def test_debug_env_var_ignored_with_dash_e(loop_kind):
    out = _debug_in_subprocess(loop_kind, {"PYTHONASYNCIODEBUG": "1"}, ["-E"])
    assert out == "False"


def test_dev_mode_enables_debug(loop_kind):
    assert _debug_in_subprocess(loop_kind, {}, ["-X", "dev"]) == "True"


@pytest.mark.blocking_on_purpose
def test_slow_callback_logged_in_debug_mode(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05

    def my_slow_callback():
        time.sleep(0.1)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(my_slow_callback)
        run_briefly(loop)
    msgs = [r.getMessage() for r in caplog.records
            if r.name == "asyncio" and r.levelno == logging.WARNING]
    slow = [m for m in msgs if m.startswith("Executing ") and "took" in m]
    assert len(slow) == 1, msgs
    assert "my_slow_callback" in slow[0]
    assert slow[0].endswith(" seconds")


@pytest.mark.blocking_on_purpose
def test_slow_task_step_logged_in_debug_mode(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05

    async def my_slow_coroutine():
        time.sleep(0.1)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(my_slow_coroutine())
    slow = [r.getMessage() for r in caplog.records
            if r.name == "asyncio" and r.getMessage().startswith("Executing ")]
    assert len(slow) == 1, slow
    assert "my_slow_coroutine" in slow[0] and "took" in slow[0]


def test_fast_callback_not_logged_in_debug_mode(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 10.0
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(lambda: None)
        run_briefly(loop)
    assert [r for r in caplog.records if r.name == "asyncio" and "Executing" in r.getMessage()] == []


@pytest.mark.blocking_on_purpose
def test_slow_callback_not_logged_without_debug(loop, caplog):
    loop.set_debug(False)
    loop.slow_callback_duration = 0.01
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.call_soon(time.sleep, 0.05)
        run_briefly(loop)
    assert [r for r in caplog.records if r.name == "asyncio" and "Executing" in r.getMessage()] == []


def test_slow_callback_duration_default(loop):
    assert loop.slow_callback_duration == 0.1
    loop.slow_callback_duration = 0.5
    assert loop.slow_callback_duration == 0.5


def test_debug_mode_context_has_source_traceback(loop, expect_errors):
    loop.set_debug(True)

    def bad():
        raise ValueError

    loop.call_soon(bad)
    run_briefly(loop)
    [ctx] = expect_errors()
    assert {"message", "exception", "handle"} <= set(ctx)
    assert "source_traceback" in ctx
