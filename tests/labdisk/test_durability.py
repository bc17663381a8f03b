"""labdisk's pure model: what a cut puts back, driven directly (no FUSE, no files).

`FakeFile` plays the shell for one file: it saves the pages the model asks for before every
change, as labdisk/fs_io.py does, and applies a cut's DataRestore to its bytes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labdisk.durability import (
    PAGE_BYTES,
    DurabilityModel,
    DurableDir,
    LastWrite,
    LiveTree,
    check_mode,
    torn_pages,
    write_pages,
)

INO = 7


class FakeFile:
    def __init__(self, model: DurabilityModel, content: bytes = b"") -> None:
        self.model = model
        self.data = bytearray(content)

    def _save(self, start: int, end: int) -> None:
        size = len(self.data)
        for page in self.model.pages_to_save(INO, start, end, size):
            length = self.model.durable_page_length(INO, page, size)
            chunk = bytes(self.data[page * PAGE_BYTES : page * PAGE_BYTES + length])
            self.model.save_page(INO, page, chunk.ljust(length, b"\0"), size)

    def write(self, offset: int, data: bytes) -> None:
        size = len(self.data)
        self._save(offset, offset + len(data))
        if offset > size:
            self.data.extend(b"\0" * (offset - size))
        self.data[offset : offset + len(data)] = data
        self.model.wrote(INO, offset, data, size)

    def truncate(self, length: int) -> None:
        size = len(self.data)
        self._save(length, size)
        if length < size:
            del self.data[length:]
        else:
            self.data.extend(b"\0" * (length - size))
        self.model.truncated(INO, size, length)

    def cut(self) -> bytes:
        for restore in self.model.data_restores():
            assert restore.ino == INO
            for page, chunk in restore.pages.items():
                start = page * PAGE_BYTES
                if start > len(self.data):
                    self.data.extend(b"\0" * (start - len(self.data)))
                self.data[start : start + len(chunk)] = chunk
            del self.data[restore.durable_size :]
            self.data.extend(b"\0" * (restore.durable_size - len(self.data)))
        self.model.reset()
        return bytes(self.data)


def test_an_unsynced_overwrite_is_put_back_and_a_synced_one_is_not() -> None:
    model = DurabilityModel()
    file = FakeFile(model, b"a" * 10_000)
    file.write(5000, b"b" * 100)
    assert model.pages_to_save(INO, 0, 10_000, 10_000) == [0, 2]  # page 1 is saved already
    assert file.cut() == b"a" * 10_000
    file.write(5000, b"b" * 100)
    model.fsync_file(INO)
    assert model.data_restores() == []
    assert file.cut() == b"a" * 5000 + b"b" * 100 + b"a" * 4900


def test_an_append_saves_nothing_and_is_cut_off() -> None:
    model = DurabilityModel()
    file = FakeFile(model, b"x" * PAGE_BYTES)
    file.write(PAGE_BYTES, b"y" * 3 * PAGE_BYTES)
    assert model.files[INO].saved == {}
    assert model.unsynced_bytes() == 3 * PAGE_BYTES
    assert file.cut() == b"x" * PAGE_BYTES


def test_a_truncate_saves_what_it_cuts_away() -> None:
    model = DurabilityModel()
    file = FakeFile(model, bytes(range(256)) * 40)
    file.truncate(100)
    file.write(100, b"z" * 50)
    assert file.cut() == bytes(range(256)) * 40


def test_a_new_file_is_empty_when_cut_even_after_its_writes() -> None:
    model = DurabilityModel()
    model.created_inode(INO, regular=True)
    file = FakeFile(model)
    file.write(0, b"new" * 1000)
    assert file.cut() == b""


@settings(max_examples=200, deadline=None)
@given(
    initial=st.binary(max_size=3 * PAGE_BYTES),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("write"), st.integers(0, 4 * PAGE_BYTES), st.binary(max_size=9000)),
            st.tuples(st.just("truncate"), st.integers(0, 4 * PAGE_BYTES), st.just(b"")),
            st.tuples(st.just("fsync"), st.just(0), st.just(b"")),
        ),
        max_size=12,
    ),
)
def test_a_cut_leaves_the_content_of_the_last_fsync(
    initial: bytes, steps: list[tuple[str, int, bytes]]
) -> None:
    model = DurabilityModel()
    file = FakeFile(model, initial)
    durable = initial
    for kind, number, data in steps:
        if kind == "write":
            file.write(number, data)
        elif kind == "truncate":
            file.truncate(number)
        else:
            model.fsync_file(INO)
            durable = bytes(file.data)
    assert file.cut() == durable


def test_an_inode_number_used_again_starts_clean() -> None:
    model = DurabilityModel()
    model.wrote(INO, 0, b"x", size_before=100)
    model.entry_changed(INO, "child", None)
    model.created_inode(INO, regular=True)
    assert model.files[INO].durable_size == 0
    assert INO not in model.pending
    assert model.last_write is None


ROOT, EVIDENCE, REC, SEG, OTHER = 1, 2, 3, 4, 5


def tree_paths(tree: DurableDir) -> dict[str, int]:
    return {path: node.ino if isinstance(node, DurableDir) else node for path, node in tree.walk()}


def evidence_live() -> LiveTree:
    """root/evidence/rec/seg, and root/other: all created since the last sync."""
    return LiveTree(
        ROOT,
        {ROOT: {"evidence": EVIDENCE, "other": OTHER}, EVIDENCE: {"rec": REC}, REC: {"seg": SEG}},
        {ROOT, EVIDENCE, REC},
    )


def create_all(model: DurabilityModel) -> None:
    for parent, name, ino, regular in (
        (ROOT, "evidence", EVIDENCE, False),
        (EVIDENCE, "rec", REC, False),
        (REC, "seg", SEG, True),
        (ROOT, "other", OTHER, True),
    ):
        model.created_inode(ino, regular=regular)
        model.entry_changed(parent, name, None)


def test_strict_an_entry_is_durable_only_when_its_directory_is_synced() -> None:
    model = DurabilityModel("strict")
    create_all(model)
    model.fsync_file(SEG)
    model.fsync_dir(REC)
    model.fsync_dir(EVIDENCE)
    tree, missing = model.durable_tree(evidence_live())
    assert tree_paths(tree) == {}  # the card root was never synced: nothing is reachable
    assert missing == []
    model.fsync_dir(ROOT)
    assert tree_paths(model.durable_tree(evidence_live())[0]) == {
        "evidence": EVIDENCE,
        "evidence/rec": REC,
        "evidence/rec/seg": SEG,
        "other": OTHER,
    }


def test_ext4_any_fsync_commits_every_entry() -> None:
    model = DurabilityModel("ext4")
    create_all(model)
    model.wrote(OTHER, 0, b"data", size_before=0)
    model.fsync_file(SEG)
    assert model.pending == {}
    assert set(tree_paths(model.durable_tree(evidence_live())[0])) == {
        "evidence",
        "evidence/rec",
        "evidence/rec/seg",
        "other",
    }
    assert [restore.ino for restore in model.data_restores()] == [OTHER]  # its data: still not


def test_a_rename_over_a_name_reverts_until_the_directory_is_synced() -> None:
    old, new = 10, 11
    model = DurabilityModel("strict")
    # root holds "name" -> old (durable); "name.tmp" -> new is created, then renamed over "name"
    model.created_inode(new, regular=True)
    model.entry_changed(ROOT, "name.tmp", None)
    model.entry_changed(ROOT, "name.tmp", new)  # the rename's first record is kept
    model.entry_changed(ROOT, "name", old)
    live = LiveTree(ROOT, {ROOT: {"name": new}}, {ROOT}, parked={old})
    assert tree_paths(model.durable_tree(live)[0]) == {"name": old}
    assert model.referenced_inodes() == {old}
    model.fsync_dir(ROOT)
    assert tree_paths(model.durable_tree(live)[0]) == {"name": new}
    assert model.referenced_inodes() == set()


def test_an_unlinked_directory_comes_back_with_its_durable_entries() -> None:
    model = DurabilityModel("strict")
    model.entry_changed(EVIDENCE, "rec", REC)  # rec unlinked from evidence (rmdir after emptying)
    model.entry_changed(REC, "seg", SEG)  # seg unlinked from rec
    model.entry_changed(ROOT, "evidence", EVIDENCE)
    live = LiveTree(ROOT, {ROOT: {}, EVIDENCE: {}, REC: {}}, {ROOT, EVIDENCE, REC})
    live.parked = {EVIDENCE, REC, SEG}
    assert tree_paths(model.durable_tree(live)[0]) == {
        "evidence": EVIDENCE,
        "evidence/rec": REC,
        "evidence/rec/seg": SEG,
    }


def test_a_durable_entry_without_an_inode_is_reported_not_invented() -> None:
    model = DurabilityModel("strict")
    model.entry_changed(ROOT, "ghost", 99)
    tree, missing = model.durable_tree(LiveTree(ROOT, {ROOT: {}}, {ROOT}))
    assert tree_paths(tree) == {}
    assert missing == ["ghost"]


def test_a_torn_write_keeps_whole_pages_of_itself() -> None:
    write = LastWrite(INO, PAGE_BYTES - 10, b"a" * 10 + b"b" * PAGE_BYTES + b"c" * 5)
    assert list(write_pages(write)) == [0, 1, 2]
    kept = torn_pages(write, {0: True, 1: False, 2: True})
    assert kept == [(PAGE_BYTES - 10, b"a" * 10), (2 * PAGE_BYTES, b"c" * 5)]
    assert torn_pages(write, {}) == []


def test_the_last_write_is_forgotten_once_durable() -> None:
    model = DurabilityModel()
    model.wrote(INO, 0, b"x", size_before=0)
    assert model.last_write == LastWrite(INO, 0, b"x")
    model.fsync_file(INO)
    assert model.last_write is None


def test_modes_are_checked() -> None:
    assert check_mode("ext4") == "ext4"
    with pytest.raises(ValueError, match="unknown labdisk mode"):
        check_mode("xfs")
