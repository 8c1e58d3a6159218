"""Connecting stream transports for oxloop: `create_connection` (Happy
Eyeballs included), `create_unix_connection` and `connect_accepted_socket`.

The functions here are `StreamsMixin`'s methods (`_streams` binds them in
its class body rather than adding a base class: every native method call
on the loop walks its MRO once), and use its
`_stream_create_connection_transport` to make the transport once a socket
is connected. Names resolve through `_resolve.ensure_resolved` and sockets
connect through `loop.sock_connect`, as asyncio's own code does (so a
subclass that overrides either is used here too).
"""

import functools
import logging
import socket
import sys
from asyncio import base_events, staggered

from ._netutil import (
    check_ssl_socket,
    check_ssl_timeouts,
    check_unix_stream_socket,
    unix_stream_socket_for,
)
from ._resolve import ensure_resolved

__all__ = ("connect_accepted_socket", "create_connection", "create_unix_connection",
           "stream_connect_sock")

logger = logging.getLogger("asyncio")

_PY312 = sys.version_info >= (3, 12)
_MISSING = object()
_interleave_addrinfos = base_events._interleave_addrinfos


async def stream_connect_sock(self, exceptions, addr_info,
                              local_addr_infos=None):
    """One connection attempt of create_connection (asyncio's
    `_connect_sock`): a socket bound to a matching local address if any,
    connected by `loop.sock_connect`; its errors are added to
    `exceptions`."""
    my_exceptions = []
    exceptions.append(my_exceptions)
    family, type_, proto, _, address = addr_info
    sock = None
    try:
        sock = socket.socket(family=family, type=type_, proto=proto)
        sock.setblocking(False)
        if local_addr_infos is not None:
            for lfamily, _, _, _, laddr in local_addr_infos:
                if lfamily != family:
                    continue
                try:
                    sock.bind(laddr)
                    break
                except OSError as exc:
                    msg = (f"error while attempting to bind on "
                           f"address {laddr!r}: "
                           f"{exc.strerror.lower()}")
                    exc = OSError(exc.errno, msg)
                    my_exceptions.append(exc)
            else:
                if my_exceptions:
                    raise my_exceptions.pop()
                raise OSError(
                    f"no matching local address with {family=} found")
        await self.sock_connect(sock, address)
        return sock
    except OSError as exc:
        my_exceptions.append(exc)
        if sock is not None:
            sock.close()
        raise
    except:
        if sock is not None:
            sock.close()
        raise
    finally:
        exceptions = my_exceptions = None


async def create_connection(
        self, protocol_factory, host=None, port=None,
        *, ssl=None, family=0, proto=0, flags=0, sock=None,
        local_addr=None, server_hostname=None,
        ssl_handshake_timeout=None, ssl_shutdown_timeout=None,
        happy_eyeballs_delay=None, interleave=None,
        all_errors=_MISSING):
    """Connect to a TCP server; return (transport, protocol)."""
    if all_errors is _MISSING:
        all_errors = False
    elif not _PY312:
        raise TypeError("create_connection() got an unexpected keyword "
                        "argument 'all_errors'")
    if server_hostname is not None and not ssl:
        raise ValueError("server_hostname is only meaningful with ssl")
    if server_hostname is None and ssl:
        if not host:
            raise ValueError("You must set server_hostname "
                             "when using ssl without a host")
        server_hostname = host
    check_ssl_timeouts(bool(ssl), ssl_handshake_timeout,
                        ssl_shutdown_timeout)
    if sock is not None:
        check_ssl_socket(sock)
    if happy_eyeballs_delay is not None and interleave is None:
        interleave = 1

    if host is not None or port is not None:
        if sock is not None:
            raise ValueError(
                "host/port and sock can not be specified at the same time")
        infos = await ensure_resolved(
            self, (host, port), family=family, type=socket.SOCK_STREAM,
            proto=proto, flags=flags)
        if not infos:
            raise OSError("getaddrinfo() returned empty list")
        if local_addr is not None:
            laddr_infos = await ensure_resolved(
                self, local_addr, family=family, type=socket.SOCK_STREAM,
                proto=proto, flags=flags)
            if not laddr_infos:
                raise OSError("getaddrinfo() returned empty list")
        else:
            laddr_infos = None
        if interleave:
            infos = _interleave_addrinfos(infos, interleave)

        exceptions = []
        if happy_eyeballs_delay is None:
            for addrinfo in infos:
                try:
                    sock = await self._stream_connect_sock(
                        exceptions, addrinfo, laddr_infos)
                    break
                except OSError:
                    continue
        else:
            sock, _, _ = await staggered.staggered_race(
                (functools.partial(self._stream_connect_sock, exceptions,
                                   addrinfo, laddr_infos)
                 for addrinfo in infos),
                happy_eyeballs_delay, loop=self)

        if sock is None:
            exceptions = [exc for sub in exceptions for exc in sub]
            try:
                if all_errors:
                    raise ExceptionGroup(  # noqa: F821 (3.11+)
                        "create_connection failed", exceptions)
                if len(exceptions) == 1:
                    raise exceptions[0]
                model = str(exceptions[0])
                if all(str(exc) == model for exc in exceptions):
                    raise exceptions[0]
                raise OSError("Multiple exceptions: {}".format(
                    ", ".join(str(exc) for exc in exceptions)))
            finally:
                exceptions = None
    else:
        if sock is None:
            raise ValueError(
                "host and port was not specified and no sock specified")
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")

    transport, protocol = await self._stream_create_connection_transport(
        sock, protocol_factory, ssl, server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout)
    if self.get_debug():
        sock = transport.get_extra_info("socket")
        logger.debug("%r connected to %s:%r: (%r, %r)",
                     sock, host, port, transport, protocol)
    return transport, protocol


async def connect_accepted_socket(
        self, protocol_factory, sock, *, ssl=None,
        ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
    """Wrap an already accepted socket into a (transport, protocol)."""
    if sock.type != socket.SOCK_STREAM:
        raise ValueError(f"A Stream Socket was expected, got {sock!r}")
    check_ssl_timeouts(bool(ssl), ssl_handshake_timeout,
                        ssl_shutdown_timeout)
    if sock is not None:
        check_ssl_socket(sock)
    transport, protocol = await self._stream_create_connection_transport(
        sock, protocol_factory, ssl, "", server_side=True,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout)
    if self.get_debug():
        sock = transport.get_extra_info("socket")
        logger.debug("%r handled: (%r, %r)", sock, transport, protocol)
    return transport, protocol


async def create_unix_connection(
        self, protocol_factory, path=None, *, ssl=None, sock=None,
        server_hostname=None, ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None):
    """Connect to a Unix socket; return (transport, protocol)."""
    assert server_hostname is None or isinstance(server_hostname, str)
    if ssl:
        if server_hostname is None:
            raise ValueError(
                "you have to pass server_hostname when using ssl")
    else:
        if server_hostname is not None:
            raise ValueError("server_hostname is only meaningful with ssl")
        check_ssl_timeouts(False, ssl_handshake_timeout,
                            ssl_shutdown_timeout)
    if path is not None:
        path, sock = unix_stream_socket_for(path, sock)
        try:
            sock.setblocking(False)
            await self.sock_connect(sock, path)
        except:
            sock.close()
            raise
    else:
        if sock is None:
            raise ValueError("no path and sock were specified")
        check_unix_stream_socket(sock)
        sock.setblocking(False)
    return await self._stream_create_connection_transport(
        sock, protocol_factory, ssl, server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout)
