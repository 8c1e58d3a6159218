"""Smoke test of an installed oxloop (a wheel in a fresh venv).

    python scripts/wheel_smoke.py [--expect-tag TAG]

Run it with the venv's interpreter from outside the source tree. It checks
that `oxloop` is the installed copy (not the checkout) with a native core
built for this interpreter, then runs a real program on `oxloop.run`: timers
in order, a TCP echo over loopback (large enough to go through flow control
both ways), and a subprocess with pipes and an exit status. Each check
asserts what it got; the last line says `wheel smoke: ok` and the exit
status is 0 only if every check passed. Standard library only.
"""

import argparse
import asyncio
import importlib.machinery
import os
import sys
import sysconfig

import oxloop
import oxloop._core


def check_install(expect_tag):
    """oxloop comes from this interpreter's site-packages, built for it."""
    site = os.path.realpath(sysconfig.get_paths()["platlib"])
    pkg = os.path.realpath(os.path.dirname(oxloop.__file__))
    assert pkg == os.path.join(site, "oxloop"), (pkg, site)
    core = oxloop._core.__file__
    assert os.path.dirname(os.path.realpath(core)) == pkg, core
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    assert core.endswith(suffix), (core, suffix)
    assert suffix in importlib.machinery.EXTENSION_SUFFIXES
    if expect_tag:
        dist = [d for d in os.listdir(site)
                if d.startswith("oxloop-") and d.endswith(".dist-info")]
        assert len(dist) == 1, dist
        with open(os.path.join(site, dist[0], "WHEEL")) as f:
            tags = [line.split(":", 1)[1].strip() for line in f
                    if line.startswith("Tag:")]
        assert expect_tag in tags, (expect_tag, tags)
    return core


async def check_timers():
    loop = asyncio.get_running_loop()
    assert isinstance(loop, oxloop.Loop), type(loop)
    order = []
    done = loop.create_future()
    loop.call_later(0.02, order.append, "late")
    loop.call_later(0.01, order.append, "early")
    loop.call_soon(order.append, "soon")
    loop.call_later(0.03, done.set_result, None)
    await done
    assert order == ["soon", "early", "late"], order


async def check_tcp_echo():
    """A stream server echoes 1 MiB back to a client on 127.0.0.1."""
    payload = bytes(range(256)) * 4096

    async def echo(reader, writer):
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    reader, writer = await asyncio.open_connection(host, port)
    assert writer.get_extra_info("peername")[:2] == (host, port)

    async def send():
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.ensure_future(send())
    received = await asyncio.wait_for(reader.read(), 30)
    await sender
    assert received == payload, (len(received), len(payload))
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


async def check_subprocess():
    """A child gets stdin, answers on stdout and stderr, exits with 3."""
    code = ("import sys; data = sys.stdin.read(); "
            "sys.stdout.write(data.upper()); sys.stderr.write(str(len(data))); "
            "sys.exit(3)")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(b"oxloop wheel"), 30)
    assert (out, err, proc.returncode) == (b"OXLOOP WHEEL", b"12", 3), \
        (out, err, proc.returncode)


async def main():
    await check_timers()
    await check_tcp_echo()
    await check_subprocess()
    return "finished"


def main_sync():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect-tag", help="a wheel tag the install must carry")
    args = parser.parse_args()
    core = check_install(args.expect_tag)
    loop_handler_calls = []

    async def guarded():
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, ctx: loop_handler_calls.append(ctx))
        return await main()

    result = oxloop.run(guarded())
    assert result == "finished", result
    assert not loop_handler_calls, loop_handler_calls
    assert asyncio.events._get_running_loop() is None
    print(f"wheel smoke: ok (Python {sys.version.split()[0]}, "
          f"{os.path.basename(core)})")


if __name__ == "__main__":
    main_sync()
