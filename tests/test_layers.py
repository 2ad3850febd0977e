"""The package's import graph shows its layers (issue: "a house a newcomer can read").

Every `fedranklite` import, at module level or inside a function, is an edge. The modules form no cycle, and a
module imports only from its own layer or the layers below it:

    core < federation < data < model < config < run < backends < study < cli

One exception, by design: the config schema names the backends' parameter classes (`engine.backend` is validated
when the config loads), so `config` may import the backends' declaration modules (the package, its registry and
each backend's `params`), and those import nothing above `core`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "fedranklite"
LAYERS = ["core", "federation", "data", "model", "config", "run", "backends", "study", "cli"]
DECLARATIONS = {"fedranklite.backends", "fedranklite.backends.registry"}  # plus every fedranklite.backends.*.params


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("fedranklite"):
                # `from fedranklite.x import y` is an edge to fedranklite.x.y when y is a module, else to fedranklite.x
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                ]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("fedranklite")]
            assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path}: relative import (use absolute)"
            edges[name].update(t for t in targets if t in modules and t != name)
    return edges


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def is_declaration(module: str) -> bool:
    return module in DECLARATIONS or (module.startswith("fedranklite.backends.") and module.endswith(".params"))


def test_every_module_lives_in_a_layer():
    stray = [m for m in graph() if m != "fedranklite" and m != "fedranklite.__main__" and layer(m) is None]
    assert stray == []


def test_modules_import_only_their_own_layer_or_below():
    upward = []
    for source, targets in graph().items():
        for target in targets:
            ls, lt = layer(source), layer(target)
            if ls is None or lt is None or LAYERS.index(lt) <= LAYERS.index(ls):
                continue
            if ls == "config" and is_declaration(target):
                continue
            upward.append(f"{source} -> {target}")
    assert sorted(upward) == []


def test_backend_declarations_import_nothing_above_core():
    g = graph()
    for module in g:
        if is_declaration(module):
            above = [t for t in g[module] if not is_declaration(t) and layer(t) != "core"]
            assert above == [], module


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(g[m]):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(t) :] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def test_the_checks_see_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The rules above can fail: a fake package with a federation module importing run, and a two-module cycle."""
    fake = tmp_path / "src" / "fedranklite"
    for sub in ("federation", "run"):
        (fake / sub).mkdir(parents=True)
        (fake / sub / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "federation" / "a.py").write_text("from fedranklite.run.b import x\n")
    (fake / "run" / "b.py").write_text("def f():\n    from fedranklite.federation import a\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "src")
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    with pytest.raises(AssertionError):
        test_modules_import_only_their_own_layer_or_below()
    with pytest.raises(pytest.fail.Exception):
        test_no_import_cycle()
