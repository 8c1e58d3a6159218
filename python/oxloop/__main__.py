"""`python -m oxloop`: run an unmodified asyncio program on oxloop.

    python -m oxloop [options] script.py [args...]
    python -m oxloop [options] -m module [args...]

Every loop the program makes (`asyncio.run`, `asyncio.Runner()`,
`asyncio.new_event_loop()`, `get_event_loop()` where Python still creates
one) is an oxloop loop. How: `oxloop._install` (through the policy
system where asyncio has one, by replacing `asyncio.new_event_loop` where
it has none).

The program runs as `python script.py` would run it: `__name__ ==
"__main__"`, `sys.argv`, `sys.path[0]` (the script's directory, or the
current one for `-m`; nothing under `-P`), exit codes (`SystemExit`; 1 and
the usual traceback, without this runner's frames, for an uncaught
exception; death by SIGINT for an uncaught KeyboardInterrupt), `-X dev`
and `PYTHONASYNCIODEBUG`.
"""

import dataclasses
import os
import runpy
import signal
import sys

import oxloop
from oxloop import _install

USAGE = """\
usage: python -m oxloop [options] script.py [args...]
       python -m oxloop [options] -m module [args...]

Run an asyncio program with every event loop it creates being oxloop.

options:
  -h, --help            show this help and exit
  --version             print oxloop's version and exit
  --debug               run every loop in asyncio debug mode
  --stats               print each loop's report (loop.stats()) at exit
  --virtual-time        run every loop on virtual time: idle waits for
                        timers are skipped (asyncio.sleep(3600) returns at
                        once); real I/O, threads and subprocesses still work
  --virtual-time-grace SECONDS
                        with --virtual-time: real seconds of quiet the loop
                        waits on its sockets/pipes before jumping
                        (default {grace})
"""


@dataclasses.dataclass
class Options:
    """What the command line asked for."""

    debug: bool = False
    stats: bool = False
    virtual_time: bool = False
    #: --virtual-time-grace, in seconds (None: the loop's default).
    grace: "float | None" = None
    #: -m MODULE, or the script's path (one of the two).
    module: "str | None" = None
    script: "str | None" = None
    #: The program's own arguments.
    args: "list[str]" = dataclasses.field(default_factory=list)


class UsageError(Exception):
    pass


def parse_args(argv):
    """Options before the program; everything after it is the program's."""
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            raise SystemExit(_help())
        if arg == "--version":
            raise SystemExit(f"oxloop {oxloop.__version__}")
        if arg == "--debug":
            opts.debug = True
        elif arg == "--stats":
            opts.stats = True
        elif arg == "--virtual-time":
            opts.virtual_time = True
        elif arg == "--virtual-time-grace" or arg.startswith(
                "--virtual-time-grace="):
            if "=" in arg:
                value = arg.partition("=")[2]
            else:
                i += 1
                if i == len(argv):
                    raise UsageError(f"{arg} needs a value")
                value = argv[i]
            try:
                opts.grace = float(value)
            except ValueError:
                raise UsageError(f"bad --virtual-time-grace: {value!r}") \
                    from None
            if not 0 <= opts.grace < float("inf"):
                raise UsageError(f"bad --virtual-time-grace: {value!r}")
        elif arg == "-m":
            if i + 1 == len(argv):
                raise UsageError("-m needs a module name")
            opts.module = argv[i + 1]
            opts.args = argv[i + 2:]
            return opts
        elif arg == "--":
            i += 1
            break
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg!r}")
        else:
            break
        i += 1
    if i == len(argv):
        raise UsageError("no script or -m module given")
    opts.script = argv[i]
    opts.args = argv[i + 1:]
    return opts


def _help():
    sys.stdout.write(USAGE.format(grace=_default_grace()))
    return 0


def _default_grace():
    loop = oxloop.Loop(virtual_time=True)
    try:
        return loop.virtual_time_grace
    finally:
        loop.close()


# -- making every loop an oxloop loop ----------------------------------------

def make_factory(opts, loops):
    """The loop factory the program's loops come from; each new loop is
    appended to `loops` when `loops` is a list."""
    return _install.make_factory(virtual_time=opts.virtual_time,
                                 grace=opts.grace, debug=opts.debug,
                                 stats=opts.stats, loops=loops)


install = _install.install


# -- the --stats report ------------------------------------------------------

def print_stats(loops, file=None):
    """Prints `loop.stats()` of each loop the program created (`--stats`).

    `loop.stats()` (a dict) belongs to oxloop's introspection; a loop
    without it says so."""
    file = sys.stderr if file is None else file
    if not loops:
        print("oxloop --stats: the program created no event loop", file=file)
        return
    for n, loop in enumerate(loops, 1):
        print(f"oxloop --stats: loop {n} of {len(loops)} "
              f"({'closed' if loop.is_closed() else 'not closed'})",
              file=file)
        stats = getattr(loop, "stats", None)
        if stats is None:
            print("  loop.stats() is not available in this oxloop build",
                  file=file)
            continue
        try:
            report = stats()
        except Exception as exc:  # catch-all: a report must not hide the exit status
            print(f"  loop.stats() failed: {exc!r}", file=file)
            continue
        for key, value in report.items():
            if isinstance(value, float):
                value = f"{value:.3f}"
            elif isinstance(value, (list, tuple)):
                print(f"  {key}:", file=file)
                for item in value:
                    print(f"    {item}", file=file)
                continue
            print(f"  {key}: {value}", file=file)


# -- running the program -----------------------------------------------------

def _runner_files():
    # Frames of these files are ours, not the program's.
    return {__file__, runpy.run_path.__code__.co_filename}


def _program_traceback(tb):
    skip = _runner_files()
    while tb is not None and tb.tb_frame.f_code.co_filename in skip:
        tb = tb.tb_next
    return tb


def _safe_path():
    return bool(getattr(sys.flags, "safe_path", False))


def run_program(opts):
    """Runs the script or module as `__main__`."""
    if opts.module is not None:
        # `python -m oxloop` already put the current directory first.
        sys.argv[:] = [opts.module, *opts.args]
        runpy.run_module(opts.module, run_name="__main__", alter_sys=True)
        return
    script = opts.script
    sys.argv[:] = [script, *opts.args]
    if not _safe_path() and sys.path:
        # The current directory `python -m` put first gives way to the
        # script's own directory (or run_path's zip/directory entry).
        del sys.path[0]
    # Like python (3.9+), `__file__` is absolute, `sys.argv[0]` as given.
    path = os.path.abspath(script)
    if os.path.isdir(path) or not path.endswith(".py") and _is_zip(path):
        runpy.run_path(path, run_name="__main__")
        return
    if not _safe_path():
        sys.path.insert(0, os.path.dirname(os.path.realpath(path)))
    runpy.run_path(path, run_name="__main__")


def _is_zip(path):
    import zipfile
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _die_of_sigint():
    # CPython's exit for an uncaught KeyboardInterrupt: die of SIGINT.
    sys.stdout.flush()
    sys.stderr.flush()
    if hasattr(signal, "SIGINT") and hasattr(os, "kill"):
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return 130


def main(argv=None, use_policy=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_args(argv)
    except UsageError as exc:
        print(f"python -m oxloop: {exc}\n"
              "usage: python -m oxloop [options] script.py [args...] | "
              "-m module [args...]  (--help for more)", file=sys.stderr)
        return 2
    if opts.script is not None and not (os.path.exists(opts.script)):
        print(f"python -m oxloop: can't open file {opts.script!r}: "
              f"[Errno 2] No such file or directory", file=sys.stderr)
        return 2
    loops = [] if opts.stats else None
    factory = make_factory(opts, loops)
    install(factory, use_policy=use_policy)
    # Programs that ask for oxloop themselves (oxloop.run, a Runner with
    # loop_factory=oxloop.new_event_loop) get the options and the report too.
    oxloop.new_event_loop = factory
    status = 0
    try:
        run_program(opts)
    except SystemExit:
        raise
    except BaseException as exc:  # catch-all: reported like python does
        if (opts.module is not None and isinstance(exc, ImportError)
                and _program_traceback(exc.__traceback__) is None):
            # runpy could not find the module: python's own message.
            print(f"{sys.executable}: {exc}", file=sys.stderr)
            return 1
        tb = _program_traceback(exc.__traceback__)
        sys.last_type, sys.last_value, sys.last_traceback = (
            type(exc), exc, tb)
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        if isinstance(exc, KeyboardInterrupt):
            status = -int(signal.SIGINT)
        else:
            status = 1
    finally:
        if loops is not None:
            print_stats(loops)
    if status < 0:
        return _die_of_sigint()
    return status


if __name__ == "__main__":
    sys.exit(main())
