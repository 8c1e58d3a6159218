"""Pipe transports on both loops: read pipe with EOF and pause/resume,
write pipe with flow control, write_eof, broken pipe, fd-type checks."""

import asyncio
import gc
import os
import socket
import sys
import tempfile
import warnings

import pytest

GUARD = 30

# asyncio's read pipe transport has is_reading() from 3.11 on; before, the
# base class raises NotImplementedError. oxloop's has it on every version.
STDLIB_PIPE_IS_READING = sys.version_info >= (3, 11)


def check_is_reading(tr, loop_kind, expected):
    if loop_kind == "asyncio" and not STDLIB_PIPE_IS_READING:
        with pytest.raises(NotImplementedError):
            tr.is_reading()
    else:
        assert tr.is_reading() is expected


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, GUARD))


class ReadProto(asyncio.Protocol):
    def __init__(self, loop):
        self.events = []
        self.data = bytearray()
        self.done = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")

    def data_received(self, data):
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.done.set_result(None)


class WriteProto(asyncio.Protocol):
    def __init__(self, loop):
        self.events = []
        self.lost = loop.create_future()
        self.resumed = None

    def connection_made(self, transport):
        self.events.append("made")

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)

    def connection_lost(self, exc):
        self.events.append(("lost", type(exc) if exc else None))
        self.lost.set_result(exc)


@pytest.mark.blocking_on_purpose
def test_read_pipe_data_and_eof(loop, loop_kind):
    rfd, wfd = os.pipe()

    async def main():
        pipe = open(rfd, "rb", buffering=0)
        tr, proto = await loop.connect_read_pipe(lambda: ReadProto(loop), pipe)
        assert tr.get_extra_info("pipe") is pipe
        check_is_reading(tr, loop_kind, True)
        os.write(wfd, b"hello ")
        os.write(wfd, b"world")
        os.close(wfd)
        await proto.done
        assert bytes(proto.data) == b"hello world"
        assert proto.events == ["made", "data", "eof", ("lost", None)]
        assert tr.is_closing()

    run(loop, main())


@pytest.mark.blocking_on_purpose
def test_read_pipe_pause_resume(loop, loop_kind):
    rfd, wfd = os.pipe()

    async def main():
        pipe = open(rfd, "rb", buffering=0)
        tr, proto = await loop.connect_read_pipe(lambda: ReadProto(loop), pipe)
        tr.pause_reading()
        check_is_reading(tr, loop_kind, False)
        os.write(wfd, b"x" * 100)
        for _ in range(10):
            await asyncio.sleep(0)
        assert proto.data == b""
        tr.resume_reading()
        while len(proto.data) < 100:
            await asyncio.sleep(0.001)
        tr.close()
        await proto.done
        os.close(wfd)
        assert proto.events[-1] == ("lost", None)

    run(loop, main())


def test_write_pipe_flow_control_slow_reader(loop):
    rfd, wfd = os.pipe()

    async def main():
        pipe = open(wfd, "wb", buffering=0)
        tr, proto = await loop.connect_write_pipe(lambda: WriteProto(loop),
                                                  pipe)
        assert tr.can_write_eof()
        tr.set_write_buffer_limits(high=64 * 1024)
        assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        payload = os.urandom(4 * 1024 * 1024)
        proto.resumed = loop.create_future()
        tr.write(payload[:1024 * 1024])
        tr.writelines([payload[1024 * 1024:2 * 1024 * 1024],
                       payload[2 * 1024 * 1024:]])
        assert proto.events == ["made", "pause"]
        assert tr.get_write_buffer_size() > 0
        # A slow reader in a thread.
        received = bytearray()

        def reader():
            while True:
                chunk = os.read(rfd, 8192)
                if not chunk:
                    return
                received.extend(chunk)

        fut = loop.run_in_executor(None, reader)
        await proto.resumed
        tr.write_eof()
        await fut
        await proto.lost
        assert bytes(received) == payload
        assert proto.events == ["made", "pause", "resume", ("lost", None)]
        assert tr.get_write_buffer_size() == 0

    try:
        run(loop, main())
    finally:
        os.close(rfd)


def test_write_pipe_reader_closed_idle(loop):
    rfd, wfd = os.pipe()

    async def main():
        pipe = open(wfd, "wb", buffering=0)
        tr, proto = await loop.connect_write_pipe(lambda: WriteProto(loop),
                                                  pipe)
        os.close(rfd)
        # The reader going away is seen at once; with nothing buffered
        # asyncio reports a plain close.
        assert await proto.lost is None
        assert tr.is_closing()

    run(loop, main())


def test_write_pipe_broken_while_writing(loop):
    rfd, wfd = os.pipe()

    async def main():
        pipe = open(wfd, "wb", buffering=0)
        tr, proto = await loop.connect_write_pipe(lambda: WriteProto(loop),
                                                  pipe)
        tr.write(b"x" * (1024 * 1024))  # fills the pipe, rest buffered
        os.close(rfd)
        exc = await proto.lost
        assert isinstance(exc, BrokenPipeError)

    run(loop, main())


def test_write_pipe_abort_drops_buffer(loop):
    rfd, wfd = os.pipe()

    async def main():
        pipe = open(wfd, "wb", buffering=0)
        tr, proto = await loop.connect_write_pipe(lambda: WriteProto(loop),
                                                  pipe)
        tr.write(b"x" * (1024 * 1024))
        tr.abort()
        assert await proto.lost is None
        assert tr.get_write_buffer_size() == 0

    try:
        run(loop, main())
    finally:
        os.close(rfd)


@pytest.mark.blocking_on_purpose
def test_socket_and_char_device_accepted(loop):
    async def main():
        a, b = socket.socketpair()
        with a, b:
            tr, proto = await loop.connect_read_pipe(lambda: ReadProto(loop),
                                                     a)
            b.sendall(b"via socket")
            b.shutdown(socket.SHUT_WR)
            await proto.done
            assert proto.data == b"via socket"
        with open("/dev/null", "wb", buffering=0) as devnull:
            tr, proto = await loop.connect_write_pipe(
                lambda: WriteProto(loop), devnull)
            tr.write(b"discarded")
            tr.close()
            await proto.lost

    run(loop, main())


def test_regular_file_rejected(loop):
    async def main():
        with tempfile.TemporaryFile() as f:
            with pytest.raises(ValueError):
                await loop.connect_read_pipe(lambda: ReadProto(loop), f)
            with pytest.raises(ValueError):
                await loop.connect_write_pipe(lambda: WriteProto(loop), f)

    run(loop, main())


def test_unclosed_pipe_transport_warns(loop):
    rfd, wfd = os.pipe()

    async def main():
        pipe = open(rfd, "rb", buffering=0)
        tr, _ = await loop.connect_read_pipe(asyncio.Protocol, pipe)
        tr.pause_reading()  # now the loop holds no reference to it
        return tr

    tr = run(loop, main())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del tr
        gc.collect()
    os.close(wfd)
    assert any(issubclass(w.category, ResourceWarning) for w in caught)


def test_closed_pipe_transports_are_collected(loop):
    import weakref

    rfd, wfd = os.pipe()

    async def main():
        rtr, rproto = await loop.connect_read_pipe(
            lambda: ReadProto(loop), open(rfd, "rb", buffering=0))
        wtr, wproto = await loop.connect_write_pipe(
            lambda: WriteProto(loop), open(wfd, "wb", buffering=0))
        wtr.write(b"bye")
        wtr.close()
        await wproto.lost
        await rproto.done
        assert rproto.data == b"bye"
        return weakref.ref(rtr), weakref.ref(wtr)

    refs = run(loop, main())
    gc.collect()
    assert [r() for r in refs] == [None, None]


@pytest.mark.blocking_on_purpose
def test_write_rejects_non_bytes(loop):
    rfd, wfd = os.pipe()

    async def main():
        tr, proto = await loop.connect_write_pipe(
            lambda: WriteProto(loop), open(wfd, "wb", buffering=0))
        with pytest.raises((TypeError, AssertionError)):
            tr.write("text")
        tr.write(bytearray(b"ab"))
        tr.writelines([b"c", memoryview(b"d")])
        assert os.read(rfd, 10) == b"abcd"
        tr.close()
        await proto.lost

    try:
        run(loop, main())
    finally:
        os.close(rfd)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs os.openpty()")
def test_pty_read_and_write(loop):
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line discipline

    async def main():
        rtr, rproto = await loop.connect_read_pipe(
            lambda: ReadProto(loop), open(master, "rb", buffering=0))
        wtr, wproto = await loop.connect_write_pipe(
            lambda: WriteProto(loop), open(slave, "wb", buffering=0))
        assert not rtr.is_closing()
        wtr.write(b"1" * 5000)
        while len(rproto.data) < 5000:
            await asyncio.sleep(0.001)
        assert bytes(rproto.data) == b"1" * 5000
        wtr.close()  # closing the slave: the master reads EIO, reported
        await wproto.lost  # quietly as a close (asyncio's rule for EIO)
        await rproto.done
        assert rproto.events[-1][0] == "lost"

    run(loop, main())


@pytest.mark.blocking_on_purpose
def test_data_received_error_is_reported_and_reading_goes_on(loop,
                                                             expect_errors):
    rfd, wfd = os.pipe()

    class Proto(ReadProto):
        def data_received(self, data):
            super().data_received(data)
            if data == b"boom":
                raise ZeroDivisionError

    async def main():
        tr, proto = await loop.connect_read_pipe(
            lambda: Proto(loop), open(rfd, "rb", buffering=0))
        os.write(wfd, b"boom")
        while bytes(proto.data) != b"boom":
            await asyncio.sleep(0.001)
        os.write(wfd, b"more")
        os.close(wfd)
        await proto.done
        assert bytes(proto.data) == b"boommore"

    run(loop, main())
    errors = expect_errors()
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], ZeroDivisionError)


def test_pause_writing_error_is_reported(loop, expect_errors):
    rfd, wfd = os.pipe()

    class Proto(WriteProto):
        def pause_writing(self):
            raise ZeroDivisionError

    async def main():
        tr, proto = await loop.connect_write_pipe(
            lambda: Proto(loop), open(wfd, "wb", buffering=0))
        tr.write(b"x" * (1024 * 1024))
        assert tr.get_write_buffer_size() > 0
        tr.abort()
        await proto.lost

    try:
        run(loop, main())
    finally:
        os.close(rfd)
    errors = expect_errors()
    assert [e["message"] for e in errors] == ["protocol.pause_writing() failed"]
    assert errors[0]["protocol"] is not None


def test_pipe_steps_keep_their_place_among_user_callbacks(loop):
    # connection_made's follow-up (start of reading) and close()'s
    # connection_lost are queued where asyncio's call_soon puts them.
    rfd, wfd = os.pipe()
    order = []

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            order.append("made")
            loop.call_soon(order.append, "soon in made")

        def connection_lost(self, exc):
            order.append(("lost", exc))

    async def main():
        pipe = open(rfd, "rb", buffering=0)
        tr, _ = await loop.connect_read_pipe(Proto, pipe)
        order.append("connected")
        loop.call_soon(order.append, "soon before close")
        tr.close()
        loop.call_soon(order.append, "soon after close")
        for _ in range(3):
            await asyncio.sleep(0)
        assert order == ["made", "soon in made", "connected",
                         "soon before close", ("lost", None),
                         "soon after close"]

    try:
        run(loop, main())
    finally:
        os.close(wfd)
