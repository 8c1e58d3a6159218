"""scripts/check_layout.py: the layout rule (file length, no circles)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_layout.py"


def run(root):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(root)],
                          capture_output=True, text=True)
    return proc.returncode, proc.stdout


def write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_clean_tree_passes(tmp_path):
    write(tmp_path, {
        "src/lib.rs": "pub mod a;\npub mod b;\n",
        "src/a.rs": "use crate::b::Thing;\n",
        "src/b.rs": "pub struct Thing;\n",
        "python/oxloop/x.py": "from . import y\n",
        "python/oxloop/y.py": "import os\n",
    })
    assert run(tmp_path) == (0, "check_layout: ok (5 files, none over 600 lines, no circles)\n")


def test_use_circle_fails(tmp_path):
    write(tmp_path, {
        "src/lib.rs": "pub mod a;\npub mod b;\n",
        "src/a.rs": "use crate::b::{self, Thing};\n",
        "src/b.rs": "use super::a;\npub struct Thing;\n",
    })
    code, out = run(tmp_path)
    assert code == 1
    assert "circle: src/a.rs -> src/b.rs -> src/a.rs" in out


def test_method_call_circle_fails(tmp_path):
    # b.rs names no path of a.rs, but calls a method a.rs defines on T.
    write(tmp_path, {
        "src/lib.rs": "pub mod a;\npub mod b;\n",
        "src/a.rs": "use crate::b::T;\nimpl T {\n    pub fn f() {}\n}\n",
        "src/b.rs": "pub struct T;\nimpl T {\n    pub fn g() {\n        Self::f();\n    }\n}\n",
    })
    code, out = run(tmp_path)
    assert code == 1
    assert "circle: src/a.rs -> src/b.rs -> src/a.rs" in out


def test_using_an_ancestor_module_is_no_circle(tmp_path):
    write(tmp_path, {
        "src/lib.rs": "pub mod m;\n",
        "src/m/mod.rs": "pub mod c;\nuse self::c::f;\npub fn shared() {}\n",
        "src/m/c.rs": "use super::shared;\npub fn f() {}\n",
    })
    assert run(tmp_path)[0] == 0


def test_python_circle_and_long_file_fail(tmp_path):
    write(tmp_path, {
        "src/lib.rs": "\n" * 601,
        "python/oxloop/x.py": "from .y import a\n",
        "python/oxloop/y.py": "from . import x\n",
    })
    code, out = run(tmp_path)
    assert code == 1
    assert "src/lib.rs: 601 lines" in out
    assert "circle: python/oxloop/x.py -> python/oxloop/y.py -> python/oxloop/x.py" in out


def test_the_tree_keeps_the_rule():
    code, out = run(SCRIPT.parent.parent)
    assert code == 0, out
