"""Signal handlers on both loops: delivery while the loop sleeps, args and
context, remove/replace, errors, wakeup fd and SIGINT restoration."""

import asyncio
import contextvars
import os
import signal
import socket
import threading

import pytest

GUARD = 30  # hang guard, seconds


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, GUARD))


def test_signal_wakes_sleeping_loop(loop):
    got = []

    async def main():
        fut = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, lambda *a: (got.append(a),
                                fut.set_result(None)), 1, "two")
        # The loop blocks in its poll (no timers, no ready callbacks)
        # until the signal arrives from another thread.
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        await fut

    try:
        run(loop, main())
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    assert got == [(1, "two")]


def test_handler_runs_in_context_of_add(loop):
    var = contextvars.ContextVar("var", default="unset")
    seen = []

    async def main():
        fut = loop.create_future()

        def handler():
            seen.append(var.get())
            fut.set_result(None)

        var.set("at-add")
        loop.add_signal_handler(signal.SIGUSR2, handler)
        var.set("later")
        os.kill(os.getpid(), signal.SIGUSR2)
        await fut

    try:
        contextvars.copy_context().run(run, loop, main())
    finally:
        loop.remove_signal_handler(signal.SIGUSR2)
    assert seen == ["at-add"]


def test_replace_and_remove(loop):
    calls = []

    async def main():
        fut = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, calls.append, "old")
        loop.add_signal_handler(signal.SIGUSR1, lambda: (calls.append("new"),
                                fut.set_result(None)))
        os.kill(os.getpid(), signal.SIGUSR1)
        await fut

    run(loop, main())
    assert calls == ["new"]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_handler_exception_goes_to_exception_handler(loop, expect_errors):
    async def main():
        fut = loop.create_future()

        def boom():
            loop.call_soon(fut.set_result, None)
            raise ZeroDivisionError

        loop.add_signal_handler(signal.SIGUSR1, boom)
        os.kill(os.getpid(), signal.SIGUSR1)
        await fut

    try:
        run(loop, main())
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    errors = expect_errors()
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], ZeroDivisionError)


def test_sigint_restored_to_default_int_handler(loop):
    saved = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, lambda: None)
        assert loop.remove_signal_handler(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, saved)


def test_wakeup_fd_cleared_after_last_handler(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGUSR2, lambda: None)
    assert signal.set_wakeup_fd(-1) != -1  # this loop's fd was installed
    # put back what the loop installed
    loop.remove_signal_handler(signal.SIGUSR1)
    loop.remove_signal_handler(signal.SIGUSR2)
    assert signal.set_wakeup_fd(-1) == -1


def test_close_removes_handlers(loop_factory):
    lp = loop_factory()
    lp.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None)
    lp.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1


def test_errors(loop):
    async def coro_handler():
        pass

    with pytest.raises(TypeError):
        loop.add_signal_handler(signal.SIGUSR1, coro_handler)
    with pytest.raises(TypeError):
        loop.add_signal_handler("1", lambda: None)
    with pytest.raises(ValueError):
        loop.add_signal_handler(-1, lambda: None)
    with pytest.raises(ValueError):
        loop.add_signal_handler(1000, lambda: None)
    with pytest.raises(ValueError):
        loop.remove_signal_handler(1000)
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGKILL, lambda: None)
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGSTOP, lambda: None)
    assert signal.set_wakeup_fd(-1) == -1  # nothing left behind
    assert loop.remove_signal_handler(signal.SIGKILL) is False


@pytest.mark.parametrize("first", [True, False])
def test_not_main_thread(loop, first):
    errors = []
    if not first:
        loop.add_signal_handler(signal.SIGUSR2, lambda: None)

    def worker():
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    if not first:
        assert loop.remove_signal_handler(signal.SIGUSR2)


def test_signal_before_run_is_handled_on_next_run(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "late")
    try:
        os.kill(os.getpid(), signal.SIGUSR1)  # the loop is not running

        async def main():
            while not got:
                await asyncio.sleep(0.001)

        run(loop, main())
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    assert got == ["late"]


def test_closed_loop(loop_factory):
    lp = loop_factory()
    lp.close()
    with pytest.raises(RuntimeError):
        lp.add_signal_handler(signal.SIGUSR1, lambda: None)


def test_previous_wakeup_fd_restored(loop, loop_kind):
    a, b = socket.socketpair()
    a.setblocking(False)
    fd = a.fileno()
    try:
        signal.set_wakeup_fd(a.fileno())
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        loop.remove_signal_handler(signal.SIGUSR1)
        restored = signal.set_wakeup_fd(-1)
    finally:
        signal.set_wakeup_fd(-1)
        a.close()
        b.close()
    # asyncio clears the wakeup fd; oxloop restores the previous one.
    assert restored == (-1 if loop_kind == "asyncio" else fd)
