"""oxloop's pytest plugin, driven through pytester: small test files run with
pytest-asyncio and anyio (as installed by requirements-dev.txt) in a child
pytest, with and without the plugin's options."""

import textwrap

import pytest

pytest_plugins = ["pytester"]

INI = """\
[pytest]
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""

ASYNCIO_TESTS = """\
import asyncio, time
import pytest
import oxloop

@pytest.mark.asyncio
async def test_loop_kind():
    loop = asyncio.get_running_loop()
    print("KIND", type(loop).__module__, getattr(loop, "virtual_time", None))

@pytest.mark.asyncio
async def test_sleep_an_hour():
    loop = asyncio.get_running_loop()
    w0 = time.monotonic()
    await asyncio.sleep(3600 if getattr(loop, "virtual_time", False) else 0)
    print("WALL", time.monotonic() - w0 < 1.0)
"""


def run(pytester, *args):
    pytester.makeini(INI)
    return pytester.runpytest_subprocess("-s", "-p", "asyncio", *args)


def kinds(result):
    return [line.split(" ", 1)[1] for line in result.outlines
            if line.startswith("KIND ") or ".py KIND " in line]


def test_oxloop_plugin_is_inactive_unless_asked(pytester):
    pytester.makepyfile(test_a=ASYNCIO_TESTS)
    result = run(pytester)
    result.assert_outcomes(passed=2)
    assert "KIND asyncio.unix_events None" in result.stdout.str()


def test_oxloop_plugin_whole_suite_on_oxloop(pytester):
    pytester.makepyfile(test_a=ASYNCIO_TESTS)
    result = run(pytester, "--oxloop")
    result.assert_outcomes(passed=2)
    assert "KIND oxloop._loop False" in result.stdout.str()


def test_oxloop_plugin_whole_suite_on_virtual_time(pytester):
    pytester.makepyfile(test_a=ASYNCIO_TESTS)
    result = run(pytester, "--oxloop-virtual-time")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "KIND oxloop._loop True" in out
    assert "WALL True" in out


def test_oxloop_plugin_ini_mode(pytester):
    pytester.makepyfile(test_a=ASYNCIO_TESTS)
    pytester.makeini(INI + "oxloop_mode = virtual-time\n")
    result = pytester.runpytest_subprocess("-s", "-p", "asyncio")
    result.assert_outcomes(passed=2)
    assert "KIND oxloop._loop True" in result.stdout.str()


def test_oxloop_plugin_bad_mode(pytester):
    pytester.makepyfile(test_a=ASYNCIO_TESTS)
    pytester.makeini(INI + "oxloop_mode = sometimes\n")
    result = pytester.runpytest_subprocess("-p", "asyncio")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "oxloop_mode must be one of" in result.stderr.str()


def _has_loop_factories():
    # pytest-asyncio >= 1.3 (1.2 is the last one for Python 3.9).
    from pytest_asyncio import plugin
    return hasattr(plugin, "PytestAsyncioSpecs")


@pytest.mark.skipif(not _has_loop_factories(),
                    reason="this pytest-asyncio has no loop factories hook")
def test_oxloop_plugin_markers_per_test(pytester):
    pytester.makepyfile(test_m=textwrap.dedent("""\
        import asyncio
        import pytest

        def kind():
            loop = asyncio.get_running_loop()
            return type(loop).__module__, getattr(loop, "virtual_time", None)

        @pytest.mark.asyncio
        async def test_plain():
            assert kind() == ("asyncio.unix_events", None)

        @pytest.mark.oxloop
        @pytest.mark.asyncio
        async def test_oxloop():
            assert kind() == ("oxloop._loop", False)

        @pytest.mark.oxloop(virtual_time=True)
        @pytest.mark.asyncio
        async def test_virtual():
            assert kind() == ("oxloop._loop", True)
            await asyncio.wait_for(asyncio.sleep(10**6), 10**7)

        @pytest.mark.asyncio(loop_factories=["oxloop", "oxloop-virtual-time"])
        async def test_both():
            assert kind()[0] == "oxloop._loop"
    """))
    result = run(pytester, "-o", "oxloop_mode=marked", "-v")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines([
        "*test_both?oxloop? PASSED*",
        "*test_both?oxloop-virtual-time? PASSED*",
    ])


def test_oxloop_plugin_marker_without_mode_says_so(pytester):
    pytester.makepyfile(test_m="""\
        import pytest

        @pytest.mark.oxloop
        @pytest.mark.asyncio
        async def test_oxloop():
            pass
    """)
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*marked oxloop but the oxloop plugin is off*"])


@pytest.mark.skipif(_has_loop_factories(),
                    reason="this pytest-asyncio has the loop factories hook")
def test_oxloop_plugin_marker_needs_loop_factories(pytester):
    # Where pytest-asyncio cannot take a loop factory, a marked test fails
    # with the reason instead of silently running on another loop.
    pytester.makepyfile(test_m="""\
        import pytest

        @pytest.mark.oxloop
        @pytest.mark.asyncio
        async def test_oxloop():
            pass
    """)
    result = run(pytester, "--oxloop")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*needs pytest-asyncio >= 1.3*"])


def test_oxloop_plugin_with_anyio(pytester):
    pytester.makepyfile(test_any=textwrap.dedent("""\
        import asyncio
        import anyio
        import pytest
        from oxloop.pytest_plugin import anyio_backend as oxloop_backend

        def kind():
            loop = asyncio.get_running_loop()
            return type(loop).__module__, getattr(loop, "virtual_time", None)

        @pytest.mark.anyio
        @pytest.mark.parametrize("anyio_backend", ["asyncio"])
        async def test_session_default(anyio_backend):
            print("KIND", *kind())

        @pytest.mark.anyio
        @pytest.mark.parametrize("anyio_backend",
                                 [oxloop_backend(virtual_time=True)])
        async def test_virtual(anyio_backend):
            assert kind() == ("oxloop._loop", True)
            with anyio.fail_after(10**6):
                await anyio.sleep(3600)
    """))
    pytester.makeini(INI)
    plain = pytester.runpytest_subprocess("-s", "-p", "anyio")
    plain.assert_outcomes(passed=2)
    assert "KIND asyncio.unix_events None" in plain.stdout.str()
    on = pytester.runpytest_subprocess("-s", "-p", "anyio", "--oxloop")
    on.assert_outcomes(passed=2)
    assert "KIND oxloop._loop False" in on.stdout.str()
