"""create_datagram_endpoint and the datagram transport: echo, connected and
unconnected sendto, error_received, socket options, argument errors, extra
info, flow-control limits, pause/resume reading, close/abort."""

import asyncio
import os
import socket
import sys
import tempfile

import pytest

TIMEOUT = 10
PY311 = sys.version_info >= (3, 11)
# CPython 3.13's _SelectorDatagramTransport adds 8 header bytes per buffered
# datagram to the write buffer size but never takes them off again, so its
# size does not return to 0 after draining (oxloop takes them off).
STDLIB_313_BUFFER_BUG = sys.version_info >= (3, 13)


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))


class Proto(asyncio.DatagramProtocol):
    def __init__(self, echo=False):
        self.echo = echo
        self.transport = None
        self.datagrams = asyncio.Queue()
        self.errors = []
        self.lost = None
        self.events = []

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport

    def datagram_received(self, data, addr):
        if self.echo:
            self.transport.sendto(data.upper(), addr)
        self.datagrams.put_nowait((data, addr))

    def error_received(self, exc):
        self.errors.append(exc)

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost = exc


def unused_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def close_and_settle(loop, *transports):
    for t in transports:
        t.close()
    loop.run_until_complete(asyncio.sleep(0.01))


def test_echo_unconnected_and_connected(loop):
    async def main():
        st, sp = await loop.create_datagram_endpoint(
            lambda: Proto(echo=True), local_addr=("127.0.0.1", 0))
        server_addr = st.get_extra_info("sockname")
        # Unconnected client: sendto with an address.
        ut, up = await loop.create_datagram_endpoint(
            Proto, local_addr=("127.0.0.1", 0))
        ut.sendto(b"one", server_addr)
        assert await up.datagrams.get() == (b"ONE", server_addr)
        # Connected client: sendto without an address (or the same one).
        ct, cp = await loop.create_datagram_endpoint(Proto, remote_addr=server_addr)
        ct.sendto(b"two")
        ct.sendto(bytearray(b"three"), server_addr)
        ct.sendto(memoryview(b"four"))
        got = [await cp.datagrams.get() for _ in range(3)]
        assert got == [(b"TWO", server_addr), (b"THREE", server_addr), (b"FOUR", server_addr)]
        assert cp.errors == [] and up.errors == []
        return st, ut, ct

    transports = run(loop, main())
    close_and_settle(loop, *transports)


def test_transport_is_asyncio_transport_with_extra_info(loop):
    async def main():
        tr, pr = await loop.create_datagram_endpoint(
            Proto, local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", unused_udp_port()))
        return tr, pr

    tr, pr = run(loop, main())
    assert isinstance(tr, asyncio.BaseTransport)
    assert isinstance(tr, asyncio.Transport)
    sock = tr.get_extra_info("socket")
    assert sock.family == socket.AF_INET and sock.type == socket.SOCK_DGRAM
    assert tr.get_extra_info("sockname") == sock.getsockname()
    assert tr.get_extra_info("peername") == sock.getpeername()
    assert tr.get_extra_info("nonexistent", "dflt") == "dflt"
    assert tr.get_protocol() is pr
    assert tr.get_write_buffer_size() == 0
    assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
    tr.set_write_buffer_limits(high=1000)
    assert tr.get_write_buffer_limits() == (250, 1000)
    with pytest.raises(ValueError):
        tr.set_write_buffer_limits(high=1, low=2)
    assert not tr.is_closing()
    close_and_settle(loop, tr)
    assert tr.is_closing()
    assert pr.events == ["made", "lost"]


def test_connected_sendto_unreachable_gets_connection_refused(loop):
    async def main():
        tr, pr = await loop.create_datagram_endpoint(
            Proto, remote_addr=("127.0.0.1", unused_udp_port()))
        tr.sendto(b"x")
        deadline = loop.time() + 5
        while not pr.errors and loop.time() < deadline:
            await asyncio.sleep(0.01)
            tr.sendto(b"again")
        return tr, pr

    tr, pr = run(loop, main())
    assert pr.errors, "error_received was not called"
    assert all(isinstance(e, ConnectionRefusedError) for e in pr.errors)
    assert pr.errors[0].errno is not None
    assert not tr.is_closing()
    close_and_settle(loop, tr)


def test_sendto_wrong_address_on_connected_endpoint(loop):
    async def main():
        return await loop.create_datagram_endpoint(
            Proto, remote_addr=("127.0.0.1", unused_udp_port()))

    tr, pr = run(loop, main())
    with pytest.raises(ValueError, match="Invalid address"):
        tr.sendto(b"x", ("127.0.0.1", 1))
    with pytest.raises(TypeError, match="bytes-like"):
        tr.sendto("text")
    close_and_settle(loop, tr)


def test_sendto_after_close_is_ignored(loop):
    async def main():
        return await loop.create_datagram_endpoint(
            Proto, remote_addr=("127.0.0.1", unused_udp_port()))

    tr, pr = run(loop, main())
    close_and_settle(loop, tr)
    tr.sendto(b"ignored")  # neither raises nor reaches the handler
    assert pr.events == ["made", "lost"]


def test_abort_calls_connection_lost_once(loop):
    async def main():
        return await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))

    tr, pr = run(loop, main())
    sock = tr.get_extra_info("socket")
    tr.abort()
    tr.abort()
    tr.close()
    loop.run_until_complete(asyncio.sleep(0.01))
    assert pr.events == ["made", "lost"]
    assert pr.lost is None
    assert sock.fileno() == -1


@pytest.mark.skipif(not PY311, reason="datagram transports pause reading since 3.11")
def test_pause_and_resume_reading(loop):
    async def main():
        rt, rp = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
        st, sp = await loop.create_datagram_endpoint(
            Proto, remote_addr=rt.get_extra_info("sockname"))
        assert rt.is_reading()
        rt.pause_reading()
        assert not rt.is_reading()
        st.sendto(b"while paused")
        await asyncio.sleep(0.05)
        assert rp.datagrams.empty()
        rt.resume_reading()
        assert rt.is_reading()
        data, _ = await rp.datagrams.get()
        assert data == b"while paused"
        return rt, st

    close_and_settle(loop, *run(loop, main()))


def test_many_datagrams_all_delivered_in_order(loop):
    n = 500

    async def main():
        rt, rp = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
        rt.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        st, sp = await loop.create_datagram_endpoint(
            Proto, remote_addr=rt.get_extra_info("sockname"))
        for i in range(n):
            st.sendto(b"%d" % i)
        got = [int((await rp.datagrams.get())[0]) for _ in range(n)]
        return rt, st, got

    rt, st, got = run(loop, main())
    assert got == list(range(n))
    close_and_settle(loop, rt, st)


def test_allow_broadcast_sets_so_broadcast(loop):
    async def main():
        return await loop.create_datagram_endpoint(
            Proto, local_addr=("127.0.0.1", 0), allow_broadcast=True)

    tr, _ = run(loop, main())
    sock = tr.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
    close_and_settle(loop, tr)


def test_without_broadcast_option_is_off(loop):
    async def main():
        return await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))

    tr, _ = run(loop, main())
    assert not tr.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
    close_and_settle(loop, tr)


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_reuse_port_allows_two_endpoints_on_one_port(loop):
    async def main():
        t1, _ = await loop.create_datagram_endpoint(
            Proto, local_addr=("127.0.0.1", 0), reuse_port=True)
        port = t1.get_extra_info("sockname")[1]
        t2, _ = await loop.create_datagram_endpoint(
            Proto, local_addr=("127.0.0.1", port), reuse_port=True)
        return t1, t2

    t1, t2 = run(loop, main())
    for t in (t1, t2):
        assert t.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    assert t1.get_extra_info("sockname") == t2.get_extra_info("sockname")
    close_and_settle(loop, t1, t2)


def test_address_in_use_without_reuse_port(loop):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(OSError) as info:
            run(loop, loop.create_datagram_endpoint(Proto, local_addr=taken.getsockname()))
        assert info.value.errno is not None


def test_existing_sock(loop):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    async def main():
        return await loop.create_datagram_endpoint(Proto, sock=sock)

    tr, pr = run(loop, main())
    assert sock.gettimeout() == 0
    assert tr.get_extra_info("socket").fileno() == sock.fileno()
    close_and_settle(loop, tr)
    assert sock.fileno() == -1


@pytest.mark.parametrize("kwargs, exc, match", [
    ({}, ValueError, "unexpected address family"),
    ({"family": socket.AF_UNIX, "local_addr": ("127.0.0.1", 0)}, TypeError, "string is expected"),
    ({"local_addr": "127.0.0.1"},
     AssertionError if sys.version_info[:2] == (3, 10) else TypeError, "2-tuple is expected"),
    ({"local_addr": ("127.0.0.1", 0), "family": socket.AF_INET6}, socket.gaierror, None),
    ({"ssl": True}, TypeError, "ssl"),
])
def test_bad_arguments(loop, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        run(loop, loop.create_datagram_endpoint(Proto, **kwargs))


@pytest.mark.skipif(not PY311, reason="reuse_address was removed in 3.11")
def test_reuse_address_is_not_a_parameter(loop):
    with pytest.raises(TypeError, match="reuse_address"):
        run(loop, loop.create_datagram_endpoint(
            Proto, local_addr=("127.0.0.1", 0), reuse_address=True))


def test_sock_with_modifiers_is_value_error(loop):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(ValueError, match="socket modifier keyword arguments"):
            run(loop, loop.create_datagram_endpoint(
                Proto, sock=sock, local_addr=("127.0.0.1", 0)))


def test_stream_sock_is_value_error(loop):
    expected = ("A datagram socket was expected" if sys.version_info >= (3, 13)
                else "A UDP Socket was expected")
    with socket.socket() as sock:
        with pytest.raises(ValueError, match=expected):
            run(loop, loop.create_datagram_endpoint(Proto, sock=sock))


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no AF_UNIX")
def test_unix_datagram_endpoints(loop):
    tmp = tempfile.mkdtemp()
    server_path = os.path.join(tmp, "srv.sock")
    client_path = os.path.join(tmp, "cli.sock")

    async def main():
        st, sp = await loop.create_datagram_endpoint(
            lambda: Proto(echo=True), local_addr=server_path, family=socket.AF_UNIX)
        ct, cp = await loop.create_datagram_endpoint(
            Proto, local_addr=client_path, remote_addr=server_path, family=socket.AF_UNIX)
        ct.sendto(b"unix")
        got_client = await cp.datagrams.get()
        got_server = await sp.datagrams.get()
        return st, ct, got_client, got_server

    st, ct, got_client, got_server = run(loop, main())
    assert got_server == (b"unix", client_path)
    assert got_client == (b"UNIX", server_path)
    close_and_settle(loop, st, ct)
    for p in (server_path, client_path):
        os.unlink(p)
    os.rmdir(tmp)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no AF_UNIX")
def test_flow_control_pause_and_resume_writing(loop, loop_kind):
    # A Unix datagram receiver that does not read makes sends block, so the
    # transport buffers, pauses the protocol, and resumes it once drained.
    if loop_kind == "asyncio" and STDLIB_313_BUFFER_BUG:
        pytest.xfail("CPython 3.13: the buffer size never drops back, "
                     "so resume_writing is never called")
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "rcv.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.setblocking(False)
    n, size = 3000, 1000

    class Flow(Proto):
        def pause_writing(self):
            self.events.append("pause")

        def resume_writing(self):
            self.events.append("resume")

    async def main():
        tr, pr = await loop.create_datagram_endpoint(
            Flow, remote_addr=path, family=socket.AF_UNIX)
        tr.set_write_buffer_limits(high=8 * size, low=2 * size)
        for i in range(n):
            tr.sendto(b"%08d" % i + b"." * (size - 8))
        assert tr.get_write_buffer_size() > 8 * size
        assert pr.events == ["made", "pause"]
        got = []
        while len(got) < n:
            try:
                got.append(int(receiver.recv(size)[:8]))
            except BlockingIOError:
                await asyncio.sleep(0.001)
        assert tr.get_write_buffer_size() == 0
        return tr, pr, got

    try:
        tr, pr, got = run(loop, main())
        assert got == list(range(n))
        assert pr.events == ["made", "pause", "resume"]
        assert pr.errors == []
        close_and_settle(loop, tr)
    finally:
        receiver.close()
        os.unlink(path)
        os.rmdir(tmp)


def test_close_waits_for_buffered_datagrams(loop):
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no AF_UNIX")
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "rcv.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.setblocking(False)
    n = 2000

    async def main():
        tr, pr = await loop.create_datagram_endpoint(
            Proto, remote_addr=path, family=socket.AF_UNIX)
        for i in range(n):
            tr.sendto(b"%08d" % i + b"." * 992)
        assert tr.get_write_buffer_size() > 0
        tr.close()
        assert tr.is_closing()
        await asyncio.sleep(0.01)
        assert pr.events == ["made"]  # still draining
        got = 0
        while got < n:
            try:
                receiver.recv(1000)
                got += 1
            except BlockingIOError:
                await asyncio.sleep(0.001)
        for _ in range(100):
            if "lost" in pr.events:
                break
            await asyncio.sleep(0.001)
        return pr

    try:
        pr = run(loop, main())
        assert pr.events == ["made", "lost"]
        assert pr.lost is None
    finally:
        receiver.close()
        os.unlink(path)
        os.rmdir(tmp)


def test_ipv6_echo(loop):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")

    async def main():
        st, sp = await loop.create_datagram_endpoint(
            lambda: Proto(echo=True), local_addr=("::1", 0))
        addr = st.get_extra_info("sockname")
        ct, cp = await loop.create_datagram_endpoint(Proto, remote_addr=addr[:2])
        ct.sendto(b"six")
        data, from_addr = await cp.datagrams.get()
        server_seen = await sp.datagrams.get()
        return st, ct, data, from_addr, server_seen

    st, ct, data, from_addr, server_seen = run(loop, main())
    assert data == b"SIX"
    assert from_addr == st.get_extra_info("sockname")
    assert server_seen[1] == ct.get_extra_info("sockname")
    close_and_settle(loop, st, ct)


def test_datagram_received_error_goes_to_handler_and_reading_continues(loop, expect_errors):
    class Failing(Proto):
        def datagram_received(self, data, addr):
            if data == b"boom":
                raise ZeroDivisionError("from datagram_received")
            super().datagram_received(data, addr)

    async def main():
        rt, rp = await loop.create_datagram_endpoint(Failing, local_addr=("127.0.0.1", 0))
        st, sp = await loop.create_datagram_endpoint(
            Proto, remote_addr=rt.get_extra_info("sockname"))
        st.sendto(b"boom")
        st.sendto(b"after")
        data, _ = await rp.datagrams.get()
        return rt, st, data

    rt, st, data = run(loop, main())
    assert data == b"after"
    errors = expect_errors()
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], ZeroDivisionError)
    assert not rt.is_closing()
    close_and_settle(loop, rt, st)


def test_loop_and_transport_are_collected(loop_kind):
    import gc
    import weakref

    from helpers import make_loop

    gc.collect()

    def build():
        # Only weak references leave this function.
        loop = make_loop(loop_kind)

        async def main():
            return await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))

        tr, pr = loop.run_until_complete(main())
        tr.sendto(b"to self", tr.get_extra_info("sockname"))
        loop.run_until_complete(pr.datagrams.get())
        tr.close()
        loop.run_until_complete(asyncio.sleep(0.01))
        loop.close()
        return [weakref.ref(loop), weakref.ref(tr)]

    refs = build()
    for _ in range(3):
        gc.collect()
    assert [r() for r in refs] == [None, None]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_unconnected_sendto_numeric_and_named_hosts(loop, host):
    async def main():
        rt, rp = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
        port = rt.get_extra_info("sockname")[1]
        st, sp = await loop.create_datagram_endpoint(
            Proto, local_addr=("127.0.0.1", 0), family=socket.AF_INET)
        st.sendto(b"hi", (host, port))
        data, addr = await rp.datagrams.get()
        return rt, st, data, addr

    rt, st, data, addr = run(loop, main())
    assert data == b"hi"
    assert addr == st.get_extra_info("sockname")
    close_and_settle(loop, rt, st)


def test_sendto_bad_port_is_a_fatal_error(loop, expect_errors):
    async def main():
        return await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))

    tr, pr = run(loop, main())
    tr.sendto(b"x", ("127.0.0.1", 70000))
    loop.run_until_complete(asyncio.sleep(0.01))
    errors = expect_errors()
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], OverflowError)
    assert errors[0]["message"] == "Fatal write error on datagram transport"
    assert tr.is_closing()
    assert pr.events == ["made", "lost"]
    assert isinstance(pr.lost, OverflowError)


def test_add_reader_on_transport_fd_is_refused(loop):
    async def main():
        return await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))

    tr, pr = run(loop, main())
    fd = tr.get_extra_info("socket").fileno()
    with pytest.raises(RuntimeError, match=f"File descriptor {fd} is used by transport"):
        loop.add_reader(fd, lambda: None)
    with pytest.raises(RuntimeError, match="is used by transport"):
        loop.add_writer(fd, lambda: None)
    close_and_settle(loop, tr)


def test_endpoint_steps_keep_their_place_among_user_callbacks(loop):
    # connection_made, the start of reading, the waiter and close()'s
    # connection_lost are queued where asyncio's call_soon puts them; after
    # connection_lost the socket is closed.
    order = []

    class OrderProto(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            order.append("made")
            loop.call_soon(order.append, "soon in made")

        def connection_lost(self, exc):
            order.append(("lost", exc))

    async def main():
        tr, _ = await loop.create_datagram_endpoint(
            OrderProto, local_addr=("127.0.0.1", 0))
        sock = tr.get_extra_info("socket")
        order.append("connected")
        loop.call_soon(order.append, "soon before close")
        tr.close()
        loop.call_soon(order.append, "soon after close")
        for _ in range(3):
            await asyncio.sleep(0)
        assert order == ["made", "soon in made", "connected",
                         "soon before close", ("lost", None),
                         "soon after close"]
        assert sock.fileno() == -1

    run(loop, main())
