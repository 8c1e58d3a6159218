"""Instruction counts per operation, for the cost of loop stats.

    python benchmarks/cg_overhead.py                 # every workload, stats off and on
    python benchmarks/cg_overhead.py --python ../main/.venv/bin/python --stats off
    python benchmarks/cg_overhead.py --work call_soon --stats on --n 20000 --inner

Timings on a shared 2-core machine drift by more than the few per cent this
has to show, so this counts instructions instead: each (workload, setting)
runs under ``valgrind --tool=callgrind`` twice, with N and with 2N
operations, and the difference divided by N is the cost of one operation in
the steady state (start-up and warm-up cancel out; so does the first
filling of the slowest-callbacks list, which under valgrind, some 50 times
slower than native, takes callbacks a native run never has). Workloads:
``call_soon`` (a chain of call_soon callbacks, as in micro.py),
``call_later`` (a chain of ``call_later(0, ...)`` callbacks: the timer heap
and each iteration's clock readings) and ``echo`` (a 1 KiB request/response over a TCP
loopback connection, client and server Protocols on the same loop).
``--inner`` runs one workload in this process (what valgrind runs).

Under valgrind callbacks run too slowly to be timed in groups (see
``src/event_loop/stats/mod.rs``), so a plain build shows the cost of timing
each callback on its own. A build made with ``OXLOOP_STATS_SLOWDOWN=500``
(the stats' time thresholds times 500, a measuring build only) shows the
grouped path a native run takes:

    OXLOOP_STATS_SLOWDOWN=500 maturin develop --release
"""

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile

WORKS = ("call_soon", "call_later", "echo")


def _loop(stats):
    import oxloop

    loop = oxloop.new_event_loop()
    if stats == "on":
        loop.enable_stats(True)
    return loop


async def _call_soon(loop, n):
    done = loop.create_future()
    left = [n]

    def step():
        left[0] -= 1
        if left[0] > 0:
            loop.call_soon(step)
        else:
            done.set_result(None)

    loop.call_soon(step)
    await done


async def _call_later(loop, n):
    done = loop.create_future()
    left = [n]

    def step():
        left[0] -= 1
        if left[0] > 0:
            loop.call_later(0, step)
        else:
            done.set_result(None)

    loop.call_later(0, step)
    await done


class _Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.t.write(data)


class _Client(asyncio.Protocol):
    def __init__(self, n, done):
        self.left, self.done, self.got = n, done, 0

    def connection_made(self, transport):
        self.t = transport
        self.payload = b"x" * 1024
        self.next()

    def next(self):
        if self.left <= 0:
            self.done.set_result(None)
            return
        self.left -= 1
        self.got = 0
        self.t.write(self.payload)

    def data_received(self, data):
        self.got += len(data)
        if self.got >= len(self.payload):
            self.next()


async def _echo(loop, n):
    server = await loop.create_server(_Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    done = loop.create_future()
    # 20 warm-up round trips, then n measured ones (n=0: only the warm-up).
    transport, _ = await loop.create_connection(lambda: _Client(n + 20, done), "127.0.0.1", port)
    await done
    transport.close()
    server.close()
    await server.wait_closed()


def inner(work, stats, n):
    loop = _loop(stats)
    try:
        loop.run_until_complete({"call_soon": _call_soon, "call_later": _call_later, "echo": _echo}[work](
            loop, n if work == "echo" else max(n, 1)))
    finally:
        loop.close()


def count(python, work, stats, n):
    """Instructions of one run (hash seed fixed, so runs repeat exactly)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python, __file__,
             "--inner", "--work", work, "--stats", stats, "--n", str(n)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONHASHSEED="0"))
        with open(out) as f:
            text = f.read()
    return int(re.search(r"^summary:\s*(\d+)", text, re.MULTILINE).group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=",".join(WORKS))
    p.add_argument("--stats", default="off,on")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--inner", action="store_true")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter with the oxloop to measure (e.g. a build of main)")
    a = p.parse_args()
    if a.inner:
        inner(a.work, a.stats, a.n)
        return
    print(f"{'workload':10} {'stats':5} {'instr/op':>10} {'vs off':>8}")
    for work in a.work.split(","):
        per_op = {}
        for stats in a.stats.split(","):
            base = count(a.python, work, stats, a.n)
            full = count(a.python, work, stats, 2 * a.n)
            per_op[stats] = (full - base) / a.n
            cost = (f"{per_op[stats] / per_op['off'] - 1:+8.2%}"
                    if stats != "off" and "off" in per_op else "")
            print(f"{work:10} {stats:5} {per_op[stats]:10.1f} {cost}", flush=True)


if __name__ == "__main__":
    main()
