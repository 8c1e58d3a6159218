#!/usr/bin/env bash
# Sets up and runs every test: the Rust unit tests, the pytest suite (each
# behaviour on oxloop and on the stdlib loop), a smoke run of the benchmark
# suite, and the conformance gate (CPython's test_asyncio against oxloop,
# through ../shared/conformance, judged against conformance/expected_failures.txt).
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

step "pytest, oxloop half under blockbuster (no blocking call on the loop's thread)"
OXLOOP_BLOCKBUSTER=1 "$py" -m pytest -q -p no:cacheprovider -k oxloop tests || status=1

if [ -f benchmarks/run.py ]; then
    step "benchmarks (smoke)"
    "$py" benchmarks/run.py --smoke || status=1
fi

step "conformance gate"
"$py" conformance/gate.py --python "$py" || status=1

echo
if [ "$status" -eq 0 ]; then echo "ALL TESTS PASSED"; else echo "SOME TESTS FAILED"; fi
exit "$status"
