"""3.14's `python -m asyncio ps PID` / `pstree PID` against a running
program, on both loops: the same tasks, coroutine stacks and awaiters."""

import re
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(sys.version_info < (3, 14),
                                reason="python -m asyncio ps/pstree is 3.14+")

PROGRAM = textwrap.dedent("""\
    import asyncio, sys

    async def leaf(ev):
        await ev.wait()

    async def middle(ev):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(leaf(ev), name="leaf-a")
            tg.create_task(leaf(ev), name="leaf-b")

    async def main():
        ev = asyncio.Event()
        task = asyncio.create_task(middle(ev), name="middle")
        await asyncio.sleep(0.05)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        ev.set()
        await task

    if sys.argv[1] == "oxloop":
        import oxloop
        oxloop.run(main())
    else:
        asyncio.run(main())
""")

# (task name, coroutine stack, awaiter chain, awaiter name) per `ps` row.
EXPECTED_PS = [
    ("Task-1", "main", "", ""),
    ("middle", "TaskGroup._aexit -> TaskGroup.__aexit__ -> middle", "", ""),
    ("leaf-a", "Event.wait -> leaf",
     "TaskGroup._aexit -> TaskGroup.__aexit__ -> middle", "middle"),
    ("leaf-b", "Event.wait -> leaf",
     "TaskGroup._aexit -> TaskGroup.__aexit__ -> middle", "middle"),
]

EXPECTED_PSTREE = """\
└── (T) Task-1
    └──  main prog.py
└── (T) middle
    └──  middle prog.py
        └──  TaskGroup.__aexit__ taskgroups.py
            └──  TaskGroup._aexit taskgroups.py
                ├── (T) leaf-a
                │   └──  leaf prog.py
                │       └──  Event.wait locks.py
                └── (T) leaf-b
                    └──  leaf prog.py
                        └──  Event.wait locks.py"""


def _inspect(tmp_path, loop_kind):
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    with subprocess.Popen([sys.executable, str(prog), loop_kind],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as child:
        try:
            assert child.stdout.readline() == "ready\n"
            out = {}
            for cmd in ("ps", "pstree"):
                res = subprocess.run(
                    [sys.executable, "-m", "asyncio", cmd, str(child.pid)],
                    capture_output=True, text=True, timeout=60, check=False)
                if res.returncode != 0 and "ermission" in res.stderr:
                    pytest.skip("no permission to inspect another process: "
                                f"{res.stderr}")
                assert res.returncode == 0, res.stderr
                out[cmd] = res.stdout
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.wait(timeout=30) == 0
            return out
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()


def _ps_rows(text):
    lines = text.splitlines()
    header = lines[0]
    cols = ["task name", "coroutine stack", "awaiter chain", "awaiter name",
            "awaiter id"]
    starts = [header.index(c) for c in cols]
    rows = []
    for line in lines[2:]:
        fields = [line[a:b].strip() for a, b in zip(starts, starts[1:])]
        rows.append(tuple(fields))
    return sorted(rows, key=lambda r: r[0])


def _normalized_tree(text):
    # Paths and line numbers differ from run to run: keep the file's name.
    lines = [re.sub(r" (/\S+/)?([^/\s]+\.py):\d+$", r" \2", line)
             for line in text.splitlines()]
    # The executor frame depends on where main waits; only main's own frame
    # is compared.
    return "\n".join(line for line in lines
                     if not line.strip().startswith("└──  run_in_executor"))


def test_ps_and_pstree_of_a_running_program(tmp_path, loop_kind):
    out = _inspect(tmp_path, loop_kind)
    assert _ps_rows(out["ps"]) == sorted(EXPECTED_PS, key=lambda r: r[0])
    assert _normalized_tree(out["pstree"]) == EXPECTED_PSTREE
