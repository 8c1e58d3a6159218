"""TLS upgrades of streams (start_tls), on both loops."""

import asyncio
import sys

import pytest

from netutil import wait_for

ssl = pytest.importorskip("ssl")
test_utils = pytest.importorskip("test.test_asyncio.utils")

# gh-142352 (asyncio 3.14): start_tls(server_side=True) hands what the
# StreamReader buffered to TLS; before, a ClientHello that came early was lost
# and the handshake hung.
STDLIB_KEEPS_BUFFERED_DATA = (
    "_incoming" in asyncio.base_events.BaseEventLoop.start_tls.__code__.co_names)


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="StreamWriter.start_tls is 3.11+")
def test_start_tls_with_the_client_hello_already_buffered(loop, loop_kind):
    if loop_kind == "asyncio" and not STDLIB_KEEPS_BUFFERED_DATA:
        pytest.skip("asyncio before 3.14 loses the buffered ClientHello (gh-142352)")

    async def handler(reader, writer):
        assert await reader.readline() == b"STARTTLS\n"
        # Let the client's ClientHello, sent right after its line, arrive
        # into the StreamReader's buffer before the upgrade.
        await asyncio.sleep(0.2)
        await writer.start_tls(test_utils.simple_server_sslcontext())
        line = await reader.readline()
        writer.write(b"pong:" + line)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS\n")
        await writer.drain()
        await wait_for(writer.start_tls(test_utils.simple_client_sslcontext()), 5)
        writer.write(b"ping\n")
        answer = await wait_for(reader.readline(), 5)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return answer

    assert loop.run_until_complete(main()) == b"pong:ping\n"
