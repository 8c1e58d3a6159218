"""The suites of the ecosystem gate: what to download, install and run.

Every suite is one project's own test suite, taken from that project's sdist
on PyPI (`pip download --no-deps --no-binary :all: NAME==VERSION`), pinned to
an exact version, with its test dependencies pinned too. The project itself
is installed from that sdist into the suite's own venv; its tests run from
the unpacked sdist.

Fields:
  sdist      the pinned requirement whose sdist holds the tests
  deps       pinned test dependencies (wheels are fine for these)
  tests      pytest arguments that choose the tests (paths relative to the
             folder the tests run in, see cwd)
  ci         the time-bounded selection run by `gate.py --ci` (None: the
             whole suite, as --full runs it)
  args       further pytest arguments (options that replace the project's own
             addopts: no coverage, no xdist)
  deselect   a regex of node ids that are not the asyncio loop under test
             (e.g. anyio's trio and uvloop variants); deselected in every run
  cwd        where the tests run: the unpacked sdist (default) or
             "site-packages" (the installed package, for tests shipped in it)
  venv       share the venv of that suite (same sdist and deps)
  subject    the project under test when it is not the sdist's own (the
             websockets row runs uvicorn's tests against websockets)
"""

import socket


def _localhost_is_ipv6():
    """Whether "localhost" resolves to an IPv6 address here (a machine or
    sandbox whose /etc/hosts has no `::1 localhost` says no)."""
    try:
        socket.getaddrinfo("localhost", 0, socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    return True


# Each venv also gets uvloop (for the uvloop column), pinned here.
UVLOOP = "uvloop==0.23.0"

# Common pytest options: quiet, no cache dir in the sdist, one char a test.
COMMON_ARGS = ["-q", "-p", "no:cacheprovider", "-o", "console_output_style=classic"]

_UVICORN = {
    "sdist": "uvicorn==0.54.0",
    "venv": "uvicorn",
    "deps": [
        "httptools==0.9.0", "python-dotenv==1.2.4", "PyYAML==6.0.4",
        "watchfiles==1.3.0", "websockets==16.1.1", "wsproto==1.3.2",
        "a2wsgi==1.10.10", "trustme==1.2.1", "cryptography==48.0.0",
        "httpx2==2.16.2", "zttp==0.0.35", "pytest==9.0.3",
        "pytest-mock==3.15.1", "pytest-timeout==2.4.0", "anyio==4.16.0",
    ],
}
# uvicorn's own addopts without xdist.
_UVICORN_ARGS = ["-o", "addopts=-rxXs --strict-config --strict-markers",
                 "--ignore=tests/benchmarks", "--timeout=60"]

# The longest suites first: runs start in this order, --jobs at a time.
SUITES = {
    "aiohttp": {
        "sdist": "aiohttp==3.14.5",
        "deps": [
            # aiohttp's runtime deps and extras, as pinned in its own
            # requirements/test.txt
            "aiodns==4.0.4", "aiohappyeyeballs==2.6.2", "aiosignal==1.4.0",
            "attrs==26.1.0", "backports-zstd==1.3.0", "brotli==1.2.0",
            "frozenlist==1.8.0", "multidict==6.7.1", "propcache==0.5.2",
            "yarl==1.25.1",
            # its test requirements (same file)
            "blockbuster==1.5.26", "coverage==7.14.1", "freezegun==1.5.5",
            "gunicorn==26.0.0",
            "isal==1.8.0", "pkgconfig==1.6.0", "proxy.py==2.4.10",
            "pytest==9.0.3", "pytest-codspeed==5.0.3", "pytest-mock==3.15.1",
            "pytest-timeout==2.4.0", "setuptools-git==1.2", "trustme==1.2.1",
            "zlib-ng==1.0.0",
        ],
        "tests": ["tests"],
        # aiohttp's own addopts minus xdist, coverage and doctests.
        "args": ["-o", "addopts=", "--strict-markers", "--aiohttp-loop=pyloop",
              "-m", "not dev_mode and not autobahn and not internal",
              "--ignore-glob=tests/test_benchmarks_*"],
        "ci": ["tests/test_client_functional.py", "tests/test_web_functional.py",
            "tests/test_client_ws_functional.py",
            "tests/test_web_websocket_functional.py",
            "tests/test_web_sendfile_functional.py", "tests/test_connector.py",
            "tests/test_proxy_functional.py", "tests/test_run_app.py",
            "tests/test_web_server.py", "tests/test_client_proto.py",
            "tests/test_web_protocol.py", "tests/test_test_utils.py",
            "tests/test_loop.py", "tests/test_streams.py",
            "tests/test_base_protocol.py", "tests/test_resolver.py",
            "tests/test_tcp_helpers.py", "tests/test_web_runner.py"],
    },
    "anyio": {
        "sdist": "anyio==4.16.0",
        "deps": ["blockbuster==1.5.26", "hypothesis==6.170.17", "psutil==7.2.2",
              "pytest==9.0.3", "pytest-mock==3.15.1", "pytest-timeout==2.4.0",
              "trustme==1.2.1", "truststore==0.10.5", "trio==0.35.0",
              "exceptiongroup==1.3.1"],
        "tests": ["tests"],
        "args": ["-m", "not network"],
        # Only anyio's plain asyncio backend: its trio runs and its own
        # asyncio+uvloop variant are not the loop under test. Where
        # "localhost" has no IPv6 address, the ipv6 variants cannot run on
        # any loop, and their fixture (`server_sock`: bind to
        # ("localhost", 0)) leaves its socket open when the bind fails; the
        # garbage collector then reports it (ResourceWarning, an unraisable
        # exception that fails whichever test runs at that moment), at a
        # point that depends on each loop's allocations. So they are not
        # run there.
        "deselect": r"\[(?:[^\]]*-)?(?:trio|asyncio\+uvloop"
                    + ("" if _localhost_is_ipv6() else "|ipv6")
                    + r")(?:-[^\]]*)?\]",
        "ci": None,
    },
    "uvicorn": dict(
        **_UVICORN,
        tests=["tests"],
        # its websocket tests are the websockets row
        args=_UVICORN_ARGS + ["--ignore=tests/protocols/test_websocket.py"],
        ci=None,
    ),
    # websockets' sdists ship none of its asyncio tests (tests/asyncio,
    # tests/legacy, tests/sync are pruned, and even the Sans-I/O tests they
    # do ship import tests/utils.py, which is not shipped): its own suite
    # cannot be run from PyPI. Its asyncio server and client are run by
    # uvicorn's websocket tests instead, in the uvicorn venv (websockets
    # pinned there): uvicorn's `websockets` and `websockets-sansio`
    # protocols serve, websockets' asyncio client connects.
    "websockets": dict(
        **_UVICORN,
        subject="websockets==16.1.1",
        tests=["tests/protocols/test_websocket.py"],
        args=_UVICORN_ARGS,
        ci=None,
    ),
    "tornado": {
        "sdist": "tornado==6.6.1",
        "deps": ["pytest==9.0.3", "pytest-timeout==2.4.0"],
        # The installed package carries its tests: run them there.
        "cwd": "site-packages",
        "tests": ["tornado/test"],
        # tornado's test modules turn warnings into errors at import; pytest
        # warns that it skips its non-test classes named Test*. ecotornado
        # does what tornado's own runner does before the tests.
        "args": ["--rootdir=.", "-p", "ecotornado", "-W",
              "ignore::pytest.PytestCollectionWarning", "--timeout=60"],
        "ci": None,
    },
    "pytest-asyncio": {
        "sdist": "pytest-asyncio==1.5.0",
        "deps": ["pytest==9.0.3", "hypothesis==6.170.17", "pytest-timeout==2.4.0"],
        "tests": ["tests"],
        "args": ["--timeout=120"],
        # Nearly every test is a nested pytest run (pytester): ~1 s each.
        # CI runs the ones about loops, their scopes and what runs in them.
        "ci": ["tests/test_event_loop_fixture.py", "tests/test_set_event_loop.py",
               "tests/markers/test_function_scope.py",
               "tests/async_fixtures/test_async_fixtures_contextvars.py",
               "tests/test_task_cleanup.py", "tests/test_subprocess.py",
               "tests/test_simple.py", "tests/test_port_factories.py",
               "tests/async_fixtures/test_async_fixtures.py",
               "tests/async_fixtures/test_nested.py"],
    },
}
