"""Create the event loop under test from its name.

Names: ``asyncio`` (the stdlib loop), ``uvloop``, ``rloop``, ``oxloop``,
``oxloop+stats`` (oxloop with ``loop.stats()`` on: what stats cost), or any
importable module with a ``new_event_loop()`` function, or
``package.module:factory``.  ``asyncio``, ``oxloop`` and ``oxloop+stats`` are REQUIRED: the
driver stops if one cannot be created; any other loop that fails to
import is skipped with a note.

``python loops.py NAME`` creates the loop, runs a trivial coroutine on it and
prints what was created (class and version); the driver uses it to probe
which loops are available before a run.
"""

import asyncio
import importlib
import sys

REQUIRED = ("asyncio", "oxloop", "oxloop+stats")


def new_loop(name):
    """A new, not yet running event loop of the named implementation."""
    if name == "asyncio":
        return asyncio.new_event_loop()
    if name == "oxloop+stats":
        import oxloop

        return oxloop.new_event_loop(stats=True)
    module, _, attr = name.partition(":")
    factory = getattr(importlib.import_module(module), attr or "new_event_loop")
    return factory()


def describe(name, loop):
    """'module.Class version', to make sure the intended loop was measured."""
    cls = type(loop)
    text = f"{cls.__module__}.{cls.__qualname__}"
    if name != "asyncio":
        dist = name.partition(":")[0].partition("+")[0].split(".")[0]
        try:
            from importlib.metadata import version

            text += " " + version(dist)
        except Exception:
            text += " " + str(getattr(sys.modules.get(dist), "__version__", "?"))
        if name.endswith("+stats"):
            text += " (stats on)"
    return text


def report_errors(loop, out=None):
    """Print every error the loop hands to its exception handler as one
    ``LOOP-ERROR`` line on stderr; the driver treats such a line as a
    failure of the run."""
    out = out or sys.stderr

    def handler(_loop, context):
        exc = context.get("exception")
        print(f"LOOP-ERROR: {context.get('message', '')} {exc!r}", file=out, flush=True)

    loop.set_exception_handler(handler)


def _probe(name):
    loop = new_loop(name)
    try:
        async def hello():
            await asyncio.sleep(0)
            return asyncio.get_running_loop()

        if loop.run_until_complete(hello()) is not loop:
            raise RuntimeError("get_running_loop() inside the loop returned another loop")
        print(describe(name, loop))
    finally:
        loop.close()


if __name__ == "__main__":
    _probe(sys.argv[1])
