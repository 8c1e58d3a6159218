"""Low-level socket operations (sock_recv, sock_recv_into, sock_recvfrom*,
sock_sendall, sock_sendto, sock_connect, sock_accept) on real loopback
sockets, each behaviour run on oxloop and on the stdlib selector loop."""

import asyncio
import errno
import gc
import socket
import ssl
import struct
import sys
import weakref

import pytest

from helpers import make_loop

PY311 = sys.version_info >= (3, 11)
new_in_311 = pytest.mark.skipif(not PY311, reason="sock_recvfrom/sock_sendto are new in 3.11")

TIMEOUT = 10


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def tcp_pair():
    """A connected TCP pair over loopback (client, server side)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    client.setblocking(False)
    server.setblocking(False)
    yield client, server
    client.close()
    server.close()


def unused_port(type=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, type) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sock_recv_waits_for_data(loop, pair):
    a, b = pair

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        assert not task.done()
        await loop.sock_sendall(b, b"hello")
        return await task

    assert run(loop, main()) == b"hello"


def test_sock_recv_immediate_and_eof(loop, pair):
    a, b = pair
    b.send(b"abc")
    assert run(loop, loop.sock_recv(a, 2)) == b"ab"
    assert run(loop, loop.sock_recv(a, 100)) == b"c"
    b.shutdown(socket.SHUT_WR)
    assert run(loop, loop.sock_recv(a, 100)) == b""


def test_sock_recv_is_a_coroutine_for_create_task(loop, pair):
    a, b = pair

    async def main():
        task = asyncio.create_task(loop.sock_recv(a, 10))
        b.send(b"x")
        return await task

    assert run(loop, main()) == b"x"


def test_sock_recv_into(loop, pair):
    a, b = pair
    buf = bytearray(8)

    async def main():
        task = asyncio.ensure_future(loop.sock_recv_into(a, buf))
        await asyncio.sleep(0.01)
        b.send(b"wxyz")
        n1 = await task
        b.send(b"12")
        with memoryview(buf) as view:
            n2 = await loop.sock_recv_into(a, view[n1:])
        return n1, n2

    assert run(loop, main()) == (4, 2)
    assert buf == b"wxyz12\x00\x00"


def test_sock_recv_into_readonly_buffer_is_type_error(loop, pair):
    a, b = pair
    b.send(b"x")
    with pytest.raises(TypeError):
        run(loop, loop.sock_recv_into(a, b"readonly"))


def test_sock_sendall_large_to_slow_reader(loop, tcp_pair):
    client, server = tcp_pair
    data = bytes(range(256)) * (4 * 4096 + 7)  # ~4 MiB, not a round size

    async def slow_reader():
        got = bytearray()
        while len(got) < len(data):
            chunk = await loop.sock_recv(server, 65536)
            assert chunk
            got += chunk
            if len(got) < 1024 * 1024:
                await asyncio.sleep(0.001)
        return bytes(got)

    async def main():
        reader = asyncio.ensure_future(slow_reader())
        await loop.sock_sendall(client, data)
        return await reader

    assert run(loop, main()) == data


def test_sock_sendall_accepts_bytes_like(loop, pair):
    a, b = pair
    run(loop, loop.sock_sendall(a, bytearray(b"12")))
    run(loop, loop.sock_sendall(a, memoryview(b"345")))
    run(loop, loop.sock_sendall(a, b""))
    assert run(loop, loop.sock_recv(b, 100)) == b"12345"


def test_sock_recv_after_waiting_ones_reads_what_already_arrived(loop, pair):
    # Ping-pong: each sock_recv must wait; then the data of the next ones is
    # already there when they start (a loop that guessed from the waits
    # before that the next receive would block must still read it).
    a, b = pair

    async def main():
        got = []
        for i in range(3):
            task = asyncio.ensure_future(loop.sock_recv(a, 65536))
            await asyncio.sleep(0)
            assert not task.done()
            b.send(b"ping%d" % i)
            got.append(await task)
        for i in range(5):
            b.send(b"data%d" % i)
            got.append(await loop.sock_recv(a, 65536))
        return got

    assert run(loop, main()) == [b"ping0", b"ping1", b"ping2"] + [b"data%d" % i for i in range(5)]


def test_sock_recv_after_waiting_one_with_a_writer_waiting(loop, tcp_pair):
    # The fd is watched for writing (a sock_sendall to a full buffer) while
    # a receive starts whose data is already there.
    client, server = tcp_pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payload = b"x" * (4 * 1024 * 1024)

    async def main():
        first = asyncio.ensure_future(loop.sock_recv(server, 65536))
        await asyncio.sleep(0)
        client.send(b"one")
        assert await first == b"one"
        sending = asyncio.ensure_future(loop.sock_sendall(server, payload))
        await asyncio.sleep(0)
        assert not sending.done()
        client.send(b"two")
        got = await loop.sock_recv(server, 65536)
        sending.cancel()
        return got

    assert run(loop, main()) == b"two"


@pytest.mark.parametrize("n", [16 * 1024, 120 * 1024, 120 * 1024 + 1, 1024 * 1024])
def test_sock_recv_large_requests(loop, tcp_pair, n):
    # Requests around oxloop's sizes for reading straight into the bytes
    # (up to 120 KiB) or through a scratch buffer (above): exactly what was
    # sent, in order, each result no larger than asked.
    client, server = tcp_pair
    payload = bytes(range(256)) * 1024  # 256 KiB

    async def main():
        sending = asyncio.ensure_future(loop.sock_sendall(client, payload))
        got = bytearray()
        while len(got) < len(payload):
            chunk = await loop.sock_recv(server, n)
            assert 0 < len(chunk) <= n
            assert type(chunk) is bytes
            got += chunk
        await sending
        return bytes(got)

    assert run(loop, main()) == payload


def test_cancel_sock_recv_loses_no_bytes(loop, pair):
    a, b = pair

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        task.cancel()
        # The data arrives while the cancellation is being delivered.
        b.send(b"precious")
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.01)
        return await loop.sock_recv(a, 100)

    assert run(loop, main()) == b"precious"


def test_fd_released_after_ops(loop, pair):
    a, b = pair

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        # A completed wait also releases the fd.
        t2 = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        b.send(b"1")
        assert await t2 == b"1"
        await asyncio.sleep(0)
        got = loop.create_future()
        loop.add_reader(a.fileno(), lambda: got.set_result(a.recv(100)))
        b.send(b"via add_reader")
        try:
            return await got
        finally:
            loop.remove_reader(a.fileno())

    assert run(loop, main()) == b"via add_reader"


def test_cancel_sock_sendall_leaves_socket_usable(loop, tcp_pair):
    client, server = tcp_pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = b"x" * (8 * 1024 * 1024)

    async def main():
        task = asyncio.ensure_future(loop.sock_sendall(client, big))
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Drain what was sent, then the socket still works both ways.
        sent_marker = asyncio.ensure_future(loop.sock_sendall(client, b"END"))
        got = bytearray()
        while not got.endswith(b"END"):
            chunk = await loop.sock_recv(server, 1 << 20)
            assert chunk
            got += chunk
        await sent_marker
        assert set(got[:-3]) <= {ord("x")}
        await loop.sock_sendall(server, b"reply")
        return await loop.sock_recv(client, 100)

    assert run(loop, main()) == b"reply"


def test_two_readers_same_socket_last_one_wins(loop, pair):
    # asyncio: the second operation replaces the first one's reader;
    # cancelling the first does not disturb the second.
    a, b = pair

    async def main():
        first = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        b.send(b"data")
        assert await second == b"data"
        assert first.cancelled()

    run(loop, main())


def test_concurrent_recv_and_sendall_same_socket(loop, tcp_pair):
    client, server = tcp_pair

    async def main():
        recv = asyncio.ensure_future(loop.sock_recv(client, 100))
        await asyncio.sleep(0)
        await loop.sock_sendall(client, b"ping")
        assert await loop.sock_recv(server, 100) == b"ping"
        await loop.sock_sendall(server, b"pong")
        return await recv

    assert run(loop, main()) == b"pong"


@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into", "sock_sendall",
                                    "sock_accept", "sock_connect"])
def test_blocking_socket_in_debug_mode_is_value_error(loop, method):
    loop.set_debug(True)
    with socket.socket() as sock:
        sock.setblocking(True)
        args = {
            "sock_recv": (sock, 10),
            "sock_recv_into": (sock, bytearray(10)),
            "sock_sendall": (sock, b"x"),
            "sock_accept": (sock,),
            "sock_connect": (sock, ("127.0.0.1", 1)),
        }[method]
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            run(loop, getattr(loop, method)(*args))


def test_ssl_socket_is_type_error(loop):
    ctx = ssl.create_default_context()
    with ctx.wrap_socket(socket.socket(), server_hostname="example.invalid",
                         do_handshake_on_connect=False) as sock:
        sock.setblocking(False)
        with pytest.raises(TypeError, match="SSLSocket"):
            run(loop, loop.sock_recv(sock, 10))
        with pytest.raises(TypeError, match="SSLSocket"):
            run(loop, loop.sock_sendall(sock, b"x"))
        with pytest.raises(TypeError, match="SSLSocket"):
            run(loop, loop.sock_connect(sock, ("127.0.0.1", 1)))


def test_sock_connect_refused(loop):
    with socket.socket() as sock:
        sock.setblocking(False)
        with pytest.raises(ConnectionRefusedError) as info:
            run(loop, loop.sock_connect(sock, ("127.0.0.1", unused_port())))
        assert info.value.errno is not None


def test_sock_connect_resolves_names(loop):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with socket.socket() as sock:
            sock.setblocking(False)
            run(loop, loop.sock_connect(sock, ("localhost", port)))
            assert sock.getpeername() == ("127.0.0.1", port)


def test_sock_accept(loop):
    with socket.socket() as listener:
        listener.setblocking(False)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        async def main():
            accept = asyncio.ensure_future(loop.sock_accept(listener))
            await asyncio.sleep(0.01)
            assert not accept.done()
            client = socket.socket()
            client.setblocking(False)
            await loop.sock_connect(client, listener.getsockname())
            conn, addr = await accept
            return client, conn, addr

        client, conn, addr = run(loop, main())
        with client, conn:
            assert conn.gettimeout() == 0
            assert addr == client.getsockname()


def test_cancel_sock_accept_then_connect_is_refused(loop):
    listener = socket.socket()
    listener.setblocking(False)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    addr = listener.getsockname()
    with pytest.raises(asyncio.TimeoutError):
        loop.run_until_complete(asyncio.wait_for(loop.sock_accept(listener), 0.05))
    listener.close()
    with socket.socket() as client:
        client.setblocking(False)
        with pytest.raises(ConnectionRefusedError):
            run(loop, loop.sock_connect(client, addr))


@pytest.fixture
def udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.setblocking(False)
        s.bind(("127.0.0.1", 0))
    yield a, b
    a.close()
    b.close()


@new_in_311
def test_sock_sendto_recvfrom(loop, udp_pair):
    a, b = udp_pair

    async def main():
        recv = asyncio.ensure_future(loop.sock_recvfrom(b, 4096))
        await asyncio.sleep(0.01)
        assert not recv.done()
        n = await loop.sock_sendto(a, b"\x01" * 1000, b.getsockname())
        data, addr = await recv
        return n, data, addr

    n, data, addr = run(loop, main())
    assert n == 1000
    assert data == b"\x01" * 1000
    assert addr == a.getsockname()


@new_in_311
def test_sock_recvfrom_into(loop, udp_pair):
    a, b = udp_pair
    buf = bytearray(16)

    async def main():
        await loop.sock_sendto(a, b"0123456789", b.getsockname())
        r1 = await loop.sock_recvfrom_into(b, buf)
        await loop.sock_sendto(a, b"abcdef", b.getsockname())
        r2 = await loop.sock_recvfrom_into(b, buf, 3)
        return r1, r2

    r1, r2 = run(loop, main())
    assert r1 == (10, a.getsockname())
    assert r2 == (3, a.getsockname())
    assert buf[:10] == b"abc3456789"


def test_loop_with_pending_sock_recv_is_collected(loop_kind, pair):
    a, b = pair
    gc.collect()

    def build():
        # Only a weak reference leaves this function.
        loop = make_loop(loop_kind)

        async def start():
            return asyncio.ensure_future(loop.sock_recv(a, 10))

        task = loop.run_until_complete(start())
        loop.run_until_complete(asyncio.sleep(0.01))
        assert not task.done()
        task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        return weakref.ref(loop)

    ref = build()
    for _ in range(3):
        gc.collect()
    assert ref() is None


def test_sock_recv_on_closed_socket_is_bad_fd(loop):
    sock = socket.socket()
    sock.setblocking(False)
    sock.close()
    with pytest.raises(OSError) as info:
        run(loop, loop.sock_recv(sock, 10))
    assert info.value.errno == errno.EBADF


def test_sock_sendall_to_closed_peer_is_broken_pipe(loop, tcp_pair):
    client, server = tcp_pair
    server.close()

    async def main():
        # The first send may still succeed (the peer's RST comes back later).
        for _ in range(100):
            await loop.sock_sendall(client, b"x" * 65536)
            await asyncio.sleep(0.001)

    with pytest.raises((BrokenPipeError, ConnectionResetError)) as info:
        run(loop, main())
    assert info.value.errno in (errno.EPIPE, errno.ECONNRESET)


def test_sock_recv_after_peer_reset(loop, tcp_pair):
    client, server = tcp_pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()  # RST
    with pytest.raises(ConnectionResetError):
        run(loop, loop.sock_recv(client, 10))


def test_sock_accept_on_non_listening_socket(loop):
    with socket.socket() as sock:
        sock.setblocking(False)
        with pytest.raises(OSError) as info:
            run(loop, loop.sock_accept(sock))
        assert info.value.errno == errno.EINVAL


def test_sock_connect_already_connected(loop, tcp_pair):
    client, server = tcp_pair
    with pytest.raises(OSError) as info:
        run(loop, loop.sock_connect(client, server.getsockname()))
    assert info.value.errno == errno.EISCONN
