"""The blocking-call detector: a watchdog thread samples the loop thread's
stack while one callback holds the loop, and the loop reports where it was
stuck through its exception handler.

oxloop-only API (the ``oxloop`` fixture). The blocking calls are real
``time.sleep`` calls on the loop thread, several times the threshold, so
that a slow machine still lets the watchdog run while they block.
"""

import asyncio
import gc
import os
import threading
import time
import weakref

HERE = os.path.abspath(__file__)
THRESHOLD = 0.05
BLOCK = 0.5


def _recording_loop(oxloop):
    loop = oxloop.new_event_loop()
    contexts = []
    loop.set_exception_handler(lambda _loop, ctx: contexts.append(ctx))
    loop.set_blocking_threshold(THRESHOLD)
    return loop, contexts


def blocking_callback():
    helper_that_blocks()


def helper_that_blocks():
    time.sleep(BLOCK)  # the line the report must name


BLOCKING_LINE = helper_that_blocks.__code__.co_firstlineno + 1


def test_a_blocking_sleep_in_a_callback_is_reported_with_its_file_line(oxloop):
    loop, contexts = _recording_loop(oxloop)
    try:
        handle = loop.call_soon(blocking_callback)
        loop.run_until_complete(asyncio.sleep(0))
        stats = loop.stats()
    finally:
        loop.close()
    assert len(contexts) == 1, contexts
    ctx = contexts[0]
    where = f"{HERE}:{BLOCKING_LINE}"
    assert ctx["blocking_location"] == where
    assert where in ctx["message"]
    assert "blocking_callback" in ctx["message"]
    assert ctx["duration"] >= BLOCK
    assert ctx["handle"] is handle
    stack = ctx["stack"]
    # The whole stack from the callback down to the blocking call, and
    # none of the loop's own frames.
    assert [f.name for f in stack] == ["blocking_callback", "helper_that_blocks"]
    assert stack[-1].line == "time.sleep(BLOCK)  # the line the report must name"
    assert stats["blocking_callbacks"] == 1
    assert stats["blocking_threshold"] == THRESHOLD


async def blocking_coroutine():
    await asyncio.sleep(0)
    time.sleep(BLOCK)  # noqa: ASYNC251 - blocking on purpose
    return "done"


def test_a_blocking_task_step_is_reported_with_the_task(oxloop):
    loop, contexts = _recording_loop(oxloop)
    try:
        task = loop.create_task(blocking_coroutine())
        assert loop.run_until_complete(task) == "done"
    finally:
        loop.close()
    assert len(contexts) == 1, contexts
    ctx = contexts[0]
    assert ctx["task"] is task
    line = blocking_coroutine.__code__.co_firstlineno + 2
    assert ctx["blocking_location"] == f"{HERE}:{line}"
    assert ctx["stack"][-1].name == "blocking_coroutine"


def test_callbacks_under_the_threshold_are_not_reported(oxloop):
    loop, contexts = _recording_loop(oxloop)
    try:
        for _ in range(100):
            loop.call_soon(lambda: None)
        loop.run_until_complete(asyncio.sleep(0.01))
    finally:
        loop.close()
    assert contexts == []


def test_the_default_handler_logs_the_stack(oxloop, caplog):
    loop = oxloop.new_event_loop()
    loop.set_blocking_threshold(THRESHOLD)
    try:
        loop.call_soon(blocking_callback)
        with caplog.at_level("ERROR", logger="asyncio"):
            loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    text = caplog.text
    assert "blocked the loop" in text
    assert "Blocked at (most recent call last):" in text
    assert f'File "{HERE}", line {BLOCKING_LINE}, in helper_that_blocks' in text


def _watchdog_threads():
    return [t for t in threading.enumerate() if t.name == "oxloop-watchdog"]


def _wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _new_watchdog_thread(before):
    (thread,) = [t for t in _watchdog_threads() if t not in before]
    return thread


def test_turning_the_detector_off_stops_the_thread(oxloop):
    before = _watchdog_threads()
    loop = oxloop.new_event_loop()
    try:
        loop.set_blocking_threshold(THRESHOLD)
        assert loop.get_blocking_threshold() == THRESHOLD
        thread = _new_watchdog_thread(before)
        loop.set_blocking_threshold(None)
        assert loop.get_blocking_threshold() is None
        assert loop.stats()["blocking_threshold"] is None
        _wait_for(lambda: not thread.is_alive())
    finally:
        loop.close()


def test_the_watchdog_keeps_no_loop_alive(oxloop):
    before = _watchdog_threads()
    loop = oxloop.new_event_loop()
    loop.set_blocking_threshold(THRESHOLD)
    thread = _new_watchdog_thread(before)
    loop.run_until_complete(asyncio.sleep(0))
    ref = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert ref() is None
    _wait_for(lambda: not thread.is_alive())


def test_OXLOOP_BLOCKING_THRESHOLD_sets_the_threshold(oxloop, monkeypatch):
    monkeypatch.setenv("OXLOOP_BLOCKING_THRESHOLD", "0.25")
    loop = oxloop.new_event_loop()
    try:
        assert loop.get_blocking_threshold() == 0.25
        assert loop.stats()["blocking_threshold"] == 0.25
    finally:
        loop.set_blocking_threshold(None)
        loop.close()
