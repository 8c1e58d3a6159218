"""create_connection's options on both loops: Happy Eyeballs, interleave,
local_addr, sock=, all_errors, connection errors."""

import asyncio
import socket
import sys

import pytest

from netutil import RecordingProtocol, serve, wait_for


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("kwargs", [
    {},
    {"happy_eyeballs_delay": 0.1},
    {"happy_eyeballs_delay": 0.1, "interleave": 2},
    {"interleave": 1},
    {"family": socket.AF_INET},
])
def test_connect_options(loop, kwargs):
    async def main():
        server, port = await serve(loop, lambda: RecordingProtocol(loop))
        tr, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), "localhost", port, **kwargs)
        assert tr.get_extra_info("peername")[1] == port
        tr.close()
        await wait_for(proto.lost)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_local_addr(loop):
    async def main():
        server, port = await serve(loop, lambda: RecordingProtocol(loop))
        local = _free_port()
        tr, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port,
            local_addr=("127.0.0.1", local))
        assert tr.get_extra_info("sockname") == ("127.0.0.1", local)
        # The same local address again while it is in use: asyncio's message.
        with pytest.raises(OSError, match="error while attempting to bind"):
            await loop.create_connection(
                lambda: RecordingProtocol(loop), "127.0.0.1", port,
                local_addr=("127.0.0.1", local))
        tr.close()
        await wait_for(proto.lost)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


@pytest.mark.blocking_on_purpose
def test_connect_with_sock(loop):
    async def main():
        server, port = await serve(loop, lambda: RecordingProtocol(loop))
        sock = socket.create_connection(("127.0.0.1", port))
        fd = sock.fileno()
        tr, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), sock=sock)
        assert tr.get_extra_info("socket").fileno() == fd
        assert sock.gettimeout() == 0  # made non-blocking
        tr.close()
        await wait_for(proto.lost)
        assert sock.fileno() == -1  # the transport closed the socket
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_refused_and_all_errors(loop):
    port = _free_port()

    async def main():
        with pytest.raises(ConnectionRefusedError) as info:
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        assert str(port) in str(info.value)
        if sys.version_info >= (3, 12):
            with pytest.raises(ExceptionGroup) as group:  # noqa: F821
                await loop.create_connection(asyncio.Protocol, "127.0.0.1",
                                             port, all_errors=True)
            assert isinstance(group.value.exceptions[0],
                              ConnectionRefusedError)
        else:
            with pytest.raises(TypeError):
                await loop.create_connection(asyncio.Protocol, "127.0.0.1",
                                             port, all_errors=True)

    loop.run_until_complete(main())


def test_cancelled_connect_leaves_nothing_behind(loop):
    async def main():
        server, port = await serve(loop, lambda: RecordingProtocol(loop))
        task = asyncio.ensure_future(loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The loop and the server keep working.
        tr, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        tr.close()
        await wait_for(proto.lost)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_create_connection_sock_when_the_protocol_factory_fails(loop):
    # gh-153133 (3.14): the caller's socket is closed when no transport is
    # made; before, it stayed open (the caller's to close).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    sock = socket.create_connection(listener.getsockname())
    sock.setblocking(False)

    def factory():
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        loop.run_until_complete(loop.create_connection(factory, sock=sock))
    assert (sock.fileno() == -1) == (sys.version_info >= (3, 14))
    sock.close()
    listener.close()
