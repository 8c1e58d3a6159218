#!/usr/bin/env bash
# Sets up and runs every test: the Rust unit tests, the pytest suite (each
# behaviour on oxloop and on the stdlib loop), a smoke run of the benchmark
# suite, and the conformance gate (CPython's test_asyncio of 3.11 to 3.15
# against oxloop, through ../shared/conformance, judged against
# conformance/expected_failures*.txt).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="$(bash scripts/setup.sh | tail -n 1)"
export PYO3_PYTHON="$py"
status=0
step() {
    echo
    echo "==> $*"
}

step "cargo test"
cargo test --quiet || status=1

step "pytest"
"$py" -m pytest -q -p no:cacheprovider tests || status=1

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

echo
if [ "$status" -eq 0 ]; then echo "ALL TESTS PASSED"; else echo "SOME TESTS FAILED"; fi
exit "$status"
