"""Shared fixtures: every behaviour is written once and run on both loops.

``loop`` / ``loop_factory`` are parametrized over ``asyncio`` (the stdlib
``SelectorEventLoop`` itself, not whatever the policy gives) and ``oxloop``
(``oxloop.new_event_loop()``); select one half with ``-k asyncio`` or
``-k oxloop``.

Every loop handed out gets an exception handler that records each call. At
teardown a test fails if the handler was called and the test did not claim
the calls with the ``expect_errors`` fixture (``expect_errors()`` returns the
recorded contexts and clears them).

With ``OXLOOP_BLOCKBUSTER=1`` in the environment every test of the oxloop half
runs inside ``blockbuster.blockbuster_ctx("oxloop")``, configured as aiohttp's
and anyio's suites configure it for their own package: any blocking call made
on a thread whose loop is running, with an oxloop frame on the stack (always
the case inside an oxloop loop, whose ``run_forever`` is Python), raises
``BlockingError``. A test that blocks on purpose (to make a callback slow, say)
says so with ``@pytest.mark.blocking_on_purpose``.
"""

import asyncio
import gc
import os
import traceback
import warnings

import pytest

from helpers import LOOP_KINDS, loop_factory_callable, make_loop

class ErrorRecorder:
    """Collects every ``call_exception_handler`` call of the tracked loops."""

    def __init__(self):
        self.calls = []  # list of (loop, context)

    def install(self, loop):
        loop.set_exception_handler(self.handler)

    def handler(self, loop, context):
        self.calls.append((loop, dict(context)))

    def take(self):
        contexts = [ctx for _, ctx in self.calls]
        self.calls.clear()
        return contexts

    def describe(self):
        lines = []
        for _, ctx in self.calls:
            lines.append(f"message={ctx.get('message')!r} keys={sorted(ctx)}")
            exc = ctx.get("exception")
            if exc is not None:
                lines.append(
                    "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                )
        return "\n".join(lines)


def _finish_loop(loop):
    if loop.is_closed():
        return
    try:
        if not loop.is_running():
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        if not loop.is_running():
            loop.close()


def _reset_asyncio_state():
    asyncio.events._set_running_loop(None)
    with warnings.catch_warnings():
        # the policy API is deprecated from Python 3.14 on
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(None)
        asyncio.set_event_loop(None)


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request):
    """The loop kind of this test run: 'asyncio' or 'oxloop'."""
    return request.param


@pytest.fixture
def _error_recorder(request):
    recorder = ErrorRecorder()
    yield recorder
    if recorder.calls:
        pytest.fail(
            "the loop exception handler was called unexpectedly:\n" + recorder.describe(),
            pytrace=False,
        )


@pytest.fixture
def expect_errors(_error_recorder):
    """Call it to get (and clear) the contexts the exception handler got."""
    return _error_recorder.take


class LoopFactory:
    def __init__(self, kind, recorder):
        self.kind = kind
        self.recorder = recorder
        self.loops = []

    def __call__(self, *, track=True):
        loop = make_loop(self.kind)
        if track:
            self.recorder.install(loop)
            self.loops.append(loop)
        return loop

    @property
    def raw(self):
        """The bare callable (for ``loop_factory=`` parameters)."""
        return loop_factory_callable(self.kind)

    def finish(self):
        errors = []
        for loop in self.loops:
            try:
                _finish_loop(loop)
            except BaseException as exc:  # noqa: BLE001 - report them all
                errors.append(exc)
        self.loops.clear()
        if errors:
            raise errors[0]


@pytest.fixture
def loop_factory(loop_kind, _error_recorder):
    """Creates loops of the current kind; all are finished and closed at teardown."""
    factory = LoopFactory(loop_kind, _error_recorder)
    try:
        yield factory
    finally:
        try:
            factory.finish()
        finally:
            _reset_asyncio_state()


@pytest.fixture
def loop(loop_factory):
    """A fresh loop of the current kind, with a recording exception handler."""
    return loop_factory()


@pytest.fixture
def oxloop():
    """The oxloop package (import errors fail the test)."""
    import oxloop as module

    yield module
    _reset_asyncio_state()


BLOCKBUSTER = os.environ.get("OXLOOP_BLOCKBUSTER", "") not in ("", "0")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "blocking_on_purpose: the test itself blocks while a loop runs "
        "(exempt from the OXLOOP_BLOCKBUSTER=1 check)",
    )


def _uses_oxloop(request):
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("loop_kind") == "oxloop":
        return True
    return "oxloop" in request.fixturenames


@pytest.fixture(autouse=True)
def _blockbuster(request):
    """Fails an oxloop test that makes a blocking call while its loop runs
    (only with OXLOOP_BLOCKBUSTER=1)."""
    if (not BLOCKBUSTER or not _uses_oxloop(request)
            or request.node.get_closest_marker("blocking_on_purpose")):
        yield
        return
    from blockbuster import blockbuster_ctx

    with blockbuster_ctx("oxloop") as bb:
        # As aiohttp does: a lock the test machinery (coverage, logging)
        # takes is not the loop's blocking call.
        bb.functions["threading.Lock.acquire"].deactivate()
        yield bb


@pytest.fixture(autouse=True)
def _collect_after_test():
    yield
    # Surface ResourceWarnings ("unclosed event loop", sockets...) in the
    # test that caused them, not in a later one.
    gc.collect()
