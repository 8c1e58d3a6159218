"""Failing protocol callbacks, bad arguments, flow control under a slow
reader and BufferedProtocol, on both loops."""

import asyncio
import contextlib
import socket

import pytest

from netutil import RecordingProtocol, serve, wait_for


class RaisingProtocol(RecordingProtocol):
    def __init__(self, loop, where):
        super().__init__(loop)
        self.where = where

    def data_received(self, data):
        super().data_received(data)
        if self.where == "data_received":
            raise ZeroDivisionError("boom")

    def eof_received(self):
        super().eof_received()
        if self.where == "eof_received":
            raise ZeroDivisionError("boom")


@pytest.mark.parametrize("where", ["data_received", "eof_received"])
def test_raising_callback_reports_and_closes(loop, expect_errors, where):
    async def main():
        protos = []

        def factory():
            p = RaisingProtocol(loop, where)
            protos.append(p)
            return p

        server, port = await serve(loop, factory)
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        tr.write(b"trigger")
        if where == "eof_received":
            tr.write_eof()
        while not protos or not protos[0].lost.done():
            await asyncio.sleep(0.01)
        exc = protos[0].lost.result()
        assert isinstance(exc, ZeroDivisionError)
        assert protos[0].transport.is_closing()
        assert protos[0].lost_count() == 1
        await wait_for(client.lost)
        # The loop goes on: a second connection works.
        tr2, client2 = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        tr2.close()
        await wait_for(client2.lost)
        server.close()

    loop.run_until_complete(main())
    errors = expect_errors()
    assert len(errors) >= 1
    ctx = errors[0]
    assert ctx["message"] == f"Fatal error: protocol.{where}() call failed."
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert isinstance(ctx["transport"], asyncio.Transport)
    assert isinstance(ctx["protocol"], RaisingProtocol)


def test_raising_connection_made_goes_to_handler(loop, expect_errors):
    class Bad(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            raise ValueError("made")

    async def main():
        protos = []

        def factory():
            p = Bad(loop)
            protos.append(p)
            return p

        server, port = await serve(loop, factory)
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        while not protos:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        protos[0].transport.close()
        await wait_for(client.lost)
        server.close()

    loop.run_until_complete(main())
    errors = expect_errors()
    assert len(errors) == 1
    assert "connection_made" in errors[0]["message"]
    assert isinstance(errors[0]["exception"], ValueError)


def test_bad_arguments(loop):
    async def main():
        factory = asyncio.Protocol
        with pytest.raises(ValueError, match="server_hostname"):
            await loop.create_connection(factory, "127.0.0.1", 1,
                                         server_hostname="x")
        with pytest.raises(ValueError, match="ssl_handshake_timeout"):
            await loop.create_connection(factory, "127.0.0.1", 1,
                                         ssl_handshake_timeout=1)
        with pytest.raises(ValueError, match="no sock"):
            await loop.create_connection(factory)
        sock = socket.socket()
        try:
            with pytest.raises(ValueError, match="can not be specified"):
                await loop.create_connection(factory, "127.0.0.1", 1,
                                             sock=sock)
        finally:
            sock.close()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            with pytest.raises(ValueError, match="Stream Socket"):
                await loop.create_connection(factory, sock=udp)
            with pytest.raises(ValueError, match="Stream Socket"):
                await loop.create_server(factory, sock=udp)
        finally:
            udp.close()
        with pytest.raises(OverflowError):
            await loop.create_connection(factory, "127.0.0.1", 70000)
        with pytest.raises(TypeError, match="ssl argument"):
            await loop.create_server(factory, "127.0.0.1", 0, ssl=True)
        with pytest.raises(ValueError, match="Neither host/port nor sock"):
            await loop.create_server(factory)
        with pytest.raises(ValueError, match="server_hostname"):
            await loop.create_unix_connection(factory, "/nonexistent",
                                              server_hostname="x")
        with pytest.raises(ValueError, match="no path and sock"):
            await loop.create_unix_connection(factory)
        with pytest.raises(ConnectionRefusedError):
            # A port nobody listens on (bound but not listening).
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            try:
                await loop.create_connection(factory, "127.0.0.1",
                                             s.getsockname()[1])
            finally:
                s.close()

    loop.run_until_complete(main())


def test_slow_reader_memory_is_bounded(loop):
    """A peer that does not read: pause_writing is called at the high-water
    mark, a writer that respects it keeps the buffer bounded, and
    resume_writing comes once the peer drains."""

    async def main():
        lsock = socket.create_server(("127.0.0.1", 0))
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        tr, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        peer, _ = lsock.accept()
        peer.setblocking(False)
        tr.set_write_buffer_limits(high=256 * 1024)
        chunk = b"z" * 16384
        written = 0
        max_buffer = 0
        # Keep writing while not paused; the peer never reads.
        for _ in range(10_000):
            if proto.paused > proto.resumed:
                break
            tr.write(chunk)
            written += len(chunk)
            max_buffer = max(max_buffer, tr.get_write_buffer_size())
            await asyncio.sleep(0)
        assert proto.paused == 1, "pause_writing was never called"
        assert max_buffer <= 256 * 1024 + len(chunk)
        assert tr.get_write_buffer_size() > 256 * 1024
        # Now the peer drains everything; resume_writing comes at <= low.
        received = 0
        while received < written:
            try:
                data = peer.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.001)
                continue
            received += len(data)
        assert proto.resumed == 1
        assert tr.get_write_buffer_size() == 0
        tr.close()
        await wait_for(proto.lost)
        peer.close()
        lsock.close()

    loop.run_until_complete(main())


class ChunkyBufferedProtocol(asyncio.BufferedProtocol):
    def __init__(self, loop, size):
        self.buf = bytearray(size)
        self.got = bytearray()
        self.calls = 0
        self.eof = False
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.calls += 1
        return self.buf

    def buffer_updated(self, nbytes):
        self.got += self.buf[:nbytes]

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        self.lost.set_result(exc)


@pytest.mark.parametrize("bufsize", [7, 65536])
def test_buffered_protocol_receives_everything(loop, bufsize):
    payload = bytes(range(256)) * 2000

    async def main():
        protos = []

        def factory():
            p = ChunkyBufferedProtocol(loop, bufsize)
            protos.append(p)
            return p

        server, port = await serve(loop, factory)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        writer.write_eof()
        await writer.drain()
        while not protos or not protos[0].lost.done():
            await asyncio.sleep(0.01)
        p = protos[0]
        assert bytes(p.got) == payload
        assert p.eof
        assert p.lost.result() is None
        assert p.calls >= len(payload) // bufsize
        writer.close()
        await writer.wait_closed()
        server.close()

    loop.run_until_complete(main())


def test_buffered_protocol_empty_buffer_is_an_error(loop, expect_errors):
    class Empty(ChunkyBufferedProtocol):
        def get_buffer(self, sizehint):
            return bytearray()

    async def main():
        protos = []

        def factory():
            p = Empty(loop, 0)
            protos.append(p)
            return p

        server, port = await serve(loop, factory)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"data")
        while not protos or not protos[0].lost.done():
            await asyncio.sleep(0.01)
        assert isinstance(protos[0].lost.result(), RuntimeError)
        writer.close()
        with contextlib.suppress(ConnectionResetError):
            await writer.wait_closed()  # the server aborted: maybe an RST
        server.close()

    loop.run_until_complete(main())
    errors = expect_errors()
    assert [e["message"] for e in errors] == [
        "Fatal error: protocol.get_buffer() call failed."]
