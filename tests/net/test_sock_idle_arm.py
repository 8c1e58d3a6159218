"""A socket's fd between two `sock_*` waits, as the stdlib selector loop
behaves (its reader/writer is gone once the operation completed):

- after many `sock_recv`/`sock_sendall` round trips that waited, the fd has
  no reader and no writer (`remove_reader`/`remove_writer` return False),
  and `add_reader`/`add_writer` work as on a fresh fd, level-triggered
  (data that arrived while nobody waited is reported);
- a socket closed after `sock_*` calls, its fd number reused by a new
  socket: `add_reader` and `sock_recv` on the new socket see only the new
  socket's data, even while the old file is still open elsewhere (dup'ed);
- a transport taking the socket works;
- `loop.close()` after `sock_*` calls leaks no fd, and the loop is
  collected;
- a `sock_recv` cancelled between round trips loses no bytes.

oxloop keeps the fd registered with the kernel between waits (idle; see
src/event_loop/io.rs); these behaviours are what that must not change, and
each runs on oxloop and on the stdlib loop. The last test (oxloop only)
checks the point of it: a steady round-trip loop asks the kernel for no
`epoll_ctl` per request.
"""

import asyncio
import gc
import os
import socket
import weakref

import pytest

from helpers import make_loop

TIMEOUT = 5
ROUNDS = 200


def run(loop, coro, timeout=TIMEOUT):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def spin(loop, seconds=0.02):
    loop.run_until_complete(asyncio.sleep(seconds))


def nonblocking_pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def tcp_pair():
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        a = socket.create_connection(ls.getsockname())
        b, _ = ls.accept()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


@pytest.fixture
def pair():
    a, b = nonblocking_pair()
    yield a, b
    a.close()
    b.close()


async def round_trips(loop, a, b, rounds=ROUNDS, size=100):
    """`rounds` echo exchanges between two tasks, each `sock_recv` waiting
    (the peer answers only after it was asked)."""

    async def server():
        for _ in range(rounds):
            data = await loop.sock_recv(a, size)
            while len(data) < size:
                data += await loop.sock_recv(a, size - len(data))
            await loop.sock_sendall(a, data)

    async def client():
        for i in range(rounds):
            msg = bytes([i % 256]) * size
            await loop.sock_sendall(b, msg)
            got = b""
            while len(got) < size:
                got += await loop.sock_recv(b, size - len(got))
            assert got == msg

    await asyncio.gather(server(), client())


def reused_fd_pair(fd):
    """A new socket pair whose first socket has the fd number `fd` (just
    closed); the other socket is its peer."""
    a, b = nonblocking_pair()
    if b.fileno() == fd:
        a, b = b, a
    assert a.fileno() == fd, "the lowest free fd is reused"
    return a, b


@pytest.mark.parametrize("early", [False, True], ids=["later", "arrived-while-idle"])
def test_round_trips_then_reader_and_writer_semantics(loop, pair, early):
    a, b = pair
    run(loop, round_trips(loop, a, b))
    assert loop.remove_reader(a.fileno()) is False
    assert loop.remove_writer(a.fileno()) is False
    assert loop.remove_reader(b.fileno()) is False
    run(loop, round_trips(loop, a, b, rounds=3))
    if early:
        # Arrives while nobody waits on the fd; the loop polls meanwhile.
        b.send(b"early")
        spin(loop)

    async def read_with_callback():
        got = loop.create_future()

        def on_readable():
            if not got.done():
                got.set_result(a.recv(100))

        loop.add_reader(a.fileno(), on_readable)
        if not early:
            b.send(b"later")
        try:
            return await got
        finally:
            assert loop.remove_reader(a.fileno()) is True
            assert loop.remove_reader(a.fileno()) is False

    assert run(loop, read_with_callback()) == (b"early" if early else b"later")

    async def writable():
        fut = loop.create_future()
        loop.add_writer(a, fut.set_result, "w")
        try:
            return await fut
        finally:
            assert loop.remove_writer(a) is True

    assert run(loop, writable()) == "w"
    run(loop, round_trips(loop, a, b, rounds=3))


def test_remove_reader_after_sock_ops_keeps_sock_ops_working(loop, pair):
    a, b = pair
    run(loop, round_trips(loop, a, b, rounds=5))
    assert loop.remove_reader(a) is False
    run(loop, round_trips(loop, a, b, rounds=5))


def test_closed_socket_after_sock_ops_fd_reused_add_reader(loop):
    old, old_peer = nonblocking_pair()
    run(loop, round_trips(loop, old, old_peer, rounds=10))
    fd = old.fileno()
    old.close()
    new, new_peer = reused_fd_pair(fd)
    try:
        calls = []
        got = loop.create_future()

        def on_readable():
            data = new.recv(100)
            calls.append(data)
            if not got.done():
                got.set_result(data)

        loop.add_reader(new.fileno(), on_readable)
        old_peer.close()  # the old socket's events are the old file's
        spin(loop)
        assert calls == []
        new_peer.send(b"new")
        assert run(loop, got) == b"new"
        assert loop.remove_reader(new.fileno()) is True
    finally:
        new.close()
        new_peer.close()


def test_closed_socket_after_sock_ops_fd_reused_sock_recv(loop):
    old, old_peer = nonblocking_pair()
    run(loop, round_trips(loop, old, old_peer, rounds=10))
    fd = old.fileno()
    old.close()
    new, new_peer = reused_fd_pair(fd)
    try:

        async def main():
            task = asyncio.ensure_future(loop.sock_recv(new, 100))
            await asyncio.sleep(0.01)
            assert not task.done()
            new_peer.send(b"from the new peer")
            return await task

        assert run(loop, main()) == b"from the new peer"
        run(loop, round_trips(loop, new, new_peer, rounds=10))
    finally:
        new.close()
        new_peer.close()
        old_peer.close()


@pytest.mark.parametrize("how", ["add_reader", "sock_recv"])
def test_fd_reused_while_the_old_file_lives_on_elsewhere(loop, how):
    """The old socket's file stays open through a dup: the kernel keeps
    watching it (under the old fd number) for a loop that left it
    registered. Its events must never reach the new socket's reader."""
    old, old_peer = nonblocking_pair()
    run(loop, round_trips(loop, old, old_peer, rounds=10))
    fd = old.fileno()
    keep = old.dup()
    old.close()
    new, new_peer = reused_fd_pair(fd)
    try:
        calls = []
        if how == "add_reader":
            loop.add_reader(new.fileno(), lambda: calls.append(new.recv(100)))
        else:
            task = loop.create_task(loop.sock_recv(new, 100))
        spin(loop)
        for i in range(5):
            old_peer.send(b"old %d" % i)  # readable: the old file
            spin(loop, 0.005)
        assert keep.recv(100).startswith(b"old 0")
        assert calls == []
        if how == "sock_recv":
            assert not task.done()
        new_peer.send(b"new")
        spin(loop)
        if how == "add_reader":
            assert calls == [b"new"]
            assert loop.remove_reader(new.fileno()) is True
        else:
            assert run(loop, task) == b"new"
    finally:
        for s in (keep, new, new_peer, old_peer):
            s.close()


def test_transport_takes_socket_after_sock_ops(loop, pair):
    a, b = pair
    run(loop, round_trips(loop, a, b, rounds=10))

    class Proto(asyncio.Protocol):
        def __init__(self):
            self.data = loop.create_future()

        def data_received(self, data):
            if not self.data.done():
                self.data.set_result(data)

    async def main():
        tr, proto = await loop.create_unix_connection(Proto, sock=a)
        b.send(b"to the transport")
        try:
            return await proto.data
        finally:
            tr.close()
            await asyncio.sleep(0)

    assert run(loop, main()) == b"to the transport"


def open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_loop_close_after_sock_ops_leaks_nothing(loop_kind):
    gc.collect()
    before = open_fds()

    def build():
        lp = make_loop(loop_kind)
        a, b = nonblocking_pair()
        c, d = tcp_pair()
        try:
            run(lp, round_trips(lp, a, b, rounds=20))
            run(lp, round_trips(lp, c, d, rounds=20))
        finally:
            lp.close()
            for s in (a, b, c, d):
                s.close()
        return weakref.ref(lp)

    ref = build()
    for _ in range(3):
        gc.collect()
    assert ref() is None
    assert open_fds() == before


def test_cancelled_sock_recv_between_round_trips_loses_no_bytes(loop, pair):
    a, b = pair
    run(loop, round_trips(loop, a, b, rounds=20))

    async def main():
        for i in range(20):
            task = asyncio.ensure_future(loop.sock_recv(a, 100))
            await asyncio.sleep(0)
            assert not task.done()
            if i % 2:
                b.send(b"p%d" % i)  # ready in the same iteration as the cancel
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            if not i % 2:
                b.send(b"p%d" % i)
            assert await loop.sock_recv(a, 100) == b"p%d" % i

    run(loop, main())
    run(loop, round_trips(loop, a, b, rounds=5))


@pytest.mark.parametrize("loop_kind", ["oxloop"], indirect=True)
def test_steady_round_trips_make_no_epoll_ctl(loop):
    a, b = nonblocking_pair()
    try:
        run(loop, round_trips(loop, a, b, rounds=10))  # arm both fds
        ctl_before, idle = loop._io_ctl_counts()
        assert idle == 2
        assert loop.stats()["fds"] == 0  # idle fds are nobody's
        run(loop, round_trips(loop, a, b, rounds=ROUNDS))
        ctl_after, idle = loop._io_ctl_counts()
        assert idle == 2
        # Each round trip waited twice (a's and b's sock_recv): before,
        # two epoll_ctl per wait (add, then delete).
        assert ctl_after - ctl_before <= 4
    finally:
        a.close()
        b.close()
    loop.close()
    assert loop._io_ctl_counts()[1] == 0
