"""Helpers for the stream/server parity tests (loopback only)."""

import asyncio
import os
import socket


def stdlib_keycert():
    """CPython's own test certificate and key: Lib/test/certdata/keycert.pem
    from 3.11 on, Lib/test/keycert.pem on 3.9 and 3.10; None if the
    interpreter's test package is not installed."""
    import test
    base = os.path.dirname(test.__file__)
    for path in (os.path.join(base, "certdata", "keycert.pem"),
                 os.path.join(base, "keycert.pem")):
        if os.path.exists(path):
            return path
    return None


class RecordingProtocol(asyncio.Protocol):
    """Records every callback, in order, with its argument."""

    def __init__(self, loop, eof_keeps_open=False):
        self.loop = loop
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.eof_keeps_open = eof_keeps_open
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.got_eof = loop.create_future()
        self.paused = 0
        self.resumed = 0

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        assert isinstance(data, bytes)
        self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")
        self.got_eof.set_result(None)
        return self.eof_keeps_open

    def pause_writing(self):
        self.paused += 1

    def resume_writing(self):
        self.resumed += 1

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        if self.lost.done():
            raise AssertionError("connection_lost called twice")
        self.lost.set_result(exc)

    def lost_count(self):
        return sum(1 for e in self.events if isinstance(e, tuple))


def summary(events):
    """Events with runs of 'data' collapsed (reads may be split anywhere)."""
    out = []
    for e in events:
        if e == "data" and out and out[-1] == "data":
            continue
        out.append(e[0] if isinstance(e, tuple) else e)
    return out


async def serve(loop, factory, **kw):
    """A server on 127.0.0.1 and its port."""
    server = await loop.create_server(factory, "127.0.0.1", 0, **kw)
    return server, server.sockets[0].getsockname()[1]


async def wait_for(fut, timeout=10):
    return await asyncio.wait_for(fut, timeout)


def rst_close(sock):
    """Close with an RST (SO_LINGER 0)."""
    import struct
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
