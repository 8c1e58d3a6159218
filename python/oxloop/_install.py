"""Making every new asyncio loop an oxloop loop, on any CPython.

Used by `python -m oxloop` and the pytest plugin. Where asyncio has its
policy system (CPython 3.9-3.15) a policy whose factory makes oxloop loops is
set, through the private setter on 3.14+ so that oxloop itself triggers no
DeprecationWarning. Where it has none (3.16+), `asyncio.new_event_loop` and
`asyncio.events.new_event_loop` (which `asyncio.run` and `asyncio.Runner`
call) are replaced. `install()` returns the function that undoes it.
"""

import asyncio
import sys

import oxloop


def make_factory(*, virtual_time=False, grace=None, debug=False, stats=False,
                 loops=None):
    """A loop factory; each new loop is appended to `loops` if it is a list.
    `stats` (`--stats`) turns `loop.stats()` on for every loop. It also
    stands in for `oxloop.new_event_loop` (whose `virtual_time` and `stats`
    keywords it takes: a program's explicit `virtual_time` wins; stats are
    on if either asks)."""
    default_virtual_time = virtual_time
    default_stats = stats

    def new_event_loop(*, virtual_time=None, stats=False):
        if virtual_time is None:
            virtual_time = default_virtual_time
        loop = oxloop.Loop(virtual_time=virtual_time)
        if stats or default_stats:
            loop.enable_stats(True)
        if virtual_time and grace is not None:
            loop.virtual_time_grace = grace
        if debug:
            loop.set_debug(True)
        if loops is not None:
            loops.append(loop)
        return loop
    return new_event_loop


def policy_base():
    """asyncio's default policy class (the platform's: on Unix it keeps the
    child-watcher API of 3.9-3.11), or None where policies are gone."""
    platform = (sys.modules.get("asyncio.unix_events")
                or sys.modules.get("asyncio.windows_events"))
    # 3.14+ name it _DefaultEventLoopPolicy (the public names warn).
    for owner, name in ((platform, "_DefaultEventLoopPolicy"),
                        (platform, "DefaultEventLoopPolicy"),
                        (asyncio.events, "_BaseDefaultEventLoopPolicy"),
                        (asyncio.events, "BaseDefaultEventLoopPolicy")):
        base = getattr(owner, name, None)
        if isinstance(base, type):
            return base
    return None


def _policy_accessors():
    events = asyncio.events
    # 3.14+ deprecate the public functions; their private twins are silent.
    get = (getattr(events, "_get_event_loop_policy", None)
           or events.get_event_loop_policy)
    set_ = (getattr(events, "_set_event_loop_policy", None)
            or events.set_event_loop_policy)
    return get, set_


def install(factory, use_policy=None):
    """Makes `factory` the source of every new asyncio loop; returns the
    undo function. `use_policy` None: through the policy system where
    asyncio has one."""
    base = policy_base()
    if use_policy is None:
        use_policy = base is not None
    if use_policy:
        class Policy(base):
            def _loop_factory(self):
                return factory()

            def __repr__(self):
                return "<oxloop policy>"

        get, set_ = _policy_accessors()
        previous = get()
        set_(Policy())

        def undo():
            set_(previous)
        return undo

    saved = (asyncio.events.new_event_loop, asyncio.new_event_loop)
    asyncio.events.new_event_loop = factory
    asyncio.new_event_loop = factory

    def undo():
        asyncio.events.new_event_loop, asyncio.new_event_loop = saved
    return undo
