"""Pipe transports for oxloop (`connect_read_pipe`, `connect_write_pipe`).

`PipesMixin` is one of `oxloop.Loop`'s bases.

Design: for now the transports are asyncio's own Unix pipe transports
(`asyncio.unix_events._UnixReadPipeTransport` and
`_UnixWritePipeTransport`), imported at runtime the way the TLS code imports
`asyncio.sslproto`. They drive the fd through the loop's `_add_reader`/
`_remove_reader`/`_add_writer`/`_remove_writer`, which this mixin maps onto
oxloop's native readiness callbacks (`add_reader` & co. in the core), so
the reactor is oxloop's and only the transport bookkeeping is Python.
They bring asyncio's exact behaviour: the fd-type check (pipes, sockets and
character devices only: `ValueError` for a regular file), `get_extra_info(
'pipe')`, flow control with asyncio's limits, `BrokenPipeError` handed to
`connection_lost` when the reader goes away (the write transport watches its
fd for readability to see the peer close), and a `ResourceWarning` for an
unclosed transport.

Invariants:
- `connection_made` runs from the ready queue, reading starts in the
  callback after it, and the waiter is resolved after both.
- If the waiter is cancelled or fails, the transport is closed before the
  error propagates (no fd is leaked).
"""

import logging

from asyncio import unix_events

__all__ = ("PipesMixin",)

logger = logging.getLogger("asyncio")


class PipesMixin:
    """connect_read_pipe and connect_write_pipe (Unix only)."""

    __slots__ = ()

    # The private readiness API asyncio's transports call.

    def _add_reader(self, fd, callback, *args):
        self._check_closed()
        self.add_reader(fd, callback, *args)

    def _remove_reader(self, fd):
        if self.is_closed():
            return False
        return self.remove_reader(fd)

    def _add_writer(self, fd, callback, *args):
        self._check_closed()
        self.add_writer(fd, callback, *args)

    def _remove_writer(self, fd):
        if self.is_closed():
            return False
        return self.remove_writer(fd)

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None,
                                  extra=None):
        return unix_events._UnixReadPipeTransport(self, pipe, protocol,
                                                  waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None,
                                   extra=None):
        return unix_events._UnixWritePipeTransport(self, pipe, protocol,
                                                   waiter, extra)

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
