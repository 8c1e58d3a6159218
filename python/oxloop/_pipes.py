"""Pipe transports for oxloop (`connect_read_pipe`, `connect_write_pipe`).

`PipesMixin` is one of `oxloop.Loop`'s bases.

Design: the transports are native (`oxloop._core.PipeTransport`, see
`src/transports/pipe.rs`): the read path, the write buffer, flow control
and the close sequence run in Rust on the loop's reactor. What user code
sees is `ReadPipeTransport`/`WritePipeTransport`, a thin
`asyncio.ReadTransport`/`asyncio.WriteTransport` subclass that holds the
core and binds the core's methods onto itself (so `isinstance` holds and a
`write` costs one native call). This module keeps what Python does
naturally: asyncio's checks on the fd type (pipes, sockets and character
devices only: `ValueError` for a regular file), `get_extra_info('pipe')`
(the transport's `_extra`), the repr and the `ResourceWarning` of an
unclosed transport.

Behaviour is asyncio's: the read pipe delivers EOF as `eof_received` then
`connection_lost(None)`; the write pipe over a FIFO or socket watches its fd
for readability to see the reader go away (`connection_lost(None)`, or
`BrokenPipeError()` if data was still buffered); write errors that are
`OSError`s are not reported to the exception handler.

Invariants:
- `connection_made` runs from the ready queue, I/O starts in the callback
  after it, and the waiter is resolved after both.
- If the waiter is cancelled or fails, the transport is closed before the
  error propagates (no fd is leaked).
"""

import logging
import os
import stat
import sys
from asyncio import transports

from . import _core
from ._transport_base import CoreStatsInfo, OwnedCore

__all__ = ("PipesMixin", "ReadPipeTransport", "WritePipeTransport")

logger = logging.getLogger("asyncio")


_READ_METHODS = ("pause_reading", "resume_reading", "is_reading", "close",
                 "is_closing", "set_protocol", "get_protocol")
_WRITE_METHODS = ("write", "writelines", "write_eof", "can_write_eof",
                  "abort", "close", "is_closing", "get_write_buffer_size",
                  "get_write_buffer_limits", "set_write_buffer_limits",
                  "set_protocol", "get_protocol")


class _PipeTransport(OwnedCore, CoreStatsInfo):
    """What both pipe transports share: the native core and its methods."""

    def _pipe_init(self, loop, pipe, protocol, waiter, writable, methods):
        self._extra["pipe"] = pipe
        fileno = pipe.fileno()
        mode, _ = _core.stat_fd(fileno)
        is_fifo = stat.S_ISFIFO(mode)
        is_socket = stat.S_ISSOCK(mode)
        if not (is_fifo or is_socket or stat.S_ISCHR(mode)):
            raise ValueError(
                "Pipe transport is only for pipes, sockets and character "
                "devices" if writable else
                "Pipe transport is for pipes/sockets only.")
        os.set_blocking(fileno, False)
        # On AIX, the reader trick only works for sockets.
        watch_close = is_socket or (
            is_fifo and not sys.platform.startswith("aix"))
        core = _core.PipeTransport(loop, pipe, fileno, writable, watch_close)
        self._core = core
        self._fileno = fileno
        for name in methods:
            setattr(self, name, getattr(core, name))
        core._start(self, protocol, waiter)



class ReadPipeTransport(_PipeTransport, transports.ReadTransport):
    """The read end of a pipe (`loop.connect_read_pipe`)."""

    # asyncio's public read size (the native reads use as much).
    max_size = 256 * 1024

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        self._pipe_init(loop, pipe, protocol, waiter, False, _READ_METHODS)


class WritePipeTransport(_PipeTransport, transports.Transport):
    """The write end of a pipe (`loop.connect_write_pipe`). A full
    `Transport`, as asyncio's: its reading methods raise
    NotImplementedError."""

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        self._pipe_init(loop, pipe, protocol, waiter, True, _WRITE_METHODS)

    @property
    def _protocol_paused(self):
        return self._core._protocol_paused


class PipesMixin:
    """connect_read_pipe and connect_write_pipe (Unix only)."""

    __slots__ = ()

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None,
                                  extra=None):
        return ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None,
                                   extra=None):
        return WritePipeTransport(self, pipe, protocol, waiter, extra)

    async def _pipe_connect(self, make, protocol_factory, pipe, what):
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = make(pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if self.get_debug():
            logger.debug("%s pipe: fd=%s transport=%r protocol=%r",
                         what, pipe.fileno(), transport, protocol)
        return transport, protocol

    async def connect_read_pipe(self, protocol_factory, pipe):
        """Register the read end of `pipe` (a file-like object)."""
        return await self._pipe_connect(self._make_read_pipe_transport,
                                        protocol_factory, pipe, "Read")

    async def connect_write_pipe(self, protocol_factory, pipe):
        """Register the write end of `pipe` (a file-like object)."""
        return await self._pipe_connect(self._make_write_pipe_transport,
                                        protocol_factory, pipe, "Write")
