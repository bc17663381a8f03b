"""The box does not depend on the back office's package: what both sides share is protocol/.

Read from the source (the import statements), so a new module that reaches across is caught
before it runs anywhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOX_PACKAGES = ("gateway", "transport", "storage", "config", "protocol")


def imported_packages(path: Path) -> set[str]:
    """The top-level packages that the module at `path` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.partition(".")[0])
    return names


def box_modules() -> list[Path]:
    return [
        path.relative_to(ROOT)
        for package in BOX_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


@pytest.mark.parametrize("module", box_modules(), ids=str)
def test_box_modules_do_not_import_the_back_office(module: Path) -> None:
    assert "backoffice" not in imported_packages(ROOT / module)


@pytest.mark.parametrize("module", sorted((ROOT / "protocol").glob("*.py")), ids=lambda p: p.name)
def test_the_shared_protocol_imports_neither_side(module: Path) -> None:
    assert not imported_packages(module) & {"backoffice", "gateway", "config", "storage"}
