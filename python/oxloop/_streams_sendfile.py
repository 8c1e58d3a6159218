"""`loop.sendfile()` for oxloop's stream transports (asyncio's semantics).

Native path: wait until the transport's write buffer is empty, then the
core sends the file with sendfile(2) (`StreamTransport._sendfile_start`).
Fallback (a file without a usable fd, or the native call failed before
sending anything): read chunks in the executor and write them, with
asyncio's flow control.
"""

import io
import os
import socket
import sys

from asyncio import constants, exceptions, protocols

from . import _core


def _sendfile_seeks_to_offset():
    # CPython 3.14 (test_sendfile.test_sendfile_offset): the native path leaves the
    # file at offset + bytes sent even when it sent nothing, and the fallback
    # seeks to `offset` even when it is 0. Older versions seek only after
    # sending something, and the fallback only for a non-zero offset. Follow
    # the installed asyncio (its helper lost the `total_sent` argument).
    try:
        from asyncio import unix_events
        update = unix_events._UnixSelectorEventLoop._sock_sendfile_update_filepos
    except (ImportError, AttributeError):
        return sys.version_info >= (3, 14)
    return update.__code__.co_argcount == 3


SEEK_TO_OFFSET = _sendfile_seeks_to_offset()


def seek_to_offset(fileno, offset):
    """Before a native sendfile, where the installed asyncio wants the file
    at `offset` whatever is sent (the native code moves it on by what it
    sends, so the file ends at offset + bytes sent)."""
    if SEEK_TO_OFFSET:
        try:
            os.lseek(fileno, offset, os.SEEK_SET)
        except OSError:
            pass  # not seekable: os.sendfile will say so


def fallback_seek(file, offset):
    """Where the fallback starts reading."""
    if offset or (SEEK_TO_OFFSET and hasattr(file, "seek")):
        file.seek(offset)


class SendfileFallbackProtocol(protocols.Protocol):
    # asyncio's, for oxloop transports.
    def __init__(self, transp):
        self._transport = transp
        self._proto = transp.get_protocol()
        self._should_resume_reading = transp.is_reading()
        self._should_resume_writing = transp._protocol_paused
        transp.pause_reading()
        transp.set_protocol(self)
        if self._should_resume_writing:
            self._write_ready_fut = self._transport._loop.create_future()
        else:
            self._write_ready_fut = None

    async def drain(self):
        if self._transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        fut = self._write_ready_fut
        if fut is None:
            return
        await fut

    def connection_made(self, transport):
        raise RuntimeError("Invalid state: "
                           "connection should have been established already.")

    def connection_lost(self, exc):
        if self._write_ready_fut is not None:
            if exc is None:
                self._write_ready_fut.set_exception(
                    ConnectionError("Connection is closed by peer"))
            else:
                self._write_ready_fut.set_exception(exc)
        self._proto.connection_lost(exc)

    def pause_writing(self):
        if self._write_ready_fut is not None:
            return
        self._write_ready_fut = self._transport._loop.create_future()

    def resume_writing(self):
        if self._write_ready_fut is None:
            return
        self._write_ready_fut.set_result(False)
        self._write_ready_fut = None

    def data_received(self, data):
        raise RuntimeError("Invalid state: reading should be paused")

    def eof_received(self):
        raise RuntimeError("Invalid state: reading should be paused")

    async def restore(self):
        self._transport.set_protocol(self._proto)
        if self._should_resume_reading:
            self._transport.resume_reading()
        if self._write_ready_fut is not None:
            self._write_ready_fut.cancel()
        if self._should_resume_writing:
            self._proto.resume_writing()

async def sendfile(loop, transport, file, offset=0, count=None, *,
                   fallback=True):
    """Send a file over a transport; return the number of bytes sent."""
    if transport.is_closing():
        raise RuntimeError("Transport is closing")
    mode = getattr(transport, "_sendfile_compatible",
                   constants._SendfileMode.UNSUPPORTED)
    if mode is constants._SendfileMode.UNSUPPORTED:
        raise RuntimeError(
            f"sendfile is not supported for transport {transport!r}")
    if mode is constants._SendfileMode.TRY_NATIVE:
        try:
            return await sendfile_native(loop, transport, file,
                                               offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
    if not fallback:
        raise RuntimeError(
            f"fallback is disabled and native sendfile is not "
            f"supported for transport {transport!r}")
    return await sendfile_fallback(loop, transport, file, offset, count)

def check_sendfile_params(file, offset, count, sock=None):
    """asyncio's argument checks for sendfile and (with `sock`) sock_sendfile,
    in asyncio's order."""
    if "b" not in getattr(file, "mode", "b"):
        raise ValueError("file should be opened in binary mode")
    if sock is not None and sock.type != socket.SOCK_STREAM:
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

async def sendfile_native(loop, transp, file, offset, count):
    core = getattr(transp, "_core", None)
    if not isinstance(core, _core.StreamTransport) or not hasattr(
            os, "sendfile"):
        raise exceptions.SendfileNotAvailableError(
            "sendfile syscall is not supported")
    resume_reading = transp.is_reading()
    transp.pause_reading()
    await core._make_empty_waiter()
    try:
        check_sendfile_params(file, offset, count)
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise exceptions.SendfileNotAvailableError(
                "not a regular file")
        try:
            _, fsize = _core.stat_fd(fileno)
        except OSError:
            raise exceptions.SendfileNotAvailableError(
                "not a regular file")
        blocksize = count if count else fsize
        if not blocksize:
            return 0
        seek_to_offset(fileno, offset)
        fut = loop.create_future()
        core._sendfile_start(fileno, offset, count or 0, fut)
        return await fut
    finally:
        core._reset_empty_waiter()
        if resume_reading:
            transp.resume_reading()

async def sendfile_fallback(loop, transp, file, offset, count):
    fallback_seek(file, offset)
    blocksize = min(count, 16384) if count else 16384
    buf = bytearray(blocksize)
    total_sent = 0
    proto = SendfileFallbackProtocol(transp)
    try:
        while True:
            if count:
                blocksize = min(count - total_sent, blocksize)
                if blocksize <= 0:
                    return total_sent
            view = memoryview(buf)[:blocksize]
            read = await loop.run_in_executor(None, file.readinto, view)
            if not read:
                return total_sent
            await proto.drain()
            transp.write(view[:read])
            total_sent += read
    finally:
        if total_sent > 0 and hasattr(file, "seek"):
            file.seek(offset + total_sent)
        await proto.restore()
