"""The release bundle's manifest and member rules (docs/releases.md section 2). PURE.

A bundle is a tar of `mvb-release/manifest.json`, `mvb-release/install.txt` and
`mvb-release/wheels/*.whl`. The back office writes it (backoffice/release_build.py), the box
checks it before it unpacks anything (gateway/release_install.py).

Invariants:
- `Manifest.from_json(m.to_json()) == m`, and `to_json` is canonical (equal manifests, equal bytes:
  the bundle is reproducible);
- a manifest names only `install.txt` and `wheels/<name>.whl` paths, each with a lower-case
  SHA-256 and a size, and nothing outside `mvb-release/`;
- `check_members` accepts a member list only if it is exactly the manifest plus its files, all
  regular files: no link, device, directory trick or absolute or `..` path reaches the unpacker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from common.faults import RemoteFault
from protocol.strict_json import Fields, dump_json, load_object

ROOT: Final = "mvb-release"
MANIFEST: Final = f"{ROOT}/manifest.json"
INSTALL: Final = "install.txt"
FORMAT: Final = 1
NAME: Final = "mobile-video-box"
PYTHON: Final = "3.11"
PLATFORMS: Final = ("x86_64", "aarch64")
MAX_MANIFEST_BYTES: Final = 256 * 1024
MAX_FILES: Final = 512
MAX_FILE_BYTES: Final = 512 * 1024**2
"""A wheel larger than this is not a dependency of ours (PyAV's is about 40 MB)."""

_WHEEL_PATH: Final = re.compile(r"wheels/[A-Za-z0-9_.+-]{1,200}\.whl")
_VERSION: Final = re.compile(r"[0-9]+(\.[0-9]+){0,3}([a-z]+[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?")
_COMMIT: Final = re.compile(r"([0-9a-f]{40})?")
_SHA256: Final = re.compile(r"[0-9a-f]{64}")


def is_version(text: str) -> bool:
    """A version a release may have (a subset of PEP 440: N[.N...][aN|bN|rcN][.postN][.devN])."""
    return _VERSION.fullmatch(text) is not None


class BundleError(ValueError, RemoteFault):
    """A bundle or manifest that fails the rules: nothing of it is installed."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    sha256: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a release bundle holds (docs/releases.md section 2)."""

    version: str
    platform: str
    source_commit: str
    lock_sha256: str
    files: Mapping[str, FileEntry]

    def to_json(self) -> bytes:
        return dump_json(
            {
                "format": FORMAT,
                "name": NAME,
                "version": self.version,
                "python": PYTHON,
                "platform": self.platform,
                "source_commit": self.source_commit,
                "lock_sha256": self.lock_sha256,
                "files": {
                    path: {"sha256": entry.sha256, "bytes": entry.size_bytes}
                    for path, entry in sorted(self.files.items())
                },
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        document = load_object(data, MAX_MANIFEST_BYTES, "the release manifest", BundleError)
        members = frozenset(
            {"format", "name", "version", "python", "platform", "source_commit"}
            | {"lock_sha256", "files"}
        )
        fields = Fields(document, members, "the release manifest", BundleError)
        fields.integer("format", FORMAT, FORMAT)
        if fields.raw("name") != NAME:
            fields.fail("name", repr(NAME))
        if fields.raw("python") != PYTHON:
            fields.fail("python", repr(PYTHON))
        platform = fields.text("platform", 16)
        if platform not in PLATFORMS:
            fields.fail("platform", f"one of {PLATFORMS}")
        manifest = cls(
            version=fields.text("version", 40, _VERSION),
            platform=platform,
            source_commit=fields.text("source_commit", 40, _COMMIT),
            lock_sha256=fields.text("lock_sha256", 64, _SHA256),
            files=_files(fields.raw("files")),
        )
        manifest.check_paths()
        return manifest

    def check_paths(self) -> None:
        """BundleError unless the files are `install.txt` and at least one wheel, all named by
        the rules (the builder calls this too, so it never writes a bundle the box refuses)."""
        if INSTALL not in self.files or len(self.files) < 2 or len(self.files) > MAX_FILES:
            raise BundleError(f"the manifest must name {INSTALL} and 1 to {MAX_FILES - 1} wheels")
        for path in self.files:
            if path != INSTALL and not _WHEEL_PATH.fullmatch(path):
                raise BundleError(f"the manifest names a path that is not allowed: {path!r}")

    def member_names(self) -> frozenset[str]:
        return frozenset({MANIFEST} | {f"{ROOT}/{path}" for path in self.files})


def _files(value: object) -> dict[str, FileEntry]:
    if not isinstance(value, dict) or len(value) > MAX_FILES:
        raise BundleError(f"files must be an object of at most {MAX_FILES} entries")
    files: dict[str, FileEntry] = {}
    for path, entry in value.items():
        fields = Fields(entry, frozenset({"sha256", "bytes"}), f"files[{path!r}]", BundleError)
        files[path] = FileEntry(
            sha256=fields.text("sha256", 64, _SHA256),
            size_bytes=fields.integer("bytes", 1, MAX_FILE_BYTES),
        )
    return files


@dataclass(frozen=True, slots=True)
class Member:
    """One tar member as the unpacker sees it, before reading its bytes."""

    name: str
    is_regular_file: bool
    size_bytes: int


def check_members(manifest: Manifest, members: Sequence[Member]) -> None:
    """BundleError unless `members` are exactly the manifest and its files, each a regular file
    of the size the manifest states, each once."""
    names = [member.name for member in members]
    if len(names) != len(set(names)):
        raise BundleError("the bundle holds a member twice")
    expected = manifest.member_names()
    if set(names) != expected:
        extra, missing = sorted(set(names) - expected), sorted(expected - set(names))
        raise BundleError(f"the bundle's members differ: extra {extra[:5]}, missing {missing[:5]}")
    for member in members:
        if not member.is_regular_file:
            raise BundleError(f"{member.name} is not a regular file")
        relative = member.name.removeprefix(f"{ROOT}/")
        if relative in manifest.files and member.size_bytes != manifest.files[relative].size_bytes:
            raise BundleError(f"{member.name} is not the size the manifest states")
