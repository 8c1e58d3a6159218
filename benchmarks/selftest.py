"""Check that the harness catches what it must: wrong echoed bytes (plain
and TLS), a wrong HTTP body or status, a server that dies mid-run, a loop
that computes a wrong result.  Prints one line per
check and exits 1 if the harness missed something.

    python benchmarks/selftest.py          (about 20 s)

It also serves as a broken loop for itself: ``selftest:SloppyTimersLoop``
is the stdlib loop with timers that cannot be cancelled.
"""

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


class _StickyTimer(asyncio.TimerHandle):
    __slots__ = ()

    def cancel(self):  # the bug: forget to cancel
        pass


class SloppyTimersLoop(asyncio.SelectorEventLoop):
    def call_at(self, when, callback, *args, context=None):
        timer = super().call_at(when, callback, *args, context=context)
        timer.__class__ = _StickyTimer
        return timer


def main():
    import measure
    import run

    args = run.parse_args(["--smoke", "--pin", "none"])
    run.build_native()
    tmp = tempfile.mkdtemp(prefix="oxbench-selftest-")
    missed = []

    def expect(name, ok, detail):
        print(f"{'ok    ' if ok else 'MISSED'} {name}: {detail}", flush=True)
        if not ok:
            missed.append(name)

    for transport, mode in (("tcp", "protocol"), ("unix", "sockets")):
        srv = measure.Server(args, "asyncio", mode, transport, tmp, extra=["--corrupt-every", "7"])
        r = measure.run_client(args, srv, 10 * 1024, 0.3, 0.0)
        srv.stop()
        expect(f"wrong bytes, {transport} {mode}", r["status"] == "fail" and "WRONG BYTES" in (r["error"] or ""),
               r.get("error"))

    ca = ["--tls", os.path.join(measure.cert_dir(tmp), "ca.pem")]
    srv = measure.Server(args, "asyncio", "protocol", "tls", tmp, extra=["--corrupt-every", "7"])
    r = measure.run_client(args, srv, 10 * 1024, 0.3, 0.0, ca)
    srv.stop()
    expect("wrong bytes, TLS protocol", r["status"] == "fail" and "WRONG BYTES" in (r["error"] or ""), r.get("error"))
    srv = measure.Server(args, "asyncio", "protocol", "tls", tmp)
    r = measure.run_client(args, srv, 100 * 1024, 0.3, 0.0, ca)
    srv.stop()
    expect("healthy TLS server passes", r["status"] == "ok", r.get("error") or f"{r['rps']:.0f} req/s")

    apps = [a for a, check in run.APPS.items() if subprocess.run([sys.executable, "-c", check]).returncode == 0]
    for app in apps:
        srv = measure.Server(args, "asyncio", f"http:{app}", "tcp", tmp, extra=["--corrupt"])
        r = measure.run_client(args, srv, 10 * 1024, 0.3, 0.0, ["--http", "/echo"])
        srv.stop()
        expect(f"wrong HTTP body, {app}", r["status"] == "fail" and "WRONG ANSWERS" in (r["error"] or ""), r.get("error"))
        srv = measure.Server(args, "asyncio", f"http:{app}", "tcp", tmp)
        r = measure.run_client(args, srv, 0, 0.3, 0.0, ["--http", "/missing", "--expect", "x"])
        expect(f"HTTP status 404, {app}", r["status"] == "fail" and "status line" in (r["error"] or ""), r.get("error"))
        r = measure.run_client(args, srv, 0, 0.3, 0.0, ["--http", "/hello", "--expect", '{"message": "Hello, world?"}'])
        expect(f"wrong HTTP GET body, {app}", r["status"] == "fail" and "WRONG ANSWERS" in (r["error"] or ""), r.get("error"))
        r = measure.run_client(args, srv, 0, 0.3, 0.0, measure.HTTP_REQUESTS[0][2])
        srv.stop()
        expect(f"healthy {app} server passes", r["status"] == "ok", r.get("error") or f"{r['rps']:.0f} req/s")
    if not apps:
        print("note: neither uvicorn nor aiohttp installed: HTTP checks skipped", flush=True)

    srv = measure.Server(args, "asyncio", "protocol", "tcp", tmp)
    threading.Timer(0.3, lambda: os.kill(srv.pid, signal.SIGKILL)).start()
    r = measure.run_client(args, srv, 1024, 1.0, 0.0)
    srv.stop()
    expect("server killed mid-run", r["status"] == "fail", r.get("error"))

    srv = measure.Server(args, "asyncio", "protocol", "tcp", tmp)
    r = measure.run_client(args, srv, 100 * 1024, 0.3, 0.0)
    srv.stop()
    expect("healthy server passes", r["status"] == "ok", r.get("error") or f"{r['rps']:.0f} req/s")

    out = os.path.join(tmp, "out")
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        code = run.main(["--smoke", "--loops", "asyncio,selftest:SloppyTimersLoop", "--micro", "call_later",
                         "--modes", "none", "--memory", "none", "--out", out])
    with open(os.path.join(out, "raw.json")) as f:
        errors = [r.get("error") for r in json.load(f)["results"] if r["status"] == "fail"]
    expect("wrong micro result fails the run", code == 1 and len(errors) == 1 and "WrongResult" in errors[0],
           f"run.py exit status {code}; {errors}")

    shutil.rmtree(tmp)
    print("self-test:", "FAILED: " + ", ".join(missed) if missed else "all checks passed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
