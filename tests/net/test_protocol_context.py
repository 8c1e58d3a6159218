"""The contextvars.Context protocol callbacks run in, on both loops.

asyncio runs each transport callback from a handle, so each sees the context
of its handle: up to 3.14 `connection_made`/`connection_lost` a copy of the
context current where they were scheduled, reads a copy of the context where
reading was (re)started, the flush of buffered writes a copy of the context
of the `write()` that buffered; a server's connections start from the context
of `_start_serving`. From 3.15 on (gh-140947) the transports of
create_server/create_connection/connect_accepted_socket have one context of
their own. `OWN_CONTEXT` tells which model the running stdlib follows; the
stdlib half of each test checks the expectation itself.
"""

import asyncio
import contextvars
import inspect
import os
import socket
import ssl
import sys

import pytest
from netutil import wait_for

var = contextvars.ContextVar("var", default="unset")


def _own_context():
    from asyncio import selector_events
    make = selector_events.BaseSelectorEventLoop._make_socket_transport
    return "context" in inspect.signature(make).parameters


OWN_CONTEXT = _own_context()


def _cert():
    import test
    path = os.path.join(os.path.dirname(test.__file__), "certdata",
                        "keycert.pem")
    if not os.path.exists(path):
        pytest.skip("the stdlib's test certificates are not installed")
    return path


def tls_contexts():
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(_cert())
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return server, client


class Seen(asyncio.Protocol):
    """Records var's value in every callback; sets it to the callback's
    name afterwards (to see where a change is visible)."""

    def __init__(self, loop, name):
        self.name = name
        self.seen = [("init", var.get())]
        var.set(f"{name}-init")
        self.lost = loop.create_future()
        self.got = loop.create_future()
        self.transport = None

    def _see(self, what):
        self.seen.append((what, var.get()))
        var.set(f"{self.name}-{what}")

    def connection_made(self, transport):
        self.transport = transport
        self._see("made")

    def data_received(self, data):
        self._see("data")
        if not self.got.done():
            self.got.set_result(data)

    def eof_received(self):
        self._see("eof")

    def connection_lost(self, exc):
        self._see("lost")
        self.lost.set_result(exc)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_server_callbacks_context(loop, tls):
    server_tls, client_tls = tls_contexts() if tls else (None, None)

    async def main():
        var.set("before-server")
        protos = []

        def factory():
            p = Seen(loop, "srv")
            protos.append(p)
            return p

        server = await loop.create_server(factory, "127.0.0.1", 0,
                                          ssl=server_tls)
        var.set("after-server")
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_tls)
        writer.write(b"ping")
        await writer.drain()
        while not protos or not protos[0].got.done():
            await asyncio.sleep(0.001)
        if tls:
            writer.close()
        else:
            writer.write_eof()
        await wait_for(protos[0].lost)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        assert var.get() == "after-server"
        return protos[0].seen

    var.set("outside")
    seen = loop.run_until_complete(main())
    assert var.get() == "outside", "a callback leaked into the loop's context"
    got = dict(seen)
    assert got["init"] == "before-server"
    # The factory and connection_made share the connection's start.
    assert got["made"] == "srv-init"
    if OWN_CONTEXT:
        assert got["data"] == "srv-made"
    elif tls:
        # sslproto calls connection_made once the handshake is read.
        assert got["data"] == "srv-made"
    else:
        assert got["data"] == "srv-init"
    if not tls:
        assert got["eof"] == "srv-data"
        assert got["lost"] == "srv-eof"
    else:
        assert got["lost"] in ("srv-data", "srv-eof")


def test_server_factory_context_is_start_serving(loop):
    async def main():
        var.set("at-create")
        contexts = []

        def factory():
            contexts.append(var.get())
            var.set("factory")
            return Seen(loop, "srv")

        server = await loop.create_server(factory, "127.0.0.1", 0,
                                          start_serving=False)
        var.set("at-start")
        await server.start_serving()
        var.set("later")
        port = server.sockets[0].getsockname()[1]
        for _ in range(2):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            while len(contexts) < 1:
                await asyncio.sleep(0.001)
            w.close()
            await w.wait_closed()
        while len(contexts) < 2:
            await asyncio.sleep(0.001)
        server.close()
        await server.wait_closed()
        return contexts

    contexts = loop.run_until_complete(main())
    # Each connection starts from a fresh copy: the factory's change of the
    # first does not reach the second.
    expected = "at-create" if OWN_CONTEXT else "at-start"
    assert contexts == [expected, expected]


def test_client_callbacks_context(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        peers = []

        def on_conn(reader, writer):
            peers.append(writer)
            writer.write(b"hello")

        srv2 = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = srv2.sockets[0].getsockname()[1]
        var.set("before-connect")
        _, proto = await loop.create_connection(
            lambda: Seen(loop, "cli"), "127.0.0.1", port)
        # The factory ran in this task (and changed its context).
        assert var.get() == "cli-init"
        var.set("after-connect")
        await wait_for(proto.got)
        peers[0].close()
        await wait_for(proto.lost)
        assert var.get() == "after-connect"
        server.close()
        srv2.close()
        await srv2.wait_closed()
        return dict(proto.seen)

    var.set("outside")
    got = loop.run_until_complete(main())
    assert var.get() == "outside", "a callback leaked into the loop's context"
    assert got["init"] == "before-connect"
    if OWN_CONTEXT:
        # The transport's context was copied before the factory ran.
        assert got["made"] == "before-connect"
        assert got["data"] == "cli-made"
    else:
        assert got["made"] == "cli-init"
        assert got["data"] == "cli-init"
    assert got["eof"] == "cli-data"
    assert got["lost"] == "cli-eof"


# The test's own peer writes with a plain (blocking) socket/pipe call.
@pytest.mark.blocking_on_purpose
def test_resume_reading_context(loop):
    async def main():
        a, b = socket.socketpair()
        tr, proto = await loop.connect_accepted_socket(
            lambda: Seen(loop, "acc"), a)
        b.send(b"1")
        await wait_for(proto.got)
        tr.pause_reading()
        proto.got = loop.create_future()
        b.send(b"2")
        await asyncio.sleep(0.01)
        assert not proto.got.done()
        var.set("resumer")
        tr.resume_reading()
        await wait_for(proto.got)
        b.close()
        await wait_for(proto.lost)
        return proto.seen

    var.set("outside")
    seen = loop.run_until_complete(main())
    assert var.get() == "outside"
    datas = [v for what, v in seen if what == "data"]
    if OWN_CONTEXT:
        assert datas == ["acc-made", "acc-data"]
    else:
        # Resuming adds the reader again, in a copy of the caller's context.
        assert datas == ["acc-init", "resumer"]


class Flow(asyncio.Protocol):
    def __init__(self):
        self.resumed = []
        self.paused = []

    def connection_made(self, transport):
        self.transport = transport

    def pause_writing(self):
        self.paused.append(var.get())

    def resume_writing(self):
        self.resumed.append(var.get())


def test_write_flow_callbacks_context(loop):
    async def main():
        a, b = socket.socketpair()
        b.setblocking(False)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        var.set("connect")
        tr, proto = await loop.connect_accepted_socket(Flow, a)
        tr.set_write_buffer_limits(high=1024, low=0)
        var.set("writer")
        tr.write(b"x" * 1024 * 1024)
        assert proto.paused == ["writer"]
        var.set("later")
        while tr.get_write_buffer_size():
            try:
                b.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.001)
        tr.close()
        b.close()
        return proto.resumed

    resumed = loop.run_until_complete(main())
    # The flush runs where asyncio's writer handle runs: a copy of the
    # context of the write() that buffered (3.15+: the transport's own).
    assert resumed == (["connect"] if OWN_CONTEXT else ["writer"])


# The test's own peer writes with a plain (blocking) socket/pipe call.
@pytest.mark.blocking_on_purpose
def test_datagram_callbacks_context(loop):
    class Dgram(asyncio.DatagramProtocol):
        def __init__(self):
            self.seen = []
            self.got = loop.create_future()

        def connection_made(self, transport):
            self.seen.append(("made", var.get()))
            var.set("made")

        def datagram_received(self, data, addr):
            self.seen.append(("data", var.get()))
            var.set("data")
            if not self.got.done():
                self.got.set_result(data)

        def connection_lost(self, exc):
            self.seen.append(("lost", var.get()))

    async def main():
        var.set("before")
        tr, proto = await loop.create_datagram_endpoint(
            Dgram, local_addr=("127.0.0.1", 0))
        var.set("after")
        addr = tr.get_extra_info("sockname")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"x", addr)
            await wait_for(proto.got)
        var.set("closer")
        tr.close()
        await asyncio.sleep(0.01)
        return proto.seen

    var.set("outside")
    seen = loop.run_until_complete(main())
    assert var.get() == "outside", "a callback leaked into the loop's context"
    assert seen == [("made", "before"), ("data", "before"), ("lost", "closer")]


# The test's own peer writes with a plain (blocking) socket/pipe call.
@pytest.mark.blocking_on_purpose
def test_read_pipe_callbacks_context(loop):
    async def main():
        r, w = os.pipe()
        var.set("before")
        proto = Seen(loop, "pipe")
        await loop.connect_read_pipe(lambda: proto, os.fdopen(r, "rb"))
        var.set("after")
        os.write(w, b"x")
        await wait_for(proto.got)
        os.close(w)
        await wait_for(proto.lost)
        return dict(proto.seen)

    var.set("outside")
    got = loop.run_until_complete(main())
    assert var.get() == "outside", "a callback leaked into the loop's context"
    assert got["made"] == "pipe-init"
    assert got["data"] == "pipe-init"
    # asyncio schedules eof_received and connection_lost together.
    assert got["eof"] == "pipe-data"
    assert got["lost"] == "pipe-data"


def test_subprocess_pipe_data_context(loop):
    class Proc(asyncio.SubprocessProtocol):
        def __init__(self):
            self.seen = []
            self.done = loop.create_future()

        def connection_made(self, transport):
            self.seen.append(("made", var.get()))

        def pipe_data_received(self, fd, data):
            self.seen.append(("data", var.get()))
            var.set("data")

        def process_exited(self):
            self.seen.append(("exited", var.get()))
            var.set("exited")

        def connection_lost(self, exc):
            self.seen.append(("lost", var.get()))
            self.done.set_result(None)

    async def main():
        var.set("before")
        tr, proto = await loop.subprocess_exec(
            Proc, sys.executable, "-c",
            # stdout closes well before the exit: connection_lost follows
            # process_exited.
            "import os, time; print('x', flush=True); os.close(1); "
            "time.sleep(0.5)",
            stdin=None, stderr=None)
        var.set("after")
        await wait_for(proto.done)
        tr.close()
        return proto.seen

    var.set("outside")
    seen = loop.run_until_complete(main())
    assert var.get() == "outside", "a callback leaked into the loop's context"
    assert seen[0] == ("made", "before")
    assert set(seen[1:-2]) == {("data", "before")}
    # Up to 3.11 the stdlib reaps from a thread: the exit is reported in a
    # new thread's empty context; from 3.12 on, from the pidfd's reader.
    exit_ctx = "before" if sys.version_info >= (3, 12) else "unset"
    assert seen[-2:] == [("exited", exit_ctx), ("lost", exit_ctx)]


# The test's own peer writes with a plain (blocking) socket/pipe call.
@pytest.mark.blocking_on_purpose
def test_buffered_protocol_context(loop):
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.seen = []
            self.buf = bytearray(64)
            self.lost = loop.create_future()

        def get_buffer(self, sizehint):
            self.seen.append(("get", var.get()))
            var.set("get")
            return self.buf

        def buffer_updated(self, nbytes):
            self.seen.append(("updated", var.get()))
            var.set("updated")

        def eof_received(self):
            self.seen.append(("eof", var.get()))

        def connection_lost(self, exc):
            self.lost.set_result(None)

    async def main():
        a, b = socket.socketpair()
        var.set("before")
        _, proto = await loop.connect_accepted_socket(Buffered, a)
        var.set("after")
        b.send(b"x")
        b.shutdown(socket.SHUT_WR)
        await wait_for(proto.lost)
        b.close()
        return proto.seen

    var.set("outside")
    seen = loop.run_until_complete(main())
    assert var.get() == "outside", "a callback leaked into the loop's context"
    # One reader context for all of them (a copy made where reading began).
    # (the EOF is a recv() of 0 bytes into a fresh get_buffer()).
    assert seen[:2] == [("get", "before"), ("updated", "get")]
    assert seen[-2:] == [("get", "updated"), ("eof", "get")]


def test_start_server_handler_context(loop):
    async def main():
        var.set("at-start-server")
        got = []

        async def handler(reader, writer):
            got.append(var.get())
            var.set("handler")
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        var.set("after")
        port = server.sockets[0].getsockname()[1]
        for _ in range(2):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            await r.read()
            w.close()
            await w.wait_closed()
        server.close()
        await server.wait_closed()
        assert var.get() == "after"
        return got

    var.set("outside")
    got = loop.run_until_complete(main())
    assert got == ["at-start-server", "at-start-server"]
    assert var.get() == "outside"
