"""The release manifest and the bundle's member rules (protocol/release_manifest.py): what the
box accepts before it unpacks a single file."""

from __future__ import annotations

import json

import pytest

from protocol.release_manifest import (
    INSTALL,
    MANIFEST,
    ROOT,
    BundleError,
    FileEntry,
    Manifest,
    Member,
    check_members,
)

SHA = "ab" * 32
WHEEL = "wheels/aiohttp-3.14.5-cp311-cp311-manylinux_2_17_x86_64.whl"


def manifest(**changes: object) -> Manifest:
    fields: dict[str, object] = {
        "version": "0.2.0",
        "platform": "aarch64",
        "source_commit": "0" * 40,
        "lock_sha256": SHA,
        "files": {INSTALL: FileEntry(SHA, 10), WHEEL: FileEntry(SHA, 2000)},
    }
    fields.update(changes)
    return Manifest(**fields)  # type: ignore[arg-type]


def document(**changes: object) -> bytes:
    value = json.loads(manifest().to_json())
    value.update(changes)
    return json.dumps(value).encode()


def members(m: Manifest) -> list[Member]:
    return [Member(MANIFEST, True, 300)] + [
        Member(f"{ROOT}/{path}", True, entry.size_bytes) for path, entry in m.files.items()
    ]


def test_a_manifest_reads_back_as_itself_in_canonical_bytes() -> None:
    m = manifest()
    assert Manifest.from_json(m.to_json()) == m
    reordered = manifest(files=dict(reversed(list(m.files.items()))))
    assert reordered.to_json() == m.to_json(), "equal manifests, equal bytes (reproducible)"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"format": 2}, "format"),
        ({"name": "other"}, "name"),
        ({"python": "3.12"}, "python"),
        ({"platform": "armv7l"}, "platform"),
        ({"version": "1.0; rm -rf /"}, "version"),
        ({"source_commit": "HEAD"}, "source_commit"),
        ({"lock_sha256": "AB" * 32}, "lock_sha256"),
        ({"extra": 1}, "unknown members"),
        ({"files": {INSTALL: {"sha256": SHA, "bytes": 10}}}, "wheels"),
        (
            {"files": {INSTALL: {"sha256": SHA, "bytes": 0}, WHEEL: {"sha256": SHA, "bytes": 1}}},
            "bytes",
        ),
        (
            {"files": {INSTALL: {"sha256": SHA, "bytes": 1}, "wheels/x.whl": {"sha256": SHA}}},
            "missing",
        ),
    ],
)
def test_a_manifest_that_breaks_a_rule_is_refused_naming_it(
    changes: dict[str, object], named: str
) -> None:
    with pytest.raises(BundleError, match=named):
        Manifest.from_json(document(**changes))


@pytest.mark.parametrize(
    "path",
    ["../etc/passwd", "/etc/passwd", "wheels/../../x.whl", "wheels/sub/x.whl", "bin/mvb", "x.whl"],
)
def test_a_manifest_naming_a_path_outside_its_rules_is_refused(path: str) -> None:
    entries = {INSTALL: {"sha256": SHA, "bytes": 1}, path: {"sha256": SHA, "bytes": 1}}
    with pytest.raises(BundleError, match="not allowed"):
        Manifest.from_json(document(files=entries))


def test_a_duplicate_member_or_a_json_trick_is_refused() -> None:
    with pytest.raises(BundleError, match="twice"):
        Manifest.from_json(b'{"format": 1, "format": 1}')
    with pytest.raises(BundleError, match="JSON"):
        Manifest.from_json(b"\xff")


def test_the_members_must_be_exactly_the_manifest_and_its_files() -> None:
    m = manifest()
    check_members(m, members(m))
    with pytest.raises(BundleError, match="extra"):
        check_members(m, [*members(m), Member(f"{ROOT}/wheels/evil.whl", True, 5)])
    with pytest.raises(BundleError, match="missing"):
        check_members(m, members(m)[:-1])
    with pytest.raises(BundleError, match="twice"):
        check_members(m, [*members(m), members(m)[-1]])
    linked = [*members(m)[:-1], Member(f"{ROOT}/{WHEEL}", False, 0)]
    with pytest.raises(BundleError, match="not a regular file"):
        check_members(m, linked)
    resized = [*members(m)[:-1], Member(f"{ROOT}/{WHEEL}", True, 1999)]
    with pytest.raises(BundleError, match="size"):
        check_members(m, resized)
