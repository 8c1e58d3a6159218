"""A small HTTP application on a chosen event loop, behind uvicorn or aiohttp.

    python http_server.py --server uvicorn --loop oxloop --addr 127.0.0.1:0
    python http_server.py --server aiohttp --loop uvloop

Endpoints (the same bytes from both servers):
  GET  /hello   200, application/json, the body ``HELLO`` (json.dumps of a
                small dict, made per request as an application would)
  POST /echo    200, application/octet-stream, the request's body
  anything else 404

Servers:
  uvicorn   uvicorn.Server with http="httptools", run programmatically on
            the loop this script creates (so uvicorn's own --loop choice,
            which only knows auto/asyncio/uvloop or an import path, plays
            no part); lifespan, access log and websockets off
  aiohttp   aiohttp.web.Application with two handlers, through
            web.AppRunner + TCPSite, access log off

Prints ``READY HOST:PORT`` once serving, then serves until SIGTERM (uvicorn
shuts down gracefully; aiohttp's default SIGTERM action ends it).  Errors
the loop reports go to stderr as ``LOOP-ERROR`` lines (loops.report_errors);
the servers' own error logs (a traceback) go to stderr too, and the driver
fails the run on either.  A loop that raises NotImplementedError while the
server starts prints ``UNSUPPORTED ...`` and exits with status 3.

``--corrupt`` makes /echo answer one byte wrong (harness self-test).
"""

import argparse
import asyncio
import json
import logging
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loops  # noqa: E402

HELLO_DATA = {"message": "Hello, world!"}
HELLO = json.dumps(HELLO_DATA).encode()
CORRUPT = False


def mangle(body):
    if CORRUPT and body:
        body = bytearray(body)
        body[len(body) // 2] ^= 0xFF
        return bytes(body)
    return body


# ---------------------------------------------------------------- ASGI (uvicorn)


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if path == "/hello" and method == "GET":
        body, ctype = json.dumps(HELLO_DATA).encode(), b"application/json"
    elif path == "/echo" and method == "POST":
        chunks, more = [], True
        while more:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body, ctype = mangle(b"".join(chunks)), b"application/octet-stream"
    else:
        body, ctype = b"not found", b"text/plain"
    status = 404 if ctype == b"text/plain" else 200
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def serve_uvicorn(loop, host, port):
    import uvicorn

    config = uvicorn.Config(asgi_app, host=host, port=port, http="httptools", ws="none", lifespan="off",
                            access_log=False, log_level="warning", server_header=False, date_header=False)
    server = uvicorn.Server(config)
    task = loop.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("uvicorn stopped before it started serving")
        await asyncio.sleep(0.01)
    return task, server.servers[0].sockets[0].getsockname()[:2]


# ---------------------------------------------------------------- aiohttp


async def serve_aiohttp(loop, host, port):
    from aiohttp import web

    async def hello(request):
        return web.json_response(HELLO_DATA)

    async def echo(request):
        return web.Response(body=mangle(await request.read()), content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    return runner, runner.addresses[0][:2]


def main():
    global CORRUPT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="uvicorn", choices=["uvicorn", "aiohttp"])
    ap.add_argument("--loop", default="asyncio")
    ap.add_argument("--addr", default="127.0.0.1:0", help="HOST:PORT")
    ap.add_argument("--corrupt", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    CORRUPT = args.corrupt
    host, _, port = args.addr.rpartition(":")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    loop = loops.new_loop(args.loop)
    asyncio.set_event_loop(loop)
    loops.report_errors(loop)
    start = serve_uvicorn if args.server == "uvicorn" else serve_aiohttp
    try:
        keep, addr = loop.run_until_complete(start(loop, host or "127.0.0.1", int(port)))
    except NotImplementedError as e:
        traceback.print_exc()
        print(f"UNSUPPORTED {args.server} on {args.loop}: NotImplementedError {e}", flush=True)
        sys.exit(3)
    print("READY {}:{}".format(*addr), flush=True)
    print(f"loop: {loops.describe(args.loop, loop)}", file=sys.stderr, flush=True)
    if isinstance(keep, asyncio.Future):  # uvicorn: until its graceful shutdown on SIGTERM
        loop.run_until_complete(keep)
    else:
        loop.run_forever()


if __name__ == "__main__":
    main()
