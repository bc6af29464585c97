"""The two layers stay apart (DESIGN.md): only jobs.py, flows/, manager/ and cli/ import the
workflow engines, and engine-free modules never import the workflow layer.

Imports are read from the source (module level and inside functions), so a lazy import
cannot slip through.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "uq_flows"
ENGINES = ("jobflow", "fireworks", "atomate2", "maggma")
WORKFLOW_PARTS = ("flows", "manager", "cli")


def is_workflow_module(path: Path) -> bool:
    parts = path.relative_to(PACKAGE).parts
    return path.name == "jobs.py" or parts[0] in WORKFLOW_PARTS


def module_name(path: Path) -> str:
    return ".".join(("uq_flows", *path.relative_to(PACKAGE).with_suffix("").parts))


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


ENGINE_FREE = sorted(p for p in PACKAGE.rglob("*.py") if not is_workflow_module(p))


def test_the_package_has_both_layers():
    assert len(ENGINE_FREE) > 20 and any(is_workflow_module(p) for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", ENGINE_FREE, ids=module_name)
def test_engine_free_module_imports_no_workflow_code(path):
    workflow_modules = {module_name(p) for p in PACKAGE.rglob("*.py") if is_workflow_module(p)}
    for name in imported_modules(path):
        assert name.split(".")[0] not in ENGINES, f"{module_name(path)} imports {name}"
        assert not any(name == w or name.startswith(w + ".") for w in workflow_modules), f"{module_name(path)} imports {name}"


def package_of(module: str) -> str:
    """The unit a module belongs to: its subpackage (``uq_flows.labeling``) or top-level module."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycles_between_packages():
    """Stage packages never import flows/ (the loop imports them): shared pieces live in uq_flows.stages."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = package_of(module_name(path))
        for name in imported_modules(path):
            if name.startswith("uq_flows.") and package_of(name) != source:
                graph.setdefault(source, set()).add(package_of(name))

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return (*seen, nxt)
            if nxt not in seen:
                found = cycle_from(start, nxt, (*seen, nxt))
                if found:
                    return found
        return None

    cycles = [c for c in (cycle_from(p, p, (p,)) for p in sorted(graph)) if c]
    assert not cycles, "package import cycles: " + "; ".join(" → ".join(c) for c in cycles)
    assert "uq_flows.flows" in graph and "uq_flows.stages" in graph["uq_flows.labeling"]  # the graph is real
