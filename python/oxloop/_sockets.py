"""Low-level socket operations and name resolution for oxloop.

`SocketsMixin` is one of `oxloop.Loop`'s bases. The hot operations
(`sock_recv`, `sock_recv_into`, `sock_sendall`) are native coroutines from
`oxloop._core.SockOps` (see src/sockops/): they try the syscall at once and
otherwise park the operation in a native per-fd watcher. The other `sock_*`
methods use the same native waiter (`SockOps.wait_call`) with a small Python
"attempt" callable that does the syscall through the socket object, so their
argument handling and errors are exactly the `socket` module's.

Datagram endpoints live in `_datagram.py` (`DatagramMixin`, a base of
`SocketsMixin`). Name resolution runs `socket.getaddrinfo`/`getnameinfo` in
the default executor, as asyncio does. `ensure_resolved()` (in `_resolve.py`, re-exported
here; also `Loop._ensure_resolved`) skips it when the host is already a
numeric address; the stream code (create_connection/create_server) can use it
too.
"""

import errno
import io
import os
import socket
import sys
from asyncio import constants, exceptions, log

from . import _core
from ._datagram import DatagramMixin
from ._netutil import check_ssl_socket
from ._resolve import ensure_resolved, ipaddr_info
from ._streams_sendfile import check_sendfile_params, fallback_seek, seek_to_offset

__all__ = ("SocketsMixin", "ensure_resolved", "ipaddr_info")

_HAS_IPv6 = hasattr(socket, "AF_INET6")

logger = log.logger


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
    """sock_sendfile's native attempt: sendfile(2) until the count, EOF,
    or EAGAIN (then wait for writability). The socket's fd is read at each
    call, as asyncio does: once the socket is closed it is -1 (EBADF), never
    a reused fd number."""

    __slots__ = ("sock", "fileno", "offset", "count", "blocksize",
                 "total_sent", "waited")

    def __init__(self, sock, fileno, offset, count, blocksize):
        self.sock = sock
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
                sent = _core.sendfile(self.sock.fileno(), self.fileno,
                                      self.offset, blocksize)
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


class SocketsMixin(DatagramMixin):
    """sock_* methods, getaddrinfo, getnameinfo (and, from DatagramMixin,
    create_datagram_endpoint)."""

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
            sock, False, lambda: sock.recvfrom(bufsize), name="sock_recvfrom")

    def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receive a datagram into buf: (nbytes, address) (a coroutine)."""
        def attempt():
            return sock.recvfrom_into(buf, nbytes or len(buf))
        return self._sockops.wait_call(sock, False, attempt,
                                       name="sock_recvfrom_into")

    def sock_sendto(self, sock, data, address):
        """Send a datagram to address; return the bytes sent (a coroutine)."""
        return self._sockops.wait_call(
            sock, True, lambda: sock.sendto(data, address), name="sock_sendto")

    def sock_accept(self, sock):
        """Accept a connection: (conn, address), conn non-blocking."""
        return self._sockops.wait_call(sock, False, lambda: _accept(sock),
                                       name="sock_accept")

    async def sock_connect(self, sock, address):
        """Connect the socket to address, resolving it like asyncio."""
        check_ssl_socket(sock)
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        if sock.family == socket.AF_INET or (
                _HAS_IPv6 and sock.family == socket.AF_INET6):
            resolved = await ensure_resolved(
                self, address, family=sock.family, type=sock.type,
                proto=sock.proto)
            _, _, _, _, address = resolved[0]
        return await self._sockops.wait_call(
            sock, True, _Connect(sock, address), name="sock_connect")

    async def sock_sendfile(self, sock, file, offset=0, count=None, *,
                            fallback=True):
        """Send a file with os.sendfile (zero-copy) where possible, else
        read and send it; return the bytes sent."""
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        check_ssl_socket(sock)
        check_sendfile_params(file, offset, count, sock=sock)
        try:
            return await self._sock_sendfile_native(sock, file, offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    async def _sock_sendfile_native(self, sock, file, offset, count):
        if not hasattr(os, "sendfile"):
            raise exceptions.SendfileNotAvailableError(
                "os.sendfile() is not available")
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise exceptions.SendfileNotAvailableError("not a regular file")
        try:
            _, fsize = _core.stat_fd(fileno)
        except OSError:
            raise exceptions.SendfileNotAvailableError("not a regular file")
        blocksize = count if count else fsize
        if not blocksize:
            return 0  # empty file
        seek_to_offset(fileno, offset)
        op = _Sendfile(sock, fileno, offset, count, blocksize)
        try:
            return await self._sockops.wait_call(sock, True, op,
                                                 name="sock_sendfile")
        finally:
            op.update_filepos()

    async def _sock_sendfile_fallback(self, sock, file, offset, count):
        fallback_seek(file, offset)
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



if sys.version_info < (3, 11):
    # asyncio gained sock_recvfrom, sock_recvfrom_into and sock_sendto in
    # 3.11; before that the loop's public surface has none of them (tools
    # probe with hasattr), so neither does oxloop's.
    del SocketsMixin.sock_recvfrom
    del SocketsMixin.sock_recvfrom_into
    del SocketsMixin.sock_sendto
