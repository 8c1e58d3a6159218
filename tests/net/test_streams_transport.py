"""Stream transports on both loops: callback order, close/abort/EOF,
half-close, extra info, write and reading controls."""

import asyncio
import os
import socket
import sys
import tempfile

import pytest

from netutil import RecordingProtocol, rst_close, serve, summary, wait_for


def test_callback_order_and_eof_closes(loop):
    async def main():
        server_protos = []

        def factory():
            p = RecordingProtocol(loop)
            server_protos.append(p)
            return p

        server, port = await serve(loop, factory)
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        assert client.made.done()
        assert isinstance(tr, asyncio.Transport)
        tr.write(b"hello")
        tr.write_eof()
        await wait_for(client.lost)
        sp = server_protos[0]
        await wait_for(sp.lost)
        # eof_received() returned a false value: the transport closed itself.
        assert summary(sp.events) == ["made", "data", "eof", "lost"]
        assert bytes(sp.data) == b"hello"
        assert sp.lost.result() is None
        assert summary(client.events) == ["made", "eof", "lost"]
        assert client.lost_count() == 1 and sp.lost_count() == 1
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_eof_received_true_keeps_transport_half_open(loop):
    async def main():
        server_protos = []

        def factory():
            p = RecordingProtocol(loop, eof_keeps_open=True)
            server_protos.append(p)
            return p

        server, port = await serve(loop, factory)
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        tr.write(b"request")
        tr.write_eof()
        assert tr.can_write_eof()
        while not server_protos or not server_protos[0].got_eof.done():
            await asyncio.sleep(0.01)
        sp = server_protos[0]
        assert not sp.transport.is_closing()
        sp.transport.write(b"reply after eof")
        sp.transport.close()
        await wait_for(client.lost)
        await wait_for(sp.lost)
        assert bytes(client.data) == b"reply after eof"
        assert summary(client.events) == ["made", "data", "eof", "lost"]
        assert summary(sp.events) == ["made", "data", "eof", "lost"]
        server.close()

    loop.run_until_complete(main())


def test_close_flushes_buffered_data_then_loses_once(loop):
    payload = os.urandom(4 * 1024 * 1024)

    async def main():
        server_protos = []

        def factory():
            p = RecordingProtocol(loop)
            server_protos.append(p)
            return p

        server, port = await serve(loop, factory)
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        tr.write(payload)
        assert tr.get_write_buffer_size() > 0  # the kernel took only part
        tr.close()
        tr.close()
        assert tr.is_closing()
        await wait_for(client.lost)
        sp = server_protos[0]
        await wait_for(sp.lost)
        assert bytes(sp.data) == payload
        assert client.lost_count() == 1
        assert tr.get_write_buffer_size() == 0
        server.close()

    loop.run_until_complete(main())


def test_abort_drops_buffer_and_loses_once(loop):
    async def main():
        server, port = await serve(loop, lambda: RecordingProtocol(loop))
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        tr.write(b"x" * (8 * 1024 * 1024))
        tr.abort()
        tr.abort()
        tr.close()
        assert tr.is_closing()
        assert tr.get_write_buffer_size() == 0
        assert await wait_for(client.lost) is None
        await asyncio.sleep(0.05)
        assert client.lost_count() == 1
        # Writes after connection_lost are dropped silently.
        tr.write(b"ignored")
        server.close()

    loop.run_until_complete(main())


def test_peer_reset_mid_write(loop):
    async def main():
        lsock = socket.create_server(("127.0.0.1", 0))
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        peer, _ = lsock.accept()
        chunk = b"y" * 65536
        for _ in range(200):  # far more than the socket buffers hold
            tr.write(chunk)
        assert tr.get_write_buffer_size() > 0
        rst_close(peer)
        exc = await wait_for(client.lost)
        assert isinstance(exc, (ConnectionResetError, BrokenPipeError)), exc
        assert client.lost_count() == 1
        assert tr.is_closing()
        for _ in range(10):
            tr.write(chunk)  # no error: counted and dropped
        lsock.close()

    loop.run_until_complete(main())


@pytest.mark.blocking_on_purpose
def test_peer_reset_while_reading(loop):
    async def main():
        lsock = socket.create_server(("127.0.0.1", 0))
        port = lsock.getsockname()[1]
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        peer, _ = lsock.accept()
        peer.sendall(b"before reset")
        while not client.data:
            await asyncio.sleep(0.01)
        rst_close(peer)
        exc = await wait_for(client.lost)
        assert isinstance(exc, ConnectionResetError)
        assert bytes(client.data) == b"before reset"
        assert summary(client.events) == ["made", "data", "lost"]
        lsock.close()

    loop.run_until_complete(main())


def test_extra_info(loop):
    async def main():
        server_protos = []

        def factory():
            p = RecordingProtocol(loop)
            server_protos.append(p)
            return p

        server, port = await serve(loop, factory)
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        while not server_protos or not server_protos[0].made.done():
            await asyncio.sleep(0.01)
        str_ = server_protos[0].transport
        assert tr.get_extra_info("peername") == ("127.0.0.1", port)
        sockname = tr.get_extra_info("sockname")
        assert sockname[0] == "127.0.0.1"
        assert str_.get_extra_info("peername") == sockname
        assert str_.get_extra_info("sockname") == ("127.0.0.1", port)
        for t in (tr, str_):
            s = t.get_extra_info("socket")
            assert s.fileno() >= 0
            assert s.family == socket.AF_INET and s.type == socket.SOCK_STREAM
            assert s.getsockname() == t.get_extra_info("sockname")
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert tr.get_extra_info("no such key") is None
        assert tr.get_extra_info("no such key", 42) == 42
        tr.close()
        await wait_for(client.lost)
        # Still answered after close.
        assert tr.get_extra_info("peername") == ("127.0.0.1", port)
        server.close()

    loop.run_until_complete(main())


def test_write_argument_errors(loop):
    async def main():
        server, port = await serve(loop, lambda: RecordingProtocol(loop))
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        # "bytes-like object" up to 3.13, "bytes, bytearray, or memoryview
        # object" from 3.14 on.
        with pytest.raises(TypeError, match="data argument must be a bytes"):
            tr.write("text")
        with pytest.raises(TypeError):
            tr.write(1234)
        tr.write(b"")
        tr.write(bytearray(b"ok"))
        tr.write(memoryview(b"ok"))
        tr.write_eof()
        tr.write_eof()
        with pytest.raises(RuntimeError, match="write_eof"):
            tr.write(b"late")
        tr.close()
        await wait_for(client.lost)
        server.close()

    loop.run_until_complete(main())


def test_writelines_keeps_order(loop):
    async def main():
        server_protos = []

        def factory():
            p = RecordingProtocol(loop)
            server_protos.append(p)
            return p

        server, port = await serve(loop, factory)
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        big = os.urandom(1024 * 1024)
        tr.writelines([b"a", bytearray(b"b"), memoryview(b"cd"), big, b"e"])
        tr.writelines([])
        tr.writelines(iter([b"f", b"g"]))
        tr.close()
        while not server_protos or not server_protos[0].lost.done():
            await asyncio.sleep(0.01)
        assert bytes(server_protos[0].data) == b"abcd" + big + b"efg"
        await wait_for(client.lost)
        server.close()

    loop.run_until_complete(main())


def test_pause_and_resume_reading(loop):
    async def main():
        server_protos = []

        def factory():
            p = RecordingProtocol(loop)
            server_protos.append(p)
            return p

        server, port = await serve(loop, factory)
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        assert tr.is_reading()
        tr.pause_reading()
        tr.pause_reading()
        assert not tr.is_reading()
        while not server_protos:
            await asyncio.sleep(0.01)
        server_protos[0].transport.write(b"while paused")
        await asyncio.sleep(0.1)
        assert client.data == b""
        tr.resume_reading()
        tr.resume_reading()
        assert tr.is_reading()
        while client.data != b"while paused":
            await asyncio.sleep(0.01)
        tr.close()
        assert not tr.is_reading()
        await wait_for(client.lost)
        server.close()

    loop.run_until_complete(main())


def test_set_protocol_switches_data_delivery(loop):
    async def main():
        server_protos = []

        def factory():
            p = RecordingProtocol(loop)
            server_protos.append(p)
            return p

        server, port = await serve(loop, factory)
        tr, first = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        second = RecordingProtocol(loop)
        tr.set_protocol(second)
        assert tr.get_protocol() is second
        while not server_protos:
            await asyncio.sleep(0.01)
        server_protos[0].transport.write(b"to the second")
        server_protos[0].transport.close()
        await wait_for(second.lost)
        assert bytes(second.data) == b"to the second"
        assert first.data == b"" and not first.lost.done()
        server.close()

    loop.run_until_complete(main())


def test_write_buffer_limits(loop):
    async def main():
        server, port = await serve(loop, lambda: RecordingProtocol(loop))
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        assert tr.get_write_buffer_limits() == (16384, 65536)
        tr.set_write_buffer_limits(high=100)
        assert tr.get_write_buffer_limits() == (25, 100)
        tr.set_write_buffer_limits(low=10)
        assert tr.get_write_buffer_limits() == (10, 40)
        tr.set_write_buffer_limits(high=50, low=50)
        assert tr.get_write_buffer_limits() == (50, 50)
        with pytest.raises(ValueError, match="must be >="):
            tr.set_write_buffer_limits(high=1, low=2)
        with pytest.raises(ValueError):
            tr.set_write_buffer_limits(high=-1)
        tr.set_write_buffer_limits()
        assert tr.get_write_buffer_limits() == (16384, 65536)
        assert tr.get_write_buffer_size() == 0
        tr.close()
        await wait_for(client.lost)
        server.close()

    loop.run_until_complete(main())


@pytest.mark.blocking_on_purpose
@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_unix_connection_and_stale_socket_cleanup(loop):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "sock")
            stale = socket.socket(socket.AF_UNIX)
            stale.bind(path)
            stale.close()  # leaves a stale socket file behind
            server_protos = []

            def factory():
                p = RecordingProtocol(loop)
                server_protos.append(p)
                return p

            server = await loop.create_unix_server(factory, path)
            assert server.sockets[0].getsockname() == path
            tr, client = await loop.create_unix_connection(
                lambda: RecordingProtocol(loop), path)
            assert tr.get_extra_info("peername") == path
            assert tr.get_extra_info("sockname") == ""
            tr.write(b"over unix")
            tr.write_eof()
            await wait_for(client.lost)
            assert bytes(server_protos[0].data) == b"over unix"
            server.close()
            await server.wait_closed()
            with pytest.raises(FileNotFoundError):
                await loop.create_unix_connection(
                    lambda: RecordingProtocol(loop), os.path.join(d, "none"))

    loop.run_until_complete(main())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_unix_abstract_namespace(loop):
    async def main():
        name = f"\0oxloop-test-{os.getpid()}-{id(loop)}"
        server_protos = []

        def factory():
            p = RecordingProtocol(loop)
            server_protos.append(p)
            return p

        server = await loop.create_unix_server(factory, name)
        assert server.sockets[0].getsockname() == name.encode()
        tr, client = await loop.create_unix_connection(
            lambda: RecordingProtocol(loop), name)
        assert tr.get_extra_info("peername") == name.encode()
        tr.write(b"abstract")
        tr.close()
        while not server_protos or not server_protos[0].lost.done():
            await asyncio.sleep(0.01)
        assert bytes(server_protos[0].data) == b"abstract"
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_streams_api_unchanged(loop):
    async def handle(reader, writer):
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(50):
            writer.write(b"line %d\n" % i)
            await writer.drain()
            assert await reader.readline() == b"LINE %d\n" % i
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        async with server:
            pass
        await server.wait_closed()

    loop.run_until_complete(main())


def test_add_reader_on_transport_fd_is_refused(loop):
    async def main():
        server, port = await serve(loop, lambda: RecordingProtocol(loop))
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        fd = tr.get_extra_info("socket").fileno()
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.add_reader(fd, lambda: None)
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.add_writer(fd, lambda: None)
        tr.close()
        await wait_for(client.lost)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def _ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("family", ["ipv6", "ipv4-mapped", "unix"])
def test_addresses_are_the_socket_modules(loop, family):
    """sockname/peername of both ends read as `socket` shows them (one
    decoder for accepted, connected and datagram addresses)."""
    if family != "unix" and not _ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")

    async def main(d):
        accepted = []

        def factory():
            p = RecordingProtocol(loop)
            accepted.append(p)
            return p

        if family == "unix":
            server = await loop.create_unix_server(factory, os.path.join(d, "s"))
            tr, client = await loop.create_unix_connection(
                lambda: RecordingProtocol(loop), os.path.join(d, "s"))
        else:
            lsock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            # Dual-stack for the mapped case (create_server sets V6ONLY).
            lsock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                             family == "ipv6")
            lsock.bind(("::1" if family == "ipv6" else "::", 0))
            server = await loop.create_server(factory, sock=lsock)
            port = lsock.getsockname()[1]
            # Dual-stack: an IPv4 client shows as ::ffff:127.0.0.1.
            target = "::1" if family == "ipv6" else "127.0.0.1"
            tr, client = await loop.create_connection(
                lambda: RecordingProtocol(loop), target, port)
        while not accepted or not accepted[0].made.done():
            await asyncio.sleep(0.01)
        str_ = accepted[0].transport
        for t in (tr, str_):
            s = t.get_extra_info("socket")
            assert t.get_extra_info("sockname") == s.getsockname()
            assert t.get_extra_info("peername") == s.getpeername()
        if family == "ipv4-mapped":
            assert str_.get_extra_info("peername")[0] == "::ffff:127.0.0.1"
        tr.close()
        await wait_for(client.lost)
        server.close()
        await server.wait_closed()

    # The directory is made and removed outside the running loop (a
    # blocking call in the test's own code is not the loop's).
    with tempfile.TemporaryDirectory() as d:
        loop.run_until_complete(main(d))


class OrderProtocol(asyncio.Protocol):
    """Records connection_made/connection_lost among the user's call_soon
    callbacks."""

    def __init__(self, loop, order):
        self.loop = loop
        self.order = order
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.order.append("made")
        self.loop.call_soon(self.order.append, "soon in made")

    def connection_lost(self, exc):
        self.order.append("lost")
        self.lost.set_result(exc)


def test_transport_steps_keep_their_place_among_user_callbacks(loop):
    # The transport's own steps (start reading after connection_made,
    # connection_lost after close) are queued where asyncio's call_soon of
    # a bound method puts them.
    async def main():
        server, port = await serve(loop, asyncio.Protocol)
        order = []
        tr, proto = await loop.create_connection(
            lambda: OrderProtocol(loop, order), "127.0.0.1", port)
        order.append("connected")
        loop.call_soon(order.append, "soon before close")
        tr.close()
        loop.call_soon(order.append, "soon after close")
        assert await wait_for(proto.lost) is None
        await asyncio.sleep(0)
        assert order == ["made", "soon in made", "connected",
                         "soon before close", "lost", "soon after close"]
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
