"""Garbage collection: a closed loop is collected even when its handles,
timers or readers reference it in a cycle; no uncollectable garbage.

A test whose callbacks close over the loop builds it in an inner `build()`
and gets back only a weak reference: the closures' cell then keeps the loop
alive after `build()` returns, so the collector must break the cycle
(a `del loop` in the test itself would empty the cell and the cycle with it).
"""

import asyncio
import contextvars
import gc
import socket
import types
import weakref

import pytest

from helpers import make_loop, run_briefly


@pytest.fixture
def fresh(loop_kind):
    """An untracked loop (the fixture must not keep it alive)."""
    gc.collect()
    garbage_before = len(gc.garbage)

    def factory():
        return make_loop(loop_kind)

    yield factory
    gc.collect()
    assert len(gc.garbage) == garbage_before, gc.garbage[garbage_before:]


def _assert_collected(ref):
    for _ in range(3):
        gc.collect()
    referrers = [type(r) for r in gc.get_referrers(ref())] if ref() is not None else None
    assert ref() is None, f"the loop was not collected; referrers: {referrers!r}"


def test_closed_loop_is_collected(fresh):
    loop = fresh()
    ref = weakref.ref(loop)
    loop.close()
    del loop
    _assert_collected(ref)


def test_loop_that_ran_is_collected(fresh):
    loop = fresh()

    async def main():
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    assert loop.run_until_complete(main()) is loop
    ref = weakref.ref(loop)
    loop.close()
    del loop
    _assert_collected(ref)


def test_pending_callback_referencing_loop(fresh):
    def build():
        loop = fresh()
        loop.call_soon(lambda: loop.time())  # closure -> loop -> ready queue -> handle
        loop.call_soon(loop.stop)  # bound method of the loop itself
        loop.close()
        return weakref.ref(loop)

    _assert_collected(build())


def test_ran_callbacks_referencing_loop(fresh):
    def build():
        loop = fresh()
        for _ in range(10):
            loop.call_soon(lambda: loop.is_running())
        run_briefly(loop)
        loop.close()
        return weakref.ref(loop)

    _assert_collected(build())


def test_unfired_timer_referencing_loop(fresh):
    def build():
        loop = fresh()
        loop.call_later(3600, lambda: loop.stop())
        loop.call_at(loop.time() + 7200, loop.stop)
        loop.close()
        return weakref.ref(loop)

    _assert_collected(build())


def test_cancelled_timer_referencing_loop(fresh):
    def build():
        loop = fresh()
        h = loop.call_later(3600, lambda: loop.stop())
        h.cancel()
        run_briefly(loop)
        del h
        loop.close()
        return weakref.ref(loop)

    _assert_collected(build())


def test_reader_and_writer_referencing_loop(fresh):
    a, b = socket.socketpair()

    def build():
        loop = fresh()
        loop.add_reader(a.fileno(), lambda: loop.stop())
        loop.add_writer(b.fileno(), lambda: loop.stop())
        run_briefly(loop)
        loop.close()
        return weakref.ref(loop)

    try:
        _assert_collected(build())
    finally:
        a.close()
        b.close()


def test_exception_handler_referencing_loop(fresh):
    def build():
        loop = fresh()
        seen = []
        loop.set_exception_handler(lambda lp, ctx: seen.append(loop))

        def bad():
            raise ValueError

        loop.call_soon(bad)
        run_briefly(loop)
        assert seen and seen[0] is loop
        seen.clear()
        loop.close()
        return weakref.ref(loop)

    _assert_collected(build())


def test_handle_cycle_through_args(fresh):
    loop = fresh()
    box = []
    h = loop.call_later(3600, box.append, box)
    box.append(h)  # handle -> args -> box -> handle
    box.append(loop)
    del h
    ref = weakref.ref(loop)
    loop.close()
    del loop, box
    _assert_collected(ref)


def test_pending_future_and_task_referencing_loop(fresh):
    def build():
        loop = fresh()
        fut = loop.create_future()
        fut.add_done_callback(lambda f: loop.stop())

        async def waiter():
            await fut

        task = loop.create_task(waiter())
        run_briefly(loop)
        task.cancel()
        run_briefly(loop, 2)
        fut.cancel()
        run_briefly(loop)
        loop.close()
        return weakref.ref(loop)

    _assert_collected(build())


def test_loop_with_default_executor_is_collected(fresh):
    loop = fresh()
    assert loop.run_until_complete(loop.run_in_executor(None, lambda: 1)) == 1
    loop.run_until_complete(loop.shutdown_default_executor())
    ref = weakref.ref(loop)
    loop.close()
    del loop
    _assert_collected(ref)


def test_callback_objects_are_released_after_running(fresh):
    loop = fresh()
    try:

        class Payload:
            pass

        payload = Payload()
        pref = weakref.ref(payload)
        loop.call_soon(lambda p: None, payload)
        loop.call_later(0, lambda p: None, payload)
        del payload
        loop.call_later(0.01, loop.stop)
        loop.run_forever()
        gc.collect()
        assert pref() is None
    finally:
        loop.close()


def test_cancelled_timer_releases_callback(fresh):
    loop = fresh()
    try:

        class Payload:
            pass

        payload = Payload()
        pref = weakref.ref(payload)
        h = loop.call_later(3600, lambda p: None, payload)
        del payload
        h.cancel()
        del h
        run_briefly(loop)
        gc.collect()
        assert pref() is None
    finally:
        loop.close()


def test_unclosed_loop_warns_on_collection(fresh):
    loop = fresh()
    ref = weakref.ref(loop)
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        del loop
        gc.collect()
    _assert_collected(ref)


def test_cycle_through_handle_after_it_ran_is_collected(fresh):
    # The loop lets go of a handle that something else still holds: the
    # handle must be an ordinary collectable object from then on.
    loop = fresh()
    box = []
    h = loop.call_soon(box.append, box)
    box.append(h)  # box -> handle -> args -> box
    href = weakref.ref(h)
    del h
    run_briefly(loop)
    assert box[-1] is box  # the callback ran
    del box
    gc.collect()
    assert href() is None, "a handle cycle survived after the handle ran"
    loop.close()


def test_cycle_through_cancelled_swept_timers_is_collected(fresh):
    # Enough cancelled timers to make the loop sweep its heap at once.
    loop = fresh()
    class Box(list):
        pass

    refs = []
    for _ in range(300):
        box = Box()
        h = loop.call_later(3600, box.append, box)
        box.append(h)
        refs.append(weakref.ref(box))
        del box, h
    for r in refs:
        r()[0].cancel()
    run_briefly(loop)
    gc.collect()
    assert all(r() is None for r in refs)
    loop.close()


def test_queued_callback_is_a_referent_of_the_loop(fresh):
    # Tools that walk gc.get_referents() (objgraph, leak finders) must see
    # what a queued callback keeps alive, with the handle in the path or
    # (oxloop) reported by the loop directly.
    #
    # The walk does not enter modules: on CPython 3.12.0-3.12.5 the
    # `_asyncio` module reports its free list of dead FutureIter objects to
    # gc.get_referents() (CPython gh-122695, fixed in 3.12.6 and 3.13), and
    # letting go of the list that hands them out frees them a second time:
    # the free list turns into a cycle, and the next collection spins in
    # `_asyncio`'s module_traverse (or a reused FutureIter crashes). The
    # oxloop loop reaches that module in three hops (loop -> socket helper
    # -> `_asyncio.Future` type -> module); the path this test is about
    # never goes through a module.
    loop = fresh()

    class Marker:
        def __call__(self):
            pass

    marker = Marker()
    loop.call_later(3600, marker)
    seen, todo = set(), [loop]
    for _ in range(4):  # loop -> (handle | heap) -> callback, a few hops
        nxt = []
        for obj in todo:
            for ref in gc.get_referents(obj):
                if id(ref) not in seen:
                    seen.add(id(ref))
                    if not isinstance(ref, types.ModuleType):
                        nxt.append(ref)
        todo = nxt
    assert id(marker) in seen
    loop.close()


def test_collections_while_callbacks_are_queued(fresh):
    # The collector runs while thousands of handles are queued and timers
    # pending, and from inside callbacks: nothing is freed too early.
    loop = fresh()
    results = []

    def cb(i, payload):
        if i % 500 == 0:
            gc.collect()
        results.append((i, len(payload)))
        if len(results) == 6000:
            loop.stop()

    for i in range(3000):
        loop.call_soon(cb, i, [i] * 3)
        loop.call_later(0.001 * (i % 5), cb, -1 - i, [i] * 2)
    gc.collect()
    loop.run_forever()  # until the 6000th callback stops it
    assert sorted(i for i, _ in results if i >= 0) == list(range(3000))
    assert len(results) == 6000
    assert sorted(-1 - i for i, _ in results if i < 0) == list(range(3000))
    assert all(n == (3 if i >= 0 else 2) for i, n in results)
    loop.close()


def test_collections_while_handles_in_cycles_are_queued(fresh):
    # The collector runs, between iterations and from inside callbacks,
    # while handles that sit in reference cycles (box -> handle -> args ->
    # box, callbacks closing over the loop) are queued, pending in the timer
    # heap, being cancelled (enough for the loop to sweep its heap) and
    # running; tasks await futures meanwhile (3.12's FutureIter free list
    # gets used). Every callback runs once with its arguments intact, and
    # once the loop is closed it and every cycle are collected.
    n = 1500

    class Box(list):
        pass

    def build():
        loop = fresh()
        ran = []
        damaged = []
        errors = []
        far = []
        loop.set_exception_handler(lambda lp, ctx: (errors.append(ctx), lp.stop()))
        box_refs = []
        expected = set()

        def schedule(i, later=None):
            box = Box([i])
            if later is None:
                h = loop.call_soon(cb, i, box)
            else:
                h = loop.call_later(later, cb, i, box)
            box.append(h)  # box -> handle -> args -> box
            box_refs.append(weakref.ref(box))
            return h

        def cb(i, box):
            ran.append(i)
            if box[0] != i or len(box) != 2:
                damaged.append((i, repr(box)))
            if len(ran) % 250 == 0:
                gc.collect()
            if 0 <= i < n and i % 4 == 0:
                expected.add(i + 10 * n)
                schedule(i + 10 * n)  # queued from inside a callback
            if len(ran) == n:
                for h in far:  # every far timer cancelled: a heap sweep
                    h.cancel()
            if len(ran) == len(expected):
                loop.stop()

        for i in range(n):
            expected.add(i)
            schedule(i)
            expected.add(n + i)
            schedule(n + i, later=0)
            if i % 4 == 0:
                far.append(schedule(-1 - i, later=3600))

        async def waiter(fut):
            return await fut

        futs = [loop.create_future() for _ in range(50)]
        tasks = [loop.create_task(waiter(f)) for f in futs]
        for k, f in enumerate(futs):
            loop.call_soon(f.set_result, k)
            expected.add(-10 * n - k)
            loop.call_soon(cb, -10 * n - k, Box([-10 * n - k, tasks[k]]))
        gc.collect()  # with everything queued
        loop.run_forever()  # until every expected callback ran
        assert errors == [] and damaged == []
        assert sorted(ran) == sorted(expected)
        assert [t.result() for t in tasks] == list(range(50))
        run_briefly(loop)
        loop.set_exception_handler(None)
        loop.close()
        return weakref.ref(loop), box_refs

    loop_ref, box_refs = build()
    _assert_collected(loop_ref)
    assert all(r() is None for r in box_refs)


# The context a thread-safe handle or a timer copies (no `context=`): oxloop
# keeps the copy out of the collector's lists while only the loop holds it
# and reports what the copy references itself; cycles through the copy must
# still be collected, and a copy handed out to Python is an ordinary object.

_VALUE = contextvars.ContextVar("_VALUE")


class _Box(list):
    pass


def _noop(*args):
    pass


class _Callback:
    """A callback that keeps a loop."""

    def __init__(self, loop):
        self.loop = loop

    def __call__(self, *args):
        pass


def _context_of(handle):
    """The handle's context (asyncio's `get_context()` is 3.12+)."""
    get = getattr(handle, "get_context", None)
    return get() if get is not None else handle._context


def _copying_calls(loop):
    """A thread-safe call and two timers, made without `context=`."""
    return [
        loop.call_soon_threadsafe(_noop),
        loop.call_later(3600, _noop),
        loop.call_at(loop.time() + 7200, _noop, 1),
    ]


@pytest.mark.parametrize("shape", ["loop", "callback"])
def test_cycle_through_copied_context_is_collected(fresh, shape):
    # loop -> handle -> copied context -> value -> loop, the loop dropped
    # without being closed: only the collector can free it, and only if the
    # copy's references are reported. "callback": the value is a queued
    # handle's callback, which keeps the loop.
    def build():
        loop = fresh()

        def schedule():
            if shape == "loop":
                _VALUE.set(_Box([loop]))
            else:
                callback = _Callback(loop)
                _VALUE.set(_Box([callback]))
                loop.call_later(3600, callback)
            _copying_calls(loop)

        contextvars.copy_context().run(schedule)
        return weakref.ref(loop)

    ref = build()
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        gc.collect()
    _assert_collected(ref)


def test_cycle_through_copied_context_after_handle_ran_is_collected(fresh):
    # box -> handle -> copied context -> box: once the loop lets go of the
    # handles (they ran, or were cancelled), the cycle is ordinary garbage.
    loop = fresh()

    def schedule():
        box = _Box()
        _VALUE.set(box)
        box.append(loop.call_soon_threadsafe(_noop))
        box.append(loop.call_later(0, _noop))
        box.append(loop.call_later(3600, _noop))
        return weakref.ref(box)

    try:
        refs = [contextvars.copy_context().run(schedule) for _ in range(3)]
        for r in refs:
            r()[2].cancel()
        run_briefly(loop, steps=3)
    finally:
        loop.close()
    gc.collect()
    assert all(r() is None for r in refs), "a cycle through a copied context survived"


def test_cycle_through_copied_context_of_closed_loop_is_collected(fresh):
    # The same cycles with the handles still queued when the loop closes.
    loop = fresh()

    def schedule():
        box = _Box()
        _VALUE.set(box)
        box.extend(_copying_calls(loop))
        return weakref.ref(box)

    refs = [contextvars.copy_context().run(schedule) for _ in range(3)]
    loop.close()
    gc.collect()
    assert all(r() is None for r in refs)


def test_copied_context_handed_out_is_tracked(fresh):
    # get_context() (or `_context`) gives Python the copy: from then on the
    # collector tracks it (else a cycle through it, made by the caller, could
    # never be collected). Also after the loop ran the handle and let go of it.
    loop = fresh()
    try:
        handles = _copying_calls(loop)
        if hasattr(handles[0], "_context"):  # both accessors, where both exist
            handles += _copying_calls(loop)
            assert gc.is_tracked(handles[-1]._context)
        for h in handles:
            ctx = _context_of(h)
            assert isinstance(ctx, contextvars.Context)
            assert gc.is_tracked(ctx)
        ran = loop.call_soon_threadsafe(_noop)
        later = loop.call_later(0, _noop)
        run_briefly(loop, steps=2)
        for h in (ran, later):
            ctxs = [r for r in gc.get_referents(h) if isinstance(r, contextvars.Context)]
            assert len(ctxs) == 1 and gc.is_tracked(ctxs[0])
            assert _context_of(h) is ctxs[0]
        for h in handles:
            h.cancel()
    finally:
        loop.close()


def test_context_runs_and_values_survive_collections(fresh):
    # Callbacks see their copied context intact after collections while
    # they were queued, and a context given with `context=` is the caller's
    # (still tracked, never hidden).
    loop = fresh()
    seen = []

    def cb(i):
        seen.append((i, _VALUE.get()[0]))

    def schedule(i):
        _VALUE.set([i])
        loop.call_soon_threadsafe(cb, i)
        loop.call_later(0, cb, -1 - i)

    for i in range(300):
        contextvars.copy_context().run(schedule, i)
    given = contextvars.copy_context()
    given.run(_VALUE.set, ["given"])
    loop.call_soon_threadsafe(lambda: seen.append(("given", _VALUE.get()[0])), context=given)
    gc.collect()
    try:
        run_briefly(loop, steps=3)
    finally:
        loop.close()
    assert gc.is_tracked(given)
    assert sorted(x for x in seen if x[0] != "given") == sorted(
        [(i, i) for i in range(300)] + [(-1 - i, i) for i in range(300)]
    )
    assert ("given", "given") in seen


def test_oxloop_keeps_queued_copies_and_atomic_args_out_of_the_collector(oxloop):
    # The optimization itself: while queued, a thread-safe handle's or a
    # timer's copied context is untracked, and so is an `*args` tuple whose
    # items can never be in a cycle (CPython's rule for tuples); a tuple
    # with a container stays tracked.
    loop = oxloop.new_event_loop()
    try:
        handles = [
            loop.call_soon_threadsafe(_noop, 1, "a", None, (2, 3)),
            loop.call_later(3600, _noop, 1.5, b"x"),
            loop.call_soon(_noop, 7),
        ]
        for h in handles:
            args = [r for r in gc.get_referents(h) if type(r) is tuple]
            assert args == [h._args] and not gc.is_tracked(args[0])
        for h in handles[:2]:
            ctxs = [r for r in gc.get_referents(h) if isinstance(r, contextvars.Context)]
            assert len(ctxs) == 1 and not gc.is_tracked(ctxs[0])
        for args in ([1],), ({},), ((1, [2]),), (loop,):
            assert gc.is_tracked(loop.call_soon_threadsafe(_noop, *args)._args)
        handles[1].cancel()
    finally:
        loop.close()
