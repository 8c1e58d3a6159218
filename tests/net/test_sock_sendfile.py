"""loop.sock_sendfile: the zero-copy path (os.sendfile) for regular files,
the read/send fallback for other file objects, asyncio's argument checks and
`fallback=` semantics, and the file position afterwards."""

import asyncio
import io
import socket

import pytest

TIMEOUT = 10
DATA = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB


@pytest.fixture
def tcp_pair():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    client.setblocking(False)
    server.setblocking(False)
    yield client, server
    client.close()
    server.close()


@pytest.fixture
def datafile(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    with open(path, "rb") as f:
        yield f


def send_and_collect(loop, client, server, file, **kwargs):
    async def collect(expected):
        got = bytearray()
        while len(got) < expected:
            chunk = await loop.sock_recv(server, 1 << 16)
            if not chunk:
                break
            got += chunk
        return bytes(got)

    async def main():
        expected = kwargs.pop("_expected")
        reader = asyncio.ensure_future(collect(expected))
        sent = await loop.sock_sendfile(client, file, **kwargs)
        return sent, await reader

    return loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))


def test_sendfile_regular_file(loop, tcp_pair, datafile):
    client, server = tcp_pair
    sent, got = send_and_collect(loop, client, server, datafile, _expected=len(DATA))
    assert sent == len(DATA)
    assert got == DATA
    assert datafile.tell() == len(DATA)


def test_sendfile_offset_and_count(loop, tcp_pair, datafile):
    client, server = tcp_pair
    sent, got = send_and_collect(loop, client, server, datafile, offset=1000,
                                 count=5000, _expected=5000)
    assert sent == 5000
    assert got == DATA[1000:6000]
    assert datafile.tell() == 6000


def test_sendfile_empty_file(loop, tcp_pair, tmp_path):
    client, _ = tcp_pair
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with open(path, "rb") as f:
        assert loop.run_until_complete(loop.sock_sendfile(client, f)) == 0
        assert f.tell() == 0


def test_sendfile_fallback_for_non_regular_file(loop, tcp_pair):
    client, server = tcp_pair
    f = io.BytesIO(DATA)
    sent, got = send_and_collect(loop, client, server, f, offset=10, _expected=len(DATA) - 10)
    assert sent == len(DATA) - 10
    assert got == DATA[10:]
    assert f.tell() == len(DATA)


def test_sendfile_no_fallback_raises(loop, tcp_pair):
    client, _ = tcp_pair
    with pytest.raises(asyncio.SendfileNotAvailableError):
        loop.run_until_complete(loop.sock_sendfile(client, io.BytesIO(b"abc"), fallback=False))


def test_sendfile_mixed_with_sendall(loop, tcp_pair, datafile):
    client, server = tcp_pair

    async def main():
        await loop.sock_sendall(client, b"HEAD")
        await loop.sock_sendfile(client, datafile)
        await loop.sock_sendall(client, b"END")
        client.shutdown(socket.SHUT_WR)
        got = bytearray()
        while True:
            chunk = await loop.sock_recv(server, 1 << 16)
            if not chunk:
                return bytes(got)
            got += chunk

    got = loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
    assert got == b"HEAD" + DATA + b"END"


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"offset": -1}, ValueError, "offset must be a non-negative integer"),
    ({"offset": "0"}, TypeError, "offset must be a non-negative integer"),
    ({"count": 0}, ValueError, "count must be a positive integer"),
    ({"count": 1.5}, TypeError, "count must be a positive integer"),
])
def test_sendfile_bad_arguments(loop, tcp_pair, datafile, kwargs, exc, match):
    client, _ = tcp_pair
    with pytest.raises(exc, match=match):
        loop.run_until_complete(loop.sock_sendfile(client, datafile, **kwargs))


def test_sendfile_text_file_is_value_error(loop, tcp_pair, tmp_path):
    client, _ = tcp_pair
    path = tmp_path / "t.txt"
    path.write_text("x")
    with open(path, "r") as f:
        with pytest.raises(ValueError, match="binary mode"):
            loop.run_until_complete(loop.sock_sendfile(client, f))


def test_sendfile_datagram_socket_is_value_error(loop, datafile):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        with pytest.raises(ValueError, match="SOCK_STREAM"):
            loop.run_until_complete(loop.sock_sendfile(sock, datafile))


class _CountingFile(io.FileIO):
    """A file that counts the reads the copying fallback would make."""

    reads = 0

    def readinto(self, buf):
        _CountingFile.reads += 1
        return super().readinto(buf)

    def read(self, size=-1):
        _CountingFile.reads += 1
        return super().read(size)


def test_regular_file_goes_through_os_sendfile(loop, tcp_pair, tmp_path):
    # The zero-copy path never reads the file through Python; the fallback
    # (taken for a file without a usable fd) does.
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    client, server = tcp_pair
    _CountingFile.reads = 0
    with _CountingFile(path, "rb") as f:
        sent, got = send_and_collect(loop, client, server, f, _expected=len(DATA))
    assert got == DATA
    assert _CountingFile.reads == 0, "the zero-copy path was not used"

    class NoFileno(_CountingFile):
        def fileno(self):
            raise io.UnsupportedOperation("no fileno")

    with NoFileno(path, "rb") as f:
        send_and_collect(loop, client, server, f, _expected=len(DATA))
    assert _CountingFile.reads > 0
