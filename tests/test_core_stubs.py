"""`python/oxloop/_core.pyi` declares every name the native module has.

`mypy.stubtest` (scripts/lint.sh) checks the signatures of what the stub
declares, but it does not report a private name (`_start`, `_stats_probe`)
that the stub leaves out; this test does, for the module and each class.
"""

import ast
import inspect
from pathlib import Path

import oxloop
from oxloop import _core

STUB = Path(oxloop.__file__).with_name("_core.pyi")

# Attributes every class has, which a stub does not repeat.
INHERITED = set(dir(object)) | {"__dict__", "__weakref__", "__module__", "__doc__"}


def _stub_names():
    tree = ast.parse(STUB.read_text())
    module, classes = set(), {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            # A class has what it declares and what its bases in the stub
            # declare (a stub-only base names what two classes share).
            inherited = set().union(*(
                classes.get(b.id, set()) for b in node.bases if isinstance(b, ast.Name)))
            classes[node.name] = inherited | {
                n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            } | {
                n.target.id for n in node.body
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
            }
            module.add(node.name)
        elif isinstance(node, ast.FunctionDef):
            module.add(node.name)
        elif isinstance(node, ast.Assign):
            module.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return module, classes


def test_every_native_name_is_in_the_stub():
    module, classes = _stub_names()
    runtime = {n for n in vars(_core) if not (n.startswith("__") and n.endswith("__"))}
    assert runtime - module == set()
    missing = {}
    for name, cls in vars(_core).items():
        if not inspect.isclass(cls):
            continue
        own = set(vars(cls)) - INHERITED
        gap = own - classes[name]
        if gap:
            missing[name] = sorted(gap)
    assert missing == {}
