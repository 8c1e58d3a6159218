#!/usr/bin/env python3
"""The layout rule, checked (a step of scripts/lint.sh; stdlib only).

Fails (exit status 1, one line per finding) on
- a file over MAX_LINES lines: every ``src/**/*.rs`` and ``python/oxloop/*.py``;
- a circle in the file dependency graph, where
  - a Rust file depends on the files its ``crate::...`` / ``super::...`` /
    ``self::...`` paths name (in ``use`` items, braces expanded, and in
    code), each resolved to the deepest module that is a file; and on the
    file whose inherent ``impl T`` block defines ``f`` for each ``T::f(``
    / ``Self::f(`` it calls (``Self`` being the type of the enclosing
    ``impl``), when exactly one file defines ``T::f``. A module using its
    ancestors' ``mod.rs``/``lib.rs`` does not count (a parent declares its
    children and hosts what they share);
  - a Python module of ``python/oxloop`` depends on the modules its
    module-level relative imports name (``from . import x``,
    ``from ._x import y``).

The rule it keeps: a file reads top-down, and each file only uses files
below it in its own layer, so any one can be understood (and changed)
knowing only what it uses. Usage: scripts/check_layout.py [ROOT]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MAX_LINES = 600

# Files allowed over MAX_LINES for now, each with the reason. Keep empty.
USE_RE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]*);", re.M | re.S)
PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
IMPL_RE = re.compile(r"^impl(?:<[^{]*?>)?\s+(?:([\w:<>, ']+?)\s+for\s+)?(?:[\w]+::)*(\w+)(?:<[^{]*>)?\s*(?:where\b[^{]*)?\{?\s*$")
FN_RE = re.compile(r"^    (?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:unsafe\s+)?(?:extern\s+\"C\"\s+)?fn\s+(\w+)")
CALL_RE = re.compile(r"\b([A-Z]\w*)::([a-z_]\w*)\s*(?:::<[^(]*>)?\(")
COMMENT_RE = re.compile(r"//.*$", re.M)
STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"')


def expand(tree: str) -> list[str]:
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e']."""
    tree = re.sub(r"\s+", "", tree)
    out: list[str] = []

    def walk(prefix: str, s: str) -> None:
        i = s.find("{")
        if i < 0:
            for part in s.split(","):
                if part:
                    out.append(prefix + part)
            return
        head, body = s[:i], s[i + 1 : s.rfind("}")]
        depth, start = 0, 0
        for j, ch in enumerate(body + ","):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                item = body[start:j]
                start = j + 1
                if item:
                    walk(prefix + head, item)

    walk("", tree)
    return out


class RustCrate:
    def __init__(self, src: Path) -> None:
        self.src = src
        self.files = sorted(src.rglob("*.rs"))
        self.mod_of: dict[tuple[str, ...], Path] = {}
        for f in self.files:
            self.mod_of[self.module(f)] = f

    def module(self, f: Path) -> tuple[str, ...]:
        parts = list(f.relative_to(self.src).with_suffix("").parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts.pop()
        return tuple(parts)

    def is_dir_module(self, f: Path) -> bool:
        return f.name in ("mod.rs", "lib.rs", "main.rs")

    def resolve(self, f: Path, root: str, rest: list[str]) -> Path | None:
        mod = list(self.module(f))
        if root == "crate":
            base: list[str] = []
        elif root == "self":
            base = mod
        else:  # super: the parent of this module
            base = mod[:-1]
            while rest and rest[0] == "super":
                base = base[:-1]
                rest = rest[1:]
        path = base + [p for p in rest if p not in ("self", "*")]
        for n in range(len(path), -1, -1):
            target = self.mod_of.get(tuple(path[:n]))
            if target is not None:
                return target
        return None

    def graph(self) -> dict[Path, set[Path]]:
        texts = {}
        for f in self.files:
            text = f.read_text(encoding="utf-8")
            text = STRING_RE.sub('""', COMMENT_RE.sub("", text))
            texts[f] = text
        # Which files define each inherent method `T::f`.
        defs: dict[tuple[str, str], set[Path]] = {}
        impls: dict[Path, list[tuple[int, int, str]]] = {}
        for f, text in texts.items():
            lines = text.split("\n")
            cur: str | None = None
            inherent = False
            start = 0
            for i, line in enumerate(lines):
                m = IMPL_RE.match(line)
                if m and cur is None:
                    cur, inherent, start = m.group(2), m.group(1) is None, i
                    continue
                if cur is not None and line.startswith("}"):
                    impls.setdefault(f, []).append((start, i, cur))
                    cur = None
                    continue
                if cur is not None and inherent:
                    fm = FN_RE.match(line)
                    if fm:
                        defs.setdefault((cur, fm.group(1)), set()).add(f)
        deps: dict[Path, set[Path]] = {f: set() for f in self.files}
        for f, text in texts.items():
            names: list[tuple[str, list[str]]] = []
            for m in USE_RE.finditer(text):
                for p in expand(m.group(1)):
                    segs = p.split("::")
                    if segs[0] in ("crate", "super", "self"):
                        names.append((segs[0], [s.split(" as ")[0] for s in segs[1:]]))
            for m in PATH_RE.finditer(text):
                names.append((m.group(1), m.group(2).split("::")[1:]))
            for root, rest in names:
                target = self.resolve(f, root, rest)
                if target is not None:
                    deps[f].add(target)
            lines = text.split("\n")
            blocks = impls.get(f, [])
            for i, line in enumerate(lines):
                for m in CALL_RE.finditer(line):
                    ty, fn = m.group(1), m.group(2)
                    if ty == "Self":
                        enclosing = [t for s, e, t in blocks if s <= i <= e]
                        if not enclosing:
                            continue
                        ty = enclosing[0]
                    where = defs.get((ty, fn), set())
                    if len(where) == 1:
                        deps[f] |= where
        # A module may use its ancestors (their mod.rs/lib.rs) freely.
        for f in self.files:
            mod = self.module(f)
            for t in list(deps[f]):
                tmod = self.module(t)
                if t == f or (self.is_dir_module(t) and mod[: len(tmod)] == tmod):
                    deps[f].discard(t)
        return deps


def python_graph(pkg: Path) -> dict[Path, set[Path]]:
    files = sorted(pkg.glob("*.py"))
    by_name = {f.stem: f for f in files}
    deps: dict[Path, set[Path]] = {f: set() for f in files}
    rel = re.compile(r"^from\s+\.(\w*)\s+import\s+(\(?[^)\n]*(?:\n[^)]*)?\)?)", re.M)
    for f in files:
        for m in rel.finditer(f.read_text(encoding="utf-8")):
            if m.group(1):
                targets = [m.group(1)]
            else:
                items = m.group(2).replace("(", "").replace(")", "")
                targets = [s.split(" as ")[0].strip() for s in items.split(",")]
            for t in targets:
                if t in by_name and by_name[t] != f:
                    deps[f].add(by_name[t])
    return deps


def circles(deps: dict[Path, set[Path]]) -> list[list[Path]]:
    """The strongly connected components with more than one file (Tarjan)."""
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    on: set[Path] = set()
    out: list[list[Path]] = []
    counter = [0]

    def strong(v: Path) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(deps.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(deps):
        if v not in index:
            strong(v)
    return out


def one_circle(deps: dict[Path, set[Path]], comp: list[Path]) -> list[Path]:
    """A shortest circle through the first file of `comp`, for the message."""
    start = comp[0]
    members = set(comp)
    prev: dict[Path, Path] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(deps[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    problems: list[str] = []
    src, pkg = root / "src", root / "python" / "oxloop"
    checked = sorted(src.rglob("*.rs")) + sorted(pkg.glob("*.py"))
    for f in checked:
        rel = f.relative_to(root).as_posix()
        n = len(f.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            problems.append(f"{rel}: {n} lines (at most {MAX_LINES}; split it by concept)")
    for deps in (RustCrate(src).graph(), python_graph(pkg)):
        for comp in circles(deps):
            path = one_circle(deps, comp)
            names = " -> ".join(p.relative_to(root).as_posix() for p in path)
            extra = len(comp) - (len(path) - 1)
            more = f" (+{extra} more files in the circle)" if extra > 0 else ""
            problems.append(f"circle: {names}{more}")
    for p in problems:
        print(f"check_layout: {p}")
    if not problems:
        print(f"check_layout: ok ({len(checked)} files, none over {MAX_LINES} lines, no circles)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
