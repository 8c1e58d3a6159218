"""Low-level socket operations, datagrams and name resolution for oxloop.

`SocketsMixin` is one of `oxloop.Loop`'s bases. The hot operations
(`sock_recv`, `sock_recv_into`, `sock_sendall`) are native coroutines from
`oxloop._core.SockOps` (see src/sockops/): they try the syscall at once and
otherwise park the operation in a native per-fd watcher. The other `sock_*`
methods use the same native waiter (`SockOps.wait_call`) with a small Python
"attempt" callable that does the syscall through the socket object, so their
argument handling and errors are exactly the `socket` module's.

Name resolution runs `socket.getaddrinfo`/`getnameinfo` in the default
executor, as asyncio does. `ensure_resolved()` (also `Loop._ensure_resolved`)
skips it when the host is already a numeric address; the stream code
(create_connection/create_server) uses it too.
"""

import errno
import io
import os
import socket
import stat
import sys

import warnings

from asyncio import constants, exceptions, futures, log, transports, trsock

from . import _core

__all__ = ("SocketsMixin", "ensure_resolved", "ipaddr_info")

_HAS_IPv6 = hasattr(socket, "AF_INET6")
_PY311 = sys.version_info >= (3, 11)
_PY313 = sys.version_info >= (3, 13)

try:
    import ssl as _ssl
except ImportError:  # pragma: no cover
    _ssl = None

logger = log.logger


_unset = object()


def _set_reuseport(sock):
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError("reuse_port not supported by socket module, "
                         "SO_REUSEPORT defined but not implemented.")


def _check_ssl_socket(sock):
    if _ssl is not None and isinstance(sock, _ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def ipaddr_info(host, port, family, type, proto, flowinfo=0, scopeid=0):
    """The addrinfo tuple for an already numeric host (asyncio's
    `_ipaddr_info`), or None when getaddrinfo() is needed."""
    if not hasattr(socket, "inet_pton"):
        return None
    if proto not in {0, socket.IPPROTO_TCP, socket.IPPROTO_UDP} or host is None:
        return None
    if type == socket.SOCK_STREAM:
        proto = socket.IPPROTO_TCP
    elif type == socket.SOCK_DGRAM:
        proto = socket.IPPROTO_UDP
    else:
        return None
    if port is None:
        port = 0
    elif isinstance(port, bytes) and port == b"":
        port = 0
    elif isinstance(port, str) and port == "":
        port = 0
    else:
        # A service name like "http" needs getaddrinfo.
        try:
            port = int(port)
        except (TypeError, ValueError):
            return None
    if family == socket.AF_UNSPEC:
        afs = [socket.AF_INET]
        if _HAS_IPv6:
            afs.append(socket.AF_INET6)
    else:
        afs = [family]
    if isinstance(host, bytes):
        host = host.decode("idna")
    if "%" in host:
        # inet_pton rejects an IPv6 zone index ('::1%lo0').
        return None
    for af in afs:
        try:
            socket.inet_pton(af, host)
        except OSError:
            continue
        if _HAS_IPv6 and af == socket.AF_INET6:
            return af, type, proto, "", (host, port, flowinfo, scopeid)
        return af, type, proto, "", (host, port)
    return None


async def ensure_resolved(loop, address, *, family=0, type=socket.SOCK_STREAM,
                          proto=0, flags=0):
    """asyncio's `_ensure_resolved`: a list of addrinfo tuples for
    `address` (host, port[, flowinfo, scopeid]); numeric hosts skip
    `loop.getaddrinfo()`."""
    host, port = address[:2]
    info = ipaddr_info(host, port, family, type, proto, *address[2:])
    if info is not None:
        return [info]
    return await loop.getaddrinfo(host, port, family=family, type=type,
                                  proto=proto, flags=flags)


class _Connect:
    """sock_connect's attempt: connect(), then (once writable) SO_ERROR."""

    __slots__ = ("sock", "address", "started")

    def __init__(self, sock, address):
        self.sock = sock
        self.address = address
        self.started = False

    def __call__(self):
        if not self.started:
            self.started = True
            self.sock.connect(self.address)
            return None
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err != 0:
            raise OSError(err, f"Connect call failed {self.address}")
        return None


def _accept(sock):
    conn, address = sock.accept()
    conn.setblocking(False)
    return conn, address


class _Sendfile:
    """sock_sendfile's native attempt: os.sendfile() until the count, EOF,
    or EAGAIN (then wait for writability)."""

    __slots__ = ("fd", "fileno", "offset", "count", "blocksize", "total_sent",
                 "waited")

    def __init__(self, fd, fileno, offset, count, blocksize):
        self.fd = fd
        self.fileno = fileno
        self.offset = offset
        self.count = count
        self.blocksize = blocksize
        self.total_sent = 0
        self.waited = False

    def __call__(self):
        while True:
            if self.count:
                blocksize = self.count - self.total_sent
                if blocksize <= 0:
                    return self.total_sent
            else:
                blocksize = self.blocksize
            try:
                sent = os.sendfile(self.fd, self.fileno, self.offset, blocksize)
            except (BlockingIOError, InterruptedError):
                self.waited = True
                raise
            except OSError as exc:
                if (self.waited and exc.errno == errno.ENOTCONN
                        and type(exc) is not ConnectionError):
                    # Connection closed in the middle: normalise, as asyncio.
                    new_exc = ConnectionError("socket is not connected",
                                              errno.ENOTCONN)
                    new_exc.__cause__ = exc
                    exc = new_exc
                if self.total_sent == 0:
                    # Not a regular mmap-able file: fall back on send().
                    raise exceptions.SendfileNotAvailableError(
                        "os.sendfile call failed") from None
                raise exc
            if sent == 0:
                return self.total_sent  # EOF
            self.offset += sent
            self.total_sent += sent

    def update_filepos(self):
        if self.total_sent > 0:
            os.lseek(self.fileno, self.offset, os.SEEK_SET)


class _DatagramTransport(transports.Transport, transports.DatagramTransport):
    """The datagram transport: extra info here, behaviour in the native
    `_core.UdpTransport` (see src/udp.rs). Like asyncio's selector datagram
    transport it is an `asyncio.Transport` as well."""

    max_size = 256 * 1024  # the largest datagram read, as asyncio

    def __init__(self, loop, sock, protocol, address=None, waiter=None,
                 extra=None):
        super().__init__(extra)
        self._extra["socket"] = trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._loop = loop
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._protocol = protocol  # for repr/debugging only; the core decides
        core = _core.UdpTransport(loop, sock, protocol, address, self,
                                  bool(self._extra["peername"]),
                                  _PY313)
        self._core = core
        self.sendto = core.sendto  # no Python frame on the hot path
        loop.call_soon(protocol.connection_made, self)
        # Only start reading once connection_made() has been called.
        loop.call_soon(core._start)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self._core.is_closing():
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._loop is not None and not self._loop.is_closed():
            reading, writing = self._core._polling()
            info.append("read=polling" if reading else "read=idle")
            state = "polling" if writing else "idle"
            info.append(f"write=<{state}, "
                        f"bufsize={self.get_write_buffer_size()}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()

    def sendto(self, data, addr=None):
        self._core.sendto(data, addr)

    def get_write_buffer_size(self):
        return self._core.get_write_buffer_size()

    def get_write_buffer_limits(self):
        return self._core.get_write_buffer_limits()

    def set_write_buffer_limits(self, high=None, low=None):
        self._core.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol):
        self._protocol = protocol
        self._core.set_protocol(protocol)

    def get_protocol(self):
        return self._core.get_protocol()

    def is_closing(self):
        return self._core.is_closing()

    def is_reading(self):
        return self._core.is_reading()

    def pause_reading(self):
        if self._core.pause_reading() and self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self):
        if self._core.resume_reading() and self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def close(self):
        self._core.close()

    def abort(self):
        self._core.abort()

    def _force_close(self, exc):
        self._core.abort(exc)

    def _fatal_error(self, exc, message="Fatal error on transport"):
        if isinstance(exc, OSError) and self._loop.get_debug():
            logger.debug("%r: %s", self, message, exc_info=True)
        self._core._fatal_error(exc, message)

    def _call_connection_lost(self, exc):
        try:
            protocol = self._core.get_protocol()
            if protocol is not None:
                protocol.connection_lost(exc)
        finally:
            sock, self._sock = self._sock, None
            if sock is not None:
                sock.close()
            self._core._detach()
            self._protocol = None
            self._loop = None


class SocketsMixin:
    """sock_* methods, create_datagram_endpoint, getaddrinfo, getnameinfo."""

    __slots__ = ()

    _HOT = ("sock_recv", "sock_recv_into", "sock_sendall")

    def __init__(self):
        super().__init__()
        ops = _core.SockOps(self)
        self._sockops = ops
        # The hot methods go straight to the native ones (no Python frame),
        # unless a subclass overrides them.
        cls = type(self)
        for name in self._HOT:
            if getattr(cls, name) is getattr(SocketsMixin, name):
                setattr(self, name, getattr(ops, name))

    # -- low-level socket operations ---------------------------------------

    def sock_recv(self, sock, n):
        """Receive up to n bytes from the socket (a coroutine)."""
        return self._sockops.sock_recv(sock, n)

    def sock_recv_into(self, sock, buf):
        """Receive data into buf; return the number of bytes (a coroutine)."""
        return self._sockops.sock_recv_into(sock, buf)

    def sock_sendall(self, sock, data):
        """Send all of data to the socket (a coroutine)."""
        return self._sockops.sock_sendall(sock, data)

    def sock_recvfrom(self, sock, bufsize):
        """Receive a datagram: (data, address) (a coroutine)."""
        return self._sockops.wait_call(
            sock, False, lambda: sock.recvfrom(bufsize))

    def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receive a datagram into buf: (nbytes, address) (a coroutine)."""
        def attempt():
            return sock.recvfrom_into(buf, nbytes or len(buf))
        return self._sockops.wait_call(sock, False, attempt)

    def sock_sendto(self, sock, data, address):
        """Send a datagram to address; return the bytes sent (a coroutine)."""
        return self._sockops.wait_call(
            sock, True, lambda: sock.sendto(data, address))

    def sock_accept(self, sock):
        """Accept a connection: (conn, address), conn non-blocking."""
        return self._sockops.wait_call(sock, False, lambda: _accept(sock))

    async def sock_connect(self, sock, address):
        """Connect the socket to address, resolving it like asyncio."""
        _check_ssl_socket(sock)
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        if sock.family == socket.AF_INET or (
                _HAS_IPv6 and sock.family == socket.AF_INET6):
            resolved = await ensure_resolved(
                self, address, family=sock.family, type=sock.type,
                proto=sock.proto)
            _, _, _, _, address = resolved[0]
        return await self._sockops.wait_call(
            sock, True, _Connect(sock, address))

    async def sock_sendfile(self, sock, file, offset=0, count=None, *,
                            fallback=True):
        """Send a file with os.sendfile (zero-copy) where possible, else
        read and send it; return the bytes sent."""
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        _check_ssl_socket(sock)
        self._check_sendfile_params(sock, file, offset, count)
        try:
            return await self._sock_sendfile_native(sock, file, offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    def _check_sendfile_params(self, sock, file, offset, count):
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if not sock.type == socket.SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(
                    "count must be a positive integer (got {!r})".format(count))
            if count <= 0:
                raise ValueError(
                    "count must be a positive integer (got {!r})".format(count))
        if not isinstance(offset, int):
            raise TypeError(
                "offset must be a non-negative integer (got {!r})".format(
                    offset))
        if offset < 0:
            raise ValueError(
                "offset must be a non-negative integer (got {!r})".format(
                    offset))

    async def _sock_sendfile_native(self, sock, file, offset, count):
        if not hasattr(os, "sendfile"):
            raise exceptions.SendfileNotAvailableError(
                "os.sendfile() is not available")
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise exceptions.SendfileNotAvailableError("not a regular file")
        try:
            fsize = os.fstat(fileno).st_size
        except OSError:
            raise exceptions.SendfileNotAvailableError("not a regular file")
        blocksize = count if count else fsize
        if not blocksize:
            return 0  # empty file
        op = _Sendfile(sock.fileno(), fileno, offset, count, blocksize)
        try:
            return await self._sockops.wait_call(sock, True, op)
        finally:
            op.update_filepos()

    async def _sock_sendfile_fallback(self, sock, file, offset, count):
        if offset:
            file.seek(offset)
        blocksize = (
            min(count, constants.SENDFILE_FALLBACK_READBUFFER_SIZE)
            if count else constants.SENDFILE_FALLBACK_READBUFFER_SIZE
        )
        buf = bytearray(blocksize)
        total_sent = 0
        try:
            while True:
                if count:
                    blocksize = min(count - total_sent, blocksize)
                    if blocksize <= 0:
                        break
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    break  # EOF
                await self.sock_sendall(sock, view[:read])
                total_sent += read
            return total_sent
        finally:
            if total_sent > 0 and hasattr(file, "seek"):
                file.seek(offset + total_sent)

    # -- name resolution ---------------------------------------------------

    def _getaddrinfo_debug(self, host, port, family, type, proto, flags):
        msg = [f"{host}:{port!r}"]
        if family:
            msg.append(f"family={family!r}")
        if type:
            msg.append(f"type={type!r}")
        if proto:
            msg.append(f"proto={proto!r}")
        if flags:
            msg.append(f"flags={flags!r}")
        msg = ", ".join(msg)
        logger.debug("Get address info %s", msg)
        t0 = self.time()
        addrinfo = socket.getaddrinfo(host, port, family, type, proto, flags)
        dt = self.time() - t0
        msg = f"Getting address info {msg} returned {addrinfo} in {dt * 1e3:.3f}ms"
        if dt >= self.slow_callback_duration:
            logger.info(msg)
        else:
            logger.debug(msg)
        return addrinfo

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0,
                          flags=0):
        """socket.getaddrinfo in the default executor."""
        if self.get_debug():
            getaddr_func = self._getaddrinfo_debug
        else:
            getaddr_func = socket.getaddrinfo
        return await self.run_in_executor(
            None, getaddr_func, host, port, family, type, proto, flags)

    async def getnameinfo(self, sockaddr, flags=0):
        """socket.getnameinfo in the default executor."""
        return await self.run_in_executor(
            None, socket.getnameinfo, sockaddr, flags)

    async def _ensure_resolved(self, address, *, family=0,
                               type=socket.SOCK_STREAM, proto=0, flags=0,
                               loop=None):
        return await ensure_resolved(loop if loop is not None else self,
                                     address, family=family, type=type,
                                     proto=proto, flags=flags)

    # -- datagrams ---------------------------------------------------------

    def _make_datagram_transport(self, sock, protocol, address=None,
                                 waiter=None, extra=None):
        return _DatagramTransport(self, sock, protocol, address, waiter,
                                  extra)

    async def _create_datagram_endpoint(self, protocol_factory, local_addr,
                                        remote_addr, family, proto, flags,
                                        reuse_port, allow_broadcast, sock):
        if sock is not None:
            if sock.type != socket.SOCK_DGRAM:
                raise ValueError(f"A UDP Socket was expected, got {sock!r}")
            if (local_addr or remote_addr or family or proto or flags
                    or reuse_port or allow_broadcast):
                # Show the problematic kwargs in the message.
                opts = dict(local_addr=local_addr, remote_addr=remote_addr,
                            family=family, proto=proto, flags=flags,
                            reuse_port=reuse_port,
                            allow_broadcast=allow_broadcast)
                problems = ", ".join(f"{k}={v}" for k, v in opts.items() if v)
                raise ValueError(
                    f"socket modifier keyword arguments can not be used "
                    f"when sock is specified. ({problems})")
            sock.setblocking(False)
            r_addr = None
        else:
            if not (local_addr or remote_addr):
                if family == 0:
                    raise ValueError("unexpected address family")
                addr_pairs_info = (((family, proto), (None, None)),)
            elif hasattr(socket, "AF_UNIX") and family == socket.AF_UNIX:
                for addr in (local_addr, remote_addr):
                    if addr is not None and not isinstance(addr, str):
                        raise TypeError("string is expected")
                if local_addr and local_addr[0] not in (0, "\x00"):
                    try:
                        if stat.S_ISSOCK(os.stat(local_addr).st_mode):
                            os.remove(local_addr)
                    except FileNotFoundError:
                        pass
                    except OSError as err:
                        # The directory may allow creating sockets only.
                        logger.error("Unable to check or remove stale UNIX "
                                     "socket %r: %r", local_addr, err)
                addr_pairs_info = (((family, proto),
                                    (local_addr, remote_addr)),)
            else:
                # Join the addresses by (family, protocol).
                addr_infos = {}
                for idx, addr in ((0, local_addr), (1, remote_addr)):
                    if addr is not None:
                        if not (isinstance(addr, tuple) and len(addr) == 2):
                            raise TypeError("2-tuple is expected")
                        infos = await ensure_resolved(
                            self, addr, family=family, type=socket.SOCK_DGRAM,
                            proto=proto, flags=flags)
                        if not infos:
                            raise OSError("getaddrinfo() returned empty list")
                        for fam, _, pro, _, address in infos:
                            key = (fam, pro)
                            if key not in addr_infos:
                                addr_infos[key] = [None, None]
                            addr_infos[key][idx] = address
                # Each address needs an entry for each (family, proto) pair.
                addr_pairs_info = [
                    (key, addr_pair) for key, addr_pair in addr_infos.items()
                    if not ((local_addr and addr_pair[0] is None) or
                            (remote_addr and addr_pair[1] is None))]
                if not addr_pairs_info:
                    raise ValueError("can not get address information")

            exceptions_ = []
            for ((family, proto),
                 (local_address, remote_address)) in addr_pairs_info:
                sock = None
                r_addr = None
                try:
                    sock = socket.socket(
                        family=family, type=socket.SOCK_DGRAM, proto=proto)
                    if reuse_port:
                        _set_reuseport(sock)
                    if allow_broadcast:
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                    sock.setblocking(False)
                    if local_addr:
                        sock.bind(local_address)
                    if remote_addr:
                        if not allow_broadcast:
                            await self.sock_connect(sock, remote_address)
                        r_addr = remote_address
                except OSError as exc:
                    if sock is not None:
                        sock.close()
                    exceptions_.append(exc)
                except:  # noqa: E722 - close the socket, re-raise anything
                    if sock is not None:
                        sock.close()
                    raise
                else:
                    break
            else:
                raise exceptions_[0]

        protocol = protocol_factory()
        waiter = self.create_future()
        transport = self._make_datagram_transport(
            sock, protocol, r_addr, waiter)
        if self.get_debug():
            if local_addr:
                logger.info("Datagram endpoint local_addr=%r remote_addr=%r "
                            "created: (%r, %r)",
                            local_addr, remote_addr, transport, protocol)
            else:
                logger.debug("Datagram endpoint remote_addr=%r created: "
                             "(%r, %r)", remote_addr, transport, protocol)
        try:
            await waiter
        except:  # noqa: E722 - as asyncio: close on any failure
            transport.close()
            raise
        return transport, protocol

    if _PY311:
        async def create_datagram_endpoint(self, protocol_factory,
                                           local_addr=None, remote_addr=None,
                                           *, family=0, proto=0, flags=0,
                                           reuse_port=None,
                                           allow_broadcast=None, sock=None):
            """Create a datagram endpoint: (transport, protocol)."""
            return await self._create_datagram_endpoint(
                protocol_factory, local_addr, remote_addr, family, proto,
                flags, reuse_port, allow_broadcast, sock)
    else:
        async def create_datagram_endpoint(self, protocol_factory,
                                           local_addr=None, remote_addr=None,
                                           *, family=0, proto=0, flags=0,
                                           reuse_address=_unset,
                                           reuse_port=None,
                                           allow_broadcast=None, sock=None):
            """Create a datagram endpoint: (transport, protocol)."""
            if sock is None and reuse_address is not _unset:
                if reuse_address:
                    raise ValueError(
                        "Passing `reuse_address=True` is no longer supported,"
                        " as the usage of SO_REUSEPORT in UDP poses a "
                        "significant security concern.")
                warnings.warn(
                    "The *reuse_address* parameter has been deprecated as "
                    "of 3.5.10 and is scheduled for removal in 3.11.",
                    DeprecationWarning, stacklevel=2)
            return await self._create_datagram_endpoint(
                protocol_factory, local_addr, remote_addr, family, proto,
                flags, reuse_port, allow_broadcast, sock)
