"""getaddrinfo / getnameinfo: same results and errors as the socket module
(and asyncio), without blocking the loop."""

import asyncio
import socket
import threading

import pytest

TIMEOUT = 10


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))


@pytest.mark.parametrize("host, port, kwargs", [
    ("127.0.0.1", 80, {}),
    ("127.0.0.1", "80", {"type": socket.SOCK_STREAM}),
    ("localhost", 53, {"type": socket.SOCK_DGRAM}),
    ("localhost", None, {"family": socket.AF_INET}),
    (None, 8080, {"flags": socket.AI_PASSIVE, "type": socket.SOCK_STREAM}),
    (b"127.0.0.1", 0, {"proto": socket.IPPROTO_TCP}),
])
def test_getaddrinfo_matches_socket_module(loop, host, port, kwargs):
    expected = socket.getaddrinfo(host, port, **kwargs)
    assert run(loop, loop.getaddrinfo(host, port, **kwargs)) == expected


def test_getaddrinfo_error_is_gaierror(loop):
    with pytest.raises(socket.gaierror) as info:
        run(loop, loop.getaddrinfo("not-a-number", 80, flags=socket.AI_NUMERICHOST))
    with pytest.raises(socket.gaierror) as expected:
        socket.getaddrinfo("not-a-number", 80, flags=socket.AI_NUMERICHOST)
    assert info.value.errno == expected.value.errno


@pytest.mark.parametrize("sockaddr, flags", [
    (("127.0.0.1", 80), 0),
    (("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
    (("127.0.0.1", 53), socket.NI_DGRAM),
])
def test_getnameinfo_matches_socket_module(loop, sockaddr, flags):
    assert run(loop, loop.getnameinfo(sockaddr, flags)) == socket.getnameinfo(sockaddr, flags)


def test_getnameinfo_bad_address_is_type_error(loop):
    with pytest.raises(TypeError):
        run(loop, loop.getnameinfo("127.0.0.1"))


def test_resolution_does_not_block_the_loop(loop, monkeypatch):
    # The resolver waits until the loop has run other callbacks while it
    # resolves: on the loop's own thread it would wait for ever (the wait
    # times out and the test fails), in the executor it returns. Counting
    # ticks around a real lookup was racy: a fast lookup (3.14, localhost)
    # could finish before a second tick.

    real = socket.getaddrinfo
    ticked = threading.Event()
    seen = {}

    def resolver(*args, **kwargs):
        seen["thread"] = threading.get_ident()
        seen["loop_ticked"] = ticked.wait(TIMEOUT / 2)
        return real(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    ticks = []

    async def ticker():
        while True:
            ticks.append(loop.time())
            if len(ticks) >= 3:
                ticked.set()
            await asyncio.sleep(0)

    async def main():
        t = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        result = await loop.getaddrinfo("127.0.0.1", 80)
        t.cancel()
        return result

    assert run(loop, main()) == real("127.0.0.1", 80)
    assert seen["thread"] != threading.get_ident()
    assert seen["loop_ticked"], "the loop did not run while the lookup waited"
    assert len(ticks) >= 3


def test_getaddrinfo_in_debug_mode(loop):
    loop.set_debug(True)
    expected = socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
    assert run(loop, loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)) == expected


@pytest.mark.parametrize("args", [
    ("127.0.0.1", 80, 0, socket.SOCK_STREAM, 0),
    ("::1", "443", 0, socket.SOCK_DGRAM, 0),
    ("::1", 80, socket.AF_INET, socket.SOCK_STREAM, 0),
    (b"10.0.0.1", None, socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP),
    ("localhost", 80, 0, socket.SOCK_STREAM, 0),
    ("127.0.0.1", "http", 0, socket.SOCK_STREAM, 0),
    ("fe80::1%lo", 80, 0, socket.SOCK_STREAM, 0),
    ("127.0.0.1", 80, 0, socket.SOCK_RAW, 0),
])
def test_ipaddr_info_matches_asyncio(args):
    from asyncio.base_events import _ipaddr_info

    from oxloop._sockets import ipaddr_info

    assert ipaddr_info(*args) == _ipaddr_info(*args)


def test_ensure_resolved_skips_getaddrinfo_for_numeric_hosts(oxloop):
    from oxloop._sockets import ensure_resolved

    loop = oxloop.new_event_loop()
    try:
        calls = []

        async def fake_getaddrinfo(*args, **kwargs):
            calls.append(args)
            return []

        loop.getaddrinfo = fake_getaddrinfo
        infos = loop.run_until_complete(ensure_resolved(loop, ("127.0.0.1", 80)))
        assert infos == [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                          ("127.0.0.1", 80))]
        infos = loop.run_until_complete(ensure_resolved(
            loop, ("::1", 80), type=socket.SOCK_DGRAM))
        assert infos == [(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "",
                          ("::1", 80, 0, 0))]
        assert calls == []
        loop.run_until_complete(ensure_resolved(loop, ("localhost", 80)))
        assert calls == [("localhost", 80)]
        # The asyncio-compatible method form.
        infos = loop.run_until_complete(loop._ensure_resolved(
            ("127.0.0.1", 1), type=socket.SOCK_STREAM, loop=loop))
        assert infos[0][4] == ("127.0.0.1", 1)
    finally:
        loop.close()
