#!/usr/bin/env python3
"""oxloop benchmark suite: oxloop against the stdlib loop, uvloop, rloop and zuvloop.

    python benchmarks/run.py                  # everything, 3 reps (~15 min)
    python benchmarks/run.py --smoke          # everything, tiny, 1 rep (CI, ~15 s)
    python benchmarks/run.py --loops asyncio,uvloop --modes protocol --sizes 1KiB

What is measured (each in processes of its own, never in this one):
- micro: loop overhead without network (micro.py), operations/s;
- echo: a Python echo server per (loop, mode, transport) driven by the native
  client (loadgen/): requests/s, latency p50/p99, and the server's CPU time
  per request; the pure-Rust ``echo-ceiling`` server, measured by the same
  client, is the ceiling;
- TLS echo: the Protocol-mode echo server with ``ssl=`` (a certificate made
  for the run), the same client speaking TLS (rustls);
- HTTP applications: uvicorn (httptools) and aiohttp serving a small app on
  each loop, the same client in its HTTP/1.1 keep-alive mode: requests/s,
  p99 latency, server CPU per request; every answer's status and length
  checked, bodies as --verify says;
- memory: RSS of a server holding 10,000 idle connections.

Every table names the Python it ran on (run.sh --py314 runs on CPython 3.14).

How: every rep runs every measurement on every loop, loops interleaved,
their order rotated from rep to rep, so that drift in the machine's speed
hits them alike; the report gives the median over reps and the ratio to
uvloop.  Servers run pinned to one CPU and the client to the other.  Each
fresh server gets a discarded warm-up load first.  While a measurement runs,
the CPU used by other processes on the box is recorded; a measurement
disturbed by more than --noise % of a core is run again (up to --retries
times, within --retry-budget seconds for the whole run) and the least
disturbed attempt is kept.

A crash, hang, wrong result, wrong echoed byte or client error is a FAILURE:
it is listed in the report and the exit status is 1.  A loop that does not
implement a mode (NotImplementedError) is shown as n/a, except asyncio and
oxloop, which must support everything.  Results go to --out: report.md,
chart.png and raw.json.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import loops  # noqa: E402
import report  # noqa: E402
import sysstat  # noqa: E402
from measure import (  # noqa: E402
    CEILING,
    HTTP_REQUESTS,
    LOADGEN_DIR,
    PY,
    Noise,
    echo_session,
    http_session,
    memory_run,
    run_micro,
)
from micro import BENCHES  # noqa: E402

MODES = ["sockets", "streams", "protocol", "buffered"]
MEM_MODES = ["protocol", "streams"]
APPS = {"uvicorn": "import uvicorn, httptools", "aiohttp": "import aiohttp"}  # server: its import check

# (full, smoke) defaults of the options that --smoke shrinks
DEFAULTS = {
    "reps": (3, 1),
    "sizes": ("1KiB,10KiB,100KiB", "100KiB"),
    "tls_sizes": ("1KiB,100KiB", "1KiB,100KiB"),
    "micro_seconds": (0.5, 0.0),
    "duration": (1.2, 0.1),
    "warmup": (0.3, 0.05),
    "server_warmup": (0.8, 0.0),
    "idle_conns": (10_000, 500),
    "retries": (2, 0),
    "eof_wait": (1.0, 0.3),
    "drain": (5.0, 2.0),
    "settle": (0.3, 0.05),
    "timeout": (120.0, 20.0),
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_size(text):
    t = text.strip().lower()
    for suffix, mult in (("kib", 1024), ("mib", 1 << 20), ("k", 1024), ("m", 1 << 20)):
        if t.endswith(suffix):
            return int(t[: -len(suffix)]) * mult
    return int(t)


def size_label(n):
    return f"{n >> 10}KiB" if n % 1024 == 0 else f"{n}B"


class Progress:
    """One line per finished measurement, with elapsed time and an ETA."""

    def __init__(self, total):
        self.total, self.done, self.t0 = total, 0, time.monotonic()

    def step(self, text):
        self.done += 1
        el = time.monotonic() - self.t0
        eta = el / self.done * (self.total - self.done)
        log(f"[{el:5.0f}s {self.done:3d}/{self.total} eta {eta:4.0f}s] {text}")


# ---------------------------------------------------------------- setup


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loops", default="asyncio,uvloop,rloop,zuvloop,oxloop,oxloop+stats", help="comma list (see loops.py)")
    ap.add_argument("--baseline", default="uvloop", help="loop the ratios refer to")
    ap.add_argument("--smoke", action="store_true", help="everything, tiny and once (seconds, for CI)")
    ap.add_argument("--reps", type=int, help="repetitions (3; smoke 1)")
    ap.add_argument("--micro", default="all", help=f"'all', 'none' or a comma list of: {', '.join(BENCHES)}")
    ap.add_argument("--micro-seconds", type=float, help="timed seconds per micro benchmark (0.5; smoke 0 = one round)")
    ap.add_argument("--modes", default=",".join(MODES), help="echo modes, comma list or 'none'")
    ap.add_argument("--sizes", help="echo message sizes (1KiB,10KiB,100KiB; smoke 100KiB)")
    ap.add_argument("--transport", default="tcp,unix", help="tcp, unix or both")
    ap.add_argument("--tls-sizes", help="TLS echo (Protocol mode) sizes, or 'none' (1KiB,100KiB)")
    ap.add_argument("--apps", default=",".join(APPS), help="HTTP servers (uvicorn, aiohttp), comma list or 'none'")
    ap.add_argument("--conns", type=int, default=10, help="echo connections")
    ap.add_argument("--duration", type=float, help="measured seconds per echo run (1.2; smoke 0.1)")
    ap.add_argument("--warmup", type=float, help="unmeasured seconds before each echo run (0.3)")
    ap.add_argument("--server-warmup", type=float, help="discarded load for each fresh server (0.8; smoke 0)")
    ap.add_argument("--drain", type=float, help="seconds after the end before a missing echo is an error (5; smoke 2)")
    ap.add_argument("--eof-wait", type=float, help="seconds the client waits for the server to close (1; smoke 0.3)")
    ap.add_argument("--verify", default="sample", choices=["sample", "all", "none"], help="echo checks")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the pure-Rust ceiling server")
    ap.add_argument("--memory", default=",".join(MEM_MODES), help="server modes for the idle-connection RSS, or 'none'")
    ap.add_argument("--idle-conns", type=int, help="idle connections for the memory benchmark (10000; smoke 500)")
    ap.add_argument("--settle", type=float, help="seconds a server rests before each RSS reading (0.3; smoke 0.05)")
    ap.add_argument("--pin", default="0,1", help="SERVER_CPU,CLIENT_CPU, or 'none'")
    ap.add_argument("--noise", type=float, default=10.0, help="other processes' CPU (%% of a core) that makes a run disturbed")
    ap.add_argument("--retries", type=int, help="re-runs of a disturbed measurement (2; smoke 0)")
    ap.add_argument("--retry-budget", type=float, default=120.0, help="seconds of re-runs allowed in the whole run")
    ap.add_argument("--timeout", type=float, help="seconds before a micro benchmark counts as hung (120; smoke 20)")
    ap.add_argument("--out", help="directory for report.md, chart.png, raw.json "
                                  "(benchmarks/results; smoke: benchmarks/results/tmp/smoke)")
    ap.add_argument("--report", metavar="RAW_JSON", help="only rebuild report.md and chart.png from a raw.json")
    args = ap.parse_args(argv)
    for name, (full, smoke) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, smoke if args.smoke else full)
    if args.out is None:
        args.out = os.path.join(HERE, "results", "tmp", "smoke") if args.smoke else os.path.join(HERE, "results")
    args.loop_list = [x for x in args.loops.split(",") if x]
    args.micro_list = [] if args.micro == "none" else list(BENCHES) if args.micro == "all" else args.micro.split(",")
    args.mode_list = [] if args.modes == "none" else args.modes.split(",")
    args.mem_list = [] if args.memory == "none" else args.memory.split(",")
    args.transport_list = args.transport.split(",")
    args.size_list = [parse_size(s) for s in args.sizes.split(",")]
    args.tls_size_list = [] if args.tls_sizes == "none" else [parse_size(s) for s in args.tls_sizes.split(",")]
    args.app_list = [] if args.apps == "none" else args.apps.split(",")
    check_names(ap, args, [(args.micro_list, BENCHES), (args.mode_list + args.mem_list, MODES),
                            (args.transport_list, ["tcp", "unix"]), (args.app_list, APPS)])
    return args


def check_names(ap, args, lists):
    """The end of option parsing (run.py, syscount.py): a name given in
    ``lists`` [(given, known)] but not known is a usage error; ``--pin``
    becomes ``args.server_cpu`` and ``args.client_cpu``."""
    for given, known in lists:
        if bad := set(given) - set(known):
            ap.error(f"unknown {', '.join(sorted(bad))}; known: {', '.join(known)}")
    args.server_cpu = args.client_cpu = None
    if args.pin != "none" and sysstat.can_pin():
        args.server_cpu, args.client_cpu = (int(x) for x in args.pin.split(","))


def build_native():
    """cargo build --release of loadgen/ (quick when up to date)."""
    log("building the native load client (cargo build --release) ...")
    p = subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=LOADGEN_DIR)
    if p.returncode != 0:
        sys.exit("cargo build of benchmarks/loadgen failed")


def probe_loops(names):
    """Which loops can be created; exits (status 2) if a required one cannot."""
    usable, impls, skipped = [], {}, {}
    for name in names:
        p = subprocess.run([PY, os.path.join(HERE, "loops.py"), name], capture_output=True, text=True, timeout=120)
        if p.returncode == 0:
            usable.append(name)
            impls[name] = p.stdout.strip()
            continue
        if name in loops.REQUIRED:
            log(p.stderr)
            sys.exit(f"required loop {name!r} cannot be created (traceback above); "
                     "for oxloop: pip install the repository root into this Python (run.sh does)")
        skipped[name] = (p.stderr.strip().splitlines() or ["?"])[-1]
        log(f"note: skipping loop {name!r}: {skipped[name]}")
    return usable, impls, skipped


def probe_apps(names):
    """The HTTP servers whose packages import; the others are skipped with a note."""
    usable, skipped = [], {}
    for name in names:
        p = subprocess.run([PY, "-c", APPS[name]], capture_output=True, text=True, timeout=120)
        if p.returncode == 0:
            usable.append(name)
        else:
            skipped[name] = (p.stderr.strip().splitlines() or ["?"])[-1]
            log(f"note: skipping the {name} benchmark: {skipped[name]}")
    return usable, skipped


def machine_info():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({model})"


def plan(args, loop_names, rep):
    """The measurements of one rep, loops in this rep's rotated order."""
    k = rep % len(loop_names)
    order = loop_names[k:] + loop_names[:k]
    if args.smoke:  # one process per loop runs every micro benchmark
        steps = [("micro", None, tuple(args.micro_list), lp) for lp in order] if args.micro_list else []
    else:
        steps = [("micro", None, (b,), lp) for b in args.micro_list for lp in order]
    for tr in args.transport_list:
        for mode in args.mode_list:
            steps += [("echo", tr, mode, lp) for lp in order]
        if args.mode_list and not args.no_ceiling:
            steps.append(("echo", tr, "ceiling", CEILING))
    if args.tls_size_list:
        steps += [("echo", "tls", "protocol", lp) for lp in order]
    steps += [("http", app, None, lp) for app in args.app_list for lp in order]
    steps += [("memory", "tcp", mode, lp) for mode in args.mem_list for lp in order]
    return steps


def fmt_result(r, kind):
    if r["status"] != "ok":
        return f"{r['status'].upper()}: {r.get('error')}"
    foreign = r.get("foreign_pct")
    noise = f"  (other CPU {'-' if foreign is None else format(foreign, '.0f')}%, tries {r.get('attempts', 1)})"
    if kind == "micro":
        return f"{r['ops_per_s']:>12,.0f} ops/s" + noise
    if kind == "memory":
        return f"RSS {r['rss_mib']:.1f} MiB, {r['kib_per_conn']:.2f} KiB/conn"
    def num(key, spec):
        # The client reports no latency when no request completed in the
        # window (a short --smoke window on a loaded machine).
        v = r.get(key)
        return "-" if v is None else format(v, spec)

    return (f"{num('rps', '>9,.0f')} req/s  p50 {num('p50_us', '.0f')} p99 {num('p99_us', '.0f')} us  "
            f"srv {num('cpu_us_per_req', '.1f')} us/req  cli {num('client_cpu_pct', '.0f')}%" + noise)


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        with open(args.report) as f:
            raw = json.load(f)
        report.write_all(raw, os.path.dirname(os.path.abspath(args.report)))
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: report what was measured
    if args.mode_list or args.mem_list or args.tls_size_list or args.app_list:
        build_native()
    loop_names, impls, skipped = probe_loops(args.loop_list)
    args.app_list, skipped_apps = probe_apps(args.app_list)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if args.mem_list and args.idle_conns + 200 > hard:
        args.idle_conns = hard - 200
        log(f"note: RLIMIT_NOFILE hard limit is {hard}: memory benchmark uses {args.idle_conns} connections")
    meta = {"started": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(),
            "python": f"{platform.python_implementation()} {platform.python_version()}", "impls": impls,
            "skipped": skipped, "skipped_apps": skipped_apps, "loops": loop_names, "command": " ".join(["run.py"] + (argv or sys.argv[1:])),
            "load_before": os.getloadavg()}
    opts = {k: v for k, v in vars(args).items() if k not in ("report",)}
    steps = [(rep, s) for rep in range(args.reps) for s in plan(args, loop_names, rep)]
    per_step = {"echo": len(args.size_list), "http": len(HTTP_REQUESTS), "memory": 1}
    total = sum(len(key) if kind == "micro" else len(args.tls_size_list) if tr == "tls" else per_step[kind]
                for _, (kind, tr, key, _) in steps)
    log(f"{total} measurements: loops {', '.join(loop_names)}; {args.reps} rep(s); "
        f"server on CPU {args.server_cpu}, client on CPU {args.client_cpu}")
    noise, progress, results = Noise(args), Progress(total), []
    tmpdir = tempfile.mkdtemp(prefix="oxbench-")
    t0 = time.monotonic()
    try:
        for rep, (kind, transport, key, loop) in steps:
            if kind == "micro":
                if len(key) == 1:
                    batch = [(key[0], noise.run(lambda: run_micro(args, loop, key)[key[0]]))]  # noqa: B023 - Noise.run calls it at once
                else:
                    batch = [(b, dict(r, attempts=1, foreign_pct=r.get("foreign_pct") or 0.0))
                             for b, r in run_micro(args, loop, key).items()]
            elif kind == "echo":
                batch = [(f"{key}/{size_label(size)}", r)
                         for size, r in echo_session(args, noise, loop, key, transport, tmpdir)]
            elif kind == "http":
                batch = http_session(args, noise, loop, transport, tmpdir)
            else:
                batch = [(key, memory_run(args, loop, key, tmpdir))]
            where = f"{kind} {transport or ''}".ljust(11)
            for k, r in batch:
                r.update(kind=kind, transport=transport, key=k, loop=loop, rep=rep)
                results.append(r)
                progress.step(f"rep {rep + 1} {where} {k:20} {loop:8} {fmt_result(r, kind)}")
    except KeyboardInterrupt:
        log("interrupted: reporting what was measured so far")
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)  # sockets, and the TLS key: never kept
    meta.update(elapsed_s=round(time.monotonic() - t0, 1), retry_seconds=round(noise.spent, 1),
                load_after=os.getloadavg())
    raw = {"meta": meta, "options": opts, "results": results}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "raw.json"), "w") as f:
        json.dump(raw, f, indent=1)
    text = report.write_all(raw, args.out)
    print(text)
    failures = [r for r in results if r["status"] == "fail"]
    log(f"done in {meta['elapsed_s']:.0f} s; report in {args.out}; "
        + (f"{len(failures)} FAILURE(S)" if failures else "no failures"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
