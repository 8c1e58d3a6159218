"""oxloop: a fast drop-in replacement for the asyncio event loop, in Rust.

    import oxloop
    oxloop.run(main())                       # like asyncio.run, on oxloop
    asyncio.run(main(), loop_factory=oxloop.new_event_loop)   # 3.12+
    asyncio.Runner(loop_factory=oxloop.new_event_loop)        # 3.11+
    oxloop.install()     # make oxloop the default loop (asyncio's policy;
                         # CPython 3.16 has none, see install())
"""

import asyncio as _asyncio
import sys as _sys

from ._loop import Loop

__version__ = "0.1.0"

# asyncio's event-loop policies are deprecated from CPython 3.14 on (the
# public names warn: set_event_loop_policy, get_event_loop_policy,
# AbstractEventLoopPolicy, DefaultEventLoopPolicy) and gone from 3.16.
# `run`, `new_event_loop`, `Loop` and `loop_factory=oxloop.new_event_loop`
# never touch them. Only `EventLoopPolicy` and `install()` do, through the
# names that do not warn (3.14 and 3.15 keep them private), and they say so
# where there are no policies left.
_BasePolicy = (getattr(_asyncio.events, "BaseDefaultEventLoopPolicy", None)  # -3.13
               or getattr(_asyncio.events, "_BaseDefaultEventLoopPolicy", None))
_set_event_loop_policy = (
    getattr(_asyncio.events, "_set_event_loop_policy", None)  # 3.14+: silent
    or getattr(_asyncio.events, "set_event_loop_policy", None))
_HAS_POLICIES = _BasePolicy is not None and _set_event_loop_policy is not None

_NO_POLICIES = (
    "this Python has no asyncio event-loop policies (CPython 3.16 removed "
    "them): use oxloop.run(main()), or asyncio.run(main(), "
    "loop_factory=oxloop.new_event_loop), or "
    "asyncio.Runner(loop_factory=oxloop.new_event_loop)")

if _HAS_POLICIES:
    __all__ = ("EventLoopPolicy", "Loop", "install", "new_event_loop", "run")
else:
    __all__ = ("Loop", "install", "new_event_loop", "run")


def new_event_loop(*, virtual_time=False, stats=False):
    """A new oxloop event loop. `virtual_time=True` makes its clock jump
    over idle waits (for tests: see `Loop`); `stats=True` turns
    `loop.stats()` on."""
    loop = Loop(virtual_time=virtual_time)
    if stats:
        loop.enable_stats(True)
    return loop


if _HAS_POLICIES:
    class EventLoopPolicy(_BasePolicy):
        """An asyncio event-loop policy whose loops are oxloop loops.

        Policies are deprecated from CPython 3.14 on and gone from 3.16;
        prefer `loop_factory=oxloop.new_event_loop`.
        """

        def _loop_factory(self):
            return new_event_loop()

        def __repr__(self):
            return f"<{type(self).__module__}.{type(self).__qualname__}>"
else:
    def __getattr__(name):
        if name == "EventLoopPolicy":
            raise AttributeError(f"oxloop.EventLoopPolicy: {_NO_POLICIES}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def install():
    """Make oxloop the default event loop, by setting asyncio's event-loop
    policy to `oxloop.EventLoopPolicy()`.

    Afterwards `asyncio.new_event_loop()`, `asyncio.run()` and
    `asyncio.Runner()` without `loop_factory`, `asyncio.get_event_loop()`
    and `unittest.IsolatedAsyncioTestCase` give oxloop loops.

    On CPython 3.14 and 3.15, where the policy system is deprecated, it
    sets the policy through asyncio's non-warning name, so calling it raises
    no DeprecationWarning; the policy still works as on earlier versions.
    On a Python without policies (CPython 3.16+) there is nothing to install
    into and it raises RuntimeError: pass `loop_factory=oxloop.new_event_loop`
    to `asyncio.run()`/`asyncio.Runner()`, or use `oxloop.run()`.
    """
    if not _HAS_POLICIES:
        raise RuntimeError(f"oxloop.install(): {_NO_POLICIES}")
    _set_event_loop_policy(EventLoopPolicy())


def run(main, *, debug=None):
    """Run a coroutine on a new oxloop loop, like `asyncio.run`.

    It uses no event-loop policy (on 3.11+ it is
    `asyncio.Runner(loop_factory=oxloop.new_event_loop)`).
    """
    if _asyncio.events._get_running_loop() is not None:
        raise RuntimeError(
            "oxloop.run() cannot be called from a running event loop")
    if _sys.version_info >= (3, 11):
        with _asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    return _run_legacy(main, debug)


def _run_legacy(main, debug):
    # asyncio.run for Python 3.9 and 3.10, which have no Runner.
    if not _asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = new_event_loop()
    try:
        _asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            pending = _asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(
                    _asyncio.gather(*pending, return_exceptions=True))
            for task in pending:
                if task.cancelled():
                    continue
                if task.exception() is not None:
                    loop.call_exception_handler({
                        "message": "unhandled exception during oxloop.run() "
                                   "shutdown",
                        "exception": task.exception(),
                        "task": task,
                    })
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            _asyncio.set_event_loop(None)
            loop.close()
