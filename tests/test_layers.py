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
