"""Loop switch and loop census for the ecosystem gate (imported at startup).

Each suite venv has a `.pth` file that imports this module when the
interpreter starts with ECO_LOOP set (the gate puts this folder on
PYTHONPATH for its runs, with the checkout's oxloop). It does what
a user switching loops puts first in their program, before anything else
runs, so that pytest, pytester's runs and every Python subprocess the tests
start get the same loop:

* ECO_LOOP=oxloop  -> `oxloop.install()`
* ECO_LOOP=uvloop  -> `asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())`
* ECO_LOOP=stdlib  -> nothing (the stdlib's default policy)

With ECO_COUNT_DIR set it also counts the event loops each process creates,
by class (oxloop, uvloop, stdlib), and writes the counts to
`$ECO_COUNT_DIR/<pid>.json` at exit: the gate fails a run in which the loop
under test was never created.
"""

import atexit
import json
import os

_mode = os.environ.get("ECO_LOOP")
counts = {"oxloop": 0, "uvloop": 0, "stdlib": 0}


def _count_inits(cls, key):
    original = cls.__init__

    def __init__(self, *args, **kwargs):
        counts[key] += 1
        original(self, *args, **kwargs)

    cls.__init__ = __init__


def _write_counts():
    outdir = os.environ.get("ECO_COUNT_DIR")
    if not outdir:
        return
    # Written to a temporary name and renamed: a process killed while it
    # writes (a test's child, a timeout) leaves no half-written file for the
    # gate to read.
    path = os.path.join(outdir, f"{os.getpid()}.json")
    try:
        with open(path + ".tmp", "w") as f:
            json.dump(counts, f)
        os.replace(path + ".tmp", path)
    except OSError:
        pass


def _activate():
    import asyncio

    _count_inits(asyncio.BaseEventLoop, "stdlib")
    try:
        import oxloop
    except ImportError:
        oxloop = None
    else:
        _count_inits(oxloop.Loop, "oxloop")
    try:
        import uvloop
    except ImportError:
        uvloop = None
    else:
        _count_inits(uvloop.Loop, "uvloop")
    if _mode == "oxloop":
        oxloop.install()
    elif _mode == "uvloop":
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    elif _mode != "stdlib":
        raise SystemExit(f"ECO_LOOP={_mode!r}: expected stdlib, oxloop or uvloop")
    atexit.register(_write_counts)


if _mode:
    _activate()
