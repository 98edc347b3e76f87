"""The package's layers: imports only go down, and no module imports itself back.

Layers (docs/architecture.md): 0 foundations, 1 the prior as plain modules and the
backbone twins, 2 attaching it to a network (with the backbone table, ``adapters/``),
3 files, 4 training, data, metrics and the CLI. Imports inside functions count; imports
under ``if TYPE_CHECKING:`` (annotations only) do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"sp_adapter": ROOT / "sp_adapter", "sp_adapter.adapters": ROOT / "adapters"}

LAYERS: dict[str, int] = {
    "sp_adapter.errors": 0,
    "sp_adapter.version": 0,
    "sp_adapter.extras": 0,
    "sp_adapter.photos": 0,
    "sp_adapter.inference": 0,
    "sp_adapter.prior": 1,
    "sp_adapter.backbones": 1,
    "sp_adapter.attach": 2,
    "sp_adapter.adapters": 2,
    "sp_adapter.files": 3,
    "sp_adapter.data": 4,
    "sp_adapter.metrics": 4,
    "sp_adapter.train": 4,
    "sp_adapter.cli": 4,
    "sp_adapter.cli_distill": 4,
}
"""Module or package prefix -> layer. The package's ``__init__`` (the public API) sits above
all of them and nothing inside imports it."""


def _modules() -> dict[str, Path]:
    found = {}
    for prefix, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([prefix, *parts])
            if prefix == "sp_adapter" and name.startswith("sp_adapter.adapters"):
                continue
            found[name] = path
    return found


MODULES = _modules()


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module
                       for a in node.names]
        else:
            continue
        out.update(t for t in targets if t.split(".")[0] == "sp_adapter")
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def layer_of(module: str) -> int | None:
    owners = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(owners, key=len)] if owners else None


def test_every_module_has_a_layer():
    assert [m for m in MODULES if m != "sp_adapter" and layer_of(m) is None] == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "sp_adapter"))
def test_imports_only_go_down_or_stay_in_the_layer(module):
    def above(target: str) -> bool:
        layer = layer_of(target)
        return layer is None or layer > layer_of(module)

    upward = [(target, layer_of(target)) for target in sorted(GRAPH[module]) if above(target)]
    assert upward == [], f"{module} (layer {layer_of(module)}) imports {upward}"


def test_no_import_cycle_anywhere_in_the_package():
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH.get(node, ()):
            if target not in GRAPH:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in GRAPH[node]:
                cycles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_layer_test_sees_function_level_imports(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from sp_adapter.files.atomic import write_atomic\n")
    assert "sp_adapter.files.atomic" in _imports("sp_adapter.prior.probe", path)
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                    "    from sp_adapter.files import atomic\n")
    assert _imports("sp_adapter.prior.probe", path) == set()
