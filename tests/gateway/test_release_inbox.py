"""The release inbox's reader against what the `mvb` user may put there (docs/releases.md 7.6;
gateway/release_inbox.py): each hostile shape refused with `inbox_item_invalid`, nothing
followed or read past its bound; a well-formed item read back as written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.release_inbox import (
    MAX_ITEM_JSON_BYTES,
    InboxItem,
    InboxItemRefused,
    item_names,
    put_item,
    read_item,
    remove_item,
)

VERSION = "1.0.1"
METADATA = {"timestamp.json": b"{}", "3.snapshot.json": b"{}", "2.root.json": b"{}"}


def written(tmp_path: Path) -> Path:
    """An install item as the box writes it; the inbox."""
    inbox = tmp_path / "inbox"
    sealed = tmp_path / "release.sealed"
    sealed.write_bytes(b"sealed bytes")
    item = InboxItem("install", VERSION, b"PEM", metadata=METADATA)
    put_item(inbox, tmp_path / "staging", item, sealed_file=sealed)
    return inbox


def test_an_item_is_read_back_as_the_box_wrote_it(tmp_path: Path) -> None:
    inbox = written(tmp_path)
    assert item_names(inbox) == [VERSION]
    item = read_item(inbox, VERSION)
    assert (item.kind, item.version, item.key_pem, item.sealed) == (
        "install", VERSION, b"PEM", b"sealed bytes",
    )  # fmt: skip
    assert item.metadata == {
        "timestamp.json": b"{}",
        "3.snapshot.json": b"{}",
        "2.root.json": b"{}",
    }
    assert not (tmp_path / "release.sealed").exists()  # moved in, not copied
    remove_item(inbox, VERSION)
    assert item_names(inbox) == []


def spoil_key_symlink(item: Path) -> None:
    (item / "release.key").unlink()
    (item / "release.key").symlink_to("/etc/passwd")


def spoil_fifo(item: Path) -> None:
    (item / "release.key").unlink()
    os.mkfifo(item / "release.key")


def spoil_metadata_name(item: Path) -> None:
    (item / "metadata" / "evil.py").write_bytes(b"x")


def spoil_metadata_dir_symlink(item: Path) -> None:
    (item / "metadata").rename(item / "elsewhere")
    (item / "metadata").symlink_to(item / "elsewhere")


def spoil_big_item_json(item: Path) -> None:
    (item / "item.json").write_bytes(b" " * (MAX_ITEM_JSON_BYTES + 1))


def spoil_other_version(item: Path) -> None:
    (item / "item.json").write_text('{"format":1,"kind":"install","version":"9.9.9"}')


def spoil_kind(item: Path) -> None:
    (item / "item.json").write_text('{"format":1,"kind":"run_as_root","version":"1.0.1"}')


def spoil_duplicate_member(item: Path) -> None:
    (item / "item.json").write_text('{"format":1,"kind":"install","version":"1.0.1","format":1}')


def spoil_missing_sealed(item: Path) -> None:
    (item / "release.sealed").unlink()


@pytest.mark.parametrize(
    "spoil",
    [
        spoil_key_symlink,
        spoil_fifo,
        spoil_metadata_name,
        spoil_metadata_dir_symlink,
        spoil_big_item_json,
        spoil_other_version,
        spoil_kind,
        spoil_duplicate_member,
        spoil_missing_sealed,
    ],
)
def test_a_hostile_item_is_refused(spoil: object, tmp_path: Path) -> None:
    inbox = written(tmp_path)
    assert callable(spoil)
    spoil(inbox / VERSION)
    with pytest.raises(InboxItemRefused) as refused:
        read_item(inbox, VERSION)
    assert refused.value.code == "inbox_item_invalid"
    remove_item(inbox, VERSION)
    assert item_names(inbox) == []
    assert Path("/etc/passwd").exists()  # a symlink is removed, never what it names


@pytest.mark.parametrize("name", ["..", "../opt", "1.0.1/..", "latest", ""])
def test_an_entry_named_other_than_a_version_is_refused(name: str, tmp_path: Path) -> None:
    inbox = written(tmp_path)
    with pytest.raises(InboxItemRefused):
        read_item(inbox, name)
