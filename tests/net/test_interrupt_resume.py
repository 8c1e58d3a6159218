"""KeyboardInterrupt/SystemExit escaping a protocol callback leaves
run_until_complete, and the connection goes on when the loop runs again: the
rest of the data, the EOF and connection_lost still come (asyncio's readers
are level-triggered, so a reader that was interrupted runs again).

Each case queues everything the peer sends (data, then EOF) before the loop
reads, so no new readiness event arrives after the interruption: only a
reader that is still armed sees the rest. Run on oxloop and the stdlib loop.
"""

import asyncio
import os
import socket

import pytest

INTERRUPTS = [KeyboardInterrupt, SystemExit]


def run_until_interrupted(loop, exc_type, timeout=5):
    """Run the loop until exc_type escapes it (fail if it never does)."""
    with pytest.raises(exc_type):
        loop.run_until_complete(asyncio.sleep(timeout))


def run(loop, fut, timeout=5):
    return loop.run_until_complete(asyncio.wait_for(fut, timeout))


class Recorder:
    """Records callbacks; `raise_in` names the callback that raises `exc`
    on its first call."""

    def __init__(self, loop, raise_in, exc):
        self.loop = loop
        self.raise_in = raise_in
        self.exc = exc
        self.events = []
        self.data = bytearray()
        self.lost = loop.create_future()

    def maybe_raise(self, name):
        if self.raise_in == name:
            self.raise_in = None
            raise self.exc()

    def made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.maybe_raise("connection_made")

    def got(self, data):
        self.events.append("data")
        self.data += data
        self.maybe_raise("data")

    def eof(self):
        self.events.append("eof")
        self.maybe_raise("eof_received")

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.lost.set_result(exc)


class PlainProto(asyncio.Protocol):
    def __init__(self, rec):
        self.rec = rec

    def connection_made(self, transport):
        self.rec.made(transport)

    def data_received(self, data):
        self.rec.got(data)

    def eof_received(self):
        self.rec.eof()

    def connection_lost(self, exc):
        self.rec.connection_lost(exc)


class BufferedProto(asyncio.BufferedProtocol):
    def __init__(self, rec):
        self.rec = rec
        self.buf = bytearray(64 * 1024)

    def connection_made(self, transport):
        self.rec.made(transport)

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.rec.got(bytes(self.buf[:nbytes]))

    def eof_received(self):
        self.rec.eof()

    def connection_lost(self, exc):
        self.rec.connection_lost(exc)


def collapse(events):
    """Runs of 'data' collapsed to one (reads may be split anywhere)."""
    out = []
    for e in events:
        if e == "data" and out and out[-1] == "data":
            continue
        out.append(e)
    return out


def fill_and_close(peer):
    """Queue as much data as the socket takes, then the EOF; return it."""
    sent = bytearray()
    chunk = bytes(range(256)) * 256
    peer.setblocking(False)
    while True:
        try:
            n = peer.send(chunk)
        except BlockingIOError:
            break
        sent += chunk[:n]
        if len(sent) >= 4 * 1024 * 1024:
            break
    peer.shutdown(socket.SHUT_WR)
    return bytes(sent)


@pytest.fixture
def pair():
    # A Unix socket pair: what the peer sends is in our receive queue at
    # once (no TCP window opening later and waking the reader anew).
    mine, peer = socket.socketpair()
    yield mine, peer
    mine.close()
    peer.close()


@pytest.mark.parametrize("exc", INTERRUPTS)
@pytest.mark.parametrize("proto_cls", [PlainProto, BufferedProto], ids=["data_received", "buffer_updated"])
def test_stream_interrupted_in_data_callback_goes_on(loop, pair, exc, proto_cls):
    mine, peer = pair
    rec = Recorder(loop, "data", exc)
    transport, _ = run(loop, loop.create_connection(lambda: proto_cls(rec), sock=mine))
    sent = fill_and_close(peer)
    run_until_interrupted(loop, exc)
    assert rec.events == ["made", "data"]
    # Nothing new arrives from the peer: the rest must come from the reader
    # that was interrupted.
    assert run(loop, rec.lost) is None
    assert bytes(rec.data) == sent
    assert collapse(rec.events) == ["made", "data", "eof", ("lost", None)]
    assert transport.is_closing()


@pytest.mark.parametrize("exc", INTERRUPTS)
@pytest.mark.parametrize("proto_cls", [PlainProto, BufferedProto], ids=["plain", "buffered"])
def test_stream_interrupted_in_data_callback_then_more_data(loop, pair, exc, proto_cls):
    mine, peer = pair
    rec = Recorder(loop, "data", exc)
    run(loop, loop.create_connection(lambda: proto_cls(rec), sock=mine))
    peer.sendall(b"one")
    run_until_interrupted(loop, exc)
    assert bytes(rec.data) == b"one"
    peer.sendall(b"two")
    peer.shutdown(socket.SHUT_WR)
    assert run(loop, rec.lost) is None
    assert bytes(rec.data) == b"onetwo"
    assert collapse(rec.events) == ["made", "data", "eof", ("lost", None)]


@pytest.mark.parametrize("exc", INTERRUPTS)
def test_stream_interrupted_in_eof_received_sees_eof_again(loop, pair, exc):
    # asyncio's reader still watches the fd, reads b"" again and calls
    # eof_received a second time; then the transport closes.
    mine, peer = pair
    rec = Recorder(loop, "eof_received", exc)
    run(loop, loop.create_connection(lambda: PlainProto(rec), sock=mine))
    peer.sendall(b"last")
    peer.shutdown(socket.SHUT_WR)
    run_until_interrupted(loop, exc)
    assert collapse(rec.events) == ["made", "data", "eof"]
    assert run(loop, rec.lost) is None
    assert bytes(rec.data) == b"last"
    assert collapse(rec.events) == ["made", "data", "eof", "eof", ("lost", None)]


@pytest.mark.parametrize("exc", INTERRUPTS)
def test_stream_interrupted_in_connection_made_goes_on(loop, pair, exc):
    mine, peer = pair
    rec = Recorder(loop, "connection_made", exc)
    peer.sendall(b"early")
    peer.shutdown(socket.SHUT_WR)

    async def connect():
        return await loop.create_connection(lambda: PlainProto(rec), sock=mine)

    task = loop.create_task(connect())
    run_until_interrupted(loop, exc)
    assert rec.events == ["made"]
    assert run(loop, rec.lost) is None
    assert task.done()
    assert bytes(rec.data) == b"early"
    assert collapse(rec.events) == ["made", "data", "eof", ("lost", None)]


class DatagramRecorder(asyncio.DatagramProtocol):
    def __init__(self, loop, exc):
        self.exc = exc
        self.got = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.got.append(data)
        if self.exc is not None:
            exc, self.exc = self.exc, None
            raise exc()

    def error_received(self, exc):
        raise AssertionError(f"unexpected error_received({exc!r})")

    def connection_lost(self, exc):
        self.lost.set_result(exc)


@pytest.mark.parametrize("exc", INTERRUPTS)
def test_datagram_interrupted_in_datagram_received_goes_on(loop, exc):
    mine = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mine.bind(("127.0.0.1", 0))
    proto = DatagramRecorder(loop, exc)
    transport, _ = run(loop, loop.create_datagram_endpoint(lambda: proto, sock=mine))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        for i in range(5):
            peer.sendto(b"d%d" % i, mine.getsockname())
        run_until_interrupted(loop, exc)
        assert proto.got == [b"d0"]

        async def until_all():
            while len(proto.got) < 5:
                await asyncio.sleep(0.001)

        run(loop, until_all())
        assert proto.got == [b"d%d" % i for i in range(5)]
        peer.sendto(b"after", mine.getsockname())

        async def until_after():
            while len(proto.got) < 6:
                await asyncio.sleep(0.001)

        run(loop, until_after())
    assert proto.got[-1] == b"after"
    transport.close()
    assert run(loop, proto.lost) is None


@pytest.mark.parametrize("exc", INTERRUPTS)
def test_read_pipe_interrupted_in_data_received_goes_on(loop, exc):
    rfd, wfd = os.pipe()
    rec = Recorder(loop, "data", exc)
    pipe = os.fdopen(rfd, "rb", buffering=0)
    transport, _ = run(loop, loop.connect_read_pipe(lambda: PlainProto(rec), pipe))
    total = b"x" * 200_000  # more than one read takes
    os.set_blocking(wfd, False)
    written = 0
    try:
        while written < len(total):
            written += os.write(wfd, total[written:])
    except BlockingIOError:
        pass
    os.close(wfd)
    run_until_interrupted(loop, exc)
    assert rec.events == ["made", "data"]
    assert run(loop, rec.lost) is None
    assert bytes(rec.data) == total[:written]
    assert collapse(rec.events) == ["made", "data", "eof", ("lost", None)]
    assert transport.is_closing()


class AcceptInterruptedOnce(socket.socket):
    """A listening socket whose accept() raises `interrupt` once, the first
    time a connection is actually waiting."""

    interrupt = None

    def accept(self):
        if self.interrupt is not None:
            super().getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            import select

            if select.select([self], [], [], 0)[0]:
                exc, self.interrupt = self.interrupt, None
                raise exc()
        return super().accept()


@pytest.mark.parametrize("exc", INTERRUPTS)
def test_sock_accept_interrupted_in_its_reader_completes_later(loop, exc):
    # asyncio's _sock_accept lets KeyboardInterrupt/SystemExit out of the
    # reader and stays registered: the next run accepts the connection.
    with AcceptInterruptedOnce(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        listener.interrupt = exc
        task = loop.create_task(loop.sock_accept(listener))
        loop.run_until_complete(asyncio.sleep(0.01))
        assert not task.done()
        with socket.create_connection(listener.getsockname()) as client:
            run_until_interrupted(loop, exc)
            assert not task.done()
            conn, addr = run(loop, task)
            with conn:
                assert addr == client.getsockname()
                client.sendall(b"ping")
                assert run(loop, loop.sock_recv(conn, 10)) == b"ping"
