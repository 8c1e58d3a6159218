#!/usr/bin/env bash
# Sets up .venv at the repository root from nothing but python3 and cargo:
# creates the venv, installs the dev requirements and builds oxloop into it
# (Cargo's `fast` profile: optimized, no LTO, incremental; releases, wheels
# and benchmarks use `--release`; OXLOOP_PROFILE=release asks for that one
# here). Safe to run again: it reuses the venv and rebuilds only what
# changed. Prints the venv's python on its last line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($py --version)" >&2
    "$py" -m venv .venv
fi
stamp=.venv/.requirements-dev.stamp
if [ ! -f "$stamp" ] || ! cmp -s requirements-dev.txt "$stamp"; then
    echo "setup: installing dev requirements" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt >&2
    cp requirements-dev.txt "$stamp"
fi
profile="${OXLOOP_PROFILE:-fast}"
echo "setup: building oxloop (profile $profile)" >&2
VIRTUAL_ENV="$root/.venv" .venv/bin/maturin develop --profile "$profile" -q >&2
.venv/bin/python -c "import oxloop" >&2
echo "$root/.venv/bin/python"
