"""The dependency locks (docs/releases.md section 1): they satisfy pyproject.toml, every locked
requirement carries hashes, and the environment the tests run in is the locked one."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
_ENTRY = re.compile(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked(lock: str) -> dict[str, tuple[str, int]]:
    """{name: (version, hashes)} of the entries of `lock` that apply to this interpreter."""
    entries: dict[str, tuple[str, int]] = {}
    current: str | None = None
    for line in (ROOT / "requirements" / lock).read_text(encoding="utf-8").splitlines():
        match = _ENTRY.match(line)
        if match:
            name, version, marker = match.groups()
            applies = marker is None or Marker(marker).evaluate()
            current = canonicalize_name(name) if applies else None
            if current is not None:
                assert current not in entries, f"{lock}: {name} locked twice for this interpreter"
                entries[current] = (version, 0)
        elif line.strip().startswith("--hash=sha256:") and current is not None:
            version, hashes = entries[current]
            entries[current] = (version, hashes + 1)
    return entries


def required(extra: str | None) -> list[Requirement]:
    names = list(PYPROJECT["project"]["dependencies"])
    if extra is not None:
        names += PYPROJECT["project"]["optional-dependencies"][extra]
    return [Requirement(text) for text in names]


@pytest.mark.parametrize(("lock", "extra"), [("box.lock", None), ("test.lock", "test")])
def test_the_lock_satisfies_pyproject_and_hashes_every_entry(lock: str, extra: str | None) -> None:
    entries = locked(lock)
    assert entries, f"{lock} locks nothing"
    for requirement in required(extra):
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{lock} does not lock {requirement.name}: run `make lock`"
        version, _ = entries[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} locks {name}=={version}, pyproject asks {requirement}: run `make lock`"
        )
    unhashed = sorted(name for name, (_, hashes) in entries.items() if hashes == 0)
    assert unhashed == [], f"{lock}: entries without a hash: {unhashed}"


def test_the_box_lock_is_the_test_lock_without_the_test_tools() -> None:
    box, test = locked("box.lock"), locked("test.lock")
    differing = sorted(name for name, entry in box.items() if test.get(name, entry)[0] != entry[0])
    assert differing == [], f"the tests would run other versions than a release ships: {differing}"
    assert box.keys() <= test.keys()


def test_the_tests_run_on_the_locked_versions() -> None:
    """`make test` installs from test.lock with --require-hashes: so what runs is what is locked."""
    installed: dict[str, str] = {
        canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
    }
    drift = sorted(
        f"{name} {installed[name]} (locked {version})"
        for name, (version, _) in locked("test.lock").items()
        if name in installed and installed[name] != version
    )
    assert drift == [], f"the environment differs from requirements/test.lock: {drift}"
    missing = sorted(name for name in locked("test.lock") if name not in installed)
    assert missing == [], f"locked but not installed: {missing}"
