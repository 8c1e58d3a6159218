"""`get_extra_info('sockname')` / `('peername')` of stream transports: the
same values, of the same types, as the stdlib's (which reads them with
`socket.getsockname()` / `getpeername()` when the transport is made), for
every way a transport comes to be (accepted by a server, connected by
`create_connection`, wrapped with `sock=`, `connect_accepted_socket`, TLS
over each) and every address shape (IPv4 pairs, IPv6 4-tuples with a scope
id, Unix paths as `str` including undecodable bytes, abstract names as
`bytes`, unnamed sockets as `''`), asked for while open or first after the
transport closed.

The expected values come from the `socket` module, read off the plain
socket at the other end of each connection."""

import asyncio
import functools
import os
import shutil
import socket
import ssl
import sys
import tempfile

import pytest

from netutil import stdlib_keycert

FAMILIES = ["v4", "v6", "v6scope", "unix", "unix_abstract", "unix_undecodable"]
MODES = ["accepted", "connected", "wrapped", "connect_accepted",
         "tls_accepted", "tls_wrapped"]


@pytest.fixture
def short_tmp():
    """A directory with a path short enough for Unix socket names."""
    path = tempfile.mkdtemp()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _link_local():
    """A link-local IPv6 address of this host and its interface index."""
    try:
        with open("/proc/net/if_inet6") as f:
            rows = [line.split() for line in f]
    except OSError:
        return None
    for row in rows:
        if row[0].startswith("fe80") and len(row) >= 6:
            addr = ":".join(row[0][i:i + 4] for i in range(0, 32, 4))
            host = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, addr))
            index = int(row[1], 16)
            try:
                with socket.socket(socket.AF_INET6) as s:
                    s.bind((host, 0, 0, index))
            except OSError:
                continue
            return host, index
    return None


def _has_ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class Family:
    """Where the listener binds, how a client socket is made."""

    def __init__(self, name, tmp):
        self.name = name
        if name == "v4":
            self.family, self.bind = socket.AF_INET, ("127.0.0.1", 0)
        elif name == "v6":
            if not _has_ipv6_loopback():
                pytest.skip("no IPv6 loopback on this host")
            self.family, self.bind = socket.AF_INET6, ("::1", 0)
        elif name == "v6scope":
            ll = _link_local() if socket.has_ipv6 else None
            if ll is None:
                pytest.skip("no bindable link-local IPv6 address on this host")
            self.family, self.bind = socket.AF_INET6, (ll[0], 0, 0, ll[1])
        elif name == "unix":
            self.family, self.bind = socket.AF_UNIX, os.path.join(tmp, "srv")
        elif name == "unix_abstract":
            if not sys.platform.startswith("linux"):
                pytest.skip("abstract Unix names are Linux's")
            self.family = socket.AF_UNIX
            self.bind = f"\0oxloop-test-{os.getpid()}-{id(self)}"
        elif name == "unix_undecodable":
            self.family = socket.AF_UNIX
            self.bind = os.path.join(os.fsencode(tmp), b"srv-\xff\xfe")
        else:
            raise ValueError(name)

    def listener(self):
        lsock = socket.socket(self.family, socket.SOCK_STREAM)
        lsock.bind(self.bind)
        lsock.listen(8)
        lsock.setblocking(False)
        return lsock

    def client(self):
        """A client socket; abstract clients get a name of their own, so
        the server side's peername is `bytes` too."""
        csock = socket.socket(self.family, socket.SOCK_STREAM)
        if self.name == "unix_abstract":
            csock.bind(self.bind + "-client")
        csock.setblocking(False)
        return csock

    def target(self, lsock):
        """What a client connects to (for IPv6, the 4-tuple: it keeps the
        scope id)."""
        return lsock.getsockname()


class Proto(asyncio.Protocol):
    def __init__(self):
        loop = asyncio.get_running_loop()
        self.made = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.made.set_result(transport)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


def same(value, expected):
    """Equal, with the same types all the way down (`str` vs `bytes`, a
    4-tuple vs a pair, `int` ports)."""
    assert value == expected, (value, expected)
    assert type(value) is type(expected), (value, expected)
    if isinstance(expected, tuple):
        for v, e in zip(value, expected):
            assert type(v) is type(e), (value, expected)


@functools.cache
def tls_contexts():
    # Made once, outside the running loop (by the test function): loading
    # the certificate reads a file, which blockbuster (scripts/test.sh's
    # second pytest run) refuses on the loop's thread.
    keycert = stdlib_keycert()
    if keycert is None:
        pytest.skip("no test certificate (the test package is not installed)")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(keycert)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return server, client


async def open_transport(fam, mode, lsock):
    """The transport under test, its protocol, and the plain socket at the
    other end (whose addresses are the transport's, swapped)."""
    loop = asyncio.get_running_loop()
    target = fam.target(lsock)
    proto = Proto()
    closers = []
    if mode in ("accepted", "tls_accepted"):
        kw = {}
        if mode == "tls_accepted":
            sctx, cctx = tls_contexts()
            kw = {"ssl": sctx}
        server = await loop.create_server(lambda: proto, sock=lsock, **kw)
        closers.append(server.close)
        csock = fam.client()
        await loop.sock_connect(csock, target)
        other = csock
        if mode == "tls_accepted":
            # The client side of the handshake, on a transport of its own.
            ctr, _ = await loop.create_connection(
                asyncio.Protocol, sock=csock, ssl=cctx, server_hostname="localhost")
            closers.append(ctr.close)
            # The raw socket now belongs to ctr; read its names first.
            other = (csock.getsockname(), csock.getpeername())
        tr = await proto.made
    else:
        accept = asyncio.ensure_future(loop.sock_accept(lsock))
        kw = {}
        if mode == "tls_wrapped":
            sctx, cctx = tls_contexts()
        if mode == "connected":
            if fam.family == socket.AF_UNIX:
                tr, _ = await loop.create_unix_connection(lambda: proto, target)
            elif fam.name == "v6scope":
                host = f"{target[0]}%{socket.if_indextoname(target[3])}"
                tr, _ = await loop.create_connection(lambda: proto, host, target[1])
            else:
                tr, _ = await loop.create_connection(lambda: proto, target[0], target[1])
            conn, _ = await accept
            other = conn
        elif mode in ("wrapped", "tls_wrapped"):
            csock = fam.client()
            await loop.sock_connect(csock, target)
            conn, _ = await accept
            other = conn
            if mode == "tls_wrapped":
                server_side = asyncio.ensure_future(
                    loop.connect_accepted_socket(asyncio.Protocol, conn, ssl=sctx))
                tr, _ = await loop.create_connection(
                    lambda: proto, sock=csock, ssl=cctx, server_hostname="localhost")
                str_, _ = await server_side
                closers.append(str_.close)
                other = (conn.getsockname(), conn.getpeername())
            elif fam.family == socket.AF_UNIX:
                tr, _ = await loop.create_unix_connection(lambda: proto, sock=csock)
            else:
                tr, _ = await loop.create_connection(lambda: proto, sock=csock)
        elif mode == "connect_accepted":
            csock = fam.client()
            await loop.sock_connect(csock, target)
            conn, _ = await accept
            tr, _ = await loop.connect_accepted_socket(lambda: proto, conn)
            other = csock
        else:
            raise ValueError(mode)
    if isinstance(other, socket.socket):
        closers.append(other.close)
        other = (other.getsockname(), other.getpeername())
    other_sockname, other_peername = other
    return tr, proto, other_peername, other_sockname, closers


@pytest.mark.parametrize("ask_while_open", [True, False], ids=["open", "after_close"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_sockname_and_peername(loop, family, mode, ask_while_open, short_tmp):
    fam = Family(family, short_tmp)
    if mode.startswith("tls") and family not in ("v4", "v6scope", "unix_abstract"):
        pytest.skip("TLS is covered on one address shape of each family")
    if mode.startswith("tls"):
        tls_contexts()

    async def main():
        lsock = fam.listener()
        tr, proto, sockname, peername, closers = await open_transport(fam, mode, lsock)
        try:
            if ask_while_open:
                same(tr.get_extra_info("sockname"), sockname)
                same(tr.get_extra_info("peername"), peername)
                # The stdlib hands out the very objects it stored.
                assert tr.get_extra_info("sockname") is tr.get_extra_info("sockname")
                assert tr.get_extra_info("peername") is tr.get_extra_info("peername")
            tr.close()
            await proto.lost
            if mode.startswith("tls"):
                # asyncio's TLS transport asks the transport below, which it
                # dropped at connection_lost: the default from then on.
                sockname = peername = None
            same(tr.get_extra_info("sockname"), sockname)
            same(tr.get_extra_info("peername"), peername)
            assert tr.get_extra_info("peername") is tr.get_extra_info("peername")
        finally:
            for close in closers:
                close()
            lsock.close()
            await asyncio.sleep(0)

    loop.run_until_complete(main())


def test_expected_shapes(loop, short_tmp):
    """The shapes themselves, on a TCP and a Unix connection (so a broken
    `socket` module could not make the comparisons above vacuous)."""

    async def main():
        fam = Family("v4", None)
        lsock = fam.listener()
        tr, proto, sockname, peername, closers = await open_transport(fam, "accepted", lsock)
        port = lsock.getsockname()[1]
        assert tr.get_extra_info("sockname") == ("127.0.0.1", port)
        host, cport = tr.get_extra_info("peername")
        assert host == "127.0.0.1" and type(cport) is int and cport != port
        tr.close()
        await proto.lost
        for close in closers:
            close()
        lsock.close()

        tmp = short_tmp
        fam = Family("unix", tmp)
        lsock = fam.listener()
        tr, proto, _, _, closers = await open_transport(fam, "accepted", lsock)
        assert tr.get_extra_info("sockname") == os.path.join(tmp, "srv")
        assert tr.get_extra_info("peername") == ""
        tr.close()
        await proto.lost
        for close in closers:
            close()
        lsock.close()

    loop.run_until_complete(main())


def test_socket_failing_getpeername_gives_none(loop):
    """A socket with no peer (`getpeername()` raises ENOTCONN): the stdlib
    stores None for it, and the unbound sockname."""

    async def main():
        aloop = asyncio.get_running_loop()
        proto = Proto()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        tr, _ = await aloop.connect_accepted_socket(lambda: proto, s)
        assert tr.get_extra_info("peername") is None
        same(tr.get_extra_info("sockname"), ("0.0.0.0", 0))
        tr.close()
        await proto.lost
        assert tr.get_extra_info("peername") is None
        same(tr.get_extra_info("sockname"), ("0.0.0.0", 0))

    loop.run_until_complete(main())
