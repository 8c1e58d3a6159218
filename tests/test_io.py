"""add_reader / add_writer / remove_reader / remove_writer on socketpairs and
pipes (asyncio's selector semantics: level-triggered)."""

import errno
import os
import socket

import pytest

# A safety stop so a missing wake-up fails instead of hanging the test.
SAFETY = 5.0


@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    fds = [r, w]
    yield fds
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _run_until_stopped(loop):
    safety = loop.call_later(SAFETY, loop.stop)
    loop.run_forever()
    safety.cancel()


def test_reader_called_when_readable(loop, sockpair):
    a, b = sockpair
    got = []

    def on_readable(*args):
        got.append((args, a.recv(100)))
        loop.remove_reader(a.fileno())
        loop.stop()

    loop.add_reader(a.fileno(), on_readable, "arg1", 2)
    loop.call_later(0.01, b.send, b"hello")
    _run_until_stopped(loop)
    assert got == [(("arg1", 2), b"hello")]


def test_reader_not_called_when_not_readable(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_reader(a.fileno(), calls.append, "called")
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert calls == []
    assert loop.remove_reader(a.fileno()) is True


def test_reader_is_level_triggered(loop, sockpair):
    a, b = sockpair
    b.send(b"data")
    calls = []

    def on_readable():
        calls.append(loop.time())  # does NOT consume the data
        if len(calls) == 3:
            loop.remove_reader(a.fileno())
            loop.stop()

    loop.add_reader(a.fileno(), on_readable)
    _run_until_stopped(loop)
    assert len(calls) == 3
    assert a.recv(100) == b"data"


def test_reader_called_once_per_iteration(loop, sockpair):
    a, b = sockpair
    b.send(b"x" * 10)
    order = []

    def on_readable():
        order.append("read")
        a.recv(1)

    def tick(n):
        order.append("tick")
        if n:
            loop.call_soon(tick, n - 1)
        else:
            loop.stop()

    loop.add_reader(a.fileno(), on_readable)
    loop.call_soon(tick, 3)
    _run_until_stopped(loop)
    loop.remove_reader(a.fileno())
    # Each iteration polls once: reads and ticks alternate.
    assert order.count("read") >= 3
    reads_between_ticks = "".join("r" if x == "read" else "t" for x in order)
    assert "rr" not in reads_between_ticks


def test_reader_stops_when_data_consumed(loop, sockpair):
    a, b = sockpair
    b.send(b"abc")
    calls = []

    def on_readable():
        calls.append(a.recv(1))

    loop.add_reader(a.fileno(), on_readable)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert calls == [b"a", b"b", b"c"]
    loop.remove_reader(a.fileno())


def test_writer_called_when_writable(loop, sockpair):
    a, b = sockpair
    got = []

    def on_writable(tag):
        got.append(tag)
        a.send(b"ping")
        loop.remove_writer(a.fileno())
        loop.stop()

    loop.add_writer(a.fileno(), on_writable, "w")
    _run_until_stopped(loop)
    assert got == ["w"]
    assert b.recv(10) == b"ping"


def test_writer_called_again_when_buffer_drains(loop, sockpair):
    a, b = sockpair
    # Fill the socket buffer so it stops being writable.
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    calls = []

    def on_writable():
        calls.append(True)
        loop.remove_writer(a.fileno())
        loop.stop()

    def drain():
        try:
            while True:
                if not b.recv(1 << 20):
                    break
        except BlockingIOError:
            pass

    loop.add_writer(a.fileno(), on_writable)
    loop.call_later(0.05, lambda: calls.append("drain") or drain())
    _run_until_stopped(loop)
    assert calls == ["drain", True]


def test_reader_and_writer_on_same_fd(loop, sockpair):
    a, b = sockpair
    events = []

    def on_writable():
        events.append("w")
        loop.remove_writer(a.fileno())
        b.send(b"for-reader")

    def on_readable():
        events.append(("r", a.recv(100)))
        loop.remove_reader(a.fileno())
        loop.stop()

    loop.add_reader(a.fileno(), on_readable)
    loop.add_writer(a.fileno(), on_writable)
    _run_until_stopped(loop)
    assert events == ["w", ("r", b"for-reader")]


def test_remove_reader_keeps_writer(loop, sockpair):
    a, b = sockpair
    b.send(b"data")
    events = []
    loop.add_reader(a.fileno(), events.append, "r")
    loop.add_writer(a.fileno(), lambda: (events.append("w"), loop.stop()))
    assert loop.remove_reader(a.fileno()) is True
    _run_until_stopped(loop)
    assert events == ["w"]
    assert loop.remove_writer(a.fileno()) is True
    assert loop.remove_reader(a.fileno()) is False


def test_remove_return_values(loop, sockpair):
    a, b = sockpair
    fd = a.fileno()
    assert loop.remove_reader(fd) is False
    assert loop.remove_writer(fd) is False
    loop.add_reader(fd, lambda: None)
    assert loop.remove_writer(fd) is False
    assert loop.remove_reader(fd) is True
    assert loop.remove_reader(fd) is False
    loop.add_writer(fd, lambda: None)
    assert loop.remove_reader(fd) is False
    assert loop.remove_writer(fd) is True
    assert loop.remove_writer(fd) is False


def test_removed_reader_not_called(loop, sockpair):
    a, b = sockpair
    b.send(b"data")
    calls = []
    loop.add_reader(a.fileno(), calls.append, 1)
    loop.remove_reader(a.fileno())
    loop.call_later(0.03, loop.stop)
    loop.run_forever()
    assert calls == []


def test_reader_removed_by_earlier_callback_in_same_iteration(loop, sockpair):
    a, b = sockpair
    b.send(b"data")
    a2, b2 = socket.socketpair()
    try:
        b2.send(b"data")
        calls = []

        def first():
            calls.append("first")
            loop.remove_reader(a.fileno())
            loop.remove_reader(a2.fileno())

        # Whichever reader runs first removes both: the other must not run.
        loop.add_reader(a.fileno(), first)
        loop.add_reader(a2.fileno(), first)
        loop.call_later(0.05, loop.stop)
        loop.run_forever()
        assert calls == ["first"]
    finally:
        a2.close()
        b2.close()


def test_replacing_reader(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_reader(a.fileno(), calls.append, "old")
    loop.add_reader(a.fileno(), lambda: (calls.append("new"), loop.stop()))
    b.send(b"x")
    _run_until_stopped(loop)
    assert calls == ["new"]
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a.fileno()) is False


def test_replacing_writer(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_writer(a.fileno(), calls.append, "old")
    loop.add_writer(a.fileno(), lambda: (calls.append("new"), loop.stop()))
    _run_until_stopped(loop)
    assert calls == ["new"]
    assert loop.remove_writer(a.fileno()) is True


def test_object_with_fileno_accepted(loop, sockpair):
    a, b = sockpair

    class HasFileno:
        def fileno(self):
            return a.fileno()

    calls = []
    loop.add_reader(a, lambda: (calls.append("sock"), a.recv(10), loop.stop()))
    b.send(b"1")
    _run_until_stopped(loop)
    # the socket object and its fd name the same registration
    assert loop.remove_reader(a.fileno()) is True
    loop.add_reader(HasFileno(), lambda: (calls.append("obj"), a.recv(10), loop.stop()))
    b.send(b"2")
    _run_until_stopped(loop)
    assert loop.remove_reader(HasFileno()) is True
    assert calls == ["sock", "obj"]


@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader", "remove_writer"])
@pytest.mark.parametrize("bad", [-1, "x", None, 1.5, object()], ids=["-1", "str", "None", "float", "object"])
def test_bad_fd_raises_value_error(loop, method, bad):
    args = (bad, lambda: None) if method.startswith("add") else (bad,)
    with pytest.raises(ValueError):
        getattr(loop, method)(*args)


def test_closed_fd_raises_os_error(loop, pipe):
    r, w = pipe
    os.close(r)
    with pytest.raises(OSError) as info:
        loop.add_reader(r, lambda: None)
    assert info.value.errno == errno.EBADF
    assert loop.remove_reader(r) is False


def test_pipe_reader_and_writer(loop, pipe):
    r, w = pipe
    got = []

    def on_writable():
        os.write(w, b"through the pipe")
        loop.remove_writer(w)

    def on_readable():
        got.append(os.read(r, 100))
        loop.remove_reader(r)
        loop.stop()

    loop.add_reader(r, on_readable)
    loop.add_writer(w, on_writable)
    _run_until_stopped(loop)
    assert got == [b"through the pipe"]


def test_pipe_eof_makes_reader_readable(loop, pipe):
    r, w = pipe
    got = []

    def on_readable():
        got.append(os.read(r, 100))
        loop.remove_reader(r)
        loop.stop()

    loop.add_reader(r, on_readable)
    loop.call_later(0.01, os.close, w)
    _run_until_stopped(loop)
    pipe.remove(w)
    assert got == [b""]


def test_peer_closed_socket_makes_reader_readable(loop, sockpair):
    a, b = sockpair
    got = []

    def on_readable():
        got.append(a.recv(100))
        loop.remove_reader(a.fileno())
        loop.stop()

    loop.add_reader(a.fileno(), on_readable)
    loop.call_later(0.01, b.close)
    _run_until_stopped(loop)
    assert got == [b""]


def test_reader_exception_reported_and_loop_goes_on(loop, sockpair, expect_errors):
    a, b = sockpair
    b.send(b"x")
    out = []

    def bad():
        loop.remove_reader(a.fileno())
        raise ValueError("reader failed")

    loop.add_reader(a.fileno(), bad)
    loop.call_later(0.03, out.append, "later")
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert out == ["later"]
    [ctx] = expect_errors()
    assert isinstance(ctx["exception"], ValueError)
    assert ctx["message"].startswith("Exception in callback ")
    assert "handle" in ctx


def test_io_after_close(loop, sockpair):
    a, b = sockpair
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.add_reader(a.fileno(), lambda: None)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.add_writer(a.fileno(), lambda: None)
    assert loop.remove_reader(a.fileno()) is False
    assert loop.remove_writer(a.fileno()) is False


def test_close_with_registered_reader(loop, sockpair):
    a, b = sockpair
    loop.add_reader(a.fileno(), lambda: None)
    loop.add_writer(a.fileno(), lambda: None)
    loop.close()
    assert loop.is_closed()
    # The fd itself is not closed by the loop.
    b.send(b"still open")
    assert a.recv(100) == b"still open"


@pytest.mark.blocking_on_purpose
def test_many_readers(loop):
    pairs = [socket.socketpair() for _ in range(50)]
    try:
        got = set()

        def on_readable(i, sock):
            got.add((i, sock.recv(10)))
            loop.remove_reader(sock.fileno())
            if len(got) == len(pairs):
                loop.stop()

        for i, (a, b) in enumerate(pairs):
            loop.add_reader(a.fileno(), on_readable, i, a)
        for i, (a, b) in enumerate(pairs):
            b.send(b"%d" % i)
        _run_until_stopped(loop)
        assert got == {(i, b"%d" % i) for i in range(len(pairs))}
    finally:
        for a, b in pairs:
            a.close()
            b.close()
