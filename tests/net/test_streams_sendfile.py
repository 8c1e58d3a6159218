"""loop.sendfile() over stream transports, on both loops."""

import asyncio
import io
import os
import socket
import tempfile

import pytest

from netutil import RecordingProtocol, serve, wait_for

DATA = os.urandom(3 * 1024 * 1024 + 123)


@pytest.fixture
def datafile():
    with tempfile.TemporaryFile() as f:
        f.write(DATA)
        f.seek(0)
        yield f


def _run(loop, body):
    async def main():
        protos = []

        def factory():
            p = RecordingProtocol(loop)
            protos.append(p)
            return p

        server, port = await serve(loop, factory)
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        result = await body(tr)
        tr.close()
        await wait_for(client.lost)
        while not protos or not protos[0].lost.done():
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()
        return result, bytes(protos[0].data)

    return loop.run_until_complete(main())


def test_sendfile_whole_file(loop, datafile):
    async def body(tr):
        tr.write(b"head:")
        sent = await loop.sendfile(tr, datafile)
        tr.write(b":tail")
        return sent

    sent, received = _run(loop, body)
    assert sent == len(DATA)
    assert received == b"head:" + DATA + b":tail"
    assert datafile.tell() == len(DATA)


def test_sendfile_offset_and_count(loop, datafile):
    async def body(tr):
        return await loop.sendfile(tr, datafile, offset=1000, count=50_000)

    sent, received = _run(loop, body)
    assert sent == 50_000
    assert received == DATA[1000:51_000]
    assert datafile.tell() == 51_000


def test_sendfile_fallback_for_non_regular_file(loop):
    buf = io.BytesIO(DATA[:100_000])

    async def body(tr):
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await loop.sendfile(tr, buf, fallback=False)
        return await loop.sendfile(tr, buf)

    sent, received = _run(loop, body)
    assert sent == 100_000
    assert received == DATA[:100_000]


def _sendfile_seeks_to_offset():
    # CPython 3.14's asyncio: the file ends at offset + bytes sent even when
    # nothing was sent, and the fallback starts at `offset` even when it is
    # 0 (before, it seeked only for a non-zero offset and after sending).
    from asyncio import unix_events
    update = unix_events._UnixSelectorEventLoop._sock_sendfile_update_filepos
    return update.__code__.co_argcount == 3


@pytest.mark.parametrize("where", ["end", "start"])
def test_sendfile_file_position_from_elsewhere(loop, datafile, where):
    offset = len(DATA) if where == "end" else 0
    datafile.seek(123)

    async def body(tr):
        return await loop.sendfile(tr, datafile, offset=offset)

    sent, received = _run(loop, body)
    assert sent == len(DATA) - offset
    assert received == DATA[offset:]
    if _sendfile_seeks_to_offset() or where == "start":
        assert datafile.tell() == len(DATA)
    else:
        assert datafile.tell() == 123


def test_sendfile_fallback_starts_at_offset_zero(loop):
    buf = io.BytesIO(DATA[:100_000])
    buf.seek(123)

    async def body(tr):
        return await loop.sendfile(tr, buf, offset=0)

    sent, received = _run(loop, body)
    start = 0 if _sendfile_seeks_to_offset() else 123
    assert sent == 100_000 - start
    assert received == DATA[start:100_000]
    assert buf.tell() == 0 + sent  # offset + bytes sent, whatever it read


async def _first_made(protos):
    while not protos:
        await asyncio.sleep(0.01)
    await protos[0].made
    return protos[0]


def test_write_during_sendfile_raises(loop):
    # Both ends' socket buffers are pinned small (SO_RCVBUF/SO_SNDBUF turn
    # the kernel's autotuning off; loopback's tcp_rmem may grow to 32 MiB
    # or more), so the file cannot fit in them while the peer does not read.
    big = DATA
    datafile = tempfile.TemporaryFile()
    datafile.write(big)
    datafile.seek(0)

    async def main():
        protos = []

        def factory():
            p = RecordingProtocol(loop)
            protos.append(p)
            return p

        server, port = await serve(loop, factory)
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        tr.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        peer = await wait_for(_first_made(protos))
        # The peer does not read for now. (Not from connection_made: 3.9's
        # selector transport starts reading after it even when paused.)
        peer.transport.pause_reading()
        peer.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        task = asyncio.ensure_future(loop.sendfile(tr, datafile))
        await asyncio.sleep(0.05)
        assert not task.done()
        with pytest.raises(RuntimeError, match="sendfile is in progress"):
            tr.write(b"no")
        peer.transport.resume_reading()
        assert await wait_for(task) == len(big)
        tr.write(b"after")
        tr.close()
        await wait_for(client.lost)
        await wait_for(protos[0].lost)
        assert bytes(protos[0].data) == big + b"after"
        server.close()
        await server.wait_closed()

    try:
        loop.run_until_complete(main())
    finally:
        datafile.close()


def test_sendfile_argument_errors(loop, datafile):
    async def body(tr):
        with pytest.raises(ValueError, match="offset"):
            await loop.sendfile(tr, datafile, offset=-1)
        with pytest.raises(ValueError, match="count"):
            await loop.sendfile(tr, datafile, count=0)
        with pytest.raises(TypeError, match="count"):
            await loop.sendfile(tr, datafile, count="10")
        return None

    _run(loop, body)

    async def closing():
        server, port = await serve(loop, lambda: RecordingProtocol(loop))
        tr, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", port)
        tr.close()
        with pytest.raises(RuntimeError, match="is closing"):
            await loop.sendfile(tr, datafile)
        await wait_for(client.lost)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(closing())
