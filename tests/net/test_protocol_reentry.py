"""A protocol whose attribute lookups call back into its transport.

The transport looks up the protocol's methods when a protocol is set
(`set_protocol`, and at connection start); a property or `__getattribute__`
runs user code there, and that code may use the transport (asyncio's own
transports allow it). oxloop's native transport must not hold its lock
while it looks them up, or such a protocol deadlocks the loop.
"""

import asyncio
import gc

from netutil import RecordingProtocol, serve, wait_for

# The lookups a transport makes when it takes a protocol: isinstance()
# reads `__class__` when the type check fails, then the hot methods.
_HOOKED = ("__class__", "data_received", "get_buffer", "buffer_updated",
           "connection_made")


def _touch(transport):
    """Everything a protocol may ask its transport, reading and writing
    its state. Works on a half-built asyncio transport too."""
    transport.get_extra_info("sockname")
    transport.get_extra_info("peername")


def _touch_fully(transport):
    _touch(transport)
    transport.is_closing()
    transport.get_write_buffer_size()
    transport.get_write_buffer_limits()
    if transport.is_reading():
        transport.pause_reading()
        transport.resume_reading()


class TouchingProtocol(RecordingProtocol):
    """A RecordingProtocol whose lookups of the methods a transport binds
    first call `touch` on each of `find()`'s transports (until armed is
    False)."""

    def __init__(self, loop, find, touch):
        super().__init__(loop)
        self.find = find
        self.touch = touch
        self.touched = []
        self.armed = True

    def __getattribute__(self, name):
        if name in _HOOKED:
            d = object.__getattribute__(self, "__dict__")
            if d.get("armed"):
                for t in d["find"]():
                    d["touch"](t)
                    d["touched"].append(t)
        return object.__getattribute__(self, name)


class TouchingBufferedProtocol(asyncio.BufferedProtocol):
    """The same for a BufferedProtocol (the transport looks up get_buffer
    and buffer_updated)."""

    def __init__(self, loop, find, touch):
        self.buf = bytearray(1024)
        self.data = bytearray()
        self.lost = loop.create_future()
        self.find = find
        self.touch = touch
        self.touched = []

    def __getattribute__(self, name):
        if name in _HOOKED:
            d = object.__getattribute__(self, "__dict__")
            for t in d["find"]():
                d["touch"](t)
                d["touched"].append(t)
        return object.__getattribute__(self, name)

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.data += self.buf[:nbytes]

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def _transports_being_made():
    """Every live transport object (the one a connection is starting
    included: the lookups run while it is made). By `type()`, which runs
    no `__getattribute__` (isinstance would, on the protocols themselves)."""
    return [o for o in gc.get_objects() if issubclass(type(o), asyncio.BaseTransport)]


def test_set_protocol_with_a_protocol_that_touches_its_transport(loop):
    async def main():
        server_protos = []

        def factory():
            p = RecordingProtocol(loop)
            server_protos.append(p)
            return p

        server, port = await serve(loop, factory)
        tr, first = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        second = TouchingProtocol(loop, lambda: [tr], _touch_fully)
        tr.set_protocol(second)
        assert tr in second.touched
        second.armed = False
        assert tr.get_protocol() is second
        # A BufferedProtocol's methods are looked up at once (oxloop) or
        # at each read (asyncio): either way, with the transport usable.
        third = TouchingBufferedProtocol(loop, lambda: [tr], _touch_fully)
        tr.set_protocol(third)
        assert tr.get_protocol() is third
        tr.set_protocol(second)
        while not server_protos:
            await asyncio.sleep(0)
        server_protos[0].transport.write(b"to the second")
        server_protos[0].transport.close()
        await wait_for(second.lost)
        assert bytes(second.data) == b"to the second"
        assert first.data == b""
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_connection_start_with_a_protocol_that_touches_its_transport(loop):
    async def main():
        made = []

        def factory():
            p = TouchingProtocol(loop, _transports_being_made, _touch)
            made.append(p)
            return p

        server, port = await serve(loop, factory)
        tr, client = await loop.create_connection(
            lambda: TouchingProtocol(loop, _transports_being_made, _touch),
            "127.0.0.1", port)
        client.armed = False
        # The lookups ran while this connection's transport was started.
        assert tr in client.touched
        tr.write(b"ping")
        while not made or not made[0].data:
            await asyncio.sleep(0)
        made[0].armed = False
        assert bytes(made[0].data) == b"ping"
        made[0].transport.write(b"pong")
        made[0].transport.close()
        await wait_for(client.lost)
        assert bytes(client.data) == b"pong"
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_buffered_connection_start_with_a_protocol_that_touches_its_transport(loop):
    async def main():
        server_protos = []

        def factory():
            p = RecordingProtocol(loop)
            server_protos.append(p)
            return p

        server, port = await serve(loop, factory)
        proto = TouchingBufferedProtocol(loop, _transports_being_made, _touch)
        tr, _ = await loop.create_connection(lambda: proto, "127.0.0.1", port)
        proto.find = list
        while not server_protos:
            await asyncio.sleep(0)
        server_protos[0].transport.write(b"buffered")
        server_protos[0].transport.close()
        await wait_for(proto.lost)
        assert bytes(proto.data) == b"buffered"
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
