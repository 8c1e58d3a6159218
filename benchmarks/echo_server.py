"""Echo server on a chosen event loop, in one of four API styles.

    python echo_server.py --loop oxloop --mode protocol --addr 127.0.0.1:0
    python echo_server.py --loop uvloop --mode streams --addr unix:/tmp/echo.sock

Modes (the four ways asyncio code moves bytes):
  sockets    loop.sock_accept, then per connection a task looping over
             loop.sock_recv / loop.sock_sendall
  streams    asyncio.start_server: StreamReader.read, StreamWriter.write + drain
  protocol   loop.create_server with a Protocol echoing in data_received
  buffered   loop.create_server with a BufferedProtocol (get_buffer /
             buffer_updated) that reads into one preallocated 64 KiB buffer

Reads ask for at most 64 KiB (sockets, streams, buffered); protocol mode
uses whatever the loop reads at a time.  Every mode closes a connection
when the peer half-closes, after echoing everything before it.

Prints ``READY <addr>`` (with the real port when given port 0) once
listening, then serves until killed (SIGTERM's default action: no handler,
so even a wedged loop stops).  Errors the loop reports go to stderr as
``LOOP-ERROR`` lines (see loops.report_errors).  RLIMIT_NOFILE is raised to
its hard limit, for the memory benchmark's 10,000 connections.

A loop that raises NotImplementedError while starting the server makes it
print ``UNSUPPORTED ...`` and exit with status 3 (rloop 0.5.0 has no Unix
servers); the driver reports that as "n/a", a failure for required loops.

``--tls DIR`` serves TLS with ``DIR/cert.pem`` and ``DIR/key.pem`` (written
by ``loadgen --gen-cert DIR``): the ``ssl=`` argument of create_server /
start_server, so the loop's own TLS transport is what is measured.  Not in
``sockets`` mode (asyncio has no TLS for the sock_* calls).

``--corrupt-every N`` flips one byte in every Nth chunk echoed: it exists
to check that the harness catches wrong bytes (``run.py --self-test``).
"""

import argparse
import asyncio
import os
import resource
import socket
import ssl
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loops  # noqa: E402

CHUNK = 64 * 1024
BACKLOG = 1024


class Corrupter:
    """Identity, except every Nth chunk gets one byte flipped (self-test)."""

    def __init__(self, every):
        self.every = every
        self.count = 0

    def __call__(self, data):
        if not self.every:
            return data
        self.count += 1
        if self.count % self.every:
            return data
        data = bytearray(data)
        data[len(data) // 2] ^= 0xFF
        return bytes(data)


MANGLE = Corrupter(0)


def nodelay(sock):
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def listening_socket(addr):
    if isinstance(addr, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def report_task_error(task):
    """Done callback: a per-connection task that failed is a LOOP-ERROR now,
    not at garbage collection ("Task exception was never retrieved")."""
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        print(f"LOOP-ERROR: echo task failed: {exc!r}", file=sys.stderr, flush=True)


def fatal_if_failed(task):
    """Done callback for the accept loop: without it the server is useless,
    so exit at once (the driver reports the crash and its traceback)."""
    if not task.cancelled() and task.exception() is not None:
        traceback.print_exception(task.exception(), file=sys.stderr)
        print("LOOP-ERROR: the accept loop died", file=sys.stderr, flush=True)
        os._exit(4)


async def serve_sockets(loop, addr):
    lsock = listening_socket(addr)

    async def echo(conn):
        with conn:
            while data := await loop.sock_recv(conn, CHUNK):
                await loop.sock_sendall(conn, MANGLE(data))

    tasks = set()  # keep the per-connection tasks alive

    async def accept_forever():
        while True:
            conn, _ = await loop.sock_accept(lsock)
            conn.setblocking(False)
            nodelay(conn)
            task = loop.create_task(echo(conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            task.add_done_callback(report_task_error)

    loop.create_task(accept_forever()).add_done_callback(fatal_if_failed)
    return lsock


def server_tls(cert_dir):
    """An SSLContext serving the suite's throw-away certificate, or None."""
    if not cert_dir:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.path.join(cert_dir, "cert.pem"), os.path.join(cert_dir, "key.pem"))
    return ctx


async def serve_streams(loop, addr, tls=None):
    async def echo(reader, writer):
        nodelay(writer.get_extra_info("socket"))
        try:
            while data := await reader.read(CHUNK):
                writer.write(MANGLE(data))
                await writer.drain()
        finally:
            writer.close()

    if isinstance(addr, str):
        return await asyncio.start_unix_server(echo, addr, backlog=BACKLOG, ssl=tls)
    return await asyncio.start_server(echo, addr[0], addr[1], backlog=BACKLOG, ssl=tls)


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        nodelay(transport.get_extra_info("socket"))

    def data_received(self, data):
        self.transport.write(MANGLE(data))


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = bytearray(CHUNK)
        nodelay(transport.get_extra_info("socket"))

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        # bytes(): the transport may keep the data after write() returns,
        # and the next read reuses self.buffer.
        self.transport.write(MANGLE(bytes(self.buffer[:nbytes])))


async def serve_protocol(loop, addr, factory, tls=None):
    if isinstance(addr, str):
        return await loop.create_unix_server(factory, addr, backlog=BACKLOG, ssl=tls)
    return await loop.create_server(factory, addr[0], addr[1], backlog=BACKLOG, ssl=tls)


def parse_addr(text):
    if text.startswith("unix:"):
        path = text[5:]
        if os.path.exists(path):
            os.unlink(path)
        return path
    host, _, port = text.rpartition(":")
    return (host or "127.0.0.1", int(port))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loop", default="asyncio")
    ap.add_argument("--mode", default="protocol", choices=["sockets", "streams", "protocol", "buffered"])
    ap.add_argument("--addr", default="127.0.0.1:0", help="HOST:PORT or unix:PATH")
    ap.add_argument("--tls", metavar="DIR", help="serve TLS with DIR/cert.pem and DIR/key.pem")
    ap.add_argument("--corrupt-every", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    MANGLE.every = args.corrupt_every
    if args.tls and args.mode == "sockets":
        ap.error("--tls: not in sockets mode")
    tls = server_tls(args.tls)

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    addr = parse_addr(args.addr)
    loop = loops.new_loop(args.loop)
    asyncio.set_event_loop(loop)
    loops.report_errors(loop)
    start = {
        "sockets": lambda: serve_sockets(loop, addr),
        "streams": lambda: serve_streams(loop, addr, tls),
        "protocol": lambda: serve_protocol(loop, addr, EchoProtocol, tls),
        "buffered": lambda: serve_protocol(loop, addr, EchoBufferedProtocol, tls),
    }[args.mode]
    # The Server (or listening socket) lives as long as the process.
    try:
        server = loop.run_until_complete(start())
    except NotImplementedError as e:
        traceback.print_exc()
        print(f"UNSUPPORTED {args.mode} on {args.loop}: NotImplementedError {e}", flush=True)
        sys.exit(3)
    if isinstance(addr, str):
        shown = f"unix:{addr}"
    else:  # the port the kernel chose when given port 0
        sock = server if isinstance(server, socket.socket) else server.sockets[0]
        shown = "{}:{}".format(*sock.getsockname()[:2])
    print(f"READY {shown}", flush=True)
    print(f"loop: {loops.describe(args.loop, loop)}", file=sys.stderr, flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
