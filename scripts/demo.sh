#!/usr/bin/env bash
# Sets up oxloop and runs the demo: the same asyncio program on the stdlib
# loop, uvloop (if installed) and oxloop, with timings side by side.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# The demo shows timings, so it runs the optimized (release) build.
py="$(OXLOOP_PROFILE=release bash scripts/setup.sh | tail -n 1)"
exec "$py" examples/demo.py "$@"
