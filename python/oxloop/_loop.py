"""The Python half of oxloop's event loop.

`Loop` joins the native core (`oxloop._core.LoopCore`: ready queue, timers,
reactor, `run_forever`'s iterations) with `asyncio.AbstractEventLoop`. What
lives here is glue that Python does naturally and that is not on a hot path:
the checks and bookkeeping around `run_forever`, `run_until_complete`, tasks
and futures, executors, async generators, the exception-handler API and the
debug-mode reporting that the core calls back into.
"""

import asyncio
import concurrent.futures
import inspect
import logging
import os
import sys
import threading
import traceback
import warnings
import weakref
from asyncio import events, format_helpers, futures, tasks

from . import _core
from ._pipes import PipesMixin
from ._signals import SignalsMixin
from ._sockets import SocketsMixin
from ._stats import StatsMixin
from ._streams import StreamsMixin
from ._subprocess import SubprocessMixin

__all__ = ("Loop",)

logger = logging.getLogger("asyncio")

_PY311 = sys.version_info >= (3, 11)
_PY312 = sys.version_info >= (3, 12)

# CPython 3.13.3+ and 3.14+: `create_task(coro, **kwargs)` hands every keyword
# (`name`, `context`, `eager_start`, ...) to the task factory, or to `Task`;
# older versions take `name` and `context` only and refuse the rest. Follow
# the installed asyncio.
_CREATE_TASK_KWARGS = bool(
    asyncio.base_events.BaseEventLoop.create_task.__code__.co_flags
    & inspect.CO_VARKEYWORDS)
# asyncio.iscoroutinefunction warns from 3.14 on; asyncio calls this twin.
_iscoroutinefunction = getattr(asyncio.coroutines, "_iscoroutinefunction",
                               asyncio.coroutines.iscoroutinefunction)

_object_setattr = object.__setattr__
_object_delattr = object.__delattr__

# asyncio.constants.DEBUG_STACK_DEPTH
_DEBUG_STACK_DEPTH = 10


def _debug_from_environment():
    return bool(sys.flags.dev_mode or (
        not sys.flags.ignore_environment
        and os.environ.get("PYTHONASYNCIODEBUG")))


def _stop_loop_when_done(fut):
    # run_until_complete's done-callback. A future that died of
    # KeyboardInterrupt/SystemExit does not stop the loop: the exception is
    # already on its way out of run_forever.
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            return
    futures._get_loop(fut).stop()


class Loop(StreamsMixin, SocketsMixin, SignalsMixin, PipesMixin,
           SubprocessMixin, _core.LoopCore, StatsMixin,
           asyncio.AbstractEventLoop):
    """An asyncio event loop whose core is written in Rust.

    `Loop(virtual_time=True)` runs on virtual time: when the loop has
    nothing to do but wait for a timer, its clock jumps to the timer (see
    `src/event_loop/virtual_time.rs` and the README for what real I/O,
    threads and child processes get first).
    """

    def __init__(self, *, virtual_time=False):
        super().__init__()
        self.slow_callback_duration = 0.1
        self._exception_handler = None
        self._default_executor = None
        self._executor_shutdown_called = False
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self._set_debug_flag(_debug_from_environment())
        self._stats_init()

    # `time` assigned on the instance (`loop.time = f`, mock.patch.object):
    # the core then reads the clock through self.time() where asyncio's loop
    # does (src/event_loop/user_clock.rs). Python, not a native slot, so
    # that object.__setattr__(loop, ...) works as on the stdlib loop.
    def __setattr__(self, name, value):
        _object_setattr(self, name, value)
        if name == "time":
            self._set_instance_clock(True)

    def __delattr__(self, name):
        _object_delattr(self, name)
        if name == "time":
            self._set_instance_clock(False)

    def __repr__(self):
        return (f"<{type(self).__module__}.{type(self).__qualname__} "
                f"running={self.is_running()} closed={self.is_closed()} "
                f"debug={self.get_debug()}>")

    def __del__(self, _warn=warnings.warn):
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    # -- running -----------------------------------------------------------

    def _check_closed(self):
        if self.is_closed():
            raise RuntimeError("Event loop is closed")

    def _check_running(self):
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError(
                "Cannot run the event loop while another loop is running")

    def run_forever(self):
        """Run until stop() is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self.get_debug())
        old_hooks = sys.get_asyncgen_hooks()
        try:
            sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                   finalizer=self._asyncgen_finalizer_hook)
            events._set_running_loop(self)
            self._run_forever_native()
        finally:
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_hooks)

    def run_until_complete(self, future):
        """Run until the future (or coroutine) is done; return its result."""
        self._check_closed()
        self._check_running()
        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            # An exception raised out of run_forever is reported by the
            # caller; don't also log "Task exception was never retrieved".
            future._log_destroy_pending = False
        future.add_done_callback(_stop_loop_when_done)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                future.exception()
            raise
        finally:
            future.remove_done_callback(_stop_loop_when_done)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def close(self):
        """Close the loop: drop queued callbacks, shut the executor down."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            logger.debug("Close %r", self)
        self._proc_close()
        self._close_native()
        # The loop's own objects let go of it: once closed, it is freed by
        # reference counting alone (no cycle for the GC to find), as
        # asyncio's loop is.
        self._sockops._detach()
        self._sig_close()
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # -- debug -------------------------------------------------------------

    def set_debug(self, enabled):
        self._set_debug_flag(bool(enabled))
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking,
                                      bool(enabled))

    def _set_coroutine_origin_tracking(self, enabled):
        if bool(enabled) == self._coroutine_origin_tracking_enabled:
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = (
                sys.get_coroutine_origin_tracking_depth())
            sys.set_coroutine_origin_tracking_depth(_DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(
                self._coroutine_origin_tracking_saved_depth)
        self._coroutine_origin_tracking_enabled = bool(enabled)

    def _report_slow_callback(self, handle, seconds):
        # Called by the core in debug mode. A task's step shows as the task.
        owner = getattr(handle._callback, "__self__", None)
        if isinstance(owner, events.Handle):
            # A thread-safe handle, run through its _run.
            handle = owner
            owner = getattr(handle._callback, "__self__", None)
        what = repr(owner) if isinstance(owner, tasks.Task) else str(handle)
        logger.warning("Executing %s took %.3f seconds", what, seconds)

    def _report_callback_error(self, handle, exc):
        # Called by the core when a callback raised.
        cb = handle._callback
        what = (_format_callback_source(cb, handle._args, self.get_debug())
                if cb is not None else repr(handle))
        context = {
            "message": f"Exception in callback {what}",
            "exception": exc,
            "handle": handle,
        }
        if handle._source_traceback:
            context["source_traceback"] = handle._source_traceback
        self.call_exception_handler(context)

    def _report_io_error(self, exc):
        # Called by the core when a native I/O watcher failed.
        self.call_exception_handler({
            "message": "Exception in I/O callback",
            "exception": exc,
        })

    # -- scheduling --------------------------------------------------------

    # call_soon, call_later, call_at and call_soon_threadsafe are native
    # (LoopCore); from 3.14 on call_soon_threadsafe hands out a native
    # handle with the semantics of asyncio's `_ThreadSafeHandle` (its
    # `cancel()` and `cancelled()` from another thread wait for a running
    # callback), which `isinstance` takes for asyncio's class.

    # -- futures and tasks -------------------------------------------------

    # create_future, create_task, set_task_factory and get_task_factory are
    # native (LoopCore), create_task with the keywords the installed asyncio
    # takes (_CREATE_TASK_KWARGS: every one, else name and context); it comes
    # here in debug mode, when a task factory is set, or given `loop=`.

    def _create_task_slow(self, coro, kwargs):
        factory = self.get_task_factory()
        if _CREATE_TASK_KWARGS:
            if factory is not None:
                return factory(self, coro, **kwargs)
            task = tasks.Task(coro, loop=self, **kwargs)
            if task._source_traceback:
                del task._source_traceback[-1]
            return task
        name = kwargs.get("name")
        context = kwargs.get("context")
        if factory is None:
            if context is None:
                task = tasks.Task(coro, loop=self, name=name)
            else:
                task = tasks.Task(coro, loop=self, name=name, context=context)
            if task._source_traceback:
                del task._source_traceback[-1]
        else:
            if context is None:
                task = factory(self, coro)
            else:
                task = factory(self, coro, context=context)
            if name is not None:
                try:
                    set_name = task.set_name
                except AttributeError:
                    pass
                else:
                    set_name(name)
        return task

    # -- executors ---------------------------------------------------------

    def run_in_executor(self, executor, func, *args):
        self._check_closed()
        if self.get_debug():
            self._check_callback(func, "run_in_executor")
        if executor is None:
            executor = self._default_executor
            if self._executor_shutdown_called:
                raise RuntimeError("Executor shutdown has been called")
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(
                    thread_name_prefix="asyncio")
                self._default_executor = executor
        job = executor.submit(func, *args)
        future = futures.wrap_future(job, loop=self)
        if self.virtual_time:
            # The clock holds still while the job runs. Added after
            # wrap_future's callback: the result is queued on the loop
            # before the count drops, so the clock cannot jump in between.
            self._real_job_begin()
            job.add_done_callback(self._real_job_done)
        return future

    def _real_job_done(self, _job=None):
        self._real_job_end()

    def _check_callback(self, callback, method):
        if (asyncio.iscoroutine(callback)
                or _iscoroutinefunction(callback)):
            raise TypeError(f"coroutines cannot be used with {method}()")
        if not callable(callback):
            raise TypeError(f"a callable object was expected by {method}(), "
                            f"got {callback!r}")

    def set_default_executor(self, executor):
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor instance")
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout=None):
        """Shut the default executor down and wait for its threads."""
        self._executor_shutdown_called = True
        if self._default_executor is None:
            return
        future = self.create_future()
        thread = threading.Thread(target=self._do_shutdown, args=(future,))
        if self.virtual_time:
            self._real_job_begin()  # ended by _do_shutdown
        thread.start()
        try:
            if timeout is None:
                await future
            else:
                try:
                    await asyncio.wait_for(asyncio.shield(future), timeout)
                except asyncio.TimeoutError:
                    warnings.warn(
                        "The executor did not finishing joining its threads "
                        f"within {timeout} seconds.",
                        RuntimeWarning, stacklevel=2)
                    self._default_executor.shutdown(wait=False)
        finally:
            if timeout is None:
                thread.join()

    def _do_shutdown(self, future):
        try:
            self._default_executor.shutdown(wait=True)
            if not self.is_closed():
                self.call_soon_threadsafe(_set_result_unless_done, future, None)
        except Exception as ex:
            if not self.is_closed() and not future.cancelled():
                self.call_soon_threadsafe(future.set_exception, ex)
        finally:
            if self.virtual_time:
                self._real_job_end()  # after the result is queued

    # -- async generators --------------------------------------------------

    def _asyncgen_finalizer_hook(self, agen):
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    def _asyncgen_firstiter_hook(self, agen):
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning, source=self, stacklevel=1)
        self._asyncgens.add(agen)

    # The stdlib loop's own coroutine function, not a copy: it needs only
    # `_asyncgens`, `_asyncgens_shutdown_called` and call_exception_handler,
    # which Loop keeps as BaseEventLoop does (the same in 3.9-3.15). So its
    # coroutine is named as the stdlib's ('BaseEventLoop.shutdown_asyncgens'),
    # and what matches that name (the "never awaited" RuntimeWarning of
    # Runner.close() on a loop closed under it, which pytest-asyncio filters
    # by it) sees the same on both loops.
    shutdown_asyncgens = asyncio.base_events.BaseEventLoop.shutdown_asyncgens

    # -- error handling ----------------------------------------------------

    def get_exception_handler(self):
        return self._exception_handler

    def set_exception_handler(self, handler):
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, "
                            f"got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context):
        """Log the context through the 'asyncio' logger."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        if exception is not None:
            exc_info = (type(exception), exception, exception.__traceback__)
        else:
            exc_info = False
        lines = [message]
        for key in sorted(context):
            if key in {"message", "exception"}:
                continue
            value = context[key]
            if key == "source_traceback":
                value = ("Object created at (most recent call last):\n"
                         + "".join(traceback.format_list(value)).rstrip())
            elif key == "stack" and value:
                value = ("Blocked at (most recent call last):\n"
                         + "".join(traceback.format_list(value)).rstrip())
            elif key == "handle_traceback":
                value = ("Handle created at (most recent call last):\n"
                         + "".join(traceback.format_list(value)).rstrip())
            else:
                value = repr(value)
            lines.append(f"{key}: {value}")
        logger.error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context):
        """Call the exception handler; never raises an Exception."""
        if self._exception_handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error("Exception in default exception handler",
                             exc_info=True)
            return
        try:
            ctx = _failing_context(context) if _PY312 else None
            if ctx is not None:
                ctx.run(self._exception_handler, self, context)
            else:
                self._exception_handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler({
                    "message": "Unhandled error in exception handler",
                    "exception": exc,
                    "context": context,
                })
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error("Exception in default exception handler "
                             "while handling an unexpected error "
                             "in custom exception handler",
                             exc_info=True)


def _failing_context(context):
    # 3.12+ (gh-96704): a custom exception handler runs in the context of
    # the failing task, or future, or handle, when it has one.
    thing = next((context[k] for k in ("task", "future", "handle")
                  if context.get(k) is not None), None)
    if thing is None or not hasattr(thing, "get_context"):
        return None
    ctx = thing.get_context()
    if ctx is None or not hasattr(ctx, "run"):
        return None
    return ctx


if "debug" in inspect.signature(format_helpers._format_callback_source).parameters:
    def _format_callback_source(func, args, debug):
        # 3.14+: arguments are shown in debug mode only.
        return format_helpers._format_callback_source(func, args, debug=debug)
else:
    def _format_callback_source(func, args, debug):
        return format_helpers._format_callback_source(func, args)


def _set_result_unless_done(fut, result):
    if not fut.done():
        fut.set_result(result)
