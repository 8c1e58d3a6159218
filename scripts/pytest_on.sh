#!/usr/bin/env bash
# Runs the pytest suite on another CPython, against the wheel that
# scripts/wheels.sh builds for it (installed into a venv that has the test
# requirements of requirements-dev.txt besides):
#
#   bash scripts/pytest_on.sh 3.14                 # the whole suite
#   bash scripts/pytest_on.sh 3.9 tests/proc -x    # arguments go to pytest
#
# The wheel is (re)built first by `scripts/wheels.sh VERSION` (quick when
# nothing changed) unless WHEELS_FRESH=1 says the caller just built them all.
# The venv is cached (scripts/pythons.sh: $OXLOOP_CACHE/pytest-cpXY, or
# /opt/sid/opt/wheels-pytest-cpXY for 3.14/3.15) and made again when those
# requirements or the interpreter change; the wheel
# is reinstalled into it at every run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
. scripts/pythons.sh
say() { echo "pytest_on: $*" >&2; }

ver="${1:?usage: pytest_on.sh X.Y [pytest args...]}"
shift
abi="cp${ver/./}"

if [ "${PYTEST_ON_IN_SID:-}" != 1 ]; then
    if [ "${WHEELS_FRESH:-}" != 1 ]; then
        bash scripts/wheels.sh "$ver" >&2
    fi
    if in_chroot "$ver"; then
        ensure_sid "$root"
        in_sid "$root" env PYTEST_ON_IN_SID=1 bash scripts/pytest_on.sh "$ver" "$@"
        exit $?
    fi
    venv="$OXLOOP_CACHE/pytest-$abi"
else
    venv="/opt/wheels-pytest-$abi"
fi

py="$(python_for "$ver")"
[ -n "$py" ] || { say "no CPython $ver"; exit 2; }
wheel=""
for f in dist/oxloop-*-"$abi"-"$abi"-*.whl; do [ -e "$f" ] && wheel="$f"; done
[ -n "$wheel" ] || { say "no $abi wheel in dist/ (scripts/wheels.sh $ver makes it)"; exit 2; }

# requirements-dev.txt less the build tool and the demo's uvloop (oxloop comes
# from the wheel); its environment markers pick versions per interpreter.
reqs="$(grep -vE '^[[:space:]]*(#|$)|^(maturin|uvloop)\b' requirements-dev.txt)"
key="$reqs $("$py" -c 'import sys; print(sys.version)')"
if [ "$(cat "$venv/.pytest-key" 2>/dev/null)" != "$key" ]; then
    say "making $venv with $py"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r /dev/stdin >&2 <<< "$reqs"
    echo "$key" > "$venv/.pytest-key"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-index --no-deps \
    --force-reinstall "$wheel" >&2
# The tests must import the installed wheel, not the checkout's python/.
"$venv/bin/python" -c "
import os, sys, oxloop
assert os.path.realpath(oxloop.__file__).startswith(os.path.realpath(sys.prefix)), oxloop.__file__
" >&2
say "CPython $("$py" -c 'import sys; print(sys.version.split()[0])'), $(basename "$wheel")"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
