#!/usr/bin/env bash
# Set up the benchmark environment (once; fast when already done) and run
# the suite.  Every argument goes to run.py:
#
#   benchmarks/run.sh                 # full run, 3 reps (~15 min)
#   benchmarks/run.sh --smoke         # everything, tiny, 1 rep (CI; ~15-20 s)
#   benchmarks/run.sh --loops asyncio,uvloop,oxloop --modes protocol --sizes 1KiB
#   benchmarks/run.sh --py314 ...     # the same on CPython 3.14 (sid chroot)
#
# Set-up: a venv at <repo>/.venv-bench with uvloop, rloop and matplotlib;
# oxloop installed from the repository root (rebuilt only when its sources
# change; cargo's output goes to .venv-bench/cargo-target so it never waits
# on the developers' target/ lock); the native client built with cargo.
set -euo pipefail
# --py314: the whole run (servers, client, driver) inside the Debian sid
# chroot that ../shared/pythons/setup-sid.sh builds (made when missing),
# with its own venv at <repo>/.venv-bench-py314 (the repository is
# bind-mounted at the same path inside); results go to results/py314/
# unless --out says otherwise.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
say() { echo "run.sh: $*" >&2; }
if [ "${1:-}" = "--py314" ]; then
  shift
  # shellcheck source=../scripts/pythons.sh
  source "$ROOT/scripts/pythons.sh"
  ensure_sid "$ROOT"
  out=()
  case " $* " in *" --smoke "*|*" --report "*) ;; *) out=(--out "$HERE/results/py314") ;; esac
  in_sid "$ROOT" env BENCH_VENV="$ROOT/.venv-bench-py314" BENCH_BASE_PYTHON=python3.14 \
    bash "$HERE/run.sh" "${out[@]}" "$@"
  exit $?
fi
VENV="${BENCH_VENV:-$ROOT/.venv-bench}"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  say "creating $VENV"
  "${BENCH_BASE_PYTHON:-python3}" -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
fi

# The peers and the application benchmarks' servers, at fixed versions so
# that a new release does not move the numbers (or break CI) unannounced.
# Optional: a loop that does not install is skipped by run.py with a note,
# and so is an application benchmark whose server does not.  zuvloop exists
# for CPython 3.14+ only.  A change of this list reinstalls.
PEERS="uvloop==0.23.0 rloop==0.5.0 zuvloop==0.0.17 uvicorn==0.55.0 httptools==0.9.0 aiohttp==3.14.5 matplotlib>=3.8"
if [ "$(cat "$VENV/.peers-done" 2>/dev/null)" != "$PEERS" ]; then
  for req in $PEERS; do
    case "$req" in  # zuvloop: CPython 3.14+ wheels only (its sdist needs Zig)
      zuvloop*) "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 14))' || continue
                "$PY" -m pip install -q --only-binary :all: "$req" || say "note: could not install $req" ;;
      *) "$PY" -m pip install -q "$req" || say "note: could not install $req" ;;
    esac
  done
  echo "$PEERS" > "$VENV/.peers-done"
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
