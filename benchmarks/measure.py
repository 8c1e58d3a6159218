"""The measurements themselves, each in processes of its own: a micro
benchmark run (micro.py), an echo server (echo_server.py or the Rust
ceiling; plain or TLS) driven by the native client, an HTTP application
server (http_server.py: uvicorn or aiohttp) driven by the same client in
its HTTP mode, and the idle-connection memory run.
Every function returns a result dict with ``status`` "ok", "fail" or "n/a";
a failure carries ``error`` and, where there is one, the ``detail`` of the
server's stderr or the traceback.

CPU accounting: the client prints ``measure-start`` / ``measure-end`` at the
edges of its measured window; at each edge we read the server's and the
client's CPU time and the machine's busy time (sysstat), which gives the
server's CPU per request and the CPU used by other processes meanwhile.
"""

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time

import loops
import sysstat

HERE = os.path.dirname(os.path.abspath(__file__))
LOADGEN_DIR = os.path.join(HERE, "loadgen")
LOADGEN = os.path.join(LOADGEN_DIR, "target", "release", "loadgen")
CEILING_BIN = os.path.join(LOADGEN_DIR, "target", "release", "echo-ceiling")
CEILING = "ceiling"
PY = sys.executable


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


def reap(proc, timeout):
    """Wait for ``proc`` to exit, killing it after ``timeout`` seconds;
    returns whether it exited by itself."""
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def read_line(proc, deadline, sel):
    """Next stdout line of ``proc``, or None at EOF or past ``deadline``."""
    left = deadline - time.monotonic()
    if left <= 0 or not sel.select(timeout=left):
        return None
    return proc.stdout.readline() or None



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


def cert_dir(tmpdir):
    """The run's throw-away TLS certificate (``loadgen --gen-cert``), made
    on first use in ``tmpdir``: ca.pem, cert.pem, key.pem."""
    path = os.path.join(tmpdir, "tls")
    if not os.path.exists(os.path.join(path, "key.pem")):
        os.makedirs(path, exist_ok=True)
        subprocess.run([LOADGEN, "--gen-cert", path], check=True, capture_output=True, timeout=60)
    return path


class Server:
    """One server process: a Python echo server, the Rust ceiling, or (mode
    ``http:uvicorn`` / ``http:aiohttp``) an HTTP application server.
    Transport ``tls`` is TCP with the run's certificate."""

    def __init__(self, args, loop, mode, transport, tmpdir, extra=()):
        if transport == "unix":
            addr = "unix:" + os.path.join(tmpdir, f"{loop}-{mode}.sock")
        else:
            addr = "127.0.0.1:0"
        if transport == "tls":
            extra = ["--tls", cert_dir(tmpdir), *extra]
        if loop == CEILING:
            cmd = [CEILING_BIN, "--addr", addr]
        elif mode.startswith("http:"):
            cmd = [PY, os.path.join(HERE, "http_server.py"), "--server", mode[5:], "--loop", loop, "--addr", addr, *extra]
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


def run_client(args, server, size, duration, warmup, extra=(), on_mark=None):
    """One loadgen run against ``server``; CPU sampled at its window edges.
    ``extra``: more loadgen options (``--tls``, ``--http``); ``on_mark``:
    called with ``"measure-start"`` / ``"measure-end"`` at those edges,
    right after the CPU readings (syscount.py reads more of /proc there)."""
    cmd = [LOADGEN, "--addr", server.addr, "--conns", str(args.conns), "--size", str(size),
           "--duration", str(duration), "--warmup", str(warmup), "--verify", args.verify, "--eof-wait", str(args.eof_wait),
           "--drain", str(args.drain), *extra]
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
            if on_mark:
                on_mark(line.strip())
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
        what = "WRONG ANSWERS" if "--http" in extra else "WRONG BYTES echoed"
        problems.insert(0, f"{what} ({result['wrong']} of {result['checked']} checked; "
                           f"first: {result['first_wrong']})")
    if not server.alive():
        problems.insert(0, f"server died during the run ({describe_exit(server.proc.returncode)})")
    r = {"status": "fail" if problems else "ok", "error": "; ".join(problems) or None,
         "rps": result["rps"], "requests": result["requests"], "total_requests": result["total_requests"],
         "p50_us": result["p50_us"], "p99_us": result["p99_us"],
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


def echo_session(args, noise, loop, mode, transport, tmpdir, client=None):
    """One server for (loop, mode, transport): warm it up, then measure each
    size (with ``client``, see session).  Returns [(size, result)]."""
    server = Server(args, loop, mode, transport, tmpdir)
    extra = ["--tls", os.path.join(cert_dir(tmpdir), "ca.pem")] if transport == "tls" else []
    sizes = args.tls_size_list if transport == "tls" else args.size_list
    return session(args, noise, loop, server, [(size, size, extra) for size in sizes], client)


# The HTTP requests: (row name, request body size, loadgen options).
HTTP_REQUESTS = [
    ("GET /hello", 0, ["--http", "/hello", "--expect", '{"message": "Hello, world!"}']),
    ("POST /echo 10KiB", 10 * 1024, ["--http", "/echo"]),
]


def http_session(args, noise, loop, server_kind, tmpdir):
    """One HTTP server (uvicorn or aiohttp) on ``loop``: warm it up, then
    measure each request kind.  Returns [(row name, result)]."""
    server = Server(args, loop, f"http:{server_kind}", "tcp", tmpdir)
    return session(args, noise, loop, server, HTTP_REQUESTS)


def session(args, noise, loop, server, runs, client=None):
    """Warm ``server`` up with the largest of ``runs`` [(name, size, loadgen
    options)], measure each, stop it; returns [(name, result)] with the
    server's own troubles (crash, logged errors) folded in.  ``client``
    measures a run (run_client's signature and result; default run_client)."""
    client = client or run_client
    results = []
    try:
        warm = {"status": "ok"}
        if server.addr and args.server_warmup > 0:
            _, size, extra = max(runs, key=lambda run: run[1])
            warm = run_client(args, server, size, 0, args.server_warmup, extra)
        for name, size, extra in runs:
            if warm["status"] != "ok":  # wrong bytes count during warm-up too
                r = {"status": "fail", "error": f"during the server's warm-up: {warm['error']}"}
            elif server.unsupported:
                r = {"status": "fail" if loop in loops.REQUIRED else "n/a", "error": server.unsupported}
            elif server.error:
                r = {"status": "fail", "error": server.error}
            else:
                r = noise.run(lambda: client(args, server, size, args.duration, args.warmup, extra))  # noqa: B023 - Noise.run calls it at once
            results.append((name, r))
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
        reap(cl, 30)
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
