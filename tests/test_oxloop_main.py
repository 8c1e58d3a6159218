"""`python -m oxloop`: an unmodified asyncio program, run in a child
process, finds itself on oxloop, and behaves as under `python script.py`
(argv, __main__, sys.path[0], exit codes, tracebacks, debug flags)."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

PY311 = sys.version_info >= (3, 11)


def run(args, cwd, env=None, timeout=60, python_args=()):
    full_env = dict(os.environ)
    full_env.pop("PYTHONASYNCIODEBUG", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, *python_args, "-m", "oxloop", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, check=False,
        timeout=timeout)


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


PROGRAM = """\
    import asyncio, sys, warnings
    import oxloop

    def check(loop, how):
        assert isinstance(loop, oxloop.Loop), (how, type(loop))
        print(how, "on oxloop", loop.get_debug(), loop.virtual_time)

    async def main():
        check(asyncio.get_running_loop(), "asyncio.run")
        return 5

    if __name__ == "__main__":
        print("argv", sys.argv)
        print("path0", sys.path[0])
        if sys.version_info < (3, 12):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                loop = asyncio.get_event_loop()  # still creates one here
            check(loop, "get_event_loop")
            loop.close()
            asyncio.set_event_loop(None)
        assert asyncio.run(main()) == 5
        loop = asyncio.new_event_loop()
        check(loop, "new_event_loop")
        loop.close()
        if sys.version_info >= (3, 11):
            with asyncio.Runner() as runner:
                runner.run(main())
                check(runner.get_loop(), "Runner")
"""


def test_oxloop_main_runs_a_script_on_oxloop(tmp_path):
    script = write(tmp_path / "prog.py", PROGRAM)
    other = tmp_path / "elsewhere"
    other.mkdir()
    p = run([str(script), "a", "--b"], cwd=other)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    lines = p.stdout.splitlines()
    assert lines[0] == f"argv [{str(script)!r}, 'a', '--b']"
    assert lines[1] == f"path0 {tmp_path}"  # the script's directory
    assert "asyncio.run on oxloop False False" in lines
    assert "new_event_loop on oxloop False False" in lines
    if PY311:
        assert "Runner on oxloop False False" in lines
    if sys.version_info < (3, 12):
        assert "get_event_loop on oxloop False False" in lines


def test_oxloop_main_runs_a_module(tmp_path):
    write(tmp_path / "progmod.py", PROGRAM)
    p = run(["-m", "progmod", "x"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == f"argv [{str(tmp_path / 'progmod.py')!r}, 'x']"
    assert lines[1] == f"path0 {tmp_path}"  # the current directory
    assert "asyncio.run on oxloop False False" in lines


def test_oxloop_main_options(tmp_path):
    script = write(tmp_path / "prog.py", PROGRAM)
    p = run(["--debug", "--virtual-time", str(script)], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "asyncio.run on oxloop True True" in p.stdout.splitlines()


@pytest.mark.parametrize("how", ["env", "dev"])
def test_oxloop_main_asyncio_debug_from_environment(tmp_path, how):
    script = write(tmp_path / "prog.py", PROGRAM)
    if how == "env":
        p = run([str(script)], cwd=tmp_path, env={"PYTHONASYNCIODEBUG": "1"})
    else:
        p = run([str(script)], cwd=tmp_path, python_args=("-X", "dev"))
    assert p.returncode == 0, p.stderr
    assert "asyncio.run on oxloop True False" in p.stdout.splitlines()


def test_oxloop_main_virtual_time(tmp_path):
    script = write(tmp_path / "sleepy.py", """\
        import asyncio, time
        async def main():
            loop = asyncio.get_running_loop()
            w0 = time.monotonic()
            t0 = loop.time()
            await asyncio.sleep(3600)
            print(round(loop.time() - t0), time.monotonic() - w0 < 1.0)
        asyncio.run(main())
    """)
    p = run(["--virtual-time", str(script)], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["3600", "True"]


def test_oxloop_main_exit_codes(tmp_path):
    script = write(tmp_path / "exits.py", """\
        import sys
        arg = sys.argv[1]
        if arg == "none":
            sys.exit()
        if arg == "text":
            sys.exit("bye")
        sys.exit(int(arg))
    """)
    assert run([str(script), "none"], cwd=tmp_path).returncode == 0
    assert run([str(script), "7"], cwd=tmp_path).returncode == 7
    p = run([str(script), "text"], cwd=tmp_path)
    assert (p.returncode, p.stderr) == (1, "bye\n")


def test_oxloop_main_traceback_is_the_programs(tmp_path):
    script = write(tmp_path / "boom.py", """\
        import asyncio
        async def main():
            raise ValueError("boom")
        asyncio.run(main())
    """)
    p = run([str(script)], cwd=tmp_path)
    direct = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60,
                            check=False)
    assert p.returncode == 1 == direct.returncode
    assert p.stderr.startswith("Traceback (most recent call last):\n"
                               f'  File "{script}", line 4, in <module>\n')
    assert p.stderr.endswith("ValueError: boom\n")
    # No frame of the runner; the loop's own frame stands where the stdlib
    # loop's run_until_complete stands under plain python.
    assert "__main__.py" not in p.stderr
    assert "runpy" not in p.stderr
    count = p.stderr.count('  File "')
    assert count == direct.stderr.count('  File "')
    # The program's own frames are the same as under plain python.
    frames = [ln for ln in p.stderr.splitlines() if str(script) in ln]
    direct_frames = [ln for ln in direct.stderr.splitlines()
                     if str(script) in ln]
    assert frames == direct_frames


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="POSIX signals")
def test_oxloop_main_keyboard_interrupt_dies_of_sigint(tmp_path):
    script = write(tmp_path / "ctrlc.py", "raise KeyboardInterrupt\n")
    p = run([str(script)], cwd=tmp_path)
    assert p.returncode == -signal.SIGINT
    assert p.stderr.rstrip().endswith("KeyboardInterrupt")


def test_oxloop_main_usage_errors(tmp_path):
    p = run([], cwd=tmp_path)
    assert p.returncode == 2
    assert "no script" in p.stderr
    p = run(["--nope", "x.py"], cwd=tmp_path)
    assert p.returncode == 2
    assert "unknown option '--nope'" in p.stderr
    p = run(["missing.py"], cwd=tmp_path)
    assert p.returncode == 2
    assert "can't open file 'missing.py'" in p.stderr
    p = run(["-m", "no_such_module_here"], cwd=tmp_path)
    assert p.returncode == 1
    assert "No module named no_such_module_here" in p.stderr
    p = run(["--virtual-time-grace", "-1", "x.py"], cwd=tmp_path)
    assert p.returncode == 2
    p = run(["--help"], cwd=tmp_path)
    assert p.returncode == 0
    assert "--virtual-time" in p.stdout and "--stats" in p.stdout


def test_oxloop_main_stats_reports_each_loop(tmp_path):
    script = write(tmp_path / "two.py", """\
        import asyncio
        async def main():
            await asyncio.sleep(0)
        asyncio.run(main())
        asyncio.run(main())
    """)
    p = run(["--stats", str(script)], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "oxloop --stats: loop 1 of 2 (closed)" in p.stderr
    assert "oxloop --stats: loop 2 of 2 (closed)" in p.stderr


def _reported(stderr, key):
    """The values of `key` in a --stats report, one per loop."""
    prefix = f"  {key}: "
    return [float(line[len(prefix):]) for line in stderr.splitlines()
            if line.startswith(prefix)]


def test_oxloop_main_stats_reports_real_figures(tmp_path):
    script = write(tmp_path / "work.py", """\
        import asyncio
        async def step(n):
            for _ in range(n):
                await asyncio.sleep(0)
        async def main():
            await asyncio.gather(*(step(20) for _ in range(5)))
            await asyncio.sleep(0.01)
        asyncio.run(main())
        asyncio.run(main())
    """)
    p = run(["--stats", str(script)], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    callbacks = _reported(p.stderr, "callbacks")
    assert len(callbacks) == 2, p.stderr
    assert all(n >= 100 for n in callbacks), p.stderr  # 5 tasks x 20 steps
    assert len(_reported(p.stderr, "busy_ratio")) == 2, p.stderr


def test_oxloop_main_stats_with_virtual_time_skips_the_hour(tmp_path):
    script = write(tmp_path / "hour.py", """\
        import asyncio, time
        async def main():
            loop = asyncio.get_running_loop()
            start = loop.time()
            await asyncio.sleep(3600)
            print(loop.time() - start >= 3600)
        started = time.monotonic()
        asyncio.run(main())
        print(time.monotonic() - started < 30)
    """)
    p = run(["--virtual-time", "--stats", str(script)], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["True", "True"]
    assert _reported(p.stderr, "callbacks")[0] >= 1, p.stderr
    assert _reported(p.stderr, "idle_s")[0] >= 3600, p.stderr


@pytest.mark.parametrize("flags", [[], ["--stats"]])
def test_oxloop_main_new_event_loop_takes_stats(tmp_path, flags):
    script = write(tmp_path / "own_stats.py", """\
        import asyncio, oxloop
        async def main():
            for _ in range(10):
                await asyncio.sleep(0)
        loop = oxloop.new_event_loop(stats=True)
        loop.run_until_complete(main())
        print(loop.stats()["callbacks"] >= 10)
        loop.close()
        loop = oxloop.new_event_loop(stats=False, virtual_time=False)
        loop.run_until_complete(main())
        print(loop.stats()["callbacks"] >= 10)
        loop.close()
    """)
    p = run([*flags, str(script)], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    # Without --stats the second loop keeps its stats off; with it, on.
    assert p.stdout.splitlines() == ["True", "True" if flags else "False"]


def test_oxloop_main_print_stats_formats_the_report(oxloop):
    import io

    from oxloop.__main__ import print_stats

    class WithStats:
        def is_closed(self):
            return True

        def stats(self):
            return {"callbacks": 3, "busy_ratio": 0.25,
                    "slow_callbacks": [("cb", 0.5)]}

    out = io.StringIO()
    print_stats([WithStats()], file=out)
    assert out.getvalue().splitlines() == [
        "oxloop --stats: loop 1 of 1 (closed)",
        "  callbacks: 3",
        "  busy_ratio: 0.250",
        "  slow_callbacks:",
        "    ('cb', 0.5)",
    ]


@pytest.mark.parametrize("use_policy", [True, False])
def test_oxloop_main_install_with_and_without_policies(tmp_path, use_policy):
    # Without a policy system (CPython 3.16+) new_event_loop is replaced;
    # both ways, every loop is oxloop and oxloop itself warns nothing.
    code = textwrap.dedent(f"""\
        import asyncio, sys, warnings
        warnings.simplefilter("error")
        import oxloop
        from oxloop.__main__ import install, make_factory, Options
        loops = []
        install(make_factory(Options(), loops), use_policy={use_policy})
        async def main():
            return type(asyncio.get_running_loop())
        assert asyncio.run(main()) is oxloop.Loop
        loop = asyncio.new_event_loop()
        assert type(loop) is oxloop.Loop
        loop.close()
        if sys.version_info >= (3, 11):
            with asyncio.Runner() as r:
                assert r.run(main()) is oxloop.Loop
        print(len(loops))
    """)
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60,
                       check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ("3" if PY311 else "2")


def test_oxloop_main_subprocesses_and_child_watcher(tmp_path):
    # The policy is the platform's default one with oxloop's factory, so
    # the child-watcher API of 3.9-3.11 is still there; children work on
    # virtual time too.
    script = write(tmp_path / "sub.py", """\
        import asyncio, sys, oxloop
        async def main():
            assert isinstance(asyncio.get_running_loop(), oxloop.Loop)
            p = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "import time; time.sleep(0.2); print('hi')",
                stdout=asyncio.subprocess.PIPE)
            out, _ = await asyncio.wait_for(p.communicate(), 30)
            print(out.decode().strip(), p.returncode)
            if sys.version_info < (3, 12):
                print(type(asyncio.get_child_watcher()).__name__)
        asyncio.run(main())
    """)
    p = run(["--virtual-time", str(script)], cwd=tmp_path,
            python_args=("-W", "error"))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "hi 0"
    if sys.version_info < (3, 12):
        assert lines[1] == "ThreadedChildWatcher"


def test_oxloop_main_programs_that_choose_oxloop_get_the_options(tmp_path):
    script = write(tmp_path / "own.py", """\
        import asyncio, oxloop
        async def main():
            loop = asyncio.get_running_loop()
            print(loop.virtual_time, loop.get_debug())
        oxloop.run(main())
        loop = oxloop.new_event_loop(virtual_time=False)  # explicit wins
        print(loop.virtual_time)
        loop.close()
    """)
    p = run(["--virtual-time", "--debug", "--stats", str(script)],
            cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["True True", "False"]
    assert "oxloop --stats: loop 2 of 2 (closed)" in p.stderr
