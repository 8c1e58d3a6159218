"""Datagram endpoints for oxloop: `create_datagram_endpoint` and the Python
face of the native datagram transport (src/udp/).

`DatagramMixin` is a base of `SocketsMixin` (and so of `oxloop.Loop`).
"""

import socket
import sys
import warnings
from asyncio import log, transports, trsock

from . import _core
from ._netutil import remove_stale_socket_file, set_reuseport
from ._resolve import ensure_resolved
from ._transport_base import CoreDelegates, CoreStatsInfo

__all__ = ("DatagramMixin",)

_PY310 = sys.version_info[:2] == (3, 10)
_PY311 = sys.version_info >= (3, 11)
_PY313 = sys.version_info >= (3, 13)

logger = log.logger

_unset = object()


class _DatagramTransport(CoreDelegates, CoreStatsInfo, transports.Transport,
                         transports.DatagramTransport):
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
        # connection_made(), then reading, then the waiter, as asyncio.
        core._start(waiter)

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

    def set_protocol(self, protocol):
        self._protocol = protocol
        self._core.set_protocol(protocol)

    if _PY311:
        # Datagram transports can pause reading since 3.11 (before, the
        # stdlib's raise NotImplementedError, as the base class here does).
        def is_reading(self):
            return self._core.is_reading()

        def pause_reading(self):
            if self._core.pause_reading() and self._loop.get_debug():
                logger.debug("%r pauses reading", self)

        def resume_reading(self):
            if self._core.resume_reading() and self._loop.get_debug():
                logger.debug("%r resumes reading", self)

    def _force_close(self, exc):
        self._core.abort(exc)

    def _fatal_error(self, exc, message="Fatal error on transport"):
        if isinstance(exc, OSError) and self._loop.get_debug():
            logger.debug("%r: %s", self, message, exc_info=True)
        self._core._fatal_error(exc, message)


class DatagramMixin:
    """create_datagram_endpoint."""

    __slots__ = ()

    # -- datagrams ---------------------------------------------------------

    def _make_datagram_transport(self, sock, protocol, address=None,
                                 waiter=None, extra=None):
        return _DatagramTransport(self, sock, protocol, address, waiter,
                                  extra)

    async def _create_datagram_endpoint(self, protocol_factory, local_addr,
                                        remote_addr, family, proto, flags,
                                        reuse_port, allow_broadcast, sock,
                                        reuse_address=_unset):
        # asyncio's, with its per-version differences (3.9-3.13).
        if sock is not None:
            if _PY313:
                if sock.type == socket.SOCK_STREAM:
                    raise ValueError(
                        f"A datagram socket was expected, got {sock!r}")
            elif sock.type != socket.SOCK_DGRAM:
                raise ValueError(f"A UDP Socket was expected, got {sock!r}")
            if (local_addr or remote_addr or family or proto or flags
                    or reuse_port or allow_broadcast):
                # Show the problematic kwargs in the message.
                opts = dict(local_addr=local_addr, remote_addr=remote_addr,
                            family=family, proto=proto, flags=flags)
                if not _PY311:
                    opts["reuse_address"] = reuse_address
                opts.update(reuse_port=reuse_port,
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
                if local_addr:
                    remove_stale_socket_file(local_addr)
                addr_pairs_info = (((family, proto),
                                    (local_addr, remote_addr)),)
            else:
                # Join the addresses by (family, protocol).
                addr_infos = {}
                for idx, addr in ((0, local_addr), (1, remote_addr)):
                    if addr is not None:
                        if _PY310:
                            assert isinstance(addr, tuple) and len(addr) == 2, (
                                "2-tuple is expected")
                        elif not (isinstance(addr, tuple) and len(addr) == 2):
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
            if not _PY311 and reuse_address is not _unset:  # bpo-37228
                if reuse_address:
                    raise ValueError(
                        "Passing `reuse_address=True` is no longer supported,"
                        " as the usage of SO_REUSEPORT in UDP poses a "
                        "significant security concern.")
                warnings.warn(
                    "The *reuse_address* parameter has been deprecated as "
                    "of 3.5.10 and is scheduled for removal in 3.11.",
                    DeprecationWarning, stacklevel=3)
            for ((family, proto),
                 (local_address, remote_address)) in addr_pairs_info:
                sock = None
                r_addr = None
                try:
                    sock = socket.socket(
                        family=family, type=socket.SOCK_DGRAM, proto=proto)
                    if reuse_port:
                        set_reuseport(sock)
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
                except:
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
        except:
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
            return await self._create_datagram_endpoint(
                protocol_factory, local_addr, remote_addr, family, proto,
                flags, reuse_port, allow_broadcast, sock, reuse_address)
