"""oxloop: a fast drop-in replacement for the asyncio event loop, in Rust.

    import oxloop
    oxloop.run(main())                       # like asyncio.run, on oxloop
    oxloop.install()                         # make oxloop the default loop
    asyncio.Runner(loop_factory=oxloop.new_event_loop)
"""

import asyncio as _asyncio
import sys as _sys

from ._loop import Loop

__all__ = ("Loop", "new_event_loop", "EventLoopPolicy", "install", "run")
__version__ = "0.1.0"


def new_event_loop(*, stats=False):
    """A new oxloop event loop (`stats=True`: with `loop.stats()` on)."""
    loop = Loop()
    if stats:
        loop.enable_stats(True)
    return loop


_BasePolicy = getattr(_asyncio.events, "BaseDefaultEventLoopPolicy", None) \
    or getattr(_asyncio.events, "_BaseDefaultEventLoopPolicy")


class EventLoopPolicy(_BasePolicy):
    """An asyncio event-loop policy whose loops are oxloop loops."""

    def _loop_factory(self):
        return new_event_loop()

    def __repr__(self):
        return f"<{type(self).__module__}.{type(self).__qualname__}>"


def install():
    """Make oxloop the default event loop (sets the event-loop policy)."""
    _asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main, *, debug=None):
    """Run a coroutine on a new oxloop loop, like `asyncio.run`."""
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
