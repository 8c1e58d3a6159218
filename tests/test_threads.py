"""Threads: call_soon_threadsafe, wake-ups, run_coroutine_threadsafe,
run_in_executor and the default executor, a loop per thread."""

import asyncio
import concurrent.futures
import sys
import threading
import time

import pytest

from helpers import PY311

# Generous bound for "the loop woke up": a hang check, not a speed check.
WAKE_BOUND = 5.0


def test_call_soon_threadsafe_many_threads(loop):
    n_threads, n_calls = 8, 1000
    seen = {t: [] for t in range(n_threads)}
    total = n_threads * n_calls
    count = [0]
    done = loop.create_future()
    barrier = threading.Barrier(n_threads)

    def record(t, i):
        seen[t].append(i)
        count[0] += 1
        if count[0] == total:
            done.set_result(None)

    def worker(t):
        barrier.wait()
        for i in range(n_calls):
            loop.call_soon_threadsafe(record, t, i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    try:
        loop.run_until_complete(asyncio.wait_for(done, 30))
    finally:
        for th in threads:
            th.join()
    run_pending = loop.create_future()
    loop.call_soon(run_pending.set_result, None)
    loop.run_until_complete(run_pending)
    assert count[0] == total
    # Exactly once each, and FIFO per producing thread.
    for t in range(n_threads):
        assert seen[t] == list(range(n_calls))


def test_call_soon_threadsafe_before_run(loop):
    out = []

    def worker():
        for i in range(100):
            loop.call_soon_threadsafe(out.append, i)

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == list(range(100))


def test_call_soon_threadsafe_wakes_loop_blocked_on_timer(loop):
    fired = []
    long_timer = loop.call_later(30, fired.append, "30s-timer")
    started = threading.Event()

    def worker():
        started.wait(10)
        time.sleep(0.1)
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(started.set)
    th = threading.Thread(target=worker)
    th.start()
    t0 = time.monotonic()
    loop.run_forever()
    elapsed = time.monotonic() - t0
    th.join()
    assert fired == []
    assert elapsed < WAKE_BOUND
    long_timer.cancel()


def test_call_soon_threadsafe_wakes_idle_loop(loop):
    # Nothing scheduled at all: the loop waits without a timeout.
    def worker():
        time.sleep(0.1)
        loop.call_soon_threadsafe(loop.stop)

    th = threading.Thread(target=worker)
    t0 = time.monotonic()
    th.start()
    loop.run_forever()
    th.join()
    assert time.monotonic() - t0 < WAKE_BOUND


def test_other_threads_run_while_loop_waits(loop):
    # The loop must not hold the GIL while it waits: a pure-Python thread
    # finishes its work while the loop sleeps on a 1 s timer.
    finished_at = []
    go = threading.Event()

    def worker():
        go.wait(10)
        total = 0
        for i in range(200_000):
            total += i
        finished_at.append(time.monotonic())

    th = threading.Thread(target=worker)
    th.start()
    loop.call_soon(go.set)
    fired_at = []
    loop.call_later(1.0, lambda: (fired_at.append(time.monotonic()), loop.stop()))
    loop.run_forever()
    th.join(10)
    assert finished_at and fired_at
    assert finished_at[0] < fired_at[0]


def test_call_soon_threadsafe_result_delivered(loop):
    fut = loop.create_future()

    def worker():
        time.sleep(0.05)
        loop.call_soon_threadsafe(fut.set_result, threading.get_ident())

    th = threading.Thread(target=worker)
    th.start()
    ident = loop.run_until_complete(asyncio.wait_for(fut, 30))
    th.join()
    assert ident == th.ident


def test_call_soon_threadsafe_closed_loop(loop):
    loop.close()
    errors = []

    def worker():
        try:
            loop.call_soon_threadsafe(lambda: None)
        except RuntimeError as e:
            errors.append(str(e))

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    assert errors == ["Event loop is closed"]


def test_call_soon_threadsafe_returns_cancellable_handle(loop):
    out = []
    h = loop.call_soon_threadsafe(out.append, 1)
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == []


def test_non_threadsafe_call_from_other_thread_in_debug_mode(loop):
    loop.set_debug(True)
    msg = "Non-thread-safe operation invoked on an event loop other than the current one"
    errors = []

    def worker():
        for call in (
            lambda: loop.call_soon(lambda: None),
            lambda: loop.call_later(0, lambda: None),
            lambda: loop.call_at(loop.time(), lambda: None),
        ):
            try:
                call()
            except RuntimeError as e:
                errors.append(str(e))
        return "worker-done"

    async def main():
        return await loop.run_in_executor(None, worker)

    assert loop.run_until_complete(main()) == "worker-done"
    assert errors == [msg] * 3


def test_call_soon_from_other_thread_while_stopped_in_debug_mode(loop):
    # The thread check applies only while the loop runs.
    loop.set_debug(True)
    out = []
    th = threading.Thread(target=lambda: loop.call_soon(out.append, "ok"))
    th.start()
    th.join()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["ok"]


# -- run_coroutine_threadsafe ------------------------------------------------


def test_run_coroutine_threadsafe(loop):
    results = []

    async def add(a, b):
        await asyncio.sleep(0.01)
        assert asyncio.get_running_loop() is loop
        return a + b

    def worker():
        fut = asyncio.run_coroutine_threadsafe(add(1, 2), loop)
        results.append(fut.result(timeout=30))

    async def main():
        th = threading.Thread(target=worker)
        th.start()
        while th.is_alive():
            await asyncio.sleep(0.01)
        th.join()

    loop.run_until_complete(main())
    assert results == [3]


def test_run_coroutine_threadsafe_exception(loop):
    results = []

    async def fail():
        raise ValueError("from-coro")

    def worker():
        fut = asyncio.run_coroutine_threadsafe(fail(), loop)
        try:
            fut.result(timeout=30)
        except ValueError as e:
            results.append(str(e))

    async def main():
        th = threading.Thread(target=worker)
        th.start()
        while th.is_alive():
            await asyncio.sleep(0.01)

    loop.run_until_complete(main())
    assert results == ["from-coro"]


def test_run_coroutine_threadsafe_between_two_loops(loop_factory):
    main_loop = loop_factory()
    results = []
    ready = threading.Event()
    holder = {}

    def thread_main():
        other = loop_factory()
        holder["loop"] = other
        stop = other.create_future()
        holder["stop"] = stop
        other.call_soon(ready.set)
        other.run_until_complete(stop)

    th = threading.Thread(target=thread_main)
    th.start()
    assert ready.wait(10)
    other = holder["loop"]

    async def in_other():
        return threading.get_ident()

    async def main():
        cf = asyncio.run_coroutine_threadsafe(in_other(), other)
        results.append(await asyncio.wrap_future(cf))
        other.call_soon_threadsafe(holder["stop"].set_result, None)

    main_loop.run_until_complete(asyncio.wait_for(main(), 30))
    th.join(10)
    assert not th.is_alive()
    assert results == [th.ident]


def test_loop_per_thread(loop_factory):
    n = 4
    results = {}
    errors = []
    barrier = threading.Barrier(n)

    def thread_main(i):
        try:
            lp = loop_factory()

            async def work():
                assert asyncio.get_running_loop() is lp
                total = 0
                for k in range(20):
                    await asyncio.sleep(0)
                    total += k
                # all n loops are running at the same time here
                await lp.run_in_executor(None, barrier.wait, 10)
                assert lp.is_running()
                return (i, total, threading.get_ident())

            results[i] = lp.run_until_complete(work())
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=thread_main, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert errors == []
    assert sorted(results) == list(range(n))
    assert all(results[i][1] == sum(range(20)) for i in range(n))
    assert len({results[i][2] for i in range(n)}) == n


# -- executors -----------------------------------------------------------------


def test_run_in_executor_default(loop):
    main_ident = threading.get_ident()

    def work(a, b):
        return a * b, threading.get_ident()

    value, ident = loop.run_until_complete(loop.run_in_executor(None, work, 6, 7))
    assert value == 42
    assert ident != main_ident


def test_run_in_executor_returns_future_of_loop(loop):
    fut = loop.run_in_executor(None, lambda: 1)
    assert asyncio.isfuture(fut)
    assert fut.get_loop() is loop
    assert loop.run_until_complete(fut) == 1


def test_run_in_executor_exception(loop):
    def work():
        raise KeyError("in-thread")

    with pytest.raises(KeyError, match="in-thread"):
        loop.run_until_complete(loop.run_in_executor(None, work))


def test_run_in_executor_custom_executor(loop):
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="custom-pool"
    ) as pool:
        name = loop.run_until_complete(
            loop.run_in_executor(pool, lambda: threading.current_thread().name)
        )
    assert name.startswith("custom-pool")


def test_run_in_executor_many_concurrent(loop):
    async def main():
        futs = [loop.run_in_executor(None, pow, i, 2) for i in range(50)]
        return await asyncio.gather(*futs)

    assert loop.run_until_complete(main()) == [i * i for i in range(50)]


def test_set_default_executor(loop):
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="my-default")
    try:
        loop.set_default_executor(pool)
        name = loop.run_until_complete(
            loop.run_in_executor(None, lambda: threading.current_thread().name)
        )
        assert name.startswith("my-default")
    finally:
        pool.shutdown(wait=True)


@pytest.mark.skipif(not PY311, reason="3.11 turned the deprecation into TypeError")
def test_set_default_executor_rejects_non_thread_pool(loop):
    class MyExecutor(concurrent.futures.Executor):
        def submit(self, fn, *args, **kwargs):
            raise AssertionError("not used")

    with pytest.raises(TypeError, match="executor must be ThreadPoolExecutor instance"):
        loop.set_default_executor(MyExecutor())
    with pytest.raises(TypeError, match="executor must be ThreadPoolExecutor instance"):
        loop.set_default_executor(object())
    # the default executor is still usable
    assert loop.run_until_complete(loop.run_in_executor(None, lambda: 5)) == 5


def test_shutdown_default_executor(loop):
    ident = loop.run_until_complete(loop.run_in_executor(None, threading.get_ident))
    worker_threads = [t for t in threading.enumerate() if t.ident == ident]
    assert len(worker_threads) == 1
    loop.run_until_complete(loop.shutdown_default_executor())
    worker_threads[0].join(10)
    assert not worker_threads[0].is_alive()
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, lambda: None)


def test_shutdown_default_executor_without_executor(loop):
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, lambda: None)


def test_shutdown_default_executor_waits_for_running_jobs(loop):
    finished = []

    def slow():
        time.sleep(0.1)
        finished.append(True)

    async def main():
        loop.run_in_executor(None, slow)
        await asyncio.sleep(0)
        await loop.shutdown_default_executor()
        return list(finished)

    assert loop.run_until_complete(main()) == [True]


def test_custom_executor_still_usable_after_default_shutdown(loop):
    loop.run_until_complete(loop.shutdown_default_executor())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        assert loop.run_until_complete(loop.run_in_executor(pool, lambda: "ok")) == "ok"


def test_close_shuts_down_default_executor(loop):
    loop.run_until_complete(loop.run_in_executor(None, lambda: None))
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.run_in_executor(None, lambda: None)


# -- 3.14: a thread-safe handle's cancel() waits for a running callback --------

PY314 = sys.version_info >= (3, 14)


@pytest.mark.skipif(not PY314, reason="the thread-safe handle semantics are 3.14's")
@pytest.mark.parametrize("call", ["cancel", "cancelled"])
def test_threadsafe_handle_waits_for_running_callback(loop, call):
    started = threading.Event()
    order = []

    def callback():
        started.set()
        time.sleep(0.2)
        order.append("callback done")

    def other_thread():
        handle = loop.call_soon_threadsafe(callback)
        assert started.wait(WAKE_BOUND)
        # The callback is running: cancel()/cancelled() wait until it is over.
        result = getattr(handle, call)()
        order.append(f"{call} returned {result}")
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=other_thread)
    t.start()
    loop.run_forever()
    t.join(WAKE_BOUND)
    expected = "cancelled returned False" if call == "cancelled" else "cancel returned None"
    assert order == ["callback done", expected]


@pytest.mark.skipif(not PY314, reason="the thread-safe handle semantics are 3.14's")
def test_threadsafe_handle_cancelled_from_other_thread_before_it_runs(loop):
    calls = []
    go = threading.Event()

    def other_thread():
        handle = loop.call_soon_threadsafe(calls.append, "ran")
        handle.cancel()
        assert handle.cancelled()
        go.set()
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(go.wait, WAKE_BOUND)  # keep the loop busy meanwhile
    t = threading.Thread(target=other_thread)
    t.start()
    loop.run_forever()
    t.join(WAKE_BOUND)
    assert calls == []


@pytest.mark.skipif(not PY314, reason="the thread-safe handle semantics are 3.14's")
def test_threadsafe_handle_cancelling_itself_still_completes(loop, expect_errors):
    handles = []
    calls = []

    def callback():
        handles[0].cancel()  # from the loop thread, while running: no wait
        calls.append("completed")
        raise ZeroDivisionError

    handles.append(loop.call_soon_threadsafe(callback))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["completed"]
    assert handles[0].cancelled()
    # Its exception is reported as any callback's.
    (ctx,) = expect_errors()
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["handle"] is handles[0]
    assert ctx["message"].startswith("Exception in callback ")


# -- 3.14's thread-safe handle ---------------------------------------------

needs_threadsafe_handle = pytest.mark.skipif(
    not hasattr(asyncio.events, "_ThreadSafeHandle"),
    reason="asyncio's _ThreadSafeHandle is new in 3.14")


def _run_with_slow_callback(loop, in_thread):
    """Runs a callback that takes 0.3 s, scheduled from a thread that then
    calls `in_thread(handle, finished)` once the callback has started."""
    started, finished = threading.Event(), threading.Event()

    def callback():
        started.set()
        time.sleep(0.3)
        finished.set()

    def worker():
        try:
            handle = loop.call_soon_threadsafe(callback)
            assert started.wait(WAKE_BOUND)
            return in_thread(handle, finished)
        finally:
            loop.call_soon_threadsafe(loop.stop)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        result = pool.submit(worker)
        loop.run_forever()
        return result.result(WAKE_BOUND)


@needs_threadsafe_handle
def test_threadsafe_handle_is_asyncio_thread_safe_handle(loop):
    h = loop.call_soon_threadsafe(lambda: None)
    assert isinstance(h, asyncio.events._ThreadSafeHandle)
    assert isinstance(h, asyncio.Handle)
    assert not isinstance(h, asyncio.TimerHandle)
    assert "_ThreadSafeHandle" in repr(h)
    h.cancel()
    assert h.cancelled()


@needs_threadsafe_handle
def test_threadsafe_handle_cancelled_waits_for_running_callback(loop):
    def check(handle, finished):
        return (handle.cancelled(), finished.is_set())

    assert _run_with_slow_callback(loop, check) == (False, True)


@needs_threadsafe_handle
def test_threadsafe_handle_cancel_waits_for_running_callback(loop):
    def cancel(handle, finished):
        handle.cancel()
        return (finished.is_set(), handle.cancelled())

    assert _run_with_slow_callback(loop, cancel) == (True, True)


@needs_threadsafe_handle
def test_threadsafe_handle_cancels_itself_without_waiting(loop):
    box = []

    def callback():
        box[0].cancel()
        box.append(box[0].cancelled())
        loop.stop()

    box.append(loop.call_soon_threadsafe(callback))
    loop.run_forever()
    assert box[1:] == [True]


@needs_threadsafe_handle
def test_threadsafe_handle_cancelled_before_run_is_skipped(loop):
    out = []
    h = loop.call_soon_threadsafe(out.append, 1)
    h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == [] and h.cancelled()
