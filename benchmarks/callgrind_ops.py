"""Instructions per operation of the loop-overhead rows, for any loops.

    python benchmarks/callgrind_ops.py --loops oxloop,uvloop,rloop
    python benchmarks/callgrind_ops.py --loops oxloop --rows call_soon,create_task --n 20000
    /work/shared/pythons/in-sid /opt/perf-v314/bin/python benchmarks/callgrind_ops.py \\
        --loops oxloop,zuvloop,rloop,uvloop

Timings on the shared machine are noise; instruction counts are not. Each
(loop, row) runs under ``valgrind --tool=callgrind`` twice, with N and with
2N operations, and (I(2N) - I(N)) / N is the cost of one operation: start-up,
imports and warm-up cancel out. The rows follow ``micro.py`` but are made
deterministic (nothing depends on wall-clock time, so the count repeats):

- ``call_soon``: a chain of call_soon callbacks, each scheduling the next.
- ``call_later``: N timers per round at random times in the past (so all are
  due in the next iteration, in heap order), half of them cancelled; an op is
  one timer scheduled (fired or cancelled).
- ``sleep0``: asyncio.sleep(0) ping-pong between 2 tasks; an op is a switch.
- ``future``: two tasks wake each other via Future.set_result/await; an op
  is one wake-up.
- ``threadsafe``: a chain of call_soon_threadsafe callbacks, called on the
  loop's thread (the cost of the handle and the wake-up check; a second
  thread would make the count depend on scheduling).
- ``threadsafe_batch``: bursts of 10,000 call_soon_threadsafe(cb, i) calls
  from the loop's thread, each burst then run in one iteration; an op is one
  call. Unlike ``threadsafe``, 10,000 handles are queued at once, so the
  garbage collector's passes over what they keep alive are part of the count.
- ``create_task``: create_task + await of a trivial coroutine, one at a time.
- ``echo``: 100 bytes to and fro over a Unix socketpair between two
  protocols on the loop's stream transports; an op is one round trip (two
  writes, two reads: the transports' per-byte paths).
- ``pipe_echo``: the same over two pipes (``connect_write_pipe`` /
  ``connect_read_pipe``): the pipe transports' paths.

``--inner`` runs one (loop, row, n) in this process (what valgrind runs).
"""

import argparse
import asyncio
import importlib
import os
import random
import re
import subprocess
import sys
import tempfile

ROWS = ("call_soon", "call_later", "sleep0", "future", "threadsafe", "threadsafe_batch", "create_task", "echo",
        "pipe_echo")


def make_loop(name):
    if name == "asyncio":
        return asyncio.new_event_loop()
    return importlib.import_module(name).new_event_loop()


async def r_call_soon(loop, n):
    fut = loop.create_future()
    left = [n]

    def cb():
        left[0] -= 1
        if left[0] > 0:
            loop.call_soon(cb)
        else:
            fut.set_result(None)

    loop.call_soon(cb)
    await fut


async def r_threadsafe(loop, n):
    fut = loop.create_future()
    left = [n]

    def cb():
        left[0] -= 1
        if left[0] > 0:
            loop.call_soon_threadsafe(cb)
        else:
            fut.set_result(None)

    loop.call_soon_threadsafe(cb)
    await fut


async def r_threadsafe_batch(loop, n):
    batch = 10000
    ran = [0]

    def cb(i):
        ran[0] += 1

    for start in range(0, n, batch):
        k = min(batch, n - start)
        for i in range(k):
            loop.call_soon_threadsafe(cb, i)
        await asyncio.sleep(0)
        if ran[0] != start + k:
            raise RuntimeError(f"{ran[0]} callbacks ran, expected {start + k}")


async def r_call_later(loop, n):
    rnd = random.Random(42)
    batch = 1000
    fired = [0]

    def cb():
        fired[0] += 1

    for start in range(0, n, batch):
        k = min(batch, n - start)
        base = loop.time() - 1.0
        handles = [loop.call_later(base + rnd.random() * 0.001 - loop.time(), cb) for _ in range(k)]
        for h in handles[::2]:
            h.cancel()
        before = fired[0]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        if fired[0] - before != k // 2:
            raise RuntimeError(f"{fired[0] - before} timers fired, expected {k // 2}")


async def r_sleep0(loop, n):
    half = n // 2

    async def side():
        for _ in range(half):
            await asyncio.sleep(0)

    await asyncio.gather(side(), side())


async def r_future(loop, n):
    half = n // 2
    box = [None, None]

    async def side(me, other):
        for _ in range(half):
            box[me] = loop.create_future()
            if box[other] is not None and not box[other].done():
                box[other].set_result(None)
            await box[me]
        if box[other] is not None and not box[other].done():
            box[other].set_result(None)

    # Each side wakes the other, then waits for its own future.
    t0 = loop.create_task(side(0, 1))
    t1 = loop.create_task(side(1, 0))
    await asyncio.gather(t0, t1)


async def r_create_task(loop, n):
    async def trivial():
        return 1

    for _ in range(n):
        await loop.create_task(trivial())


class _Echo(asyncio.Protocol):
    """Writes back what it gets until `left` round trips are done."""

    def __init__(self, left, done, out=None):
        self.left, self.done, self.out = left, done, out

    def connection_made(self, transport):
        if self.out is None:
            self.out = transport

    def data_received(self, data):
        self.left[0] -= 1
        if self.left[0] > 0:
            self.out.write(data)
        elif not self.done.done():
            self.done.set_result(None)


async def r_echo(loop, n):
    import socket

    a, b = socket.socketpair()
    left, done = [2 * n], loop.create_future()
    ta, _ = await loop.create_connection(lambda: _Echo(left, done), sock=a)
    tb, _ = await loop.create_connection(lambda: _Echo(left, done), sock=b)
    ta.write(b"x" * 100)
    await done
    ta.close()
    tb.close()
    await asyncio.sleep(0)


async def r_pipe_echo(loop, n):
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    left, done = [2 * n], loop.create_future()
    t1, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(w1, "wb", 0))
    t2, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(w2, "wb", 0))
    rt1, _ = await loop.connect_read_pipe(lambda: _Echo(left, done, t2), os.fdopen(r1, "rb", 0))
    rt2, _ = await loop.connect_read_pipe(lambda: _Echo(left, done, t1), os.fdopen(r2, "rb", 0))
    t1.write(b"x" * 100)
    await done
    for t in (t1, t2, rt1, rt2):
        t.close()
    await asyncio.sleep(0)


RUNNERS = {
    "echo": r_echo,
    "pipe_echo": r_pipe_echo,
    "call_soon": r_call_soon,
    "call_later": r_call_later,
    "sleep0": r_sleep0,
    "future": r_future,
    "threadsafe": r_threadsafe,
    "threadsafe_batch": r_threadsafe_batch,
    "create_task": r_create_task,
}


def inner(loop_name, row, n):
    loop = make_loop(loop_name)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(RUNNERS[row](loop, n))
    finally:
        loop.close()


def count(python, loop_name, row, n):
    """Instructions of one run (hash seed fixed, so runs repeat exactly)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python, __file__,
             "--inner", "--loops", loop_name, "--rows", row, "--n", str(n)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONHASHSEED="0"))
        if proc.returncode != 0:
            raise RuntimeError(f"{loop_name}/{row} failed:\n{proc.stderr[-2000:]}")
        with open(out) as f:
            text = f.read()
    return int(re.search(r"^summary:\s*(\d+)", text, re.MULTILINE).group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loops", default="oxloop,uvloop,rloop")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--inner", action="store_true")
    p.add_argument("--python", default=sys.executable)
    a = p.parse_args()
    if a.inner:
        inner(a.loops, a.rows, a.n)
        return
    loops = a.loops.split(",")
    rows = a.rows.split(",")
    print(f"# {sys.version.split()[0]}, n={a.n}; instructions per op, (I(2n) - I(n)) / n")
    print("| row | " + " | ".join(loops) + " |")
    print("|---|" + "---|" * len(loops))
    for row in rows:
        cells = []
        for name in loops:
            try:
                one = count(a.python, name, row, a.n)
                two = count(a.python, name, row, 2 * a.n)
                cells.append(f"{(two - one) / a.n:.0f}")
            except RuntimeError as e:
                print(e, file=sys.stderr)
                cells.append("fail")
        print(f"| {row} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
