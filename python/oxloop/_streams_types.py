"""The stream transport and server classes of oxloop (see `_streams`).

`TCPTransport`/`UnixTransport` are thin `asyncio.Transport` subclasses over a
native `oxloop._core.StreamTransport`; the core's hot methods are bound onto
each instance on first use, so a `write` is one native call. `Server` is asyncio's
`Server` with a native accept loop (`oxloop._core.StreamListener`) per
listening socket.
"""

import contextvars
import functools
import inspect
import os
import socket
import sys
from asyncio import base_events, constants, events, exceptions, streams, tasks, transports, trsock

from . import _core
from ._transport_base import CoreDelegates, OwnedCore

__all__ = ("Server", "TCPTransport", "UnixTransport",
           "hand_buffered_data_to_tls")


def _nothing():
    pass


_PY3121 = sys.version_info >= (3, 12, 1)
# asyncio's serve_forever() closes the clients when it is cancelled from
# 3.14 on (and in late 3.13 releases): follow the installed stdlib.
_SERVE_FOREVER_CLOSES_CLIENTS = (
    "close_clients" in getattr(getattr(base_events, "Server", None),
                               "serve_forever", _nothing).__code__.co_names)
_PY313 = sys.version_info >= (3, 13)


def _stdlib_gives_own_context():
    # CPython 3.15 (gh-140947) gives each transport of create_server/
    # create_connection a context of its own; earlier ones run each callback
    # in a copy of the context current where asyncio scheduled it.
    from asyncio import selector_events
    make = selector_events.BaseSelectorEventLoop._make_socket_transport
    return "context" in inspect.signature(make).parameters


#: Whether stream transports have a context of their own (see `contexts.rs`).
OWN_CONTEXT = _stdlib_gives_own_context()


def wants_nodelay(sock):
    """asyncio's `_set_nodelay` rule."""
    return (sock.family in (socket.AF_INET, socket.AF_INET6)
            and sock.type == socket.SOCK_STREAM
            and sock.proto == socket.IPPROTO_TCP)


class _SocketTransport(OwnedCore, CoreDelegates, transports.Transport):
    """A stream transport over a native `StreamTransport` core."""

    # `write` and `writelines` are bound on first use: the first call
    # stores the core's bound method in the instance, which wins over the
    # class's function from then on, so every later call is one native
    # call, and a connection that never writes never holds the bound method
    # (72 bytes). Plain functions, not a descriptor class: CPython 3.12+'s
    # attribute specializer caches an instance attribute that shadows a
    # function, but not one that shadows an object of a custom descriptor
    # type (`t.write` lookup 41 -> 20 ns on 3.14). `is_closing` (once per
    # `drain`) and `get_extra_info` (a few times per connection) stay plain
    # methods, so a connection never holds them bound.
    def write(self, data):
        write = self.write = self._core.write
        return write(data)

    def writelines(self, list_of_data):
        writelines = self.writelines = self._core.writelines
        return writelines(list_of_data)

    def get_extra_info(self, name, default=None):
        return self._core.get_extra_info(name, default)

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    # asyncio's public read size (the native reads use as much).
    max_size = 256 * 1024

    def __init__(self, core):
        # BaseTransport.__init__ is skipped: extra info lives in the core.
        self._extra = None
        self._core = core
        # The hot methods are the core's, bound on first use (`write`).

    def _force_close(self, exc):
        self._core._force_close(exc)

    def write_eof(self):
        self._core.write_eof()

    def can_write_eof(self):
        return True

    def is_reading(self):
        return self._core.is_reading()

    def pause_reading(self):
        self._core.pause_reading()

    def resume_reading(self):
        self._core.resume_reading()

    def set_protocol(self, protocol):
        self._core.set_protocol(protocol)

    @property
    def _loop(self):
        return self._core._loop

    @property
    def _protocol_paused(self):
        return self._core._protocol_paused

    @property
    def _sock_fd(self):
        return self._core._sock_fd

    @property
    def _paused(self):
        # asyncio's selector transports keep "reading paused by
        # pause_reading()" in `_paused`, and code polls it (CPython 3.15's
        # test_server_context does): the same fact, for an open transport.
        return not self._core.is_closing() and not self._core.is_reading()


def hand_buffered_data_to_tls(protocol, ssl_protocol):
    """start_tls(server_side=True) on a stream: what the StreamReader has
    buffered but not read (e.g. a ClientHello that came with the request
    asking for TLS) is TLS data; it goes to the TLS protocol, not lost
    (gh-142352, as asyncio does from 3.14 on)."""
    if not isinstance(protocol, streams.StreamReaderProtocol):
        return
    reader = getattr(protocol, "_stream_reader", None)
    incoming = getattr(ssl_protocol, "_incoming", None)
    if reader is None or incoming is None:
        return
    buffer = reader._buffer
    if buffer:
        incoming.write(buffer)
        buffer.clear()


class TCPTransport(_SocketTransport):
    """A TCP stream transport."""


class UnixTransport(_SocketTransport):
    """A Unix-domain stream transport."""


def transport_class(family):
    return UnixTransport if family == getattr(socket, "AF_UNIX", None) \
        else TCPTransport


class Server(events.AbstractServer):
    """What `create_server()` returns (asyncio's `Server` semantics)."""

    def __init__(self, loop, sockets, protocol_factory, ssl_context, backlog,
                 ssl_handshake_timeout, ssl_shutdown_timeout=None):
        self._loop = loop
        self._sockets = sockets
        self._active_count = 0
        self._waiters = []
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._ssl_context = ssl_context
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._serving = False
        self._serving_forever_fut = None
        self._listeners = []
        self._clients = set()
        self._unix_cleanup = []
        # 3.15+: every connection gets a copy of this one.
        self._context = contextvars.copy_context() if OWN_CONTEXT else None

    def __repr__(self):
        return f"<{self.__class__.__name__} sockets={self.sockets!r}>"

    # The transport argument is new in 3.13; 3.12's Server counts its
    # connections with argument-less _attach()/_detach(), which code
    # written for 3.12 (its own test suite included) calls.
    def _attach(self, transport=None):
        assert self._sockets is not None
        self._active_count += 1
        if transport is not None and _PY313:
            # Only close_clients()/abort_clients() (3.13+) read the set:
            # before them an idle connection does not pay for an entry.
            self._clients.add(transport)

    def _detach(self, transport=None):
        assert self._active_count > 0
        self._active_count -= 1
        if transport is not None:
            self._clients.discard(transport)
        if self._active_count == 0 and self._sockets is None:
            self._wakeup()

    def _wakeup(self):
        waiters = self._waiters
        self._waiters = None
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(waiter)

    def _protocol_factory_for_listener(self):
        if self._ssl_context is None:
            return self._protocol_factory
        return functools.partial(
            self._loop._stream_ssl_protocol, self._protocol_factory,
            self._ssl_context, self._ssl_handshake_timeout,
            self._ssl_shutdown_timeout)

    def _start_serving(self):
        if self._serving:
            return
        self._serving = True
        factory = self._protocol_factory_for_listener()
        # Before 3.15 a connection sees a copy of the context current here
        # (that of asyncio's reader handle on the listening socket).
        context = (self._context if OWN_CONTEXT
                   else contextvars.copy_context())
        for sock in self._sockets:
            sock.listen(self._backlog)
            listener = _core.StreamListener(
                self._loop, sock, factory, self, transport_class(sock.family),
                self._backlog, wants_nodelay(sock), context, OWN_CONTEXT)
            listener.start()
            self._listeners.append(listener)

    def get_loop(self):
        return self._loop

    def is_serving(self):
        return self._serving

    @property
    def sockets(self):
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(s) for s in self._sockets)

    def close(self):
        sockets = self._sockets
        if sockets is None:
            return
        self._sockets = None
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.close()
        for sock in sockets:
            sock.close()
        for path, ino in self._unix_cleanup:
            _core.unlink_if_inode(os.fsencode(path), ino)
        self._unix_cleanup = []
        self._serving = False
        if (self._serving_forever_fut is not None
                and not self._serving_forever_fut.done()):
            self._serving_forever_fut.cancel()
            self._serving_forever_fut = None
        if self._active_count == 0:
            self._wakeup()

    if _PY313:  # new in 3.13
        def close_clients(self):
            for transport in list(self._clients):
                transport.close()

        def abort_clients(self):
            for transport in list(self._clients):
                transport.abort()

    async def start_serving(self):
        self._start_serving()
        # One iteration, as asyncio does.
        await tasks.sleep(0)

    async def serve_forever(self):
        if self._serving_forever_fut is not None:
            raise RuntimeError(
                f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except exceptions.CancelledError:
            try:
                self.close()
                if _SERVE_FOREVER_CLOSES_CLIENTS:
                    self.close_clients()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self):
        if _PY3121:
            if self._waiters is None:
                return
        elif self._sockets is None or self._waiters is None:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter
