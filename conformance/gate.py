#!/usr/bin/env python3
"""The conformance gate: CPython's test_asyncio against oxloop.

Runs ../shared/conformance/run.py (the shared harness: one child process per
module, a watchdog per test, only the tests that apply to a non-stdlib loop)
with `--loop oxloop` on one CPython version or several, then compares every
outcome with that version's list: `expected_failures.txt` for 3.11,
`expected_failures-X.Y.txt` for X.Y. Each version runs its own
test_asyncio; `pythons.py` says where the interpreters and their venvs are
(3.14 and 3.15 live in the sid chroot of ../shared/pythons).

* a test outside the list that fails, errors, crashes, hangs, is skipped or
  is never reached fails the gate (skips are fine in a module where the
  harness's reference run of the stdlib loop skipped as many tests, e.g.
  test_ssl's bigmem tests on 3.14);
* a listed test that passes fails the gate too: the list only shrinks, so
  remove the line;
* every list entry must carry a reason (`<test> | <reason>`).

The loop that the tests actually ran on is checked as well: every loop the
harness's factory built must be an oxloop loop.

    python conformance/gate.py                      # all modules, --python's version
    python conformance/gate.py -m test_tasks        # a subset (the list is
                                                    # checked for those only)
    python conformance/gate.py --versions all       # 3.11 (--python) to 3.15
    python conformance/gate.py --versions 3.14 -m test_graph
"""

import argparse
import json
import os
import subprocess
import sys

import pythons

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PREFIX = "test.test_asyncio."
OK = {"pass"}


def expected_file(version):
    """The list for CPython `version` (3.11's keeps its plain name)."""
    name = ("expected_failures.txt" if version == pythons.BASE_VERSION
            else f"expected_failures-{version}.txt")
    return os.path.join(HERE, name)


def default_out(version):
    name = "conformance" if version == pythons.BASE_VERSION else f"conformance-{version}"
    return os.path.join(ROOT, "build", name)


def load_expected(path):
    """{short test id: reason} from the list; malformed lines are errors."""
    expected, problems = {}, []
    with open(path) as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            test, sep, reason = (part.strip() for part in line.partition("|"))
            if not sep or not test or not reason:
                problems.append(f"{path}:{lineno}: expected '<test> | <reason>'")
            elif test in expected:
                problems.append(f"{path}:{lineno}: {test} listed twice")
            else:
                expected[test] = reason
    return expected, problems


def load_outcomes(outdir):
    """{short test id: status} for every planned test, from the harness."""
    outcomes = {}
    with open(os.path.join(outdir, "tests.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("event", "end") != "end" and "status" not in rec:
                continue
            outcomes[rec["id"].removeprefix(PREFIX)] = rec["status"]
    with open(os.path.join(outdir, "failures.json")) as f:
        for module_failures in json.load(f).values():
            for test, why in module_failures.items():
                short = test.removeprefix(PREFIX)
                if why.startswith("fixture"):
                    outcomes[short] = "fixture-error"
                elif why == "notrun":
                    outcomes[short] = "notrun"
    return outcomes


def baseline_skips(shared, version):
    """{module: tests skipped} in the harness's reference run of the stdlib
    loop on this version (e.g. test_ssl's two bigmem tests on 3.14)."""
    sub = ["asyncio"] if version == pythons.BASE_VERSION else [version, "asyncio"]
    path = os.path.join(shared, "results", *sub, "summary.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {m["module"]: m.get("skipped", 0) for m in json.load(f)["modules"]}


def excused_skips(outcomes, allowed):
    """The skipped tests of each module that skips no more tests than the
    stdlib loop did: those skips are the environment's, not oxloop's."""
    per_module = {}
    for t, s in outcomes.items():
        if s == "skip":
            per_module.setdefault(t.split(".")[0], []).append(t)
    return {t for m, ts in per_module.items() if len(ts) <= allowed.get(m, 0)
            for t in ts}


def judge(args, python):
    """Run (unless --no-run) and judge one version; 0 passed, 1 failed, 2 broken."""
    version = python.version
    expected_path = args.expected or expected_file(version)
    out = os.path.abspath(args.out or default_out(version))
    try:
        expected, problems = load_expected(expected_path)
    except FileNotFoundError:
        expected, problems = {}, [f"{expected_path}: no expected-failure list for {version}"]
    if problems:
        print("\n".join(problems))
        return 2

    if not args.no_run:
        cmd = [python.python, os.path.join(args.shared, "run.py"), "--loop", "oxloop",
               "--out", out, "--python", python.python]
        for m in args.module:
            cmd += ["-m", m]
        cmd = python.cmd(cmd, mounts=[out] if not out.startswith(ROOT + os.sep) else [])
        print(f"conformance {version}:", " ".join(cmd), flush=True)
        rc = subprocess.run(cmd, cwd=args.shared).returncode
        if rc not in (0, 1):
            print(f"conformance {version}: the harness itself failed (exit {rc})")
            return 2

    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    ran_modules = {m["module"] for m in summary["modules"]}
    wrong_loops = sorted({t for m in summary["modules"] for t in m["loop_types"]
                          if not t.startswith("oxloop.")})
    outcomes = load_outcomes(out)
    excused = excused_skips(outcomes, baseline_skips(args.shared, version))

    unexpected = sorted((t, s) for t, s in outcomes.items()
                        if s not in OK and t not in expected and t not in excused)
    fixed = sorted(t for t, r in expected.items()
                   if outcomes.get(t) in OK)
    stale = sorted(t for t in expected
                   if t.split(".")[0] in ran_modules and t not in outcomes)

    failed = False
    if wrong_loops:
        failed = True
        print(f"GATE {version}: tests ran on loops that are not oxloop's: {wrong_loops}")
    if unexpected:
        failed = True
        print(f"GATE {version}: {len(unexpected)} unexpected failure(s):")
        for t, s in unexpected:
            print(f"  {s:14s} {t}")
    if fixed:
        failed = True
        print(f"GATE {version}: {len(fixed)} listed test(s) now pass; remove them from "
              f"{os.path.relpath(expected_path, ROOT)}:")
        for t in fixed:
            print(f"  {t}")
    if stale:
        failed = True
        print(f"GATE {version}: {len(stale)} listed test(s) are not in the suite any more:")
        for t in stale:
            print(f"  {t}")

    totals = summary["totals"]
    listed_here = sum(1 for t in expected if t.split(".")[0] in ran_modules)
    line = (f"CPython {version}: {totals['passed']}/{totals['run']} passed; "
            f"{listed_here} expected failure(s) listed for these modules; "
            f"gate {'FAILED' if failed else 'passed'}")
    print(f"conformance: {line}")
    args.summary.append(line)
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter with oxloop installed (the 3.11 one with "
                         "--versions)")
    ap.add_argument("--versions", default="",
                    help="comma-separated CPython versions (or 'all': "
                         f"{','.join(pythons.VERSIONS)}); each gets its venv "
                         "from conformance/pythons.py, built if needed")
    ap.add_argument("--shared", default=os.path.join(pythons.SHARED, "conformance"),
                    help="the shared harness (default: ../shared/conformance)")
    ap.add_argument("--expected", help="the list (default: expected_failures.txt "
                                       "for 3.11, expected_failures-X.Y.txt for X.Y)")
    ap.add_argument("--out", help="results folder (default: build/conformance "
                                  "for 3.11, build/conformance-X.Y for X.Y)")
    ap.add_argument("-m", "--module", action="append", default=[])
    ap.add_argument("--no-run", action="store_true",
                    help="judge the results already in --out")
    args = ap.parse_args()
    # The harness runs from its own folder: make paths absolute (but keep
    # symlinks, or a venv's python would lose its venv).
    args.python = os.path.abspath(args.python)
    args.shared = os.path.abspath(args.shared)
    args.summary = []

    if not args.versions:
        version = subprocess.run(
            [args.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            check=True, capture_output=True, text=True).stdout.strip()
        python = pythons.Python(version, base_python=args.python)
        python.chroot, python.python = False, args.python
        return judge(args, python)

    versions = (pythons.VERSIONS if args.versions == "all"
                else [v.strip() for v in args.versions.split(",") if v.strip()])
    if len(versions) > 1 and (args.out or args.expected):
        ap.error("--out and --expected take one version")
    worst = 0
    for version in versions:
        python = pythons.Python(version, base_python=args.python)
        try:
            if not args.no_run:
                python.ensure()
        except (subprocess.CalledProcessError, SystemExit) as exc:
            print(f"GATE {version}: could not set up CPython {version}: {exc}")
            args.summary.append(f"CPython {version}: no venv; gate FAILED")
            worst = 2
            continue
        worst = max(worst, judge(args, python))
    print()
    for line in args.summary:
        print(f"conformance: {line}")
    return worst


if __name__ == "__main__":
    sys.exit(main())
