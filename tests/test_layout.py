"""The package's layers (docs/DESIGN.md): no import cycles, no upward imports.

The layers, bottom to top, and the modules of each; a module may import from its own layer (without a cycle)
and from the layers below it, never from one above. Imports are read from the source (every ``import`` and
``from ... import`` statement, also those inside functions), so a lazy import does not hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reluflow"

#: bottom to top
LAYERS = [
    ("model", ["reluflow.model"]),
    ("kernels", ["reluflow.kernels"]),
    ("problem", ["reluflow.problem"]),
    ("dynamics", ["reluflow.dynamics"]),
    ("files", ["reluflow.files"]),
    ("simulate", ["reluflow.simulate"]),
    ("experiments", ["reluflow.experiments"]),
    ("interface", ["reluflow.cli", "reluflow"]),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The reluflow modules a source file imports (``from a import b`` counts as ``a.b`` when that is a module)."""
    tree = ast.parse(path.read_text())
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.add(name)
            for alias in node.names:
                found.add(f"{name}.{alias.name}")
    return {name for name in found if name == "reluflow" or name.startswith("reluflow.")}


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted name refers to (a name imported from a module resolves to that module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    edges = {}
    for name, path in modules.items():
        targets = {resolve(t, modules) for t in imports_of(path)}
        edges[name] = {t for t in targets if t and t != name}
    return edges


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} belongs to no layer of docs/DESIGN.md"
    return best


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_reader_sees_lazy_and_relative_imports(tmp_path):
    source = tmp_path / "reluflow" / "dynamics" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f():\n    from reluflow.experiments import config\n    from . import flows\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "reluflow"
    try:
        assert imports_of(source) >= {"reluflow.experiments.config", "reluflow.dynamics.flows"}
    finally:
        PACKAGE = saved


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_modules():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_from_a_layer_above_it():
    upward = []
    for module, targets in graph().items():
        if module == "reluflow":  # the package's public face re-exports the top layer's API
            continue
        for target in targets:
            if target != "reluflow" and layer_of(target) > layer_of(module):
                upward.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                              f"({LAYERS[layer_of(target)][0]})")
    assert not upward, "\n".join(sorted(upward))


@pytest.mark.parametrize("layer", [name for name, _ in LAYERS[:-1]])
def test_every_layer_has_modules(layer):
    assert any(layer_of(m) == [n for n, _ in LAYERS].index(layer) for m in all_modules())
