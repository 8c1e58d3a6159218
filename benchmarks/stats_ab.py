"""Wall-time cost of loop stats: stats off and on, interleaved.

    python benchmarks/stats_ab.py                          # call_soon and echo, 301 reps
    python benchmarks/stats_ab.py --work call_soon --reps 1001 --n 2000

A shared, noisy machine drifts by more than the few per cent this has to
show between two runs made one after the other, so one process keeps two
loops, one with stats off and one with stats on, and runs the same workload
(``cg_overhead.py``'s: a ``call_soon`` chain, a ``call_later(0)`` chain, a
1 KiB TCP echo round trip)
on each in turn, the order swapped every repetition. Each repetition gives
a ratio (time off / time on: 1 = free, below 1 = the cost of stats); the
median ratio and its interquartile range are printed, with the median time
per operation of each setting and their ratio.

``--control`` turns stats off in the second loop too: the ratio it prints
is the method's own bias (on the KVM guest of 2026-12-03 the loop made
second ran 1-2 % slower with both off, 0.98x-0.99x), to set against the
cost it shows with stats on.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cg_overhead  # the workloads

WORKS = {"call_soon": cg_overhead._call_soon, "call_later": cg_overhead._call_later,
         "echo": cg_overhead._echo}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="call_soon,echo", help="call_soon, call_later, echo")
    p.add_argument("--reps", type=int, default=301)
    p.add_argument("--n", type=int, default=0, help="operations per repetition (default: 5000, echo 500)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: time.perf_counter; cpu: time.thread_time, which leaves out "
                        "the time the thread was preempted (the echo's kernel work counts)")
    p.add_argument("--control", action="store_true",
                   help="stats off in both loops: the method's bias (1 = none)")
    a = p.parse_args()
    clock = time.perf_counter if a.clock == "wall" else time.thread_time
    print(f"{'workload':10} {'reps':>5} {'off ns/op':>10} {'on ns/op':>10} {'ratio':>7} "
          f"{'off/on median':>14} {'IQR':>15}")
    for work in a.work.split(","):
        fn = WORKS[work]
        n = a.n or (500 if work == "echo" else 5000)
        loops = {s: cg_overhead._loop("off" if a.control else s) for s in ("off", "on")}
        times = {"off": [], "on": []}
        ratios = []
        try:
            for s in ("off", "on"):  # warm-up
                loops[s].run_until_complete(fn(loops[s], n // 4))
            for rep in range(a.reps):
                order = ("off", "on") if rep % 2 == 0 else ("on", "off")
                took = {}
                for s in order:
                    t0 = clock()
                    loops[s].run_until_complete(fn(loops[s], n))
                    took[s] = clock() - t0
                    times[s].append(took[s] / n * 1e9)
                ratios.append(took["off"] / took["on"])
        finally:
            for lp in loops.values():
                lp.close()
        q = statistics.quantiles(ratios, n=4)
        print(f"{work:10} {a.reps:5} {statistics.median(times['off']):10.1f} "
              f"{statistics.median(times['on']):10.1f} "
              f"{statistics.median(times['off']) / statistics.median(times['on']):6.3f}x "
              f"{statistics.median(ratios):13.3f}x "
              f"{q[0]:6.3f}-{q[2]:.3f}x", flush=True)


if __name__ == "__main__":
    main()
