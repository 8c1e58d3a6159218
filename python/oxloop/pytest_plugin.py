"""pytest plugin: run async tests on oxloop, with or without virtual time.

Registered through the `pytest11` entry point, so it loads whenever oxloop
is installed, and does nothing until asked:

    pytest --oxloop                 # every loop of the session is oxloop
    pytest --oxloop-virtual-time    # ... on virtual time
    [pytest] oxloop_mode = on | virtual-time | marked | off   (ini/toml)

`on` and `virtual-time` make every loop the session creates an oxloop loop
(`oxloop._install`: the asyncio policy, or `asyncio.new_event_loop` where
policies are gone), so asyncio.run in tests, pytest-asyncio's loops and
anyio's asyncio backend all run on it.

Per test, with pytest-asyncio (>= 1.3, its `pytest_asyncio_loop_factories`
hook): `@pytest.mark.oxloop` runs the test on oxloop,
`@pytest.mark.oxloop(virtual_time=True)` on oxloop with virtual time. The
marker needs the plugin active: in mode `marked`, only marked tests change
loop. pytest-asyncio's own `@pytest.mark.asyncio(loop_factories=[...])`
can name the factories this hook offers: "oxloop" and "oxloop-virtual-time"
(besides the session's default, "asyncio", in `marked` mode).

With anyio's plugin: the session-wide modes apply (anyio's asyncio backend
makes its loop through asyncio); for one test or module, parametrize
`anyio_backend` with `oxloop.pytest_plugin.anyio_backend(virtual_time=...)`.
"""

import pytest

from . import _install

MODES = ("off", "on", "virtual-time", "marked")

FACTORY_NAMES = {False: "oxloop", True: "oxloop-virtual-time"}


def new_event_loop(virtual_time=False):
    """The factory of this plugin's loops (plain callables, picklable
    names: 'oxloop' and 'oxloop-virtual-time')."""
    return (_oxloop_virtual_factory if virtual_time else _oxloop_factory)


def _oxloop_factory():
    import oxloop
    return oxloop.new_event_loop()


def _oxloop_virtual_factory():
    import oxloop
    return oxloop.new_event_loop(virtual_time=True)


def anyio_backend(virtual_time=False):
    """A value for anyio's `anyio_backend` fixture: asyncio on oxloop."""
    return ("asyncio", {"loop_factory": new_event_loop(virtual_time)})


def pytest_addoption(parser):
    group = parser.getgroup("oxloop", "oxloop event loop")
    group.addoption(
        "--oxloop", action="store_const", const="on", dest="oxloop_mode",
        default=None, help="run every event loop of the session on oxloop")
    group.addoption(
        "--oxloop-virtual-time", action="store_const", const="virtual-time",
        dest="oxloop_mode",
        help="run every event loop of the session on oxloop with virtual "
             "time (idle waits for timers are skipped)")
    parser.addini(
        "oxloop_mode", default="off",
        help="oxloop plugin: off (default), on, virtual-time, or marked "
             "(only tests marked @pytest.mark.oxloop)")


def _mode(config):
    mode = config.getoption("oxloop_mode") or config.getini("oxloop_mode")
    mode = (mode or "off").strip()
    if mode not in MODES:
        raise pytest.UsageError(
            f"oxloop_mode must be one of {', '.join(MODES)}; got {mode!r}")
    return mode


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "oxloop(virtual_time=False): run this async test on oxloop (with "
        "pytest-asyncio; needs --oxloop, --oxloop-virtual-time or "
        "oxloop_mode)")
    mode = _mode(config)
    if mode == "off":
        return
    plugin = _Active(mode)
    config.pluginmanager.register(plugin, "oxloop-active")
    if mode in ("on", "virtual-time"):
        plugin.undo = _install.install(
            _install.make_factory(virtual_time=mode == "virtual-time"))


def pytest_runtest_setup(item):
    if item.get_closest_marker("oxloop") is None:
        return
    if item.config.pluginmanager.get_plugin("oxloop-active") is None:
        pytest.fail(
            f"{item.nodeid} is marked oxloop but the oxloop plugin is off: "
            "run with --oxloop/--oxloop-virtual-time or set oxloop_mode",
            pytrace=False)
    if not item.config.pluginmanager.has_plugin("asyncio"):
        pytest.fail(
            f"{item.nodeid}: @pytest.mark.oxloop needs pytest-asyncio; "
            "with anyio use oxloop.pytest_plugin.anyio_backend()",
            pytrace=False)
    hook = getattr(item.config.hook, "pytest_asyncio_loop_factories", None)
    if hook is None or hook.spec is None:  # our impl alone makes no spec
        pytest.fail(
            f"{item.nodeid}: @pytest.mark.oxloop needs pytest-asyncio >= 1.3 "
            "(its loop factories hook); run the whole suite with --oxloop "
            "or --oxloop-virtual-time instead",
            pytrace=False)


def _marked_virtual_time(item):
    marker = item.get_closest_marker("oxloop")
    if marker is None:
        return None
    if marker.args:
        raise pytest.UsageError(
            f"{item.nodeid}: use @pytest.mark.oxloop(virtual_time=...)")
    unknown = set(marker.kwargs) - {"virtual_time"}
    if unknown:
        raise pytest.UsageError(
            f"{item.nodeid}: unknown oxloop marker argument(s) "
            f"{', '.join(sorted(unknown))}")
    return bool(marker.kwargs.get("virtual_time", False))


def _default_asyncio_factory():
    # What pytest-asyncio would use without any factory: the policy's loop.
    get, _ = _install._policy_accessors()
    return get().new_event_loop()


class _Active:
    """The plugin's hooks once it is active."""

    def __init__(self, mode):
        self.mode = mode
        self.undo = None

    def pytest_unconfigure(self, config):
        if self.undo is not None:
            self.undo()
            self.undo = None

    # pytest-asyncio's hook. optionalhook: pytest does not insist on a
    # spec for it when pytest-asyncio is not installed.
    @pytest.hookimpl(optionalhook=True)
    def pytest_asyncio_loop_factories(self, config, item):
        asking = item.get_closest_marker("asyncio")
        if asking is not None and asking.kwargs.get("loop_factories"):
            # The test names its factories: offer all, pytest-asyncio picks.
            return {"asyncio": _default_asyncio_factory,
                    FACTORY_NAMES[False]: new_event_loop(False),
                    FACTORY_NAMES[True]: new_event_loop(True)}
        virtual = _marked_virtual_time(item)
        if virtual is None:
            if self.mode == "marked":
                return {"asyncio": _default_asyncio_factory}
            virtual = self.mode == "virtual-time"
        return {FACTORY_NAMES[virtual]: new_event_loop(virtual)}


__all__ = ("anyio_backend", "new_event_loop")
