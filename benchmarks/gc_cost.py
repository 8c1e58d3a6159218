"""The garbage collector's share of queueing many callbacks at once.

    python benchmarks/gc_cost.py --loops oxloop,asyncio --rows threadsafe,call_later

Each round queues N callbacks from the loop's thread (``threadsafe``:
``call_soon_threadsafe(cb, i)``; ``call_soon``: ``call_soon(cb, i)``;
``call_later``: ``call_later(0, cb, i)``), then runs them all in one
iteration. ``gc.callbacks`` times every collection the rounds trigger (the
interpreter's own thresholds, nothing forced) and counts them by generation;
the table gives collections per N calls and the collector's time per call,
the mean over the rounds (a full collection comes every few rounds).
``--heap K`` keeps K small lists alive meanwhile, as an application's own
objects would be: every full collection walks them. The time is wall-clock:
on a shared machine read it as an order of magnitude, and the collection
counts as the exact part.
"""

import argparse
import asyncio
import gc
import importlib
import statistics
import sys
import time


def make_loop(name):
    if name == "asyncio":
        return asyncio.new_event_loop()
    return importlib.import_module(name).new_event_loop()


class Meter:
    """Collections by generation and the time spent in them."""

    def __init__(self):
        self.counts = [0, 0, 0]
        self.ns = 0
        self._start = 0

    def __call__(self, phase, info):
        if phase == "start":
            self._start = time.perf_counter_ns()
        else:
            self.ns += time.perf_counter_ns() - self._start
            self.counts[info["generation"]] += 1


def schedule(loop, row, cb, n):
    if row == "threadsafe":
        for i in range(n):
            loop.call_soon_threadsafe(cb, i)
    elif row == "call_soon":
        for i in range(n):
            loop.call_soon(cb, i)
    else:
        for i in range(n):
            loop.call_later(0, cb, i)


def measure(loop_name, row, n, rounds):
    loop = make_loop(loop_name)
    ran = [0]

    def cb(i):
        ran[0] += 1

    async def one_round():
        schedule(loop, row, cb, n)
        await asyncio.sleep(0)
        while ran[0] % n:
            await asyncio.sleep(0)

    per_call, counts = [], [0, 0, 0]
    try:
        loop.run_until_complete(one_round())  # warm-up
        gc.collect()
        for _ in range(rounds):
            meter = Meter()
            gc.callbacks.append(meter)
            try:
                loop.run_until_complete(one_round())
            finally:
                gc.callbacks.remove(meter)
            per_call.append(meter.ns / n)
            counts = [c + m for c, m in zip(counts, meter.counts)]
    finally:
        loop.close()
    return statistics.mean(per_call), [c / rounds for c in counts]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loops", default="oxloop,asyncio")
    p.add_argument("--rows", default="threadsafe,call_soon,call_later")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--heap", type=int, default=0, help="other live objects (small lists)")
    a = p.parse_args()
    heap = [[i] for i in range(a.heap)]
    print(f"# {sys.version.split()[0]}, {a.n} calls queued per round, {a.rounds} rounds, "
          f"{len(heap)} other objects")
    print("| row | loop | gen0 / gen1 / gen2 collections per round | GC ns per call (mean) |")
    print("|---|---|---|---|")
    for row in a.rows.split(","):
        for name in a.loops.split(","):
            ns, counts = measure(name, row, a.n, a.rounds)
            gens = " / ".join(f"{c:.1f}" for c in counts)
            print(f"| {row} | {name} | {gens} | {ns:.0f} |", flush=True)
    del heap


if __name__ == "__main__":
    main()
