"""One durable writer: only common/durable.py renames, makes tmp files or fsyncs a directory.

Read from the source (ast), so a new hand-written "tmp, fsync, rename" (which tends to forget the
directory fsync, or to leave tmp names the sweep does not know) is caught before it runs. Every
non-test module is read: the product packages, and the tools beside them (bench/, labnet/, demo/).

What counts as a rename or a tmp file:
- `os.replace`, `os.rename`, `os.renames`, `shutil.move`, and importing any of them by name;
- any `<x>.rename(...)` call (Path.rename; nothing else we use has a `rename` method);
- `<x>.replace(y)` with exactly one positional argument and no keywords: Path.replace. str and
  bytes `replace` need two arguments, `datetime.replace` and `dataclasses.replace` take keywords;
- `tempfile.NamedTemporaryFile`, `tempfile.mkstemp`, and importing them by name;
- `os.O_DIRECTORY`: opening a directory, which we only do to fsync it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THE_DURABLE_WRITER = Path("common/durable.py")
NOT_SCANNED = frozenset({"tests", ".venv", ".git", "node_modules", "build"})
"""tests/ renames freely (it stages crashes and leftovers on purpose); the rest is not ours."""

ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        # labdisk is a file system: its rename operation renames in the backing directory, and
        # what is durable there is its model's business (labdisk/durability.py), not an fsync's.
        ("labdisk/cut_io.py", "os.rename(source, target)"),
        ("labdisk/fs_io.py", "self.operations.rename(old_path, new_path, flags)"),
    }
)
"""(module, what) pairs where a rename is not a durable write. Keep it short, and say why next
to every entry you add."""

FORBIDDEN_CALLS = {
    ("os", "replace"),
    ("os", "rename"),
    ("os", "renames"),
    ("shutil", "move"),
    ("tempfile", "NamedTemporaryFile"),
    ("tempfile", "mkstemp"),
}
FORBIDDEN_ATTRIBUTES = {("os", "O_DIRECTORY")}


def non_test_modules() -> list[Path]:
    return sorted(
        path.relative_to(ROOT)
        for path in ROOT.rglob("*.py")
        if not NOT_SCANNED & set(path.relative_to(ROOT).parts)
        and not any(part.endswith(".egg-info") for part in path.parts)
    )


def _dotted(node: ast.expr) -> tuple[str, str] | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id, node.attr
    return None


def durable_writes(source: str) -> list[str]:
    """What `source` does that only the durable writer may do, as `line: code` strings."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        what: str | None = None
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = {alias.name for alias in node.names}
            if any((node.module, name) in FORBIDDEN_CALLS for name in names):
                what = ast.unparse(node)
        elif isinstance(node, ast.Attribute) and _dotted(node) in FORBIDDEN_ATTRIBUTES:
            what = ast.unparse(node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            is_path_replace = (
                func.attr == "replace"
                and len(node.args) == 1
                and not node.keywords
                and _dotted(func) != ("dataclasses", "replace")
            )
            if _dotted(func) in FORBIDDEN_CALLS or func.attr == "rename" or is_path_replace:
                what = ast.unparse(node)
        if what is not None:
            found.append(f"{getattr(node, 'lineno', 0)}: {what}")
    return found


@pytest.mark.parametrize("module", non_test_modules(), ids=str)
def test_only_the_durable_writer_renames_or_makes_tmp_files(module: Path) -> None:
    if module == THE_DURABLE_WRITER:
        return
    found = [
        line
        for line in durable_writes((ROOT / module).read_text(encoding="utf-8"))
        if (str(module), line.partition(": ")[2]) not in ALLOWED
    ]
    assert not found, f"{module}: write through common/durable.py instead of {found}"


@pytest.mark.parametrize(
    "source",
    [
        "import os\nos.replace(a, b)",
        "from os import rename",
        "import shutil\nshutil.move(a, b)",
        "tmp.rename(final)",
        "Path(tmp).replace(final)",
        "import tempfile\ntempfile.NamedTemporaryFile(dir=d)",
        "from tempfile import mkstemp",
        "import os\nfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)",
    ],
)
def test_the_scan_sees_every_kind_of_rename(source: str) -> None:
    assert durable_writes(source)


@pytest.mark.parametrize(
    "source",
    [
        "text.replace('a', 'b')",
        "stamp.replace(tzinfo=UTC)",
        "import dataclasses\ndataclasses.replace(record, state=s)",
        "replace(record, state=s)",
        "import tempfile\ntempfile.TemporaryDirectory()",
        "from common.durable import durable_rename\ndurable_rename(a, b)",
    ],
)
def test_the_scan_leaves_other_calls_alone(source: str) -> None:
    assert not durable_writes(source)


def test_the_scan_reads_the_product_and_the_tools() -> None:
    modules = {module.parts[0] for module in non_test_modules()}
    assert {"common", "storage", "gateway", "backoffice", "config", "bench"} <= modules
    assert THE_DURABLE_WRITER in non_test_modules()
