#!/usr/bin/env bash
# Set up the benchmark environment (once; fast when already done) and run
# the suite.  Every argument goes to run.py:
#
#   benchmarks/run.sh                 # full run, 3 reps (~15 min)
#   benchmarks/run.sh --smoke         # everything, tiny, 1 rep (CI; ~15-20 s)
#   benchmarks/run.sh --loops asyncio,uvloop,oxloop --modes protocol --sizes 1KiB
#
# Set-up: a venv at <repo>/.venv-bench with uvloop, rloop and matplotlib;
# oxloop installed from the repository root (rebuilt only when its sources
# change; cargo's output goes to .venv-bench/cargo-target so it never waits
# on the developers' target/ lock); the native client built with cargo.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
VENV="$ROOT/.venv-bench"
PY="$VENV/bin/python"
say() { echo "run.sh: $*" >&2; }

if [ ! -x "$PY" ]; then
  say "creating $VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
fi

# The peers, at fixed versions so that a new release does not move the
# numbers (or break CI) unannounced.  Optional: a loop that does not install
# is skipped by run.py with a note.
if [ ! -e "$VENV/.peers-done" ]; then
  for req in "uvloop==0.23.0" "rloop==0.5.0" "matplotlib>=3.8"; do
    "$PY" -m pip install -q "$req" || say "note: could not install $req"
  done
  touch "$VENV/.peers-done"
fi

# oxloop from this checkout, rebuilt when a source file changed.
fingerprint() {
  "$PY" - "$ROOT" <<'EOF'
import hashlib, os, sys
root = sys.argv[1]
h = hashlib.sha256()
for top in ("src", "python", "Cargo.toml", "Cargo.lock", "pyproject.toml"):
    path = os.path.join(root, top)
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
        if not f.endswith((".so", ".pyc", ".pyd")))
    for f in files:
        h.update(f.encode())
        with open(f, "rb") as fh:
            h.update(fh.read())
print(h.hexdigest())
EOF
}
STAMP="$VENV/.oxloop-fingerprint"
FP="$(fingerprint)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$FP" ] || ! "$PY" -c "import oxloop" 2>/dev/null; then
  say "building and installing oxloop from $ROOT (a few minutes) ..."
  if CARGO_TARGET_DIR="$VENV/cargo-target" "$PY" -m pip install -q --force-reinstall --no-deps "$ROOT"; then
    echo "$FP" > "$STAMP"
  else
    rm -f "$STAMP"
    say "oxloop did not build or install (error above)"
  fi
fi

(cd "$HERE/loadgen" && cargo build --release --quiet)
exec "$PY" "$HERE/run.py" "$@"
