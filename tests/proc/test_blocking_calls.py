"""No blocking call on the loop's thread, as tools such as `blockbuster`
see it (aiohttp's and anyio's suites run with it autouse).

Every scenario runs under `blockbuster_ctx()` scanning every module, with
the stdlib loop's own blocking calls exempted where blockbuster exempts
them or where asyncio makes them in its own files (`ASYNCIO_EXEMPT`), and
with `os.waitpid` and `os.fstat` watched too (blockbuster does not wrap
them). So both loops are held to the same rule: what the stdlib does inside
asyncio is allowed; oxloop must do it natively or off the loop's thread.
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys

import pytest

blockbuster = pytest.importorskip("blockbuster")

PY = sys.executable
GUARD = 60

# Where the stdlib loop itself calls these, inside asyncio's own files.
ASYNCIO_EXEMPT = {
    "os.stat": [("asyncio/base_events.py", "create_datagram_endpoint"),
                ("asyncio/unix_events.py", "create_unix_server")],
    "os.remove": [("asyncio/base_events.py", "create_datagram_endpoint"),
                  ("asyncio/unix_events.py", "create_unix_server")],
    "os.unlink": [("asyncio/unix_events.py", "_stop_serving")],
    "os.fstat": [("asyncio/unix_events.py", "__init__"),
                 ("asyncio/unix_events.py", "_sock_sendfile_native")],
    # Popen reaps a child that failed to exec (blockbuster exempts its
    # os.read at the same place).
    "os.waitpid": [("asyncio/base_events.py", "subprocess_exec"),
                   ("asyncio/base_events.py", "subprocess_shell"),
                   ("asyncio/unix_events.py", "_do_wait"),
                   ("asyncio/unix_events.py", "_do_waitpid"),
                   ("asyncio/unix_events.py", "_do_waitpid_all")],
}


@pytest.fixture
def guard():
    """Activates the check for the duration of the test."""
    with blockbuster.blockbuster_ctx() as bb:
        for name in ("os.waitpid", "os.fstat"):
            bb.functions[name] = blockbuster.BlockBusterFunction(
                None, name).activate()
        for name, places in ASYNCIO_EXEMPT.items():
            for filename, func in places:
                bb.functions[name].can_block_in(filename, func)
        try:
            yield bb
        finally:
            for name in ("os.waitpid", "os.fstat"):
                bb.functions[name].deactivate()


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, GUARD))


def test_subprocess_exec_shell_and_failure(loop, guard):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; sys.stdout.write(sys.stdin.read())",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        out, _ = await proc.communicate(b"ping")
        assert out == b"ping" and proc.returncode == 0
        proc = await asyncio.create_subprocess_shell(
            "exit 7", stdout=subprocess.DEVNULL)
        assert await proc.wait() == 7
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("/nonexistent/oxloop-prog")

    run(loop, main())


def test_subprocess_killed_and_cancelled(loop, guard):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import time; time.sleep(60)")
        proc.kill()
        assert await proc.wait() == -signal.SIGKILL
        task = asyncio.ensure_future(asyncio.create_subprocess_exec(
            PY, "-c", "import time; time.sleep(60)"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(loop, main())


def test_sock_sendfile_and_transport_sendfile(loop, guard, tmp_path):
    path = tmp_path / "data.bin"
    data = os.urandom(200_000)
    path.write_bytes(data)

    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        with a, b, open(path, "rb") as f:
            reader = asyncio.ensure_future(_recv_all(loop, b, len(data)))
            assert await loop.sock_sendfile(a, f) == len(data)
            assert await reader == data

        got = bytearray()
        done = loop.create_future()

        class Sink(asyncio.Protocol):
            def data_received(self, chunk):
                got.extend(chunk)
                if len(got) == len(data) and not done.done():
                    done.set_result(None)

        server = await loop.create_server(Sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        with open(path, "rb") as f:
            assert await loop.sendfile(tr, f) == len(data)
        await done
        tr.close()
        server.close()
        await server.wait_closed()
        assert bytes(got) == data

    run(loop, main())


async def _recv_all(loop, sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_unix_server_stale_path_and_close(loop, guard, tmp_path):
    path = str(tmp_path / "s.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()

    async def main():
        lost = loop.create_future()

        class Peer(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.set_result(exc)

        server = await loop.create_unix_server(Peer, path)
        tr, _ = await loop.create_unix_connection(asyncio.Protocol, path)
        tr.close()
        assert await lost is None
        server.close()
        await server.wait_closed()

    run(loop, main())
    if sys.version_info >= (3, 13):
        assert not os.path.exists(path)  # cleanup_socket=True


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_unix_datagram_endpoint_stale_path(loop, guard, tmp_path):
    path = str(tmp_path / "d.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(path)
    stale.close()

    async def main():
        tr, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=path, family=socket.AF_UNIX)
        assert tr.get_extra_info("sockname") == path
        tr.close()
        await asyncio.sleep(0)

    run(loop, main())


def test_pipes_and_signals(loop, guard):
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    got = loop.create_future()

    class Reader(asyncio.Protocol):
        def data_received(self, data):
            if not got.done():
                got.set_result(data)

    async def main():
        rtr, _ = await loop.connect_read_pipe(Reader, os.fdopen(rfd, "rb", 0))
        wtr, _ = await loop.connect_write_pipe(asyncio.BaseProtocol,
                                               os.fdopen(wfd, "wb", 0))
        wtr.write(b"through the pipe")
        assert await got == b"through the pipe"
        wtr.close()
        rtr.close()
        fired = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, fired.set_result, "usr1")
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert await fired == "usr1"
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)
        await asyncio.sleep(0)

    run(loop, main())
