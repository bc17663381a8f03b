"""The demo and the simulators stand outside the product: no product module imports `demo`, and
the box reaches the demo's camera kinds only through the entry points it declares.

Read from the source (every import statement, also inside functions and TYPE_CHECKING blocks),
so a module that reaches into demo/ is caught before it runs anywhere; and checked at run time:
importing the box's entry points loads no demo module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from gateway.capture.sources import ENTRY_POINT_GROUP

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("common", "storage", "transport", "protocol", "config", "gateway", "backoffice")


def imported_modules(path: Path) -> set[str]:
    """The absolute module names that the module at `path` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def product_modules() -> list[Path]:
    return [
        path.relative_to(ROOT)
        for package in PRODUCT_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


def test_every_product_package_is_scanned() -> None:
    scanned = {module.parts[0] for module in product_modules()}
    assert scanned == set(PRODUCT_PACKAGES)


@pytest.mark.parametrize("module", product_modules(), ids=str)
def test_product_modules_do_not_import_demo(module: Path) -> None:
    reaching = sorted(
        name for name in imported_modules(ROOT / module) if name.partition(".")[0] == "demo"
    )
    assert not reaching, f"{module} imports {reaching}"


def test_starting_the_box_loads_no_demo_module() -> None:
    """`mvb` and `mvb-admin` with everything they import at start, in a fresh interpreter."""
    probe = (
        "import sys, gateway.cli, gateway.run, backoffice.cli; "
        "print(sorted(m for m in sys.modules if m == 'demo' or m.startswith('demo.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]"


def declared_camera_sources() -> dict[str, str]:
    """The entry points pyproject.toml declares for the box's camera source factory."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared: dict[str, str] = project["entry-points"][ENTRY_POINT_GROUP]
    return declared


def test_pyproject_declares_the_demo_camera_kinds() -> None:
    assert declared_camera_sources() == {
        "synthetic": "demo.sources:synthetic_source",
        "replay": "demo.sources:replay_source",
    }


def test_the_installed_entry_points_are_the_declared_ones_and_resolve() -> None:
    """A stale install (pyproject changed, venv not reinstalled) fails here, not mid-test."""
    installed = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert {name: ep.value for name, ep in installed.items()} == declared_camera_sources()
    for ep in installed.values():
        assert callable(ep.load()), ep.value
