"""Stream networking (TCP and Unix transports, servers) for oxloop.

`StreamsMixin` is one of `oxloop.Loop`'s bases. The transports and the
accept loops are native (`oxloop._core.StreamTransport`,
`oxloop._core.StreamListener`); this module holds the long tail that Python
does naturally: argument checking with asyncio's exact errors, name
binding and serving, start_tls. `_streams_connect` holds connecting
(functions bound as `StreamsMixin` methods), `_streams_types` the transport
and `Server` classes, `_streams_sendfile` the orchestration of
`loop.sendfile()`.

The transport object user code sees is `TCPTransport`/`UnixTransport`, a
thin `asyncio.Transport` subclass over a native core; its hot methods
(`write`, `writelines`) are the core's own bound methods, set on the
instance on first use.
"""

import collections.abc
import contextvars
import errno
import itertools
import logging
import os
import socket
import sys
from asyncio import tasks

from . import _core, _streams_connect, _streams_sendfile
from ._netutil import (
    check_ssl_socket,
    check_ssl_timeouts,
    check_unix_stream_socket,
    remove_stale_socket_file,
    set_reuseport,
    unix_stream_socket_for,
)
from ._resolve import ensure_resolved
from ._streams_types import (
    OWN_CONTEXT,
    Server,
    TCPTransport,
    UnixTransport,
    hand_buffered_data_to_tls,
    transport_class,
    wants_nodelay,
)

try:
    import ssl as _ssl
except ImportError:  # pragma: no cover
    _ssl = None

__all__ = ("StreamsMixin", "Server", "TCPTransport", "UnixTransport")

logger = logging.getLogger("asyncio")

_PY313 = sys.version_info >= (3, 13)
_HAS_IPv6 = hasattr(socket, "AF_INET6")
# gh-153133 (CPython 3.14): create_connection(sock=...) closes the socket
# when the protocol or the transport cannot be made; before, the caller's
# socket stayed open.
_CLOSE_SOCK_WITHOUT_TRANSPORT = sys.version_info >= (3, 14)


class StreamsMixin:
    """create_connection, create_server, their Unix variants,
    connect_accepted_socket, start_tls and sendfile."""

    __slots__ = ()

    # Connecting (`_streams_connect`).
    create_connection = _streams_connect.create_connection
    create_unix_connection = _streams_connect.create_unix_connection
    connect_accepted_socket = _streams_connect.connect_accepted_socket
    _stream_connect_sock = _streams_connect.stream_connect_sock

    # -- transports --------------------------------------------------------

    def _stream_make_socket_transport(self, sock, protocol, waiter=None, *,
                               extra=None, server=None, context=None):
        cls = transport_class(sock.family)
        core = _core.StreamTransport(self, sock, cls.__name__,
                                     wants_nodelay(sock))
        transport = cls(core)
        core._start(transport, protocol, waiter, server, context)
        return transport

    def _stream_ssl_protocol(self, protocol_factory, sslcontext,
                             ssl_handshake_timeout, ssl_shutdown_timeout,
                             waiter=None, server_side=True,
                             server_hostname=None):
        from asyncio import sslproto
        kwargs = {"ssl_handshake_timeout": ssl_handshake_timeout}
        if sys.version_info >= (3, 11):
            kwargs["ssl_shutdown_timeout"] = ssl_shutdown_timeout
        return sslproto.SSLProtocol(
            self, protocol_factory(), sslcontext, waiter, server_side,
            server_hostname, **kwargs)

    def _stream_make_ssl_transport(self, rawsock, protocol, sslcontext,
                                   waiter=None, *, server_side=False,
                                   server_hostname=None, extra=None,
                                   server=None, ssl_handshake_timeout=None,
                                   ssl_shutdown_timeout=None, context=None):
        if sslcontext is None:
            sslcontext = _ssl.create_default_context()
        ssl_protocol = self._stream_ssl_protocol(
            lambda: protocol, sslcontext, ssl_handshake_timeout,
            ssl_shutdown_timeout, waiter, server_side, server_hostname)
        self._stream_make_socket_transport(rawsock, ssl_protocol, extra=extra,
                                           server=server, context=context)
        return ssl_protocol._app_transport

    async def _stream_create_connection_transport(
            self, sock, protocol_factory, ssl, server_hostname,
            server_side=False, ssl_handshake_timeout=None,
            ssl_shutdown_timeout=None):
        try:
            sock.setblocking(False)
            # 3.15+ (gh-140947): the transport runs its callbacks in a context
            # of its own, copied before the protocol is made.
            context = contextvars.copy_context() if OWN_CONTEXT else None
            protocol = protocol_factory()
            waiter = self.create_future()
            if ssl:
                sslcontext = None if isinstance(ssl, bool) else ssl
                transport = self._stream_make_ssl_transport(
                    sock, protocol, sslcontext, waiter,
                    server_side=server_side, server_hostname=server_hostname,
                    ssl_handshake_timeout=ssl_handshake_timeout,
                    ssl_shutdown_timeout=ssl_shutdown_timeout, context=context)
            else:
                transport = self._stream_make_socket_transport(
                    sock, protocol, waiter, context=context)
        except BaseException:
            if _CLOSE_SOCK_WITHOUT_TRANSPORT:
                sock.close()
            raise
        try:
            await waiter
        except BaseException:
            transport.close()
            waiter = None  # the exception's frames would keep it (a cycle)
            raise
        return transport, protocol

    async def start_tls(self, transport, protocol, sslcontext, *,
                        server_side=False, server_hostname=None,
                        ssl_handshake_timeout=None,
                        ssl_shutdown_timeout=None):
        """Upgrade a transport to TLS (asyncio's sslproto over it)."""
        if _ssl is None:
            raise RuntimeError("Python ssl module is not available")
        if not isinstance(sslcontext, _ssl.SSLContext):
            raise TypeError(
                f"sslcontext is expected to be an instance of ssl.SSLContext, "
                f"got {sslcontext!r}")
        if not getattr(transport, "_start_tls_compatible", False):
            raise TypeError(
                f"transport {transport!r} is not supported by start_tls()")
        from asyncio import sslproto
        waiter = self.create_future()
        kwargs = {"ssl_handshake_timeout": ssl_handshake_timeout,
                  "call_connection_made": False}
        if sys.version_info >= (3, 11):
            kwargs["ssl_shutdown_timeout"] = ssl_shutdown_timeout
        ssl_protocol = sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            **kwargs)
        # Pause first so that data_received cannot come before
        # connection_made.
        transport.pause_reading()
        if server_side:
            hand_buffered_data_to_tls(protocol, ssl_protocol)
        transport.set_protocol(ssl_protocol)
        conmade_cb = self.call_soon(ssl_protocol.connection_made, transport)
        resume_cb = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            conmade_cb.cancel()
            resume_cb.cancel()
            waiter = None  # the exception's frames would keep it (a cycle)
            raise
        return ssl_protocol._app_transport

    # -- servers -----------------------------------------------------------

    async def _stream_create_server_getaddrinfo(self, host, port, family,
                                                flags):
        infos = await ensure_resolved(
            self, (host, port), family=family, type=socket.SOCK_STREAM,
            flags=flags)
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned empty list")
        return infos

    async def create_server(
            self, protocol_factory, host=None, port=None, *,
            family=socket.AF_UNSPEC, flags=socket.AI_PASSIVE, sock=None,
            backlog=100, ssl=None, reuse_address=None, reuse_port=None,
            ssl_handshake_timeout=None, ssl_shutdown_timeout=None,
            start_serving=True, **kwargs):
        """Create a TCP server bound to host(s) and port; return a Server."""
        keep_alive = self._stream_pop_keep_alive(kwargs, "create_server")
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        check_ssl_timeouts(ssl is not None, ssl_handshake_timeout,
                            ssl_shutdown_timeout)
        if sock is not None:
            check_ssl_socket(sock)

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError(
                    "host/port and sock can not be specified at the same time")
            if reuse_address is None:
                reuse_address = os.name == "posix" and sys.platform != "cygwin"
            sockets = []
            if host == "":
                hosts = [None]
            elif (isinstance(host, str)
                  or not isinstance(host, collections.abc.Iterable)):
                hosts = [host]
            else:
                hosts = host
            fs = [self._stream_create_server_getaddrinfo(h, port, family,
                                                         flags)
                  for h in hosts]
            infos = await tasks.gather(*fs)
            infos = set(itertools.chain.from_iterable(infos))

            completed = False
            try:
                for res in infos:
                    af, socktype, proto, canonname, sa = res
                    try:
                        sock = socket.socket(af, socktype, proto)
                    except OSError:
                        if self.get_debug():
                            logger.warning("create_server() failed to create "
                                           "socket.socket(%r, %r, %r)",
                                           af, socktype, proto, exc_info=True)
                        continue
                    sockets.append(sock)
                    if reuse_address:
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
                    if reuse_port:
                        set_reuseport(sock)
                    if keep_alive:
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
                    if (_HAS_IPv6 and af == socket.AF_INET6
                            and hasattr(socket, "IPPROTO_IPV6")):
                        sock.setsockopt(socket.IPPROTO_IPV6,
                                        socket.IPV6_V6ONLY, True)
                    try:
                        sock.bind(sa)
                    except OSError as err:
                        msg = ("error while attempting "
                               f"to bind on address {sa!r}: "
                               f"{err.strerror.lower()}")
                        raise OSError(err.errno, msg) from None
                completed = True
            finally:
                if not completed:
                    for s in sockets:
                        s.close()
        else:
            if sock is None:
                raise ValueError("Neither host/port nor sock were specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            sockets = [sock]

        for s in sockets:
            s.setblocking(False)

        server = Server(self, sockets, protocol_factory, ssl, backlog,
                        ssl_handshake_timeout, ssl_shutdown_timeout)
        if start_serving:
            server._start_serving()
            await tasks.sleep(0)
        if self.get_debug():
            logger.info("%r is serving", server)
        return server

    @staticmethod
    def _stream_pop_keep_alive(kwargs, name):
        keep_alive = None
        if _PY313 and "keep_alive" in kwargs:
            keep_alive = kwargs.pop("keep_alive")
        if kwargs:
            bad = next(iter(kwargs))
            raise TypeError(
                f"{name}() got an unexpected keyword argument {bad!r}")
        return keep_alive

    # -- Unix sockets ------------------------------------------------------

    async def create_unix_server(
            self, protocol_factory, path=None, *, sock=None, backlog=100,
            ssl=None, ssl_handshake_timeout=None, ssl_shutdown_timeout=None,
            start_serving=True, **kwargs):
        """Create a Unix-socket server; return a Server."""
        cleanup_socket = True
        if _PY313 and "cleanup_socket" in kwargs:
            cleanup_socket = kwargs.pop("cleanup_socket")
        if kwargs:
            bad = next(iter(kwargs))
            raise TypeError(f"create_unix_server() got an unexpected keyword "
                            f"argument {bad!r}")
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        check_ssl_timeouts(bool(ssl), ssl_handshake_timeout,
                            ssl_shutdown_timeout)
        if path is not None:
            path, sock = unix_stream_socket_for(path, sock)
            remove_stale_socket_file(path)
            try:
                sock.bind(path)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    msg = f"Address {path!r} is already in use"
                    raise OSError(errno.EADDRINUSE, msg) from None
                raise
            except:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError(
                    "path was not specified, and no sock specified")
            check_unix_stream_socket(sock)
        sock.setblocking(False)
        server = Server(self, [sock], protocol_factory, ssl, backlog,
                        ssl_handshake_timeout, ssl_shutdown_timeout)
        if _PY313 and cleanup_socket:
            # 3.13: close() removes the socket file if it is still ours.
            name = sock.getsockname()
            if isinstance(name, str) and name and name[0] != "\x00":
                try:
                    _, ino = _core.stat_path(os.fsencode(name))
                    server._unix_cleanup.append((name, ino))
                except OSError:
                    pass
        if start_serving:
            server._start_serving()
            await tasks.sleep(0)
        return server

    # -- sendfile ----------------------------------------------------------

    async def sendfile(self, transport, file, offset=0, count=None, *,
                       fallback=True):
        """Send a file over a transport; return the number of bytes sent."""
        return await _streams_sendfile.sendfile(self, transport, file, offset,
                                                count, fallback=fallback)
