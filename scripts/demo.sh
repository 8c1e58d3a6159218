#!/usr/bin/env bash
# Sets up oxloop and runs the demo: the same asyncio program on the stdlib
# loop, uvloop (if installed) and oxloop, with timings side by side.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="$(bash scripts/setup.sh | tail -n 1)"
exec "$py" examples/demo.py "$@"
