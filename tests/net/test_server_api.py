"""The Server object and create_server's options, on both loops."""

import asyncio
import gc
import os
import socket
import sys
import tempfile
import warnings
import weakref

import pytest

from netutil import RecordingProtocol, serve, wait_for


def _connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def test_server_lifecycle(loop):
    async def main():
        server = await loop.create_server(
            lambda: RecordingProtocol(loop), "127.0.0.1", 0,
            start_serving=False)
        assert not server.is_serving()
        assert server.get_loop() is loop
        (sock,) = server.sockets
        port = sock.getsockname()[1]
        assert sock.family == socket.AF_INET
        assert "sockets=" in repr(server)
        await server.start_serving()
        assert server.is_serving()
        await server.start_serving()  # idempotent
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        server.close()
        assert not server.is_serving()
        assert server.sockets == ()
        server.close()
        tr.close()
        await wait_for(client.lost)
        await wait_for(server.wait_closed())
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)

    loop.run_until_complete(main())


def test_serve_forever_cancel_and_async_with(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0,
                                          start_serving=False)
        async with server:
            task = asyncio.ensure_future(server.serve_forever())
            await asyncio.sleep(0.05)
            assert server.is_serving()
            with pytest.raises(RuntimeError, match="already being awaited"):
                await server.serve_forever()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not server.is_serving()
        with pytest.raises(RuntimeError, match="is closed"):
            await server.serve_forever()

    loop.run_until_complete(main())


def test_several_hosts_and_dedup(loop):
    async def main():
        server = await loop.create_server(
            asyncio.Protocol, ["127.0.0.1", "127.0.0.1", "localhost"], 0,
            family=socket.AF_INET)
        # One socket per distinct address.
        assert len(server.sockets) == 1
        server.close()
        await server.wait_closed()

        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        hosts = ["127.0.0.1"]
        if socket.has_ipv6:
            try:
                s6 = socket.socket(socket.AF_INET6)
                s6.bind(("::1", 0))
                s6.close()
                hosts.append("::1")
            except OSError:
                pass
        server = await loop.create_server(asyncio.Protocol, hosts, port)
        assert len(server.sockets) == len(hosts)
        for s in server.sockets:
            assert s.getsockname()[1] == port
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_reuse_port_and_backlog(loop):
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("no SO_REUSEPORT")

    async def main():
        s1 = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0,
                                      reuse_port=True, backlog=5)
        port = s1.sockets[0].getsockname()[1]
        assert s1.sockets[0].getsockopt(socket.SOL_SOCKET,
                                        socket.SO_REUSEPORT)
        s2 = await loop.create_server(asyncio.Protocol, "127.0.0.1", port,
                                      reuse_port=True)
        s1.close()
        s2.close()
        await s1.wait_closed()
        await s2.wait_closed()
        # Bind conflict: asyncio's message names the address.
        s3 = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = s3.sockets[0].getsockname()[1]
        with pytest.raises(OSError, match="error while attempting to bind"):
            await loop.create_server(asyncio.Protocol, "127.0.0.1", port,
                                     reuse_address=False)
        s3.close()
        await s3.wait_closed()

    loop.run_until_complete(main())


@pytest.mark.blocking_on_purpose
def test_server_from_sock_and_connect_accepted_socket(loop):
    async def main():
        lsock = socket.create_server(("127.0.0.1", 0))
        port = lsock.getsockname()[1]
        protos = []

        def factory():
            p = RecordingProtocol(loop)
            protos.append(p)
            return p

        server = await loop.create_server(factory, sock=lsock)
        c = _connect(port)
        c.sendall(b"via sock=")
        c.close()
        while not protos or not protos[0].lost.done():
            await asyncio.sleep(0.01)
        assert bytes(protos[0].data) == b"via sock="
        server.close()
        await server.wait_closed()

        # connect_accepted_socket on a socket we accepted ourselves.
        lsock = socket.create_server(("127.0.0.1", 0))
        c = _connect(lsock.getsockname()[1])
        conn, _ = lsock.accept()
        tr, proto = await loop.connect_accepted_socket(
            lambda: RecordingProtocol(loop), conn)
        c.sendall(b"accepted")
        c.shutdown(socket.SHUT_WR)
        await wait_for(proto.lost)
        assert bytes(proto.data) == b"accepted"
        c.close()
        lsock.close()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with pytest.raises(ValueError, match="Stream Socket"):
            await loop.connect_accepted_socket(asyncio.Protocol, udp)
        udp.close()

    loop.run_until_complete(main())


@pytest.mark.blocking_on_purpose
def test_close_clients_and_abort_clients(loop):
    async def main():
        protos = []

        def factory():
            p = RecordingProtocol(loop)
            protos.append(p)
            return p

        server, port = await serve(loop, factory)
        if not hasattr(server, "close_clients"):
            server.close()
            pytest.skip("Server.close_clients is Python 3.13+ in asyncio")
        clients = [_connect(port) for _ in range(3)]
        while len(protos) < 3 or not all(p.made.done() for p in protos):
            await asyncio.sleep(0.01)
        server.close()
        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.05)
        if sys.version_info >= (3, 12, 1):
            assert not waiter.done()  # connections still open
        server.close_clients()
        await wait_for(waiter)
        assert all(p.lost.done() for p in protos)
        for c in clients:
            c.close()

        protos.clear()
        server, port = await serve(loop, factory)
        c = _connect(port)
        while not protos:
            await asyncio.sleep(0.01)
        server.abort_clients()
        await wait_for(protos[0].lost)
        server.close()
        await server.wait_closed()
        c.close()

    loop.run_until_complete(main())


@pytest.mark.skipif(sys.version_info < (3, 13),
                    reason="create_server(keep_alive=) is 3.13+")
@pytest.mark.parametrize("keep_alive", [True, False])
def test_keep_alive(loop, keep_alive):
    async def main():
        server, _ = await serve(loop, lambda: RecordingProtocol(loop),
                                keep_alive=keep_alive)
        opts = [s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
                for s in server.sockets]
        server.close()
        await server.wait_closed()
        return opts

    opts = loop.run_until_complete(main())
    assert opts and all(bool(o) == keep_alive for o in opts)


def _serve_forever_closes_clients():
    # asyncio's serve_forever() closes the clients when it is cancelled from
    # 3.14 on.
    return "close_clients" in asyncio.base_events.Server.serve_forever.__code__.co_names


@pytest.mark.skipif(not _serve_forever_closes_clients(),
                    reason="before 3.14, a cancelled serve_forever() waits for "
                           "its clients to leave")
def test_cancelled_serve_forever_with_a_hanging_client(loop):
    async def main():
        protos = []

        def factory():
            p = RecordingProtocol(loop)
            protos.append(p)
            return p

        server, port = await serve(loop, factory)
        serving = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        client = _connect(port)
        while not protos or not protos[0].made.done():
            await asyncio.sleep(0.01)
        serving.cancel()  # e.g. Ctrl+C while a client hangs on
        with pytest.raises(asyncio.CancelledError):
            await serving
        assert not server.is_serving()
        # It closed the client, so that its wait_closed() could return.
        assert protos[0].lost.done()
        assert client.recv(1) == b""
        client.close()
        await wait_for(server.wait_closed())

    loop.run_until_complete(main())


def test_wait_closed_waits_for_connections(loop):
    if sys.version_info < (3, 12, 1):
        pytest.skip("asyncio's Server.wait_closed waits for connections "
                    "only from 3.12.1 on")

    async def main():
        protos = []

        def factory():
            p = RecordingProtocol(loop)
            protos.append(p)
            return p

        server, port = await serve(loop, factory)
        c = _connect(port)
        while not protos:
            await asyncio.sleep(0.01)
        server.close()
        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        protos[0].transport.close()
        await wait_for(waiter)
        c.close()

    loop.run_until_complete(main())


@pytest.mark.blocking_on_purpose
@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_unix_server_options(loop):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "s")
            server = await loop.create_unix_server(asyncio.Protocol, path,
                                                   start_serving=False)
            assert not server.is_serving()
            await server.start_serving()
            # The path is in use by a live server: a second bind fails
            # with asyncio's message (the stale-file cleanup removed it and
            # rebinding works, so we bind a plain socket instead).
            s = socket.socket(socket.AF_UNIX)
            with pytest.raises(OSError):
                s.bind(path)
            s.close()
            server.close()
            await server.wait_closed()
            other = socket.socket(socket.AF_UNIX)
            with pytest.raises(ValueError, match="path and sock"):
                await loop.create_unix_server(asyncio.Protocol, path,
                                              sock=other)
            other.close()
            with pytest.raises(ValueError, match="UNIX Domain Stream"):
                udp = socket.socket()
                try:
                    await loop.create_unix_server(asyncio.Protocol, sock=udp)
                finally:
                    udp.close()
            with pytest.raises(TypeError, match="ssl argument"):
                await loop.create_unix_server(asyncio.Protocol, path,
                                              ssl=True)

    loop.run_until_complete(main())


def test_closing_loop_with_open_transports_and_servers(loop_factory):
    """No crash; the objects are finalized like asyncio's (ResourceWarning)."""
    loop = loop_factory()

    async def main():
        server, port = await serve(loop, lambda: RecordingProtocol(loop))
        tr, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        tr.write(b"x" * (4 * 1024 * 1024))  # leave data buffered too
        await asyncio.sleep(0.05)
        return server, tr, proto

    server, tr, proto = loop.run_until_complete(main())
    loop.close()
    assert loop.is_closed()
    assert not tr.is_closing()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        # Closing things after the loop closed must not crash either.
        try:
            tr.close()
        except RuntimeError:
            pass  # asyncio: call_soon on a closed loop
        server.close()
        refs = [weakref.ref(tr), weakref.ref(proto)]
        del tr, proto, server
        for _ in range(3):
            gc.collect()
    # The loop -> transport -> protocol -> loop cycles are collectable.
    assert [r() for r in refs] == [None, None]


def test_transports_and_protocols_are_collected(loop):
    async def main():
        server, port = await serve(loop, lambda: RecordingProtocol(loop))
        tr, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        tr.write(b"data")
        tr.close()
        await wait_for(proto.lost)
        server.close()
        await server.wait_closed()
        return weakref.ref(tr), weakref.ref(proto)

    wtr, wproto = loop.run_until_complete(main())
    for _ in range(3):
        gc.collect()
    assert wtr() is None
    assert wproto() is None
