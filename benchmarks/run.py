#!/usr/bin/env python3
"""oxloop benchmark suite: oxloop against the stdlib loop, uvloop and rloop.

    python benchmarks/run.py                  # everything, 3 reps (~15 min)
    python benchmarks/run.py --smoke          # everything, tiny, 1 rep (CI, ~15 s)
    python benchmarks/run.py --loops asyncio,uvloop --modes protocol --sizes 1KiB

What is measured (each in processes of its own, never in this one):
- micro: loop overhead without network (micro.py), operations/s;
- echo: a Python echo server per (loop, mode, transport) driven by the native
  client (loadgen/): requests/s, latency p50/p99, and the server's CPU time
  per request; the pure-Rust ``echo-ceiling`` server, measured by the same
  client, is the ceiling;
- memory: RSS of a server holding 10,000 idle connections.

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
import selectors
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
from micro import BENCHES  # noqa: E402

LOADGEN_DIR = os.path.join(HERE, "loadgen")
LOADGEN = os.path.join(LOADGEN_DIR, "target", "release", "loadgen")
CEILING_BIN = os.path.join(LOADGEN_DIR, "target", "release", "echo-ceiling")
CEILING = "ceiling"
MODES = ["sockets", "streams", "protocol", "buffered"]
MEM_MODES = ["protocol", "streams"]
PY = sys.executable

# (full, smoke) defaults of the options that --smoke shrinks
DEFAULTS = {
    "reps": (3, 1),
    "sizes": ("1KiB,10KiB,100KiB", "100KiB"),
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


def tail(text, n=2000):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return (text or "")[-n:]


def describe_exit(code):
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def read_line(proc, deadline, sel):
    """Next stdout line of ``proc``, or None at EOF or past ``deadline``."""
    left = deadline - time.monotonic()
    if left <= 0 or not sel.select(timeout=left):
        return None
    return proc.stdout.readline() or None


class Progress:
    """One line per finished measurement, with elapsed time and an ETA."""

    def __init__(self, total):
        self.total, self.done, self.t0 = total, 0, time.monotonic()

    def step(self, text):
        self.done += 1
        el = time.monotonic() - self.t0
        eta = el / self.done * (self.total - self.done)
        log(f"[{el:5.0f}s {self.done:3d}/{self.total} eta {eta:4.0f}s] {text}")


class Noise:
    """Re-run disturbed measurements, within a time budget for the run."""

    def __init__(self, args):
        self.threshold, self.retries, self.budget = args.noise, args.retries, args.retry_budget
        self.spent = 0.0

    def run(self, measure):
        best, attempts = None, 0
        while True:
            t0 = time.monotonic()
            r = measure()
            attempts += 1
            if attempts > 1:
                self.spent += time.monotonic() - t0
            if r["status"] != "ok":
                best = r  # failures are reported, never retried away
                break
            r["foreign_pct"] = r.get("foreign_pct") or 0.0  # None: window too short to tell
            if best is None or r["foreign_pct"] < best["foreign_pct"]:
                best = r
            if r["foreign_pct"] <= self.threshold or attempts > self.retries or self.spent >= self.budget:
                break
        best["attempts"] = attempts
        return best


# ---------------------------------------------------------------- micro


def run_micro(args, loop, benches):
    """micro.py for ``benches`` (one process) -> {bench: result}."""
    cmd = [PY, os.path.join(HERE, "micro.py"), "--loop", loop, "--bench", ",".join(benches),
           "--seconds", str(args.micro_seconds)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout * len(benches))
    except subprocess.TimeoutExpired as e:
        stdout, why, detail = e.stdout or "", f"hung: no result after {args.timeout * len(benches):.0f} s", tail(e.stderr)
    else:
        stdout, why, detail = p.stdout, f"micro.py: {describe_exit(p.returncode)}, no result", tail(p.stderr)
    if isinstance(stdout, bytes):
        stdout = stdout.decode("utf-8", "replace")
    out = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            out[r["bench"]] = r
    results = {}
    for b in benches:
        r = out.get(b)
        if r is None:
            results[b] = {"status": "fail", "error": why, "detail": detail}
        elif "error" in r:
            results[b] = {"status": "fail", "error": r["error"], "detail": tail(r.get("traceback", ""))}
        else:
            results[b] = {"status": "ok", "ops_per_s": r["ops_per_s"], "foreign_pct": r["foreign_pct"], "impl": r["impl"]}
    return results


# ---------------------------------------------------------------- servers


class Server:
    """One server process: a Python echo server or the Rust ceiling."""

    def __init__(self, args, loop, mode, transport, tmpdir, extra=()):
        if transport == "unix":
            addr = "unix:" + os.path.join(tmpdir, f"{loop}-{mode}.sock")
        else:
            addr = "127.0.0.1:0"
        if loop == CEILING:
            cmd = [CEILING_BIN, "--addr", addr]
        else:
            cmd = [PY, os.path.join(HERE, "echo_server.py"), "--loop", loop, "--mode", mode, "--addr", addr, *extra]
        self.errfile = tempfile.TemporaryFile("w+", dir=tmpdir)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.errfile, text=True,
                                     preexec_fn=sysstat.pinned(args.server_cpu))
        self.addr, self.unsupported, self.error = None, None, None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        line = read_line(self.proc, time.monotonic() + 30, sel)
        sel.close()
        if line and line.startswith("READY "):
            self.addr = line.split()[1]
        elif line and line.startswith("UNSUPPORTED"):
            self.unsupported = line.strip()
        else:
            self.error = f"server did not start ({describe_exit(self.proc.poll())})"

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """Kill the server; returns its stderr and whether it crashed first."""
        crashed = not self.alive()
        if not crashed:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.errfile.seek(0)
        err = self.errfile.read()
        self.errfile.close()
        return err, crashed


def run_client(args, server, size, duration, warmup):
    """One loadgen run against ``server``; CPU sampled at its window edges."""
    cmd = [LOADGEN, "--addr", server.addr, "--conns", str(args.conns), "--size", str(size),
           "--duration", str(duration), "--warmup", str(warmup), "--verify", args.verify, "--eof-wait", str(args.eof_wait),
           "--drain", str(args.drain)]
    cl = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=sysstat.pinned(args.client_cpu))
    sel = selectors.DefaultSelector()
    sel.register(cl.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + warmup + duration + 30
    marks, result = {}, None
    while (line := read_line(cl, deadline, sel)) is not None:
        if line.startswith("measure-"):
            marks[line.strip()] = (time.monotonic(), sysstat.busy_cpu_seconds(),
                                   sysstat.proc_cpu_seconds(server.pid), sysstat.proc_cpu_seconds(cl.pid))
        elif line.startswith("{"):
            result = json.loads(line)
    sel.close()
    try:
        cl.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        cl.kill()
        cl.wait()
        return {"status": "fail", "error": "load client hung (killed)"}
    stderr = cl.stderr.read()
    cl.stderr.close()
    cl.stdout.close()
    if result is None or "error" in (result or {}):
        why = (result or {}).get("error") or f"load client: {describe_exit(cl.returncode)}: {tail(stderr, 300)}"
        return {"status": "fail", "error": why}
    problems = list(result["errors"])
    if result["wrong"]:
        problems.insert(0, f"WRONG BYTES echoed ({result['wrong']} of {result['checked']} checked; "
                           f"first: {result['first_wrong']})")
    if not server.alive():
        problems.insert(0, f"server died during the run ({describe_exit(server.proc.returncode)})")
    r = {"status": "fail" if problems else "ok", "error": "; ".join(problems) or None,
         "rps": result["rps"], "p50_us": result["p50_us"], "p99_us": result["p99_us"],
         "client_cpu_pct": result["client_cpu_pct"], "no_eof": result["no_eof"], "foreign_pct": 0.0}
    if "measure-start" in marks and "measure-end" in marks:
        (t0, b0, s0, c0), (t1, b1, s1, c1) = marks["measure-start"], marks["measure-end"]
        if None not in (s0, s1, c0, c1) and t1 > t0:
            r["server_cpu_pct"] = 100 * (s1 - s0) / (t1 - t0)
            r["cpu_us_per_req"] = (s1 - s0) / max(1, result["requests"]) * 1e6
            r["foreign_pct"] = max(0.0, (b1 - b0) - (s1 - s0) - (c1 - c0)) / (t1 - t0) * 100
    return r


def server_trouble(err, crashed, proc):
    """Failure text from a server's stderr / exit, or None."""
    bad = [ln for ln in err.splitlines() if "LOOP-ERROR" in ln or "Traceback" in ln or "Fatal" in ln]
    if crashed:
        return f"server crashed ({describe_exit(proc.returncode)})"
    if bad:
        return "server logged errors: " + " | ".join(bad[:3])
    return None


def echo_session(args, noise, loop, mode, transport, tmpdir):
    """One server for (loop, mode, transport): warm it up, then measure each
    size.  Returns [(size, result)]."""
    server = Server(args, loop, mode, transport, tmpdir)
    results = []
    try:
        warm = {"status": "ok"}
        if server.addr and args.server_warmup > 0:
            warm = run_client(args, server, max(args.size_list), 0, args.server_warmup)
        for size in args.size_list:
            if warm["status"] != "ok":  # wrong bytes count during warm-up too
                r = {"status": "fail", "error": f"during the server's warm-up: {warm['error']}"}
            elif server.unsupported:
                r = {"status": "fail" if loop in loops.REQUIRED else "n/a", "error": server.unsupported}
            elif server.error:
                r = {"status": "fail", "error": server.error}
            else:
                r = noise.run(lambda: run_client(args, server, size, args.duration, args.warmup))
            results.append((size, r))
    finally:
        err, crashed = server.stop()
    trouble = None if server.unsupported else server_trouble(err, crashed and server.addr is not None, server.proc)
    for _, r in results:
        if r["status"] == "fail" or (trouble and r["status"] == "ok"):
            r["status"] = "fail"
            if trouble and "server died" not in (r.get("error") or ""):
                r["error"] = "; ".join(x for x in (r.get("error"), trouble) if x)
            r["detail"] = tail(err)
        if r.get("no_eof"):
            r["warning"] = f"{r['no_eof']} of {args.conns} connections not closed by the server after the client's EOF"
    return results


def memory_run(args, loop, mode, tmpdir):
    """RSS of a server holding ``args.idle_conns`` idle TCP connections."""
    server = Server(args, loop, mode, "tcp", tmpdir)
    r = {"status": "fail", "error": server.error or server.unsupported}
    if server.addr:
        time.sleep(args.settle)
        base = sysstat.rss_kib(server.pid)
        n = args.idle_conns
        cl = subprocess.Popen([LOADGEN, "--addr", server.addr, "--idle", str(n), "--hold", "120"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=sysstat.pinned(args.client_cpu))
        sel = selectors.DefaultSelector()
        sel.register(cl.stdout, selectors.EVENT_READ)
        line = read_line(cl, time.monotonic() + 120, sel)
        if line and line.startswith("holding"):
            time.sleep(args.settle)
            rss, fds = sysstat.rss_kib(server.pid), sysstat.open_fds(server.pid)
            r = {"status": "ok", "rss_mib": rss / 1024, "base_mib": base / 1024,
                 "kib_per_conn": (rss - base) / n, "fds": fds}
            if fds is not None and fds < n:
                r = {"status": "fail", "error": f"server holds {fds} fds, fewer than {n} connections"}
        else:
            r = {"status": "fail", "error": f"idle client: {tail(line or '', 300).strip() or 'no answer'}"}
        if not server.alive():
            r = {"status": "fail", "error": f"server died ({describe_exit(server.proc.returncode)})"}
        err, crashed = server.stop()  # server first: its side gets the TIME_WAITs
        cl.stdin.close()
        try:
            cl.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cl.kill()
            cl.wait()
        sel.close()
        cl.stdout.close()
        cl.stderr.close()
        trouble = server_trouble(err, crashed, server.proc)
        if trouble and r["status"] == "ok":
            r = {"status": "fail", "error": trouble}
        if r["status"] == "fail":
            r["detail"] = tail(err)
    else:
        err, _ = server.stop()
        r["detail"] = tail(err)
        if server.unsupported and loop not in loops.REQUIRED:
            r["status"] = "n/a"
    r["foreign_pct"] = 0.0
    return r


# ---------------------------------------------------------------- setup


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loops", default="asyncio,uvloop,rloop,oxloop", help="comma list (see loops.py)")
    ap.add_argument("--baseline", default="uvloop", help="loop the ratios refer to")
    ap.add_argument("--smoke", action="store_true", help="everything, tiny and once (seconds, for CI)")
    ap.add_argument("--reps", type=int, help="repetitions (3; smoke 1)")
    ap.add_argument("--micro", default="all", help=f"'all', 'none' or a comma list of: {', '.join(BENCHES)}")
    ap.add_argument("--micro-seconds", type=float, help="timed seconds per micro benchmark (0.5; smoke 0 = one round)")
    ap.add_argument("--modes", default=",".join(MODES), help="echo modes, comma list or 'none'")
    ap.add_argument("--sizes", help="echo message sizes (1KiB,10KiB,100KiB; smoke 100KiB)")
    ap.add_argument("--transport", default="tcp,unix", help="tcp, unix or both")
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
    for bad, known in ((set(args.micro_list) - set(BENCHES), BENCHES), (set(args.mode_list + args.mem_list) - set(MODES), MODES),
                       (set(args.transport_list) - {"tcp", "unix"}, ["tcp", "unix"])):
        if bad:
            ap.error(f"unknown {', '.join(sorted(bad))}; known: {', '.join(known)}")
    args.server_cpu = args.client_cpu = None
    if args.pin != "none" and sysstat.can_pin():
        args.server_cpu, args.client_cpu = (int(x) for x in args.pin.split(","))
    return args


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
    steps += [("memory", "tcp", mode, lp) for mode in args.mem_list for lp in order]
    return steps


def fmt_result(r, kind):
    if r["status"] != "ok":
        return f"{r['status'].upper()}: {r.get('error')}"
    noise = f"  (other CPU {r['foreign_pct']:.0f}%, tries {r.get('attempts', 1)})"
    if kind == "micro":
        return f"{r['ops_per_s']:>12,.0f} ops/s" + noise
    if kind == "memory":
        return f"RSS {r['rss_mib']:.1f} MiB, {r['kib_per_conn']:.2f} KiB/conn"
    return (f"{r['rps']:>9,.0f} req/s  p50 {r['p50_us']:.0f} p99 {r['p99_us']:.0f} us  "
            f"srv {r.get('cpu_us_per_req', float('nan')):.1f} us/req  cli {r['client_cpu_pct']:.0f}%" + noise)


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        with open(args.report) as f:
            raw = json.load(f)
        report.write_all(raw, os.path.dirname(os.path.abspath(args.report)))
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: report what was measured
    if args.mode_list or args.mem_list:
        build_native()
    loop_names, impls, skipped = probe_loops(args.loop_list)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if args.mem_list and args.idle_conns + 200 > hard:
        args.idle_conns = hard - 200
        log(f"note: RLIMIT_NOFILE hard limit is {hard}: memory benchmark uses {args.idle_conns} connections")
    meta = {"started": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(),
            "python": f"{platform.python_implementation()} {platform.python_version()}", "impls": impls,
            "skipped": skipped, "loops": loop_names, "command": " ".join(["run.py"] + (argv or sys.argv[1:])),
            "load_before": os.getloadavg()}
    opts = {k: v for k, v in vars(args).items() if k not in ("report",)}
    steps = [(rep, s) for rep in range(args.reps) for s in plan(args, loop_names, rep)]
    total = sum(len(args.size_list) if kind == "echo" else len(key) if kind == "micro" else 1
                for _, (kind, _, key, _) in steps)
    log(f"{total} measurements: loops {', '.join(loop_names)}; {args.reps} rep(s); "
        f"server on CPU {args.server_cpu}, client on CPU {args.client_cpu}")
    noise, progress, results = Noise(args), Progress(total), []
    tmpdir = tempfile.mkdtemp(prefix="oxbench-")
    t0 = time.monotonic()
    try:
        for rep, (kind, transport, key, loop) in steps:
            if kind == "micro":
                if len(key) == 1:
                    batch = [(key[0], noise.run(lambda: run_micro(args, loop, key)[key[0]]))]
                else:
                    batch = [(b, dict(r, attempts=1, foreign_pct=r.get("foreign_pct") or 0.0))
                             for b, r in run_micro(args, loop, key).items()]
            elif kind == "echo":
                batch = [(f"{key}/{size_label(size)}", r)
                         for size, r in echo_session(args, noise, loop, key, transport, tmpdir)]
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
        for name in os.listdir(tmpdir):
            os.unlink(os.path.join(tmpdir, name))
        os.rmdir(tmpdir)
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
