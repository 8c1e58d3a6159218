#!/usr/bin/env python3
"""The conformance gate: CPython's test_asyncio against oxloop.

Runs ../shared/conformance/run.py (the shared harness: one child process per
module, a watchdog per test, only the tests that apply to a non-stdlib loop)
with `--loop oxloop`, then compares every outcome with
`expected_failures.txt`:

* a test outside the list that fails, errors, crashes, hangs, is skipped or
  is never reached fails the gate;
* a listed test that passes fails the gate too: the list only shrinks, so
  remove the line;
* every list entry must carry a reason (`<test> | <reason>`).

The loop that the tests actually ran on is checked as well: every loop the
harness's factory built must be an oxloop loop.

    python conformance/gate.py                      # all modules
    python conformance/gate.py -m test_tasks        # a subset (the list is
                                                    # checked for those only)
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PREFIX = "test.test_asyncio."
OK = {"pass"}


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


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter with oxloop installed")
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "conformance"),
                    help="the shared harness (default: ../shared/conformance)")
    ap.add_argument("--expected", default=os.path.join(HERE, "expected_failures.txt"))
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "conformance"))
    ap.add_argument("-m", "--module", action="append", default=[])
    ap.add_argument("--no-run", action="store_true",
                    help="judge the results already in --out")
    args = ap.parse_args()
    # The harness runs from its own folder: make paths absolute (but keep
    # symlinks, or a venv's python would lose its venv).
    args.python = os.path.abspath(args.python)
    args.out = os.path.abspath(args.out)

    expected, problems = load_expected(args.expected)
    if problems:
        print("\n".join(problems))
        return 2

    if not args.no_run:
        cmd = [args.python, os.path.join(args.shared, "run.py"), "--loop", "oxloop",
               "--out", args.out, "--python", args.python]
        for m in args.module:
            cmd += ["-m", m]
        print("conformance:", " ".join(cmd), flush=True)
        rc = subprocess.run(cmd, cwd=args.shared).returncode
        if rc not in (0, 1):
            print(f"conformance: the harness itself failed (exit {rc})")
            return 2

    with open(os.path.join(args.out, "summary.json")) as f:
        summary = json.load(f)
    ran_modules = {m["module"] for m in summary["modules"]}
    wrong_loops = sorted({t for m in summary["modules"] for t in m["loop_types"]
                          if not t.startswith("oxloop.")})
    outcomes = load_outcomes(args.out)

    unexpected = sorted((t, s) for t, s in outcomes.items()
                        if s not in OK and t not in expected)
    fixed = sorted(t for t, r in expected.items()
                   if outcomes.get(t) in OK)
    stale = sorted(t for t in expected
                   if t.split(".")[0] in ran_modules and t not in outcomes)

    failed = False
    if wrong_loops:
        failed = True
        print(f"GATE: tests ran on loops that are not oxloop's: {wrong_loops}")
    if unexpected:
        failed = True
        print(f"GATE: {len(unexpected)} unexpected failure(s):")
        for t, s in unexpected:
            print(f"  {s:14s} {t}")
    if fixed:
        failed = True
        print(f"GATE: {len(fixed)} listed test(s) now pass; remove them from "
              f"{os.path.relpath(args.expected, ROOT)}:")
        for t in fixed:
            print(f"  {t}")
    if stale:
        failed = True
        print(f"GATE: {len(stale)} listed test(s) are not in the suite any more:")
        for t in stale:
            print(f"  {t}")

    totals = summary["totals"]
    listed_here = sum(1 for t in expected if t.split(".")[0] in ran_modules)
    print(f"conformance: {totals['passed']}/{totals['run']} passed; "
          f"{listed_here} expected failure(s) listed for these modules; "
          f"gate {'FAILED' if failed else 'passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
