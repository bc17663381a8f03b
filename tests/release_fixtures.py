"""Release bundles of this checkout's HEAD (`mvb-admin release build`), each distinct one built
once per test session and shared by every test that installs or inspects it: a build exports the
tree, builds the project's wheel and has pip fetch every locked wheel (about 47 MiB), tens of
seconds each. The `release_bundles` fixture (tests/conftest.py) hands out the session's one
`ReleaseBundles`.

A test must not change a bundle it is given (copy it first, as the tampering tests do).
"""

from __future__ import annotations

import platform
import subprocess
import tomllib
from pathlib import Path

from backoffice.release_build import build_release
from protocol.release_manifest import Manifest

REPOSITORY = Path(__file__).resolve().parents[1]
PLATFORM = platform.machine()


def head_version() -> str:
    """The version a bundle built without `version=` has: pyproject.toml's at HEAD (the build
    reads the commit, not the working tree)."""
    shown = subprocess.run(
        ["git", "-C", str(REPOSITORY), "show", "HEAD:pyproject.toml"],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(tomllib.loads(shown.stdout)["project"]["version"])


def later_version(version: str, step: int) -> str:
    """A release version above `version` (its first number plus one), `step` apart from the
    others made from it: a test's "newer release" whatever the project's own version is."""
    major = int(version.split(".", 1)[0].rstrip("abcdefghijklmnopqrstuvwxyz"))
    return f"{major + 1}.0.{step}"


class ReleaseBundles:
    """Bundles built on first request, by version (None: the project's own), kept for the
    session in `directory`."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._built: dict[str | None, tuple[Path, Manifest]] = {}

    def get(self, version: str | None = None) -> tuple[Path, Manifest]:
        """The bundle of HEAD with `version` (None: pyproject.toml's) and its manifest."""
        if version not in self._built:
            out = self._directory / (version or "head")
            self._built[version] = build_release(REPOSITORY, out, PLATFORM, version=version)
        return self._built[version]
