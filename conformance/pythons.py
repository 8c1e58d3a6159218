"""The CPython versions the conformance gate runs on, and their venvs.

Every version runs CPython's own test_asyncio of that version, so every
version needs an interpreter with its `test` package and a venv with oxloop
built for that interpreter:

* 3.11 is the project's own `.venv` (scripts/setup.sh builds it);
* 3.12 and 3.13 come from pyenv (`~/.pyenv/versions/3.1X.*`);
* 3.14 and 3.15 are Debian sid's, in the chroot that
  ../shared/pythons/setup-sid.sh builds at /opt/sid; commands run there
  through ../shared/pythons/in-sid, which bind-mounts the project, the
  shared harness and the host's Rust toolchain at their own paths.

The venvs live in `build/pythons/venv-X.Y` (git-ignored), each with its own
cargo target folder `build/pythons/target-X.Y` (pyo3 is configured per
interpreter, so a shared one would rebuild everything at every switch).
They are made once and then reused: a second `ensure()` only runs
`maturin develop`, which is a no-op for cargo when no Rust source changed
(the Python package is installed in editable mode, so Python changes need no
build). A chroot venv is made with the chroot's interpreter and holds paths
that exist only inside the chroot: use it only through `Python.cmd()`.
"""

import glob
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _find_shared():
    # ../shared beside the clone (a git worktree may sit one folder deeper).
    env = os.environ.get("OXLOOP_SHARED")
    if env:
        return os.path.abspath(env)
    for up in ("..", os.path.join("..", "..")):
        cand = os.path.normpath(os.path.join(ROOT, up, "shared"))
        if os.path.isdir(os.path.join(cand, "conformance")):
            return cand
    return os.path.normpath(os.path.join(ROOT, "..", "shared"))


SHARED = _find_shared()
IN_SID = os.path.join(SHARED, "pythons", "in-sid")
SETUP_SID = os.path.join(SHARED, "pythons", "setup-sid.sh")
SID_ROOT = os.environ.get("SID_ROOT", "/opt/sid")
CACHE = os.path.join(ROOT, "build", "pythons")

BASE_VERSION = "3.11"
VERSIONS = ("3.11", "3.12", "3.13", "3.14", "3.15")
IN_CHROOT = {"3.14", "3.15"}


def log(msg):
    print(f"pythons: {msg}", file=sys.stderr, flush=True)


class Python:
    """One CPython version: where its interpreter is and how to run it."""

    def __init__(self, version, base_python=None):
        self.version = version
        self.chroot = version in IN_CHROOT
        if version == BASE_VERSION:
            self.venv = None
            self.python = base_python or os.path.join(ROOT, ".venv", "bin", "python")
        else:
            self.venv = os.path.join(CACHE, f"venv-{version}")
            self.python = os.path.join(self.venv, "bin", "python")
        self.target = os.path.join(CACHE, f"target-{version}")

    def cmd(self, argv, mounts=()):
        """argv as a command line that runs where this interpreter lives."""
        if not self.chroot:
            return list(argv)
        wrap = [IN_SID, "-w", ROOT, "-w", SHARED]
        for m in mounts:
            wrap += ["-w", m]
        return wrap + list(argv)

    def run(self, argv, **kw):
        kw.setdefault("cwd", ROOT)
        return subprocess.run(self.cmd(argv), check=True, **kw)

    def interpreter(self):
        """The bare interpreter of this version (to make the venv with)."""
        if self.chroot:
            return f"/usr/bin/python{self.version}"
        found = sorted(glob.glob(os.path.expanduser(
            f"~/.pyenv/versions/{self.version}.*/bin/python3")))
        if not found:
            raise SystemExit(f"pythons: no CPython {self.version} in ~/.pyenv/versions")
        return found[-1]

    def ensure(self):
        """Make (or reuse) this version's venv and build oxloop into it."""
        if self.chroot:
            ensure_chroot()
        if self.venv is None:
            return self.python
        os.makedirs(CACHE, exist_ok=True)
        if not os.path.exists(os.path.join(self.venv, "bin", "maturin")):
            log(f"creating {os.path.relpath(self.venv, ROOT)} with {self.interpreter()}")
            self.run([self.interpreter(), "-m", "venv", "--system-site-packages",
                      "--clear", self.venv])
            self.run([self.python, "-m", "pip", "install", "-q",
                      "--disable-pip-version-check", "maturin>=1.5,<2"])
        log(f"building oxloop for CPython {self.version} (release)")
        env_cmd = ["env", f"VIRTUAL_ENV={self.venv}", f"CARGO_TARGET_DIR={self.target}"]
        self.run(env_cmd + [os.path.join(self.venv, "bin", "maturin"), "develop",
                            "--release", "-q"],
                 stdout=sys.stderr)
        self.run([self.python, "-c", "import oxloop"])
        return self.python


_chroot_checked = False


def ensure_chroot():
    """Run ../shared/pythons/setup-sid.sh once per process: it builds the sid
    chroot on a fresh machine (a few minutes) and only re-checks it (and
    refreshes its CA bundle and resolver) when it is there."""
    global _chroot_checked
    if _chroot_checked:
        return
    log(f"checking the sid chroot ({os.path.relpath(SETUP_SID, ROOT)})")
    subprocess.run(["bash", SETUP_SID], check=True, stdout=subprocess.DEVNULL)
    _chroot_checked = True
