"""The import graph follows DESIGN.md: data flows one way, and nothing imports in a circle.

Every import of every module is read from its source (function-local ones included, which is
where an upward import likes to hide), so the test fails on the line that breaks the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]

# folder -> the package it installs as (pyproject.toml's package-dir)
FOLDERS = {
    "personas": "personasim.personas",
    "worlds": "personasim.worlds",
    "agents": "personasim.agents",
    "sim": "personasim.sim",
    "analysis": "personasim.analysis",
    "interop": "personasim.interop",
    "rl": "personasim.rl",
    "personasim": "personasim",
}

# layer -> the layers it may import (its own included); the facade (`personasim/`) may import anything
ALLOWED = {
    "personas": {"personas"},
    "worlds": {"personas", "worlds"},
    "agents": {"personas", "worlds", "agents"},
    "sim": {"personas", "worlds", "agents", "sim"},
    "analysis": {"personas", "worlds", "agents", "sim", "analysis"},
    "interop": {"personas", "worlds", "agents", "sim", "analysis", "interop"},
    "rl": {"personas", "worlds", "agents", "sim", "analysis", "rl"},
    "personasim": set(FOLDERS),
}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        base = ROOT / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "personasim"
    folder = parts[1]
    return folder if folder in ALLOWED and folder != "personasim" else "personasim"


def _resolve(name: str) -> str | None:
    """The longest known module that ``name`` is or lies in (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if not name.startswith("personasim"):
                continue
            target = _resolve(name)
            if target is not None and target != module:
                out.append((target, node.lineno))
    return out


def _graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for module, path in MODULES.items():
        graph.add_node(module)
        for target, line in _imports(module, path):
            graph.add_edge(module, target, line=line)
    return graph


def test_the_module_map_sees_every_subsystem():
    layers = {_layer(m) for m in MODULES}
    assert {"personas", "worlds", "agents", "sim", "analysis", "rl", "personasim"} <= layers
    assert len(MODULES) > 60


def test_imports_flow_one_way():
    graph = _graph()
    upward = [
        f"{MODULES[a].relative_to(ROOT)}:{data['line']} imports {b}"
        for a, b, data in graph.edges(data=True)
        if _layer(b) not in ALLOWED[_layer(a)]
    ]
    assert not upward, "imports against DESIGN.md's one-way flow:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = _graph()
    # a package importing its own submodules to re-export them is how packages work; the submodule
    # importing the package back is the cycle that counts, and it is still caught through the others
    cycles = [c for c in nx.simple_cycles(graph) if len(c) > 1]
    described = [
        " -> ".join(f"{m} ({MODULES[m].relative_to(ROOT)}:{graph.edges[m, c[(i + 1) % len(c)]]['line']})"
                    for i, m in enumerate(c))
        for c in cycles[:10]
    ]
    assert not cycles, f"{len(cycles)} import cycle(s), e.g.:\n" + "\n".join(described)


@pytest.mark.parametrize("checked", ["upward", "cycle"])
def test_the_checks_catch_what_they_look_for(checked, tmp_path):
    """The rules on a made-up graph: an upward edge and a cycle are found (the test can fail)."""
    graph = nx.DiGraph()
    if checked == "upward":
        graph.add_edge("personasim.sim.engine", "personasim.api")
        assert any(_layer(b) not in ALLOWED[_layer(a)] for a, b in graph.edges)
    else:
        graph.add_edge("personasim.analysis.questions", "personasim.analysis.audit")
        graph.add_edge("personasim.analysis.audit", "personasim.analysis.questions")
        assert [c for c in nx.simple_cycles(graph) if len(c) > 1]
