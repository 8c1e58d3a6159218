"""What tools read off transports, servers and loops (`get_extra_info`
keys, the `socket` extra and its repr, reprs, public names), compared key by
key between oxloop and
the stdlib loop for TCP, Unix, UDP, pipe, subprocess and TLS transports,
open and closed."""

import asyncio
import os
import re
import socket
import ssl
import sys
import tempfile

from helpers import make_loop
from netutil import stdlib_keycert

import oxloop

KEYS = ["socket", "sockname", "peername", "pipe", "subprocess", "sslcontext",
        "ssl_object", "peercert", "cipher", "compression", "no-such-key"]
ABSENT = "<absent>"


LOST = []


class Recorder(asyncio.Protocol):
    def __init__(self, made):
        self.made = made
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.made.append(transport)

    def connection_lost(self, exc):
        LOST.append(self.transport)


async def lost(*transports):
    while not all(any(t is x for x in LOST) for t in transports):
        await asyncio.sleep(0.002)


def normalize(text, ports, paths):
    for port in ports:
        text = re.sub(rf"\b{port}\b", "PORT", text)
    for path in paths:
        text = text.replace(path, "PATH")
    text = re.sub(r"\bfd=\d+", "fd=N", text)
    text = re.sub(r"pid=\d+", "pid=N", text)
    text = re.sub(r" at 0x[0-9a-f]+", " at ADDR", text)
    # The class names are the implementation's own.
    return re.sub(r"<[\w.]+(?= )", "<CLASS", text)


def describe(tr, ports, paths):
    out = {}
    for key in KEYS:
        value = tr.get_extra_info(key, ABSENT)
        if key == "socket" and value not in (None, ABSENT):
            value = (type(value).__name__, value.family, value.type,
                     value.proto, normalize(repr(value), ports, paths))
        elif key in ("pipe", "subprocess", "sslcontext", "ssl_object"):
            value = type(value).__name__ if value is not ABSENT else value
        elif isinstance(value, (tuple, str)):
            value = normalize(repr(value), ports, paths)
        out[key] = value
    out["repr"] = normalize(repr(tr), ports, paths)
    out["public"] = public(tr)
    return out


def public(obj):
    """The public names (what tools look up with hasattr/getattr)."""
    return sorted(n for n in dir(obj) if not n.startswith("_"))


# oxloop's own loop API beyond asyncio's (virtual time, stats): present on
# oxloop loops only, and checked to be there, so that the list cannot hide
# a name that leaked by accident.
OXLOOP_LOOP_EXTENSIONS = {"virtual_time", "virtual_time_grace",
                          "virtual_time_skipped", "enable_stats", "stats",
                          "reset_stats", "get_blocking_threshold",
                          "set_blocking_threshold"}


def loop_public(loop):
    names = public(loop)
    if isinstance(loop, oxloop.Loop):
        missing = OXLOOP_LOOP_EXTENSIONS.difference(names)
        assert not missing, f"oxloop extensions not on the loop: {missing}"
        names = [n for n in names if n not in OXLOOP_LOOP_EXTENSIONS]
    return names


def tls_contexts():
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(stdlib_keycert())
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return server, client


async def survey():
    loop = asyncio.get_running_loop()
    seen = {}
    made = []
    ports = []
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "sock")
    paths = [path]

    async def settle():
        for _ in range(5):
            await asyncio.sleep(0.005)

    # TCP: both ends, open then closed.
    server = await loop.create_server(lambda: Recorder(made), "127.0.0.1", 0)
    ports.append(server.sockets[0].getsockname()[1])
    seen["server"] = normalize(repr(server), ports, paths)
    seen["server public"] = public(server)
    seen["loop public"] = loop_public(loop)
    client, _ = await loop.create_connection(
        lambda: Recorder([]), "127.0.0.1", ports[0])
    while not made:
        await asyncio.sleep(0.002)
    await settle()
    ports.append(client.get_extra_info("sockname")[1])
    accepted = made.pop()
    seen["tcp client"] = describe(client, ports, paths)
    client.close()
    accepted.close()
    await lost(client, accepted)
    # The server side's socket extra was never asked for while open.
    seen["tcp server closed"] = describe(accepted, ports, paths)
    seen["tcp client closed"] = describe(client, ports, paths)

    # Unix.
    userver = await loop.create_unix_server(lambda: Recorder(made), path)
    uclient, _ = await loop.create_unix_connection(
        lambda: Recorder([]), path)
    while not made:
        await asyncio.sleep(0.002)
    await settle()
    uaccepted = made.pop()
    seen["unix client"] = describe(uclient, ports, paths)
    seen["unix server"] = describe(uaccepted, ports, paths)
    uclient.close()
    uaccepted.close()
    await lost(uclient, uaccepted)
    seen["unix server closed"] = describe(uaccepted, ports, paths)
    userver.close()
    await userver.wait_closed()

    # accept-side socket made by the user.
    a, b = socket.socketpair()
    pair, _ = await loop.connect_accepted_socket(lambda: Recorder([]), a)
    seen["socketpair"] = describe(pair, ports, paths)
    pair.abort()
    b.close()
    await lost(pair)
    seen["socketpair closed"] = describe(pair, ports, paths)

    # UDP, unconnected and connected.
    udp, _ = await loop.create_datagram_endpoint(
        lambda: Recorder([]), local_addr=("127.0.0.1", 0))
    ports.append(udp.get_extra_info("sockname")[1])
    seen["udp"] = describe(udp, ports, paths)
    udp2, _ = await loop.create_datagram_endpoint(
        lambda: Recorder([]), remote_addr=("127.0.0.1", ports[-1]))
    ports.append(udp2.get_extra_info("sockname")[1])
    seen["udp connected"] = describe(udp2, ports, paths)
    udp.close()
    udp2.close()
    await lost(udp, udp2)
    seen["udp closed"] = describe(udp, ports, paths)

    # Pipes.
    r, w = os.pipe()
    rt, _ = await loop.connect_read_pipe(lambda: Recorder([]),
                                         os.fdopen(r, "rb"))
    wt, _ = await loop.connect_write_pipe(lambda: Recorder([]),
                                          os.fdopen(w, "wb"))
    await settle()
    seen["read pipe"] = describe(rt, ports, paths)
    seen["write pipe"] = describe(wt, ports, paths)
    rt.close()
    wt.close()
    await lost(rt, wt)
    seen["read pipe closed"] = describe(rt, ports, paths)

    # Subprocess and its pipes.
    proc, _ = await loop.subprocess_exec(
        asyncio.SubprocessProtocol, sys.executable, "-c",
        "import sys; sys.stdin.read()")
    await settle()
    seen["subprocess"] = describe(proc, ports, paths)
    for fd in (0, 1, 2):
        seen[f"subprocess pipe {fd}"] = describe(
            proc.get_pipe_transport(fd), ports, paths)
    proc.get_pipe_transport(0).close()
    while proc.get_returncode() is None:
        await asyncio.sleep(0.005)
    proc.close()
    await settle()

    # TLS.
    server_ctx, client_ctx = tls_contexts()
    tserver = await loop.create_server(lambda: Recorder(made), "127.0.0.1", 0,
                                       ssl=server_ctx)
    ports.append(tserver.sockets[0].getsockname()[1])
    tclient, _ = await loop.create_connection(
        lambda: Recorder([]), "127.0.0.1", ports[-1], ssl=client_ctx)
    while not made:
        await asyncio.sleep(0.005)
    await settle()
    ports.append(tclient.get_extra_info("sockname")[1])
    taccepted = made.pop()
    seen["tls client"] = describe(tclient, ports, paths)
    seen["tls server"] = describe(taccepted, ports, paths)
    tclient.close()
    taccepted.close()
    await lost(tclient, taccepted)
    tserver.close()
    server.close()
    await server.wait_closed()
    await tserver.wait_closed()
    seen["server closed"] = normalize(repr(server), ports, paths)
    return seen


def run_survey(kind):
    loop = make_loop(kind)
    try:
        return loop.run_until_complete(survey())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


def test_extra_info_and_reprs_match_stdlib():
    stdlib = run_survey("asyncio")
    ours = run_survey("oxloop")
    assert list(ours) == list(stdlib)
    for what in stdlib:
        assert ours[what] == stdlib[what], what
