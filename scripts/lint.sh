#!/usr/bin/env bash
# The lint gate (a step of scripts/test.sh; run it alone after
# scripts/setup.sh): clippy with warnings as errors, rustfmt, ruff (its rule
# selection is in pyproject.toml) and mypy.stubtest, which checks
# python/oxloop/_core.pyi against the built native module, and the layout
# rule (scripts/check_layout.py: no file over 600 lines, no circle between
# files). Every check runs;
# the exit status is 1 if any failed. Usage: scripts/lint.sh [PYTHON]
# (default .venv/bin/python, which must have oxloop built into it).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${1:-$root/.venv/bin/python}"
export PYO3_PYTHON="${PYO3_PYTHON:-$py}"
status=0
run() {
    echo "lint: $*"
    "$@" || { echo "lint: FAILED: $*"; status=1; }
}
run cargo clippy --quiet --all-targets -- -D warnings
run cargo fmt --check
run "$py" -m ruff check --quiet
run "$py" -m mypy.stubtest oxloop._core
run "$py" scripts/check_layout.py
exit "$status"
