#!/usr/bin/env bash
# Sets up and runs every test: the Rust unit tests, the pytest suite (each
# behaviour on oxloop and on the stdlib loop), a smoke run of the benchmark
# suite, the conformance gate (CPython's test_asyncio of 3.11 to 3.15
# against oxloop, through ../shared/conformance, judged against
# conformance/expected_failures*.txt), and the ecosystem gate (other
# projects' pinned test suites from PyPI on oxloop and the stdlib loop,
# judged against ecosystem/known_differences/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="$(bash scripts/setup.sh | tail -n 1)"
export PYO3_PYTHON="$py"
status=0
# Each step's wall time, printed at the end (the first line is scripts/setup.sh).
step_name="setup (scripts/setup.sh)" step_t0=0 step_times=""
step_end() {
    step_times+="$(printf '%6ds  %s' $((SECONDS - step_t0)) "$step_name")"$'\n'
}
trap 'step_end; echo; echo "step times:"; printf "%s" "$step_times"' EXIT
step() {
    step_end
    step_name="$*" step_t0=$SECONDS
    echo
    echo "==> $*"
}

step "cargo test"
cargo test --profile fast --quiet || status=1

step "pytest"
"$py" -m pytest -q -p no:cacheprovider tests || status=1

step "pytest, oxloop half under blockbuster (no blocking call on the loop's thread)"
OXLOOP_BLOCKBUSTER=1 "$py" -m pytest -q -p no:cacheprovider -k oxloop tests || status=1

# --- wheels and the other CPythons (scripts/wheels.sh, scripts/pytest_on.sh) ---
# A release wheel per CPython 3.9-3.15 (3.14/3.15 in the sid chroot, made by
# ../shared/pythons/setup-sid.sh if missing), each installed into a fresh venv
# and smoke-tested; then the pytest suite on 3.14 and 3.9 against their
# wheels. Builds, tools and venvs are cached outside the clone
# (scripts/pythons.sh), so a run with warm caches rebuilds only oxloop.
step "wheels: build, install, smoke-test on CPython 3.9-3.15"
bash scripts/wheels.sh || status=1
for v in 3.14 3.9; do
    step "pytest on CPython $v (its wheel)"
    WHEELS_FRESH=1 bash scripts/pytest_on.sh "$v" || status=1
done
# --- end of wheels and the other CPythons ---

if [ -f benchmarks/run.py ]; then
    step "benchmarks (smoke)"
    "$py" benchmarks/run.py --smoke || status=1
fi

step "conformance gate, CPython 3.11 to 3.15"
# Each version's own test_asyncio against oxloop, judged against its list
# (conformance/expected_failures*.txt). 3.11 uses .venv; 3.12/3.13 (pyenv) and
# 3.14/3.15 (Debian sid chroot, which ../shared/pythons/setup-sid.sh builds on
# a fresh machine and only re-checks after) get venvs in build/pythons/,
# made once and rebuilt incrementally (conformance/pythons.py).
"$py" conformance/gate.py --versions all --python "$py" || status=1

step "ecosystem gate (other projects' test suites, CI selection)"
"$py" ecosystem/gate.py --ci || status=1

echo
if [ "$status" -eq 0 ]; then echo "ALL TESTS PASSED"; else echo "SOME TESTS FAILED"; fi
exit "$status"
