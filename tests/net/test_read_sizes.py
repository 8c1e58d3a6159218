"""Reads of every size reach data_received intact and in order.

oxloop reads small messages through a shared buffer and large ones straight
into the ``bytes`` it hands over (chosen from the previous read's size), so
a stream that alternates between tiny and large writes crosses between the
two paths many times; the bytes received must be exactly those sent.
"""

import asyncio
import socket

from netutil import RecordingProtocol

SIZES = [1, 100 * 1024, 10, 300 * 1024, 16 * 1024, 3, 64 * 1024, 2, 1024 * 1024, 1]


def pattern(n, seed):
    return bytes((seed + i * 7) & 0xFF for i in range(n))


def test_alternating_small_and_large_reads(loop):
    chunks = [pattern(n, i) for i, n in enumerate(SIZES)]
    expected = b"".join(chunks)

    async def main():
        a, b = socket.socketpair()
        proto = RecordingProtocol(loop)
        transport, _ = await loop.create_connection(lambda: proto, sock=a)
        b.setblocking(False)
        try:
            sent = 0
            for chunk in chunks:
                await loop.sock_sendall(b, chunk)
                sent += len(chunk)
                # let the reader catch up, so that read sizes follow the
                # sizes written (and the size hint changes both ways)
                while len(proto.data) < sent:
                    await asyncio.sleep(0.001)
            b.shutdown(socket.SHUT_WR)
            await proto.got_eof
        finally:
            b.close()
        await proto.lost
        assert transport.is_closing()
        return bytes(proto.data)

    assert loop.run_until_complete(asyncio.wait_for(main(), 30)) == expected


def test_large_reads_are_bytes_of_their_own(loop):
    """Each data_received gets its own immutable bytes, even when a later
    read reuses memory (kept chunks must not change)."""
    kept = []

    class Keep(RecordingProtocol):
        def data_received(self, data):
            kept.append(data)
            super().data_received(data)

    payload = [pattern(200 * 1024, s) for s in range(4)]

    async def main():
        a, b = socket.socketpair()
        proto = Keep(loop)
        await loop.create_connection(lambda: proto, sock=a)
        b.setblocking(False)
        try:
            for p in payload:
                await loop.sock_sendall(b, p)
            b.shutdown(socket.SHUT_WR)
            await proto.got_eof
        finally:
            b.close()
        await proto.lost

    loop.run_until_complete(asyncio.wait_for(main(), 30))
    assert all(type(k) is bytes for k in kept)
    assert b"".join(kept) == b"".join(payload)
