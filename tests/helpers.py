"""Helpers shared by the test modules (importable as ``helpers``)."""

import asyncio
import sys

LOOP_KINDS = ["asyncio", "oxloop"]


def make_loop(kind):
    """A fresh, untracked loop of the given kind."""
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    if kind == "oxloop":
        import oxloop  # an ImportError here fails the oxloop half, never skips it

        return oxloop.new_event_loop()
    raise ValueError(kind)


def loop_factory_callable(kind):
    """The callable a user would pass as ``loop_factory=``."""
    if kind == "asyncio":
        return asyncio.SelectorEventLoop
    import oxloop

    return oxloop.new_event_loop


def run_briefly(loop, steps=1):
    """Run ``steps`` loop iterations (like uvloop's/asyncio's test helper)."""

    async def noop():
        pass

    for _ in range(steps):
        loop.run_until_complete(noop())


def run_until(loop, predicate, timeout=5.0):
    """Run the loop until predicate() is true; fail after ``timeout`` seconds."""
    deadline = loop.time() + timeout

    async def waiter():
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            await asyncio.sleep(0.001)

    loop.run_until_complete(waiter())


PY311 = sys.version_info >= (3, 11)
PY312 = sys.version_info >= (3, 12)
