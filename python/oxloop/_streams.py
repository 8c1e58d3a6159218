"""Stream networking (TCP and Unix transports, servers) for oxloop.

`StreamsMixin` is one of `oxloop.Loop`'s bases. The transports and the
accept loops are native (`oxloop._core.StreamTransport`,
`oxloop._core.StreamListener`); this module holds the long tail that Python
does naturally: argument checking with asyncio's exact errors, name
resolution, connecting (Happy Eyeballs included) and binding.
`_streams_types` holds the transport and `Server` classes,
`_streams_sendfile` the orchestration of `loop.sendfile()`.

The transport object user code sees is `TCPTransport`/`UnixTransport`, a
thin `asyncio.Transport` subclass over a native core; its hot methods are
the core's own bound methods, set on the instance.
"""

import collections.abc
import contextvars
import errno
import functools
import itertools
import logging
import os
import socket
import sys

from asyncio import base_events, events, staggered, tasks

from . import _core, _streams_sendfile
from ._streams_types import (OWN_CONTEXT, Server, TCPTransport,
                             UnixTransport, hand_buffered_data_to_tls,
                             transport_class, wants_nodelay)

try:
    import ssl as _ssl
except ImportError:  # pragma: no cover
    _ssl = None

__all__ = ("StreamsMixin", "Server", "TCPTransport", "UnixTransport")

logger = logging.getLogger("asyncio")

_PY312 = sys.version_info >= (3, 12)
_PY313 = sys.version_info >= (3, 13)
_HAS_IPv6 = hasattr(socket, "AF_INET6")
# gh-153133 (CPython 3.14): create_connection(sock=...) closes the socket
# when the protocol or the transport cannot be made; before, the caller's
# socket stayed open.
_CLOSE_SOCK_WITHOUT_TRANSPORT = sys.version_info >= (3, 14)
_MISSING = object()
_ipaddr_info = base_events._ipaddr_info
_interleave_addrinfos = base_events._interleave_addrinfos


def _check_ssl_socket(sock):
    if _ssl is not None and isinstance(sock, _ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def _check_ssl_timeouts(has_ssl, handshake_timeout, shutdown_timeout):
    """asyncio's refusal of TLS timeouts without TLS."""
    if has_ssl:
        return
    if handshake_timeout is not None:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if shutdown_timeout is not None:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")


def _set_reuseport(sock):
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError("reuse_port not supported by socket module, "
                         "SO_REUSEPORT defined but not implemented.")


class StreamsMixin:
    """create_connection, create_server, their Unix variants,
    connect_accepted_socket, start_tls and sendfile."""

    __slots__ = ()

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

    # -- name resolution and connecting ------------------------------------

    async def _stream_getaddrinfo(self, host, port, *, family=0, type=0,
                                  proto=0, flags=0):
        # Until loop.getaddrinfo is native (sockets branch), fall back to the
        # executor when only AbstractEventLoop's stub is there.
        gai = getattr(self.__class__, "getaddrinfo", None)
        if gai is events.AbstractEventLoop.getaddrinfo:
            return await self.run_in_executor(
                None, socket.getaddrinfo, host, port, family, type, proto,
                flags)
        return await self.getaddrinfo(host, port, family=family, type=type,
                                      proto=proto, flags=flags)

    async def _stream_ensure_resolved(self, address, *, family=0,
                               type=socket.SOCK_STREAM, proto=0, flags=0,
                               loop=None):
        host, port = address[:2]
        info = _ipaddr_info(host, port, family, type, proto, *address[2:])
        if info is not None:
            return [info]
        return await self._stream_getaddrinfo(
            host, port, family=family, type=type, proto=proto, flags=flags)

    def _stream_connect_cb(self, fut, sock, address):
        if fut.done():
            return
        try:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err != 0:
                raise OSError(err, f"Connect call failed {address}")
        except (BlockingIOError, InterruptedError):
            return  # spurious wake-up: keep waiting
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
        finally:
            fut = None

    async def _stream_sock_connect(self, sock, address):
        try:
            sock.connect(address)
            return
        except (BlockingIOError, InterruptedError):
            pass
        fd = sock.fileno()
        fut = self.create_future()
        self.add_writer(fd, self._stream_connect_cb, fut, sock, address)
        try:
            await fut
        finally:
            self.remove_writer(fd)
            fut = None

    async def _stream_connect_sock(self, exceptions, addr_info,
                            local_addr_infos=None):
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
            await self._stream_sock_connect(sock, address)
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
        _check_ssl_timeouts(bool(ssl), ssl_handshake_timeout,
                            ssl_shutdown_timeout)
        if sock is not None:
            _check_ssl_socket(sock)
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError(
                    "host/port and sock can not be specified at the same time")
            infos = await self._stream_ensure_resolved(
                (host, port), family=family, type=socket.SOCK_STREAM,
                proto=proto, flags=flags)
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            if local_addr is not None:
                laddr_infos = await self._stream_ensure_resolved(
                    local_addr, family=family, type=socket.SOCK_STREAM,
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

    # -- servers -----------------------------------------------------------

    async def _stream_create_server_getaddrinfo(self, host, port, family,
                                                flags):
        infos = await self._stream_ensure_resolved(
            (host, port), family=family, type=socket.SOCK_STREAM, flags=flags)
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
        _check_ssl_timeouts(ssl is not None, ssl_handshake_timeout,
                            ssl_shutdown_timeout)
        if sock is not None:
            _check_ssl_socket(sock)

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
                    except socket.error:
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
                        _set_reuseport(sock)
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
                               "to bind on address %r: %s"
                               % (sa, err.strerror.lower()))
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

    async def connect_accepted_socket(
            self, protocol_factory, sock, *, ssl=None,
            ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        """Wrap an already accepted socket into a (transport, protocol)."""
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        _check_ssl_timeouts(bool(ssl), ssl_handshake_timeout,
                            ssl_shutdown_timeout)
        if sock is not None:
            _check_ssl_socket(sock)
        transport, protocol = await self._stream_create_connection_transport(
            sock, protocol_factory, ssl, "", server_side=True,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        if self.get_debug():
            sock = transport.get_extra_info("socket")
            logger.debug("%r handled: (%r, %r)", sock, transport, protocol)
        return transport, protocol

    # -- Unix sockets ------------------------------------------------------

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
            _check_ssl_timeouts(False, ssl_handshake_timeout,
                                ssl_shutdown_timeout)
        if path is not None:
            if sock is not None:
                raise ValueError(
                    "path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self._stream_sock_connect(sock, path)
            except:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("no path and sock were specified")
            if (sock.family != socket.AF_UNIX
                    or sock.type != socket.SOCK_STREAM):
                raise ValueError(
                    f"A UNIX Domain Stream Socket was expected, got {sock!r}")
            sock.setblocking(False)
        return await self._stream_create_connection_transport(
            sock, protocol_factory, ssl, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)

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
        _check_ssl_timeouts(bool(ssl), ssl_handshake_timeout,
                            ssl_shutdown_timeout)
        if path is not None:
            if sock is not None:
                raise ValueError(
                    "path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # A stale socket file is removed; the abstract namespace
            # (a leading NUL) has no file.
            if path[0] not in (0, "\x00"):
                try:
                    # Natively, as asyncio's own (exempt) stat and remove.
                    _core.remove_socket_path(os.fsencode(path))
                except FileNotFoundError:
                    pass
                except OSError as err:
                    logger.error("Unable to check or remove stale UNIX "
                                 "socket %r: %r", path, err)
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
            if (sock.family != socket.AF_UNIX
                    or sock.type != socket.SOCK_STREAM):
                raise ValueError(
                    f"A UNIX Domain Stream Socket was expected, got {sock!r}")
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
