#!/usr/bin/env python3
"""The ecosystem gate: other projects' own test suites, on oxloop.

For each suite in suites.py (pinned sdists from PyPI) the gate runs the same
tests three ways, offline (in a network namespace that has only loopback):
on the stdlib loop, on oxloop, and (with --full or --loops) on uvloop. The
loop is switched as a user would switch it: `oxloop.install()` at interpreter
start (see hook/_ecoloop.py), which every library here honours through the
event-loop policy (aiohttp's `--aiohttp-loop=pyloop` factory, pytest-asyncio's
event_loop_policy fixture, anyio's and uvicorn's `asyncio.Runner`, Tornado's
AsyncIOMainLoop).

The verdict, per suite:
* every test that passes on the stdlib loop passes on oxloop, unless it is
  listed in known_differences/<suite>.txt as `<test id> | <reason>`;
* a listed test that passes on oxloop fails the gate too: the list only
  shrinks (remove the line, or run with --prune); in a --full run, so does a
  listed test that is not in the suite any more;
* an entry whose reason starts with `flaky:` is a test that also fails now
  and then on the stdlib loop: it is deselected on every loop;
* the oxloop run must have created oxloop loops (and the stdlib run none),
  or the switch did not happen and the run proves nothing.

    python ecosystem/gate.py --ci          # CI: the time-bounded selection
    python ecosystem/gate.py --full        # every suite whole, + uvloop
    python ecosystem/gate.py --full -s aiohttp --loops oxloop

Downloaded sdists and the suite venvs live in ~/.cache/oxloop-ecosystem
(--store; shared by checkouts and by CI's fresh clones on the same machine), a
venv per set of pins; unpacked trees and results in ecosystem/.cache
(git-ignored).
"""

import argparse
import concurrent.futures
import fcntl
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from suites import COMMON_ARGS, SUITES, UVLOOP  # noqa: E402 - found through HERE on sys.path

HOOK = os.path.join(HERE, "hook")
LOOPS = ("stdlib", "oxloop", "uvloop")


def log(*a):
    print("ecosystem:", *a, flush=True)


# -- known differences -------------------------------------------------------

def load_known(suite):
    """({test id: reason}, {flaky test id: reason}, problems) for a suite."""
    path = os.path.join(HERE, "known_differences", f"{suite}.txt")
    known, flaky, problems = {}, {}, []
    if not os.path.exists(path):
        return known, flaky, problems
    with open(path) as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            test, sep, reason = (p.strip() for p in line.partition(" | "))
            if not sep or not test or not reason:
                problems.append(f"{path}:{lineno}: expected '<test id> | <reason>'")
            elif test in known or test in flaky:
                problems.append(f"{path}:{lineno}: {test} listed twice")
            elif reason.startswith("flaky:"):
                flaky[test] = reason
            else:
                known[test] = reason
    return known, flaky, problems


def remove_known(suite, tests):
    path = os.path.join(HERE, "known_differences", f"{suite}.txt")
    drop = set(tests)
    with open(path) as f:
        lines = f.readlines()
    with open(path, "w") as f:
        f.writelines(line for line in lines if line.partition(" | ")[0].strip() not in drop)


# -- installing ---------------------------------------------------------------

def spec_hash(venv, suite, python):
    blob = json.dumps([venv, suite["sdist"], suite["deps"], UVLOOP, python],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def python_version(python):
    return subprocess.run([python, "-c", "import sys; print(sys.version)"],
                          capture_output=True, text=True, check=True).stdout.strip()


def sdist_path(store, suite):
    """Download the suite's sdist once; return its path."""
    req = suite["sdist"]
    name, version = req.split("==")
    folder = os.path.join(store, "sdists", f"{name}-{version}")
    found = [f for f in os.listdir(folder)] if os.path.isdir(folder) else []
    if not found:
        os.makedirs(folder, exist_ok=True)
        log(f"downloading the sdist of {req}")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q",
                        "--disable-pip-version-check", "--no-deps",
                        "--no-binary", ":all:", "-d", folder, req], check=True)
        found = os.listdir(folder)
    if len(found) != 1:
        raise SystemExit(f"{folder}: expected one sdist, found {found}")
    return os.path.join(folder, found[0])


def ensure_venv(store, name, suite, python, sdist):
    """The suite's venv, built once per set of pins and interpreter.

    Venvs are named by the hash of their pins, so checkouts with other pins
    never share one; a lock makes concurrent gates build each venv once."""
    name = suite.get("venv", name)
    want = spec_hash(name, suite, python_version(python))
    venv = os.path.join(store, "venvs", f"{name}-{want}")
    vpy = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, ".eco-stamp")
    os.makedirs(os.path.join(store, "venvs"), exist_ok=True)
    with open(venv + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(stamp):
            return vpy
        log(f"{name}: building the venv (first run with these pins)")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", venv], check=True)
        subprocess.run([vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "--no-binary", suite["sdist"].split("==")[0], sdist,
                        *suite["deps"], UVLOOP], check=True)
        # The loop switch (hook/_ecoloop.py), at interpreter start when a
        # gate run asks for it; the run puts the hook folder and this
        # checkout's oxloop on PYTHONPATH (so the venv serves any checkout).
        with open(os.path.join(site_packages(vpy), "zz_ecoloop.pth"), "w") as f:
            f.write('import os; os.environ.get("ECO_LOOP") and __import__("_ecoloop")\n')
        with open(stamp, "w") as f:
            f.write(want)
    return vpy


def site_packages(vpy):
    return subprocess.run([vpy, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()


def unpack(cache, name, sdist, loop):
    """A fresh copy of the sdist's tree for one run (tests may write into it)."""
    dest = os.path.join(cache, "src", f"{name}.{loop}")
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        try:
            tar.extractall(dest, filter="data")
        except TypeError:  # Python < 3.12 without the filter backport
            tar.extractall(dest)
    return os.path.join(dest, top)


# -- running ------------------------------------------------------------------

_netns = None


def offline_prefix():
    """Run a command in a new network namespace that has only loopback."""
    global _netns
    if _netns is None:
        probe = ["unshare", "--net", "--", "sh", "-c", "ip link set lo up"]
        try:
            _netns = subprocess.run(probe, capture_output=True, check=False).returncode == 0
        except OSError:
            _netns = False
    if not _netns:
        raise SystemExit("ecosystem: cannot make a loopback-only network namespace "
                         "(`unshare --net` and `ip` are needed, as root)")
    return ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


def run_suite(name, suite, vpy, src, loop, outdir, selection, budget, tag=""):
    """Run the suite on one loop; return (results, counts, exit code, seconds)."""
    stem = os.path.join(outdir, f"{name}.{loop}{tag}")
    results = stem + ".json"
    counts_dir = tempfile.mkdtemp(prefix=f"eco-{name}-{loop}-")
    exclude = stem + ".exclude"
    _, flaky, _ = load_known(name)
    with open(exclude, "w") as f:
        f.write("".join(t + "\n" for t in flaky))
    env = dict(os.environ, ECO_LOOP=loop, ECO_COUNT_DIR=counts_dir,
               ECO_RESULTS=results, ECO_EXCLUDE=exclude,
               PYTHONDONTWRITEBYTECODE="1")
    # This checkout's oxloop and the hook folder (_ecoloop, the plugins).
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "python"), HOOK])
    if suite.get("deselect"):
        env["ECO_DESELECT_RE"] = suite["deselect"]
    pytest = os.path.join(os.path.dirname(vpy), "pytest")
    cmd = [vpy, pytest, *COMMON_ARGS, "-p", "ecoreport", *suite["args"], *selection]
    if os.path.exists(results):
        os.remove(results)
    start = time.monotonic()
    logfile = stem + ".log"
    with open(logfile, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(offline_prefix() + cmd, cwd=src, env=env,
                                stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = "timeout"
    took = time.monotonic() - start
    res = {}
    if os.path.exists(results):
        with open(results) as f:
            res = json.load(f)
    counts = {"oxloop": 0, "uvloop": 0, "stdlib": 0}
    for fn in os.listdir(counts_dir):
        if not fn.endswith(".json"):
            continue  # a process killed before it renamed its counts file
        with open(os.path.join(counts_dir, fn)) as f:
            for k, v in json.load(f).items():
                counts[k] += v
    shutil.rmtree(counts_dir, ignore_errors=True)
    with open(logfile) as f:
        tail = f.read().strip().splitlines()[-1:] or ["(no output)"]
    log(f"{name}{tag} on {loop}: exit {rc} in {took:.0f}s; loops created {counts}; "
        f"{tail[0]}")
    return res, counts, rc, took


# -- judging ------------------------------------------------------------------

def passed(res):
    return {t for t, o in res.items() if o == "passed"}


def differing(runs):
    """Tests that pass on the stdlib loop and not on oxloop."""
    return sorted(passed(runs["stdlib"][0]) - passed(runs["oxloop"][0]))


def judge(name, suite, runs, ci, alone=None, prune=False):
    """Print the verdict for one suite; return True when it passes.

    `alone` has the outcomes of the unexpected differences rerun by
    themselves on oxloop (diagnosis only: they fail the gate either way).
    With `prune`, listed tests that now pass are removed from the list."""
    known, flaky, problems = load_known(name)
    ok = not problems
    for p in problems:
        print(f"GATE {name}: {p}")
    base = runs["stdlib"][0]
    ox = runs["oxloop"][0]
    for loop, (_res, counts, rc, _) in runs.items():
        if rc not in (0, 1):
            ok = False
            print(f"GATE {name}: the {loop} run did not finish normally (exit {rc})")
        if loop != "stdlib" and counts[loop] == 0:
            ok = False
            print(f"GATE {name}: the {loop} run created no {loop} loop: "
                  f"the switch did not happen ({counts})")
        # Tests may ask for a stdlib loop or uvloop by name; none asks for
        # oxloop, so oxloop loops outside its run mean the switch leaked.
        if loop != "oxloop" and counts["oxloop"]:
            ok = False
            print(f"GATE {name}: the {loop} run created oxloop loops ({counts})")
    if not base:
        ok = False
        print(f"GATE {name}: the stdlib run recorded no test")
    differ = differing(runs)
    unexpected = [t for t in differ if t not in known]
    fixed = sorted(t for t in known if ox.get(t) == "passed")
    # A --ci selection does not run every listed test; --full does.
    stale = [] if ci else sorted(t for t in known if t not in base)
    unjudged = sorted(t for t in known if t in base and base[t] != "passed"
                      and ox.get(t) != "passed")
    if unexpected:
        ok = False
        print(f"GATE {name}: {len(unexpected)} test(s) pass on the stdlib loop "
              f"and not on oxloop:")
        for t in unexpected:
            note = ""
            if alone is not None:
                note = ("  (passes when run alone: order- or timing-dependent)"
                        if alone.get(t) == "passed" else "  (fails alone too)")
            print(f"  {ox.get(t, 'not run'):8s} {t}{note}")
    if fixed and prune:
        remove_known(name, fixed)
        print(f"GATE {name}: removed {len(fixed)} listed test(s) that now pass "
              f"on oxloop from ecosystem/known_differences/{name}.txt")
    elif fixed:
        ok = False
        print(f"GATE {name}: {len(fixed)} listed test(s) now pass on oxloop; remove "
              f"them from ecosystem/known_differences/{name}.txt:")
        for t in fixed:
            print(f"  {t}")
    if stale:
        ok = False
        print(f"GATE {name}: {len(stale)} listed test(s) are not in the suite any "
              f"more; remove them:")
        for t in stale:
            print(f"  {t}")
    for t in unjudged:
        print(f"note {name}: listed {t} did not pass on the stdlib loop either "
              f"this time ({base[t]}): not judged")
    listed = sum(1 for t in differ if t in known)
    log(f"{name}: {len(passed(base))} pass on stdlib, {len(passed(ox))} on oxloop; "
        f"{listed} known difference(s), {len(flaky)} flaky test(s) excluded; "
        f"{'ok' if ok else 'FAILED'}")
    return ok


def table(rows):
    lines = [("| suite | version | tests run | passed on stdlib | passed on oxloop "
             "| passed on uvloop | known differences |"),
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, suite, runs in rows:
        n = len(runs["stdlib"][0])
        cells = []
        for loop in LOOPS:
            cells.append(str(len(passed(runs[loop][0]))) if loop in runs else "-")
        known, _, _ = load_known(name)
        version = suite.get("subject", suite["sdist"]).split("==")[1]
        if "subject" in suite:
            version += f" (tests of {suite['sdist'].replace('==', ' ')})"
        lines.append(f"| {name} | {version} | {n} | {' | '.join(cells)} | {len(known)} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--ci", action="store_true",
                      help="the time-bounded selection, on stdlib and oxloop (default)")
    mode.add_argument("--full", action="store_true",
                      help="every suite whole, on stdlib, oxloop and uvloop")
    ap.add_argument("-s", "--suite", action="append", choices=sorted(SUITES),
                    help="only this suite (repeatable)")
    ap.add_argument("--loops", help="comma-separated, from stdlib,oxloop,uvloop "
                    "(stdlib and oxloop are always run: the verdict needs both)")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter for the suite venvs (oxloop must be built for it)")
    ap.add_argument("--store", default=os.environ.get(
                        "OXLOOP_ECO_STORE", os.path.expanduser("~/.cache/oxloop-ecosystem")),
                    help="downloaded sdists and suite venvs, shared by checkouts "
                    "(default: $OXLOOP_ECO_STORE or ~/.cache/oxloop-ecosystem)")
    ap.add_argument("--cache", default=os.path.join(HERE, ".cache"),
                    help="this checkout's unpacked trees and results")
    ap.add_argument("--budget", type=int, default=1800,
                    help="seconds one suite may run on one loop before it is killed")
    ap.add_argument("-j", "--jobs", type=int, default=2,
                    help="suite runs at a time (default 2)")
    ap.add_argument("--prune", action="store_true",
                    help="remove listed tests that now pass on oxloop from the lists")
    ap.add_argument("--prepare", action="store_true",
                    help="only download the sdists and build the venvs")
    args = ap.parse_args()
    ci = not args.full
    loops = ["stdlib", "oxloop"] + (["uvloop"] if args.full else [])
    if args.loops:
        extra = [x for x in args.loops.split(",") if x]
        bad = [x for x in extra if x not in LOOPS]
        if bad:
            ap.error(f"unknown loop(s) {bad}")
        loops = [x for x in LOOPS if x in extra or x in ("stdlib", "oxloop")]
    names = args.suite or list(SUITES)
    cache = os.path.abspath(args.cache)
    store = os.path.abspath(args.store)
    outdir = os.path.join(cache, "results")
    os.makedirs(outdir, exist_ok=True)

    start = time.monotonic()
    prepared = {}
    for name in names:
        suite = SUITES[name]
        sdist = sdist_path(store, suite)
        vpy = ensure_venv(store, name, suite, args.python, sdist)
        prepared[name] = (sdist, vpy, site_packages(vpy))
    if args.prepare:
        return 0
    offline_prefix()

    def one_run(name, loop):
        suite = SUITES[name]
        sdist, vpy, site = prepared[name]
        src = site if suite.get("cwd") == "site-packages" else unpack(cache, name, sdist, loop)
        selection = suite["ci"] if ci and suite.get("ci") else suite["tests"]
        return run_suite(name, suite, vpy, src, loop, outdir, selection, args.budget)

    # Runs are independent (each has its own tree and network namespace, so
    # no port is shared): --jobs of them at a time.
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {(n, lp): pool.submit(one_run, n, lp) for n in names for lp in loops}
        results = {k: f.result() for k, f in futures.items()}

    all_ok, rows = True, []
    for name in names:
        suite = SUITES[name]
        runs = {lp: results[(name, lp)] for lp in loops}
        known, _, _ = load_known(name)
        unexpected = [t for t in differing(runs) if t not in known]
        alone = None
        if unexpected and len(unexpected) <= 50:
            # Diagnosis: rerun them by themselves on oxloop.
            sdist, vpy, site = prepared[name]
            src = (site if suite.get("cwd") == "site-packages"
                   else unpack(cache, name, sdist, "oxloop-alone"))
            alone = run_suite(name, suite, vpy, src, "oxloop", outdir, unexpected,
                              args.budget, tag=".alone")[0]
        all_ok &= judge(name, suite, runs, ci, alone, args.prune)
        rows.append((name, suite, runs))
    text = table(rows)
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write(text + "\n")
    print()
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"ecosystem ({'CI selection' if ci else 'full'}; "
          f"{time.monotonic() - start:.0f}s, "
          f"{cpu.ru_utime + cpu.ru_stime:.0f}s CPU in the test processes):")
    print(text)
    print(f"ecosystem gate {'passed' if all_ok else 'FAILED'}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
