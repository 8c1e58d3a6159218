"""A `time` the user overrides, on the instance (`loop.time = f`,
`mock.patch.object(loop, "time")`) or in a subclass: the loop's deadlines and
its notion of "now" follow it where the stdlib loop calls `self.time()`
(`call_later`, the run loop's wait and timer step, debug mode's slow-callback
timing). Each behaviour runs on both loops; oxloop's virtual time and stats
under a user's clock at the end."""

import asyncio
import logging
import time
from unittest import mock

import pytest

from helpers import run_briefly


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def _subclass_loop(loop_factory, **namespace):
    """A loop of a new subclass of the kind's loop class, finished and
    checked at teardown as the factory's own loops are."""
    if loop_factory.kind == "asyncio":
        base = asyncio.SelectorEventLoop
    else:
        import oxloop

        base = oxloop.Loop
    loop = type("UserClockLoop", (base,), namespace)()
    loop_factory.recorder.install(loop)
    loop_factory.loops.append(loop)
    return loop


def test_call_later_reads_a_time_patched_on_the_instance(loop):
    with mock.patch.object(loop, "time", return_value=1000.0):
        later = loop.call_later(5, lambda: None)
        at = loop.call_at(7.5, lambda: None)
    assert later.when() == 1005.0
    assert at.when() == 7.5  # call_at reads no clock
    later.cancel()
    at.cancel()


def test_the_patch_undone_restores_the_loops_own_clock(loop):
    with mock.patch.object(loop, "time", return_value=1000.0):
        assert loop.time() == 1000.0
    assert "time" not in vars(loop)
    before = loop.time()
    h = loop.call_later(10, lambda: None)
    after = loop.time()
    assert before + 10 <= h.when() <= after + 10
    h.cancel()


@pytest.mark.parametrize("undo", ["del", "assign back"])
def test_plain_assignment_of_time_then_undone(loop, undo):
    original = loop.time
    loop.time = FakeClock(50.0)
    assert loop.call_later(1, lambda: None).when() == 51.0
    if undo == "del":
        del loop.time
        assert "time" not in vars(loop)
    else:
        loop.time = original
    before = loop.time()
    h = loop.call_later(10, lambda: None)
    after = loop.time()
    assert before + 10 <= h.when() <= after + 10
    h.cancel()


def test_a_timer_fires_when_the_patched_clock_says_so(loop):
    clock = FakeClock(1000.0)
    fired = []
    with mock.patch.object(loop, "time", clock):
        loop.call_later(3600, fired.append, "later")
        loop.call_at(1000.0 + 7200, fired.append, "at")
        run_briefly(loop)
        assert fired == []
        clock.now = 1000.0 + 3599.5
        run_briefly(loop)
        assert fired == []
        clock.now = 1000.0 + 3600
        run_briefly(loop)
        assert fired == ["later"]
        clock.now = 1000.0 + 7200
        run_briefly(loop)
        assert fired == ["later", "at"]


def test_a_sleep_under_a_patched_clock_ends_when_the_clock_says_so(loop):
    clock = FakeClock(0.0)
    loop.time = clock
    woke = []

    async def sleeper():
        await asyncio.sleep(86400)
        woke.append(loop.time())

    async def main():
        task = loop.create_task(sleeper())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not task.done()
        clock.now = 86400.0
        await task

    loop.run_until_complete(main())
    assert woke == [86400.0]


def test_a_subclass_time_drives_the_scheduler(loop_factory):
    clock = FakeClock(500.0)
    sub = _subclass_loop(loop_factory, time=lambda self: clock())
    fired = []
    h = sub.call_later(60, fired.append, "due")
    assert h.when() == 560.0
    run_briefly(sub)
    assert fired == []
    clock.now = 560.0
    run_briefly(sub)
    assert fired == ["due"]


def test_a_class_patched_after_the_loop_was_made_is_followed_by_the_next_run(loop_factory):
    sub = _subclass_loop(loop_factory)
    seen = []

    async def main():
        h = sub.call_later(1, lambda: None)
        seen.append(h.when())
        h.cancel()

    with mock.patch.object(type(sub), "time", lambda self: 42.0):
        sub.run_until_complete(main())
    assert seen == [43.0]


def test_an_error_from_the_patched_clock_leaves_the_loop_and_nothing_is_lost(loop):
    fired = []

    def broken_clock():
        raise ZeroDivisionError("clock")

    loop.call_soon(fired.append, "soon")
    with mock.patch.object(loop, "time", broken_clock):
        with pytest.raises(ZeroDivisionError):
            loop.call_later(1, fired.append, "never")
        with pytest.raises(ZeroDivisionError):
            run_briefly(loop)
        assert fired == []  # the clock is read before the ready callbacks run
    run_briefly(loop)
    assert fired == ["soon"]


def test_an_error_from_the_patched_clock_while_waiting_for_a_timer(loop):
    fired = []
    loop.call_at(loop.time() + 0.001, fired.append, "timer")
    fut = loop.create_future()
    with mock.patch.object(loop, "time", side_effect=ZeroDivisionError):
        with pytest.raises(ZeroDivisionError):
            loop.run_until_complete(fut)
    loop.call_at(loop.time() + 0.001, fut.set_result, None)
    loop.run_until_complete(fut)
    assert fired == ["timer"]


def test_debug_mode_times_callbacks_on_the_patched_clock(loop, caplog):
    ticks = iter(range(0, 10_000, 2))  # each reading 2 s after the last
    loop.set_debug(True)
    loop.slow_callback_duration = 1.5

    def quick():
        pass

    loop.time = lambda: float(next(ticks))
    loop.call_soon(quick)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_briefly(loop)
    del loop.time
    slow = [r.getMessage() for r in caplog.records if "quick" in r.getMessage()]
    assert len(slow) == 1
    assert slow[0].startswith("Executing <Handle ")
    assert slow[0].endswith("took 2.000 seconds")


def test_object_setattr_still_works_on_the_loop(loop):
    object.__setattr__(loop, "custom", 1)
    assert loop.custom == 1
    object.__delattr__(loop, "custom")
    assert not hasattr(loop, "custom")


# -- oxloop: virtual time and stats under a user's clock ---------------------


def test_oxloop_virtual_time_does_not_jump_a_users_clock(oxloop):
    loop = oxloop.new_event_loop(virtual_time=True)
    try:
        # A user's clock that runs with real time, an hour ahead of it.
        loop.time = lambda: time.monotonic() + 3600.0
        loop.run_until_complete(asyncio.sleep(0.01))
        # The loop waited for the user's clock instead of moving its own.
        assert loop.virtual_time_skipped == 0.0
    finally:
        loop.close()


def test_oxloop_stats_count_a_timers_lag_from_when_the_users_clock_made_it_due(oxloop):
    loop = oxloop.new_event_loop(stats=True)
    fired = []
    try:
        # A user's clock three hours behind the loop's: its deadlines are
        # not on the loop's clock, which would count them hours late.
        clock = FakeClock(time.monotonic() - 3 * 3600)
        loop.time = clock
        loop.call_later(10, fired.append, "due")
        clock.now += 10
        run_briefly(loop)
        stats = loop.stats()
    finally:
        loop.close()
    assert fired == ["due"]
    assert stats["lag_max_ms"] < 60_000
