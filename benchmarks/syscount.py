"""What each loop asks of the kernel per echo request: syscalls, page faults,
context switches, and CPU time.

    .venv-bench/bin/python benchmarks/syscount.py
    .venv-bench/bin/python benchmarks/syscount.py --loops uvloop,oxloop --mode streams --size 100KiB
    .venv-bench/bin/python benchmarks/syscount.py --transport unix --seconds 2 --reps 5 --json out.json

A diagnosis tool, not a benchmark: when a loop is slower in some mode and
size, this shows where its time goes in the kernel (e.g. glibc giving the
heap top back at every free shows as ~0.5 brk and ~17 minor page faults per
request).  For each (transport, mode, loop) it starts benchmarks/echo_server.py
(pinned, warmed up, as run.py does), and for each size loads it with the
native client (benchmarks/loadgen) twice:

1. a clean run: the server's user and system CPU time, minor page faults and
   voluntary / involuntary context switches (all threads) are read from
   /proc at the client's measured-window edges and divided by the requests
   answered in that window;
2. a counted run: the server's syscalls are counted by ``perf stat`` on
   the tracepoints ``syscalls:sys_enter_NAME`` (in-kernel counters, which
   cost little; opened on the server's threads before the client starts),
   for the syscalls in GROUPS and WATCHED one by one and for the rest as a
   total (``unlisted``; ``--all-syscalls`` names them all, at ~15 s more a
   run for perf to close ~350 counters); or, with ``--counter strace`` or
   when perf's syscall tracepoints are not available, by ``strace -c -f``
   (ptrace: slows the server several times, so it batches differently).
   Counts are divided by all the requests of that client run (connection
   set-up and close included: a few dozen syscalls).  perf counts only the
   threads that exist when it starts (strace -f follows new ones).

Both readings cover the whole server process; a thread that exits during a
clean run takes its context switches out of the sum.  ``noise %`` is the CPU
other processes used during the clean run (% of a core; run.py's measure):
high noise moves CPU time and batching (epoll_wait per request), much less
the per-request syscalls of a loop that is not batching.

Loops are interleaved (their order rotated each rep) and the runs repeated;
the table shows medians over reps, per request.  Columns ``recv`` and
``send`` are the read and write families (read, readv, recvfrom, recvmsg,
recvmmsg; write, writev, sendto, sendmsg, sendmmsg) on any fd, a loop's
wake-up eventfd or pipe included; ``epoll_wait`` includes epoll_pwait(2);
``other`` is every other syscall, listed below the table.  A loop that
cannot be imported is skipped with a note (asyncio and oxloop are
required).  ``ceiling`` (not in the default list) is the pure-Rust
echo-ceiling server, in every mode the same: the kernel floor.
"""

import argparse
import datetime
import functools
import json
import os
import platform
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (the driver: its option helpers, probe, native build)
import sysstat  # noqa: E402
from measure import CEILING, Noise, echo_session, read_line, reap, run_client, tail  # noqa: E402

# Table columns that sum several syscalls; every syscall not named here is "other".
GROUPS = {
    "recv": ("read", "readv", "recvfrom", "recvmsg", "recvmmsg"),
    "send": ("write", "writev", "sendto", "sendmsg", "sendmmsg"),
    "epoll_wait": ("epoll_wait", "epoll_pwait", "epoll_pwait2"),
    "epoll_ctl": ("epoll_ctl",),
    "brk": ("brk",),
    "mmap": ("mmap",),
    "munmap": ("munmap",),
}
# Per-request counters of the clean run: /proc reading -> column.
PROC = {"user_s": "user_us", "sys_s": "sys_us", "minflt": "minflt", "majflt": "majflt",
        "vcsw": "vcsw", "ivcsw": "ivcsw"}
TRACEPOINT = "syscalls:sys_enter_"
# What perf counts one by one, besides the groups (a counter that perf
# closes costs it ~40 ms at exit, so not all ~350 unless --all-syscalls);
# the rest shows as "unlisted": the total (raw_syscalls:sys_enter) minus these.
WATCHED = ("mremap", "madvise", "mprotect", "futex", "accept", "accept4", "close", "shutdown", "getsockopt",
           "setsockopt", "getsockname", "getpeername", "ioctl", "fcntl", "poll", "ppoll", "select", "pselect6",
           "clock_gettime", "getpid", "rt_sigprocmask", "rt_sigaction", "sched_yield", "eventfd2", "getrandom")


# ---------------------------------------------------------------- counters


def perf_events(every):
    """perf's events for the syscalls to count (all with ``every``: slow to
    close), or None when perf cannot count syscall tracepoints here."""
    try:
        p = subprocess.run(["perf", "stat", "-x", ",", "-e", TRACEPOINT + "getppid", "--",
                            sys.executable, "-c", "import os; os.getppid()"],
                           capture_output=True, text=True, timeout=60)
        if p.returncode or not any(line.split(",")[0].isdigit() for line in p.stderr.splitlines()):
            return None
        listed = subprocess.run(["perf", "list", TRACEPOINT + "*"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    if every:
        return [TRACEPOINT + "*"]
    known = {word[len(TRACEPOINT):] for word in listed.split() if word.startswith(TRACEPOINT)}
    wanted = [name for names in GROUPS.values() for name in names] + list(WATCHED)
    return ["raw_syscalls:sys_enter"] + [TRACEPOINT + name for name in wanted if name in known]


def perf_count(events, pid, workdir, during):
    """``during()`` while perf counts ``events`` (perf_events) of ``pid``'s
    threads; returns (its result, {syscall: count})."""
    ctl, ack, out = (os.path.join(workdir, name) for name in ("perf-ctl", "perf-ack", "perf.csv"))
    for fifo in (ctl, ack):
        if os.path.exists(fifo):
            os.unlink(fifo)
        os.mkfifo(fifo)
    perf = subprocess.Popen(["perf", "stat", "-D", "-1", "--control", f"fifo:{ctl},{ack}", "-x", ",", "-o", out,
                             "-e", ",".join(events), "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # O_RDWR: opening a fifo so never blocks, even if perf dies first
    cfd, afd = os.open(ctl, os.O_RDWR), os.open(ack, os.O_RDWR)
    sel = selectors.DefaultSelector()
    sel.register(afd, selectors.EVENT_READ)

    def command(word):
        os.write(cfd, word.encode() + b"\n")
        if not sel.select(timeout=30):  # the first enable opens the events: slow
            raise RuntimeError(f"perf did not acknowledge {word!r}: {tail(perf.stderr.read() if perf.poll() is not None else '', 300)}")
        os.read(afd, 64)

    try:
        command("enable")
        result = during()
        command("disable")
    finally:
        perf.send_signal(signal.SIGINT)
        reap(perf, 60)  # perf closes its counters: ~40 ms each
        sel.close()
        os.close(cfd)
        os.close(afd)
        perf.stderr.close()
    counts, total = {}, 0
    with open(out) as f:
        for line in f:
            value, _, event = (line.split(",") + ["", ""])[:3]
            if event.startswith(TRACEPOINT) and value.isdigit():
                counts[event[len(TRACEPOINT):]] = int(value)
            elif event == "raw_syscalls:sys_enter" and value.isdigit():
                total = int(value)
    if not counts:
        raise RuntimeError("perf stat counted nothing")
    if "*" not in events[-1]:
        counts["unlisted"] = max(0, total - sum(counts.values()))
    return result, counts


def strace_count(_events, pid, workdir, during):
    """``during()`` while ``strace -c -f`` counts the syscalls of ``pid``;
    returns (its result, {syscall: count})."""
    out = os.path.join(workdir, "strace.txt")
    st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(pid)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sel = selectors.DefaultSelector()
    sel.register(st.stdout, selectors.EVENT_READ)
    line = read_line(st, time.monotonic() + 30, sel)
    sel.close()
    try:
        if not line or "attached" not in line:
            raise RuntimeError(f"strace did not attach: {(line or '').strip()}")
        time.sleep(0.2)  # the server's other threads
        result = during()
    finally:
        st.send_signal(signal.SIGINT)
        reap(st, 30)
        st.stdout.close()
    counts = {}
    with open(out) as f:
        for line in f:  # % time, seconds, usecs/call, calls, [errors,] syscall
            cols = line.split()
            if len(cols) >= 5 and cols[3].isdigit() and cols[-1] != "total":
                counts[cols[-1]] = int(cols[3])
    return result, counts


COUNTERS = {"perf": perf_count, "strace": strace_count}


def measured(counter, events, workdir, args, server, size, duration, warmup, extra=()):
    """measure.session's ``client``: the clean run, then the counted run;
    the clean run's result with ``per_req`` (/proc counters) and ``syscalls``
    (per request) added."""
    edges = {}
    r = run_client(args, server, size, duration, warmup, extra,
                   on_mark=lambda mark: edges.setdefault(mark, sysstat.proc_counters(server.pid)))
    a, b = edges.get("measure-start"), edges.get("measure-end")
    if r["status"] != "ok" or not (a and b):
        return r
    n = max(1, r["requests"])
    r["per_req"] = {col: (b[key] - a[key]) / n * (1e6 if key.endswith("_s") else 1) for key, col in PROC.items()}
    try:
        counted, calls = COUNTERS[counter](events, server.pid, workdir,
                                           lambda: run_client(args, server, size, duration, warmup, extra))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return {"status": "fail", "error": f"{counter}: {e}"}
    if counted["status"] != "ok":
        return dict(counted, error=f"while counting syscalls ({counter}): {counted['error']}")
    total = max(1, counted["total_requests"])
    r["counted_rps"] = counted["rps"]
    r["syscalls"] = {name: c / total for name, c in sorted(calls.items()) if c}
    return r


# ---------------------------------------------------------------- report


def columns(r):
    """One result's per-request numbers, flat: /proc counters, syscall groups, other."""
    calls = dict(r["syscalls"])
    row = dict(r["per_req"], cpu_us=r["per_req"]["user_us"] + r["per_req"]["sys_us"], rps=r["rps"],
               noise=r.get("foreign_pct") or 0.0)
    for col, names in GROUPS.items():
        row[col] = sum(calls.pop(name, 0.0) for name in names)
    row["other"] = sum(calls.values())
    row.update({"other:" + name: v for name, v in calls.items()})
    return row


def medians(results):
    """{(transport, mode, size, loop): {column: median over reps}} of the
    ok results; a column missing in a rep counts as 0 there."""
    groups = {}
    for r in results:
        if r["status"] == "ok" and "syscalls" in r:
            groups.setdefault((r["transport"], r["mode"], r["size"], r["loop"]), []).append(columns(r))
    return {key: {col: statistics.median(row.get(col, 0.0) for row in rows)
                  for col in set().union(*rows)} | {"reps": len(rows)}
            for key, rows in groups.items()}


def num(v):
    if v == 0:
        return "0"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


TABLE = [("req/s", "rps"), ("CPU µs", "cpu_us"), ("sys µs", "sys_us"), ("recv", "recv"), ("send", "send"),
         ("epoll_wait", "epoll_wait"), ("epoll_ctl", "epoll_ctl"), ("brk", "brk"), ("mmap", "mmap"),
         ("munmap", "munmap"), ("other", "other"), ("minflt", "minflt"), ("vcsw", "vcsw"), ("ivcsw", "ivcsw")]


def markdown(med, loop_order, failures):
    """The table (rows grouped by transport, mode, size; loops in
    ``loop_order``), the other syscalls per row, the failures."""
    lines = ["| case | loop | " + " | ".join(h for h, _ in TABLE) + " | reps | noise % |",
             "|" + " --- |" * (len(TABLE) + 4)]
    others = []
    for key in sorted(med, key=lambda k: (k[0], k[1], k[2], loop_order.index(k[3]))):
        transport, mode, size, loop = key
        m = med[key]
        case = f"{transport} {mode} {run.size_label(size)}"
        lines.append(f"| {case} | {loop} | " + " | ".join(f"{m[c]:,.0f}" if c == "rps" else num(m[c]) for _, c in TABLE)
                     + f" | {m['reps']} | {m['noise']:.0f} |")
        top = sorted(((v, c[6:]) for c, v in m.items() if c.startswith("other:") and v >= 0.005), reverse=True)
        if top:
            others.append(f"- {case}, {loop}: " + ", ".join(f"{name} {num(v)}" for v, name in top[:8]))
    text = "\n".join(lines)
    if others:
        text += "\n\nOther syscalls per request (median, >= 0.005):\n\n" + "\n".join(others)
    if failures:
        text += "\n\nFailures / n/a:\n\n" + "\n".join(
            f"- rep {r['rep'] + 1} {r['transport']} {r['mode']} {run.size_label(r['size'])} {r['loop']}: "
            f"{r['status']}: {r.get('error')}" for r in failures)
    return text


# ---------------------------------------------------------------- driver


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loops", default="asyncio,uvloop,rloop,zuvloop,oxloop",
                    help="comma list (loops.py names, or 'ceiling')")
    ap.add_argument("--mode", "--modes", dest="modes", default="protocol,streams",
                    help=f"echo_server modes, comma list of {', '.join(run.MODES)}")
    ap.add_argument("--size", "--sizes", dest="sizes", default="1KiB,100KiB", help="message sizes, comma list")
    ap.add_argument("--transport", default="tcp", help="comma list of tcp, unix, tls")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds of each run (two per size)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions, loops interleaved")
    ap.add_argument("--counter", choices=("auto", "perf", "strace"), default="auto",
                    help="syscall counter (auto: perf if its syscall tracepoints work, else strace)")
    ap.add_argument("--all-syscalls", action="store_true",
                    help="perf: count every syscall by name, not only the ones listed in WATCHED (~15 s per run more)")
    ap.add_argument("--conns", type=int, default=10, help="client connections")
    ap.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each run")
    ap.add_argument("--server-warmup", type=float, default=1.0, help="discarded load for each fresh server")
    ap.add_argument("--pin", default="0,1", help="SERVER_CPU,CLIENT_CPU, or 'none'")
    ap.add_argument("--retries", type=int, default=1, help="re-runs of a disturbed clean run (other CPU > 10%%)")
    ap.add_argument("--json", metavar="PATH", help="write every measurement and the medians here")
    ap.set_defaults(verify="sample", eof_wait=1.0, drain=5.0, noise=10.0, retry_budget=120.0)
    args = ap.parse_args(argv)
    args.duration = args.seconds
    args.loop_list = [x for x in args.loops.split(",") if x]
    args.mode_list = args.modes.split(",")
    args.transport_list = args.transport.split(",")
    args.size_list = args.tls_size_list = [run.parse_size(s) for s in args.sizes.split(",")]
    run.check_names(ap, args, [(args.mode_list, run.MODES), (args.transport_list, ("tcp", "unix", "tls"))])
    return args


def main(argv=None):
    args = parse_args(argv)
    counter, events = args.counter, None
    if counter != "strace":
        events = perf_events(args.all_syscalls)
        if events is None and counter == "perf":
            sys.exit("perf cannot count syscall tracepoints here (tracefs not readable: not root? perf_event_paranoid?); try --counter strace")
        counter = "perf" if events else "strace"
    if counter == "strace" and not shutil.which("strace"):
        sys.exit("strace is not installed (apt-get install strace)")
    run.build_native()
    usable, impls, _ = run.probe_loops([lp for lp in args.loop_list if lp != CEILING])
    loop_names = [lp for lp in args.loop_list if lp in usable or lp == CEILING]
    run.log(f"loops {', '.join(loop_names)}; syscalls counted by {counter}; {args.reps} rep(s); "
        f"server on CPU {args.server_cpu}, client on CPU {args.client_cpu}")
    noise, results = Noise(args), []
    tmpdir = tempfile.mkdtemp(prefix="oxsyscount-")
    client = functools.partial(measured, counter, events, tmpdir)
    t0 = time.monotonic()
    try:
        for rep in range(args.reps):
            order = loop_names[rep % len(loop_names):] + loop_names[:rep % len(loop_names)]
            for transport in args.transport_list:
                for mode in args.mode_list:
                    for loop in order:
                        for size, r in echo_session(args, noise, loop, mode, transport, tmpdir, client):
                            r.update(rep=rep, transport=transport, mode=mode, size=size, loop=loop)
                            results.append(r)
                            what = (f"{r['rps']:9,.0f} req/s, {num(columns(r)['cpu_us'])} µs CPU/req"
                                    if "syscalls" in r else f"{r['status']}: {r.get('error')}")
                            run.log(f"[{time.monotonic() - t0:5.0f}s] rep {rep + 1} {transport} {mode:9} "
                                    f"{run.size_label(size):7} {loop:8} {what}")
    except KeyboardInterrupt:
        run.log("interrupted: reporting what was measured so far")
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    med = medians(results)
    failures = [r for r in results if r["status"] != "ok"]
    meta = {"started": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), "machine": run.machine_info(),
            "python": f"{platform.python_implementation()} {platform.python_version()}", "impls": impls,
            "counter": counter, "command": " ".join(["syscount.py"] + (argv or sys.argv[1:])),
            "elapsed_s": round(time.monotonic() - t0, 1)}
    print(f"## Kernel work per echo request ({meta['python']}, {meta['machine']})\n\n"
          f"`{meta['command']}`; syscalls counted by {counter}; medians over reps; "
          "CPU = user + system µs of the server per request.\n\n" + markdown(med, loop_names, failures))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "options": {k: v for k, v in vars(args).items()}, "results": results,
                       "medians": [dict(zip(("transport", "mode", "size", "loop"), key), **m) for key, m in med.items()]},
                      f, indent=1)
    return 1 if any(r["status"] == "fail" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
