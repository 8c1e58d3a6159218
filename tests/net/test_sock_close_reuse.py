"""Sockets closed, taken over or reused while a low-level socket operation
waits on them, as the stdlib selector loop behaves (3.9-3.15 alike):

- A socket closed while a `sock_*` call waits: the kernel forgets the fd,
  the reader never runs, the call waits until it is cancelled.
- The operation's reader/writer is an ordinary one: `add_reader` on the fd
  replaces it (the operation's future then stays pending until cancelled),
  `remove_reader` removes it and returns True, a `sock_*` call replaces an
  `add_reader` callback, a transport taking the socket replaces it.
- `add_reader(sock)`/`remove_reader(sock)` once `sock` is closed find the
  entry by the object (as `selectors` does), so anyio's raw-socket streams
  can close from another task.
- Closing a listener from another task: the accepting task wakes exactly as
  on the stdlib (anyio's and trio-style listener `aclose()`).
- An fd number reused by a new socket after a close: the new socket's
  operations, callbacks and transports work, and the old operation never
  touches the new socket.

Each behaviour runs on oxloop and on the stdlib loop.
"""

import asyncio
import errno
import os
import socket
import sys
import tempfile

import pytest
from helpers import run_until

PY311 = sys.version_info >= (3, 11)
new_in_311 = pytest.mark.skipif(not PY311, reason="sock_recvfrom/sock_sendto are new in 3.11")

TIMEOUT = 5


def run(loop, coro, timeout=TIMEOUT):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def spin(loop, seconds=0.05):
    """Let the loop run for a while."""
    loop.run_until_complete(asyncio.sleep(seconds))


def cancel_and_wait(loop, task):
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)


def nonblocking_pair(family=socket.AF_UNIX, type=socket.SOCK_STREAM):
    a, b = socket.socketpair(family, type)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def fill(sock):
    """Send until the socket's buffer is full; return the bytes sent."""
    sent = 0
    try:
        while True:
            sent += sock.send(b"x" * 65536)
    except BlockingIOError:
        pass
    return sent


def listener(backlog=10):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(backlog)
    ls.setblocking(False)
    return ls


def reused_fd_pair(fd):
    """A new non-blocking socket pair whose first socket has the fd number
    `fd` (just closed); the pair's other socket is the peer."""
    a, b = nonblocking_pair()
    if b.fileno() == fd:
        a, b = b, a
    assert a.fileno() == fd, "the lowest free fd is reused"
    return a, b


# -- each operation, its socket closed while it waits ------------------------


class Op:
    """Sets up one pending operation: `start(loop)` returns (socket the
    operation waits on, coroutine, other resources to close)."""

    def __init__(self, name, start):
        self.name = name
        self.start = start

    def __repr__(self):
        return self.name


def _recv(loop):
    a, b = nonblocking_pair()
    return a, loop.sock_recv(a, 100), [b]


def _recv_into(loop):
    a, b = nonblocking_pair()
    return a, loop.sock_recv_into(a, bytearray(100)), [b]


def _sendall(loop):
    a, b = nonblocking_pair()
    fill(a)
    return a, loop.sock_sendall(a, b"y" * 500_000), [b]


def _accept(loop):
    ls = listener()
    return ls, loop.sock_accept(ls), []


def _connect(loop):
    # A listener whose accept queue is full drops the SYN: connect() stays
    # in progress (the kernel retries after a second or more).
    ls = listener(backlog=0)
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(ls.getsockname())
        except BlockingIOError:
            pass
        fillers.append(c)
    c = socket.socket()
    c.setblocking(False)
    return c, loop.sock_connect(c, ls.getsockname()), fillers + [ls]


def _recvfrom(loop):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s, loop.sock_recvfrom(s, 100), []


def _recvfrom_into(loop):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s, loop.sock_recvfrom_into(s, bytearray(100)), []


WAITING_OPS = [
    Op("sock_recv", _recv),
    Op("sock_recv_into", _recv_into),
    Op("sock_sendall", _sendall),
    Op("sock_accept", _accept),
    Op("sock_connect", _connect),
    pytest.param(Op("sock_recvfrom", _recvfrom), marks=new_in_311),
    pytest.param(Op("sock_recvfrom_into", _recvfrom_into), marks=new_in_311),
]


@pytest.mark.parametrize("op", WAITING_OPS, ids=repr)
def test_socket_closed_while_operation_waits(loop, op):
    # The kernel forgets a closed fd: the operation neither completes nor
    # fails; it waits until it is cancelled, and the loop goes on.
    sock, coro, others = op.start(loop)
    try:
        task = loop.create_task(coro)
        spin(loop, 0.02)
        assert not task.done()

        async def close_from_another_task():
            sock.close()

        run(loop, close_from_another_task())
        spin(loop, 0.1)
        assert not task.done()
        cancel_and_wait(loop, task)
        # The loop is still fine: a new operation on a new socket works.
        a, b = nonblocking_pair()
        with a, b:
            b.send(b"after")
            assert run(loop, loop.sock_recv(a, 10)) == b"after"
    finally:
        sock.close()
        for o in others:
            o.close()


@new_in_311
def test_sock_sendto_socket_closed_while_it_waits(loop):
    # An unconnected Unix datagram socket whose receiver's queue is full is
    # reported writable at every poll, and sendto() keeps failing with
    # EAGAIN: the writer runs in the iteration in which the socket is
    # closed, after the close, and fails as socket.sendto() does on a closed
    # socket.
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "peer")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as peer:
            peer.bind(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            with sock:
                try:
                    while True:
                        sock.sendto(b"z" * 100, path)
                except BlockingIOError:
                    pass
                task = loop.create_task(loop.sock_sendto(sock, b"y", path))
                spin(loop, 0.02)
                assert not task.done()

                async def close_it():
                    await asyncio.sleep(0.01)
                    sock.close()

                run(loop, close_it())
                with pytest.raises(OSError) as info:
                    run(loop, task)
                assert info.value.errno == errno.EBADF


# -- add_reader/remove_reader and friends on a pending operation's fd --------


def test_add_reader_replaces_pending_sock_recv(loop):
    a, b = nonblocking_pair()
    with a, b:
        task = loop.create_task(loop.sock_recv(a, 10))
        spin(loop, 0.01)
        got = []
        loop.add_reader(a, lambda: got.append(a.recv(10)))
        b.send(b"hi")
        run_until(loop, lambda: got)
        assert got == [b"hi"]
        assert not task.done()  # replaced: its future never completes
        cancel_and_wait(loop, task)
        # Cancelling the replaced operation leaves the new reader alone.
        b.send(b"again")
        run_until(loop, lambda: len(got) == 2)
        assert got == [b"hi", b"again"]
        assert loop.remove_reader(a) is True
        assert loop.remove_reader(a) is False


def test_remove_reader_removes_pending_sock_recv(loop):
    a, b = nonblocking_pair()
    with a, b:
        task = loop.create_task(loop.sock_recv(a, 10))
        spin(loop, 0.01)
        assert loop.remove_reader(a.fileno()) is True
        assert loop.remove_reader(a.fileno()) is False
        b.send(b"kept")
        spin(loop)
        assert not task.done()
        # The data is still in the socket for the next operation.
        assert run(loop, loop.sock_recv(a, 10)) == b"kept"
        assert not task.done()
        cancel_and_wait(loop, task)


def test_add_writer_and_remove_writer_replace_pending_sock_sendall(loop):
    a, b = nonblocking_pair()
    with a, b:
        fill(a)
        task = loop.create_task(loop.sock_sendall(a, b"y" * 1000))
        spin(loop, 0.01)
        fired = []
        loop.add_writer(a, fired.append, 1)
        while True:
            try:
                b.recv(1 << 20)
            except BlockingIOError:
                break
        run_until(loop, lambda: fired)
        assert not task.done()
        assert loop.remove_writer(a) is True
        assert loop.remove_writer(a) is False
        assert not task.done()
        cancel_and_wait(loop, task)


def test_sock_recv_replaces_add_reader_callback(loop):
    a, b = nonblocking_pair()
    with a, b:
        called = []
        loop.add_reader(a, called.append, "callback")
        task = loop.create_task(loop.sock_recv(a, 10))
        spin(loop, 0.01)
        b.send(b"data")
        assert run(loop, task) == b"data"
        b.send(b"more")
        spin(loop)
        assert called == []
        # The operation's reader went away with it.
        assert loop.remove_reader(a) is False


def test_reader_callback_and_pending_sock_sendall_share_the_fd(loop):
    a, b = nonblocking_pair()
    with a, b:
        filled = fill(a)
        payload = b"p" * 200_000
        send = loop.create_task(loop.sock_sendall(a, payload))
        spin(loop, 0.01)
        got = []
        loop.add_reader(a, lambda: got.append(a.recv(100)))
        b.send(b"to a")
        received = bytearray()

        async def drain_b():
            while len(received) < filled + len(payload):
                try:
                    received.extend(b.recv(1 << 20))
                except BlockingIOError:
                    await asyncio.sleep(0.001)

        # sock_sendall completes while the reader callback runs beside it.
        run(loop, asyncio.gather(send, drain_b()))
        assert received == b"x" * filled + payload
        assert got == [b"to a"]
        assert loop.remove_reader(a) is True
        assert loop.remove_writer(a) is False


def test_transport_taking_the_socket_replaces_pending_operation(loop):
    a, b = nonblocking_pair()
    with b:
        task = loop.create_task(loop.sock_recv(a, 10))
        spin(loop, 0.01)
        received = loop.create_future()

        class Proto(asyncio.Protocol):
            def data_received(self, data):
                if not received.done():
                    received.set_result(data)

        transport, _ = run(loop, loop.create_connection(Proto, sock=a))
        b.send(b"for the transport")
        assert run(loop, received) == b"for the transport"
        assert not task.done()
        cancel_and_wait(loop, task)
        transport.close()
        spin(loop, 0.01)


# -- add_reader/remove_reader with a socket closed since -----------------------


def test_remove_reader_finds_a_closed_socket_by_the_object(loop):
    # asyncio's selector keeps the object add_reader was given and finds
    # the entry by it once fileno() is -1.
    a, b = nonblocking_pair()
    with b:
        loop.add_reader(a, lambda: None)
        a.close()
        assert loop.remove_reader(a) is True
        with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
            loop.remove_reader(a)
    c, d = nonblocking_pair()
    with d:
        loop.add_writer(c, lambda: None)
        loop.add_reader(c.fileno(), lambda: None)  # the entry keeps c
        c.close()
        # Found by the object; the reader still waits, so the fd is watched
        # anew, which the kernel refuses: the entry goes whole.
        with pytest.raises(OSError) as info:
            loop.remove_writer(c)
        assert info.value.errno == errno.EBADF
        with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
            loop.remove_reader(c)


def test_closed_socket_registered_by_fd_is_not_found_by_the_object(loop):
    a, b = nonblocking_pair()
    with b:
        fd = a.fileno()
        loop.add_reader(fd, lambda: None)
        loop.add_writer(a, lambda: None)  # the entry was created with the int
        a.close()
        with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
            loop.remove_writer(a)
        # The kernel forgot the fd: changing what it is watched for fails
        # and drops the fd's entry, as the selector's epoll_ctl does.
        with pytest.raises(OSError) as info:
            loop.remove_reader(fd)
        assert info.value.errno == errno.EBADF
        assert loop.remove_writer(fd) is False


def test_add_reader_on_a_closed_socket_watched_for_writing(loop):
    a, b = nonblocking_pair()
    with b:
        loop.add_writer(a, lambda: None)
        a.close()
        with pytest.raises(OSError) as info:
            loop.add_reader(a, lambda: None)
        assert info.value.errno == errno.EBADF
        with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
            loop.remove_writer(a)


class RawSocketStream:
    """anyio's UNIXSocketStream: waits with add_reader/add_writer(sock,
    fut.set_result); each future's done callback removes it again;
    aclose() closes the socket, then wakes the waiters."""

    def __init__(self, loop, sock):
        self.loop = loop
        self.sock = sock
        self.waiters = []
        self.removed = []

    def _wait(self, add, remove):
        fut = self.loop.create_future()

        def done(f):
            self.removed.append(remove(self.sock))

        add(self.sock, fut.set_result, None)
        fut.add_done_callback(done)
        self.waiters.append(fut)
        return fut

    async def receive(self):
        while True:
            try:
                return self.sock.recv(65536)
            except BlockingIOError:
                await self._wait(self.loop.add_reader, self.loop.remove_reader)

    async def send(self, data):
        while data:
            try:
                data = data[self.sock.send(data):]
            except BlockingIOError:
                await self._wait(self.loop.add_writer, self.loop.remove_writer)

    async def aclose(self):
        self.sock.close()
        for fut in self.waiters:
            if not fut.done():
                fut.set_result(None)
        await asyncio.sleep(0)


@pytest.mark.parametrize("direction", ["receive", "send"])
def test_raw_socket_stream_closed_during_io_anyio_style(loop, direction):
    a, b = nonblocking_pair()
    with b:
        stream = RawSocketStream(loop, a)
        if direction == "send":
            fill(a)
            io = stream.send(b"z" * 100_000)
        else:
            io = stream.receive()
        task = loop.create_task(io)
        spin(loop, 0.01)
        assert not task.done()
        run(loop, stream.aclose())
        with pytest.raises(OSError) as info:
            run(loop, task)
        assert info.value.errno == errno.EBADF  # recv()/send() on the closed socket
        assert stream.removed == [True]


# -- closing a listener from another task -----------------------------------


def accept_forever(loop, ls, log):
    async def acceptor():
        while True:
            try:
                conn, _ = await loop.sock_accept(ls)
            except asyncio.CancelledError:
                log.append("cancelled")
                try:
                    log.append(("remove_reader in acceptor", loop.remove_reader(ls)))
                except ValueError as exc:  # closed already: fileno() is -1
                    log.append(("remove_reader in acceptor", str(exc)))
                raise
            except OSError as exc:
                log.append(("error", exc.errno))
                return
            conn.close()
            log.append("accepted")

    return loop.create_task(acceptor())


def test_listener_closed_from_another_task_anyio_style(loop):
    # anyio's TCPSocketListener.aclose(): remove_reader, cancel the
    # accepting scope, let it unwind, close the socket.
    ls = listener()
    log = []
    task = accept_forever(loop, ls, log)
    spin(loop, 0.02)

    async def aclose():
        log.append(("remove_reader in aclose", loop.remove_reader(ls)))
        task.cancel()
        await asyncio.sleep(0)
        ls.close()

    run(loop, aclose())
    with pytest.raises(asyncio.CancelledError):
        run(loop, task)
    assert log == [
        ("remove_reader in aclose", True),
        "cancelled",
        ("remove_reader in acceptor", False),
    ]


def test_listener_closed_from_another_task_acceptor_cleans_up_after(loop):
    # The acceptor is cancelled first and its clean-up runs after the close:
    # remove_reader(closed socket) is asyncio's ValueError.
    ls = listener()
    log = []
    task = accept_forever(loop, ls, log)
    spin(loop, 0.02)

    async def aclose():
        task.cancel()
        ls.close()

    run(loop, aclose())
    with pytest.raises(asyncio.CancelledError):
        run(loop, task)
    assert log == ["cancelled", ("remove_reader in acceptor", "Invalid file descriptor: -1")]


def test_listener_closed_from_another_task_acceptor_is_not_woken(loop):
    ls = listener()
    log = []
    task = accept_forever(loop, ls, log)
    spin(loop, 0.02)

    async def close_it():
        ls.close()

    run(loop, close_it())
    spin(loop, 0.1)
    assert log == []
    assert not task.done()
    cancel_and_wait(loop, task)
    assert log == ["cancelled", ("remove_reader in acceptor", "Invalid file descriptor: -1")]


def test_listener_shut_down_from_another_task_wakes_acceptor_once(loop):
    # shutdown() on a listening socket makes accept() fail with EINVAL: the
    # acceptor wakes once, with that error.
    ls = listener()
    with ls:
        log = []
        task = accept_forever(loop, ls, log)
        spin(loop, 0.02)

        async def shut():
            ls.shutdown(socket.SHUT_RDWR)

        run(loop, shut())
        run(loop, task)
        assert log == [("error", errno.EINVAL)]


def test_listener_accepts_then_closed_from_another_task(loop):
    ls = listener()
    log = []
    task = accept_forever(loop, ls, log)
    spin(loop, 0.02)
    with socket.create_connection(ls.getsockname()):
        run_until(loop, lambda: log)
    assert log == ["accepted"]

    async def aclose():
        log.append(("remove_reader in aclose", loop.remove_reader(ls)))
        task.cancel()
        await asyncio.sleep(0)
        ls.close()

    run(loop, aclose())
    with pytest.raises(asyncio.CancelledError):
        run(loop, task)
    assert log == [
        "accepted",
        ("remove_reader in aclose", True),
        "cancelled",
        ("remove_reader in acceptor", False),
    ]


@pytest.mark.parametrize("how", ["create_server", "start_server"])
def test_server_closed_from_another_task_while_serve_forever(loop, how):
    async def main():
        if how == "start_server":

            async def handler(reader, writer):
                writer.close()

            server = await asyncio.start_server(handler, "127.0.0.1", 0)
        else:
            server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        log = []

        async def serve():
            try:
                await server.serve_forever()
                log.append("returned")
            except asyncio.CancelledError:
                log.append("cancelled")
                raise

        task = asyncio.ensure_future(serve())
        await asyncio.sleep(0.02)
        assert server.is_serving()
        server.close()
        assert not server.is_serving()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.wait_closed()
        return log

    assert run(loop, main()) == ["cancelled"]


# -- fd numbers reused after a close ------------------------------------------


def test_fd_reused_after_the_pending_operation_was_cancelled(loop):
    a, b = nonblocking_pair()
    task = loop.create_task(loop.sock_recv(a, 10))
    spin(loop, 0.01)
    fd = a.fileno()
    a.close()
    b.close()
    cancel_and_wait(loop, task)
    c, d = reused_fd_pair(fd)
    with c, d:
        got = loop.create_future()
        loop.add_reader(c, lambda: got.done() or got.set_result(c.recv(10)))
        d.send(b"reader")
        assert run(loop, got) == b"reader"
        assert loop.remove_reader(c) is True
        d.send(b"op")
        assert run(loop, loop.sock_recv(c, 10)) == b"op"


# The stdlib's selector keeps the closed fd's key while the old operation
# waits; for the reused fd it then skips epoll_ctl (same events) or fails
# with ENOENT (other events): the new socket is never watched. oxloop
# watches the reused fd afresh. The stdlib half runs and must fail.
STDLIB_STALE_KEY = "stdlib selector keeps a closed fd's key: the reused fd is never watched"


@pytest.fixture
def reused(loop, loop_kind, request):
    """An old sock_recv waiting on a closed socket whose fd number a new
    socket pair has now: (old task, new socket, its peer)."""
    if loop_kind == "asyncio":
        request.applymarker(pytest.mark.xfail(reason=STDLIB_STALE_KEY, strict=True))
    a, b = nonblocking_pair()
    old = loop.create_task(loop.sock_recv(a, 10))
    spin(loop, 0.01)
    fd = a.fileno()
    a.close()
    b.close()
    c, d = reused_fd_pair(fd)
    try:
        yield old, c, d
    finally:
        if not old.done():
            cancel_and_wait(loop, old)
        for sock in (c, d):
            if sock.fileno() >= 0:
                try:
                    loop.remove_reader(sock)
                    loop.remove_writer(sock)
                except RuntimeError:
                    pass  # a transport owns it
        c.close()
        d.close()


def test_fd_reused_while_old_operation_waits_new_operation_works(loop, reused):
    old, c, d = reused
    new = loop.create_task(loop.sock_recv(c, 10))
    spin(loop, 0.01)
    d.send(b"new")
    try:
        assert run(loop, asyncio.shield(new), timeout=1) == b"new"
    finally:
        if not new.done():
            cancel_and_wait(loop, new)
    assert not old.done()
    cancel_and_wait(loop, old)
    d.send(b"again")
    assert run(loop, loop.sock_recv(c, 10), timeout=1) == b"again"


def test_fd_reused_while_old_operation_waits_reader_callback_works(loop, reused):
    old, c, d = reused
    got = []
    loop.add_reader(c, lambda: got.append(c.recv(10)))
    d.send(b"one")
    run_until(loop, lambda: got, timeout=1)
    assert got == [b"one"]
    # Cancelling the old operation does not touch the new reader.
    cancel_and_wait(loop, old)
    d.send(b"two")
    run_until(loop, lambda: len(got) == 2, timeout=1)
    assert got == [b"one", b"two"]
    assert loop.remove_reader(c) is True


def test_fd_reused_while_old_operation_waits_transport_works(loop, reused):
    old, c, d = reused
    received = loop.create_future()
    lost = loop.create_future()

    class Proto(asyncio.Protocol):
        def data_received(self, data):
            if not received.done():
                received.set_result(data)

        def connection_lost(self, exc):
            lost.set_result(exc)

    transport, _ = run(loop, loop.create_connection(Proto, sock=c))
    try:
        d.send(b"to the transport")
        assert run(loop, received, timeout=1) == b"to the transport"
        cancel_and_wait(loop, old)
    finally:
        transport.close()
        assert run(loop, lost, timeout=1) is None


def test_fd_reused_old_operation_never_reads_the_new_socket(loop, reused):
    # The old sock_recv still waits on the fd number when the new socket is
    # watched for writing: the new socket's data is not the old operation's.
    old, c, d = reused
    writable = []
    loop.add_writer(c, writable.append, 1)
    d.send(b"mine")
    run_until(loop, lambda: writable, timeout=1)
    spin(loop, 0.02)
    assert loop.remove_writer(c) is True
    assert c.recv(10) == b"mine"
    if old.done():
        # Run on the closed socket, as asyncio's reader would be.
        with pytest.raises(OSError) as info:
            old.result()
        assert info.value.errno == errno.EBADF
