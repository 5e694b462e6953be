"""Workers compute, the catalog owns the rows: the task modules on the classify, bulk and training
paths import catalog services and selectors, never the ORM (`catalog.models`, `django.db`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKERS = Path(__file__).resolve().parents[2] / "workers"
ORM = ("catalog.models", "django.db")


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", ["tasks", "bulk", "classify", "inference", "training"])
def test_a_worker_module_on_the_hot_paths_imports_no_orm(module: str) -> None:
    imported = _imported(WORKERS / f"{module}.py")
    assert [name for name in imported if name.startswith(ORM)] == []
