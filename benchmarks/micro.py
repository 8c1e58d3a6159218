"""Loop-overhead micro benchmarks: no network, only the loop's own machinery.

    python micro.py --loop uvloop --bench call_soon --seconds 0.5
    python micro.py --loop oxloop --bench call_soon,lock --seconds 0
    python micro.py --list

Each benchmark is a *round* of fixed size (e.g. a chain of 10,000
call_soon callbacks) repeated inside one running coroutine until
``--seconds`` have passed (at least one round; ``--seconds 0`` runs exactly
one, which is what ``--smoke`` does).  The result is operations per second
over the timed rounds.  One round runs untimed first as a warm-up.

Every round checks its own outcome (callbacks counted, cancelled timers not
fired, queue items summed, lock never held twice, ...) and raises on a wrong
result, so a loop that is fast because it is wrong fails instead of winning.

Noise: the process reads the machine's busy CPU time (/proc/stat) and its own
CPU time at both ends of the timed window; the difference is CPU used by
other processes meanwhile (``foreign_pct``, % of one core), which the driver
uses to decide whether to run the benchmark again.

Prints one JSON line per benchmark: the result, or ``{"error": ...,
"traceback": ...}`` (then the exit status is 1).  The driver runs one
benchmark per process, except with --smoke, where one process per loop runs
them all (a fresh loop each) to save start-up time.
"""

import argparse
import asyncio
import gc
import json
import os
import queue as queue_mod
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loops
from sysstat import busy_cpu_seconds

BENCHES = {}


def bench(name, ops, text):
    """Register ``async def round(loop)`` doing ``ops`` operations."""

    def register(fn):
        BENCHES[name] = (fn, ops, text)
        return fn

    return register


class WrongResult(AssertionError):
    pass


def check(cond, what):
    if not cond:
        raise WrongResult(what)


@bench("call_soon", 10_000, "chain of call_soon callbacks, each scheduling the next")
async def call_soon(loop):
    done = loop.create_future()
    left = [10_000]

    def step():
        left[0] -= 1
        if left[0]:
            loop.call_soon(step)
        else:
            done.set_result(None)

    loop.call_soon(step)
    await done
    check(left[0] == 0, "chain stopped early")


@bench("call_later", 10_000, "call_later with 0-1 ms delays, every other timer cancelled")
async def call_later(loop):
    fired = []
    # delays > 0: rloop 0.5.0 runs a cancelled call_later(0, ...) anyway
    handles = [loop.call_later((1 + i % 97) / 97_000, fired.append, i) for i in range(10_000)]
    for h in handles[1::2]:
        h.cancel()
    await asyncio.sleep(0.0015)
    while len(fired) < 5_000:  # a slow loop may not have run them all yet
        await asyncio.sleep(0.0005)
    check(len(fired) == 5_000 and all(i % 2 == 0 for i in fired), "a cancelled timer ran, or one was lost")


async def _nothing(i):
    return i


@bench("create_task", 1_000, "create_task of a trivial coroutine, then await it")
async def create_task(loop):
    for i in range(1_000):
        check(await loop.create_task(_nothing(i)) == i, "wrong task result")


@bench("sleep0_pingpong", 2_000, "two tasks alternating through asyncio.sleep(0)")
async def sleep0_pingpong(loop):
    trace = []

    async def player(tag):
        for _ in range(1_000):
            trace.append(tag)
            await asyncio.sleep(0)

    await asyncio.gather(player(0), player(1))
    check(len(trace) == 2_000 and trace[:4] == [0, 1, 0, 1], "tasks did not alternate")


@bench("future_pingpong", 2_000, "two tasks waking each other with Future.set_result")
async def future_pingpong(loop):
    slots = [None, None]
    count = [0]

    async def player(me):
        other = 1 - me
        for _ in range(1_000):
            fut = slots[me] = loop.create_future()
            if slots[other] is not None and not slots[other].done():
                slots[other].set_result(me)
            await fut
            count[0] += 1
        if slots[other] is not None and not slots[other].done():
            slots[other].set_result(me)

    a, b = loop.create_task(player(0)), loop.create_task(player(1))
    await asyncio.gather(a, b)
    check(count[0] == 2_000, "lost a wake-up")


@bench("queue", 2_000, "asyncio.Queue(maxsize=64): one producer, one consumer")
async def queue(loop):
    q = asyncio.Queue(maxsize=64)

    async def produce():
        for i in range(2_000):
            await q.put(i)
        await q.put(None)

    async def consume():
        total = 0
        while (item := await q.get()) is not None:
            total += item
        return total

    _, total = await asyncio.gather(produce(), consume())
    check(total == 2_000 * 1_999 // 2, "items lost or duplicated")


@bench("lock", 1_000, "asyncio.Lock contended by 100 tasks, each yielding while holding it")
async def lock(loop):
    mutex = asyncio.Lock()
    state = {"inside": 0, "entries": 0}

    async def worker():
        for _ in range(10):
            async with mutex:
                state["inside"] += 1
                check(state["inside"] == 1, "two tasks held the lock")
                await asyncio.sleep(0)
                state["inside"] -= 1
                state["entries"] += 1

    await asyncio.gather(*[worker() for _ in range(100)])
    check(state["entries"] == 1_000, "lost an acquisition")


@bench("gather_sleep", 10_000, "gather of 10,000 tasks each sleeping 1 ms")
async def gather_sleep(loop):
    results = await asyncio.gather(*[asyncio.sleep(0.001, i) for i in range(10_000)])
    check(results == list(range(10_000)), "gather results wrong or out of order")


@bench("call_soon_threadsafe", 10_000, "call_soon_threadsafe from another thread")
async def call_soon_threadsafe(loop):
    got = []
    done = loop.create_future()

    def arrive(i):
        got.append(i)
        if i == 9_999:
            done.set_result(None)

    def feeder():
        for i in range(10_000):
            loop.call_soon_threadsafe(arrive, i)

    t = threading.Thread(target=feeder)
    t.start()
    await done
    t.join()
    check(got == list(range(10_000)), "callbacks lost or reordered")


def _square(x):
    return x * x


@bench("run_in_executor", 500, "run_in_executor(None, f), 50 calls in flight at a time")
async def run_in_executor(loop):
    total = 0
    for start in range(0, 500, 50):
        total += sum(await asyncio.gather(*[loop.run_in_executor(None, _square, i) for i in range(start, start + 50)]))
    check(total == sum(i * i for i in range(500)), "wrong executor results")


@bench("thread_handoff", 20, "a worker thread's turn while the loop is busy: hand it an item, run sleep(0) until it answers")
async def thread_handoff(loop):
    # No fds, no call_soon_threadsafe: the worker needs only the GIL, which
    # a busy loop gives up in its poll (asyncio's select) or not at all.
    inbox = queue_mod.SimpleQueue()
    answered = []

    def worker():
        while (item := inbox.get()) is not None:
            answered.append(item)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        for i in range(20):
            inbox.put(i)
            spins = 0
            while len(answered) <= i:
                await asyncio.sleep(0)
                spins += 1
                check(spins < 50_000_000, "the worker thread never ran")
    finally:
        inbox.put(None)
        thread.join()
    check(answered == list(range(20)), "items lost or reordered")


def measure(loop_name, name, seconds):
    fn, ops, _ = BENCHES[name]
    loop = loops.new_loop(loop_name)
    impl = loops.describe(loop_name, loop)

    async def timed():
        check(asyncio.get_running_loop() is loop, "get_running_loop() is not the loop under test")
        await fn(loop)  # warm-up round, untimed
        gc.collect()
        rounds = 0
        busy0, cpu0, t0 = busy_cpu_seconds(), time.process_time(), time.perf_counter()
        while True:
            await fn(loop)
            rounds += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                break
        busy = busy_cpu_seconds() - busy0
        cpu = time.process_time() - cpu0
        # /proc/stat counts in 10 ms ticks: too coarse for short windows
        foreign = max(0.0, busy - cpu) / elapsed * 100 if elapsed >= 0.2 else None
        return rounds, elapsed, cpu, foreign

    asyncio.set_event_loop(loop)
    try:
        rounds, elapsed, cpu, foreign = loop.run_until_complete(timed())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return {"bench": name, "loop": loop_name, "impl": impl, "ops": rounds * ops, "seconds": elapsed,
            "ops_per_s": rounds * ops / elapsed, "cpu_s": cpu, "foreign_pct": foreign}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loop", default="asyncio")
    ap.add_argument("--bench", default="call_soon", help="name, or comma list run one after another")
    ap.add_argument("--seconds", type=float, default=0.5, help="timed duration (0: one round)")
    ap.add_argument("--list", action="store_true", help="describe the benchmarks")
    args = ap.parse_args()
    if args.list:
        for name, (_, ops, text) in BENCHES.items():
            print(f"{name:22} {text} ({ops:,} ops per round)")
        return
    names = args.bench.split(",")
    if set(names) - set(BENCHES):
        ap.error(f"unknown benchmark; known: {', '.join(BENCHES)}")
    failed = False
    for name in names:  # each on a fresh loop
        try:
            result = measure(args.loop, name, args.seconds)
        except BaseException as e:
            failed = True
            result = {"bench": name, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        print(json.dumps(result), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
