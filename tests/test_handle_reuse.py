"""Handles made one after another (oxloop recycles their objects): each new
handle is fresh (its own callback, arguments, state, weak references and
garbage-collector tracking), and call_soon_threadsafe never loses a
wake-up of a loop that sleeps in its poller."""

import asyncio
import gc
import threading
import weakref

# Generous bound for "the loop woke up": a hang check, not a speed check.
WAKE_BOUND = 30.0


def _drain(loop):
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    loop.run_until_complete(done)


def test_new_handles_are_fresh_after_old_ones_are_freed(loop):
    out = []
    for round_ in range(3):
        handles = [loop.call_soon(out.append, (round_, i)) for i in range(300)]
        refs = [weakref.ref(h) for h in handles]
        for i, h in enumerate(handles):
            assert h._args == ((round_, i),)
            assert not h.cancelled()
            if i % 3 == 0:
                h.cancel()
        _drain(loop)
        for i, h in enumerate(handles):
            assert h.cancelled() == (i % 3 == 0)
        del handles, h
        gc.collect()
        assert all(r() is None for r in refs)
    assert out == [(r, i) for r in range(3) for i in range(300) if i % 3]


def test_new_timers_are_fresh_after_old_ones_are_freed(loop):
    fired = []
    for round_ in range(3):
        now = loop.time()
        timers = [loop.call_at(now - 1 + i * 1e-6, fired.append, (round_, i))
                  for i in range(100)]
        for i, t in enumerate(timers):
            assert t.when() == now - 1 + i * 1e-6
            assert not t.cancelled()
            if i % 2:
                t.cancel()
        _drain(loop)
        del timers, t
    assert fired == [(r, i) for r in range(3) for i in range(0, 100, 2)]


def test_kept_handle_is_tracked_and_collectable_in_a_cycle(loop):
    class Box:
        pass

    for i in range(6):
        box = Box()
        if i % 2:
            box.handle = loop.call_at(loop.time() - 1, lambda b: None, box)
        else:
            box.handle = loop.call_soon(lambda b: None, box)
        _drain(loop)
        # The loop let go of it; the handle is an ordinary object now, and
        # the collector sees the cycle through it (box -> handle -> args).
        assert gc.is_tracked(box.handle)
        assert any(r is box.handle._args for r in gc.get_referents(box.handle))
        ref = weakref.ref(box)
        del box
        gc.collect()
        assert ref() is None


def test_threadsafe_wakes_a_sleeping_loop_every_time(loop):
    """A ping-pong with another thread: each call_soon_threadsafe comes
    while the loop sleeps in its poller (no timer, nothing ready), so each
    needs its own wake-up."""
    rounds = 2000
    got = threading.Event()
    count = [0]
    done = loop.create_future()

    def on_loop(i):
        count[0] += 1
        if i == rounds - 1:
            done.set_result(None)
        got.set()

    def producer():
        for i in range(rounds):
            got.clear()
            loop.call_soon_threadsafe(on_loop, i)
            if not got.wait(WAKE_BOUND):
                return

    th = threading.Thread(target=producer)
    th.start()
    try:
        loop.run_until_complete(asyncio.wait_for(done, WAKE_BOUND))
    finally:
        th.join()
    assert count[0] == rounds
