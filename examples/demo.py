"""oxloop demo: one asyncio program, three event loops.

Runs the same small workloads on the stdlib loop, uvloop (when installed) and
oxloop, checks that every loop computed the same answers, and prints how long
each took. The program is plain asyncio: the only line that differs between
runs is the loop factory handed to asyncio.Runner.

    python examples/demo.py [--repeat N] [--scale X]
"""

import argparse
import asyncio
import hashlib
import sys
import time

import oxloop

try:
    import uvloop
except ImportError:  # uvloop is optional
    uvloop = None


async def timers(n):
    """n timers at scattered sub-millisecond deadlines: in what order do they fire?"""
    loop = asyncio.get_running_loop()
    fired = []
    done = loop.create_future()
    start = loop.time()

    def fire(i):
        fired.append(i)
        if len(fired) == n:
            done.set_result(None)

    for i in range(n):
        # deadlines 0..9 ms, interleaved, so the heap really has to sort them
        loop.call_at(start + ((i * 7919) % n) / n * 0.01, fire, (i * 7919) % n)
    await done
    # uvloop rounds deadlines to milliseconds, so it reorders these
    return "in deadline order" if fired == sorted(fired) else "OUT OF ORDER"


async def tasks(n):
    """n tasks, each yielding three times, gathered."""
    async def worker(i):
        for _ in range(3):
            await asyncio.sleep(0)
        return i * i
    results = await asyncio.gather(*(worker(i) for i in range(n)))
    return sum(results)


async def pipeline(n):
    """n items through a 4-stage pipeline of bounded queues."""
    stages = [asyncio.Queue(maxsize=64) for _ in range(5)]

    async def stage(src, dst, k):
        while True:
            item = await src.get()
            await dst.put(None if item is None else item + k)
            if item is None:
                return

    workers = [asyncio.create_task(stage(stages[k], stages[k + 1], k)) for k in range(4)]
    total = 0

    async def feed():
        for i in range(n):
            await stages[0].put(i)
        await stages[0].put(None)

    feeder = asyncio.create_task(feed())
    while (item := await stages[-1].get()) is not None:
        total += item
    await asyncio.gather(feeder, *workers)
    return total


async def tcp_echo(clients, rounds, size=1024):
    """`clients` stream connections over loopback, `rounds` echoes each."""
    async def handle(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    digest = hashlib.sha256()

    async def client(c):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = bytes([c % 256]) * size
        for _ in range(rounds):
            writer.write(payload)
            echoed = await reader.readexactly(size)
            assert echoed == payload
        writer.close()
        await writer.wait_closed()
        return c

    for c in await asyncio.gather(*(client(c) for c in range(clients))):
        digest.update(c.to_bytes(4, "little"))
    server.close()
    await server.wait_closed()
    return digest.hexdigest()[:12]


def workloads(scale):
    s = lambda n: max(1, int(n * scale))  # noqa: E731
    return [
        ("100k timers, sorted", lambda: timers(s(100_000))),
        ("50k tasks x3 yields", lambda: tasks(s(50_000))),
        ("queue pipeline, 50k", lambda: pipeline(s(50_000))),
        ("tcp echo 20x500 1KiB", lambda: tcp_echo(20, s(500))),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs per loop (best kept)")
    ap.add_argument("--scale", type=float, default=1.0, help="workload size factor")
    args = ap.parse_args()

    loops = [("asyncio", asyncio.SelectorEventLoop)]
    if uvloop is not None:
        loops.append(("uvloop", uvloop.new_event_loop))
    loops.append(("oxloop", oxloop.new_event_loop))

    print(f"Python {sys.version.split()[0]}; best of {args.repeat} runs; "
          f"loops: {', '.join(n for n, _ in loops)}\n")
    header = f"{'workload':24s}" + "".join(f"{n:>16s}" for n, _ in loops)
    ratios = "   oxloop vs asyncio" + ("  vs uvloop" if uvloop else "")
    print(header + ratios)
    print("-" * (len(header) + len(ratios)))
    failures = 0
    for title, make in workloads(args.scale):
        best, answers = {}, {}
        for _ in range(args.repeat):
            for name, factory in loops:
                with asyncio.Runner(loop_factory=factory) as runner:
                    t0 = time.perf_counter()
                    try:
                        answers[name] = runner.run(make())
                    except Exception as exc:  # shown in the table, not hidden
                        answers[name] = f"error: {type(exc).__name__}: {exc}"
                        failures += 1
                    dt = time.perf_counter() - t0
                best[name] = min(best.get(name, dt), dt)
        cells = "".join(f"{best[n] * 1000:13.1f} ms" for n, _ in loops)
        ratio = f"{best['asyncio'] / best['oxloop']:19.2f}x"
        if uvloop:
            ratio += f"{best['uvloop'] / best['oxloop']:10.2f}x"
        print(f"{title:24s}{cells}{ratio}")
        # The stdlib loop is the reference: oxloop must agree with it.
        if answers["oxloop"] != answers["asyncio"]:
            failures += 1
            print(f"  !! oxloop answered {answers['oxloop']!r}, "
                  f"asyncio {answers['asyncio']!r}")
        for name, answer in answers.items():
            if name not in ("asyncio", "oxloop") and answer != answers["asyncio"]:
                print(f"  note: {name} answered {answer!r}, asyncio {answers['asyncio']!r}")
    print("\noxloop computed the same answers as the stdlib loop." if not failures
          else f"\n{failures} problem(s): see above.")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
