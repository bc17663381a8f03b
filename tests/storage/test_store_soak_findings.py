"""What the whole-box soak (tests/soak/) found in the store, each reproduced on its own.

- Two retention passes at once: the uplink applies retention after every attested upload, from a
  worker thread, so two uploads that end together run two passes. Each must see the other's
  deletions: a file is deleted, and audited, exactly once.
- A power cut between a state change and its audit entry: the catalog said VERIFIED (or
  DELETED) but the log never heard of the attestation (or the deletion), and nothing at the next
  start writes it (RULES S5: the chain is logged up to the final deletion). The audit entry now
  comes first: a cut between the two leaves an entry whose step is done again, and logged again,
  at the next start.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import common.durable
from storage.envelope import RecipientPrivateKey
from storage.models import FileState
from storage.store import EvidenceStore
from tests.capture_helpers import store_on
from tests.transport.uplink_rig import record_evidence

BARRIER_WAIT_S = 0.5


def attested_files(store: EvidenceStore, count: int) -> list[str]:
    """`count` sealed files the back office attested: retention may delete them at once."""
    for _ in range(count):
        record_evidence(store, 1000)
    records = [r for r in store.catalog.all() if r.state is FileState.SEALED]
    for record in records:
        assert record.sha256_hex is not None
        store.record_attestation(record.file_id, record.sha256_hex)
    return [r.file_id for r in records]


def first_unlink_waits_for_the_other_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hold each pass at its first deletion until the other pass got there too (if it can get
    there: a pass that must wait for the first one's end finds the barrier given up)."""
    barrier = threading.Barrier(2, timeout=BARRIER_WAIT_S)
    unlink: Callable[[Path], None] = common.durable.durable_unlink
    waited: set[int] = set()

    def unlink_after_barrier(path: Path) -> None:
        if threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            # Broken: the other pass is not running beside this one, nothing to line up.
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()
        unlink(path)

    monkeypatch.setattr("storage.store_retention.durable_unlink", unlink_after_barrier)


def test_two_retention_passes_at_once_delete_each_file_once(
    tmp_path: Path, recipient: RecipientPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    with store_on(tmp_path, recipient) as store:
        file_ids = attested_files(store, 3)
        first_unlink_waits_for_the_other_pass(monkeypatch)
        failures: list[BaseException] = []

        def one_pass() -> None:
            try:
                store.apply_retention()
            except BaseException as exc:  # the thread's failure is the test's
                failures.append(exc)

        passes = [threading.Thread(target=one_pass) for _ in range(2)]
        for thread in passes:
            thread.start()
        for thread in passes:
            thread.join()
        assert failures == []
        assert {r.file_id: r.state for r in store.catalog.all()} == dict.fromkeys(
            file_ids, FileState.DELETED
        )
        audit_lines = (tmp_path / "state" / "audit.jsonl").read_text().splitlines()
    deleted = [
        json.loads(line)["fields"]["file_id"]
        for line in audit_lines
        if json.loads(line)["event"] == "storage.file_deleted"
    ]
    assert sorted(deleted) == sorted(file_ids)
    assert list(store.layout.sealed_files()) == []


class PowerCut(BaseException):
    """The process dies here: nothing after this point of the call happens."""


def cut_power_at(monkeypatch: pytest.MonkeyPatch, store: EvidenceStore, event: str) -> None:
    """The box loses power as it is about to append `event` to its audit log."""
    append = store.audit.append

    def append_or_die(name: str, /, **fields: Any) -> Any:
        if name == event:
            raise PowerCut(name)
        return append(name, **fields)

    monkeypatch.setattr(store.audit, "append", append_or_die)


def events_of(tmp_path: Path, file_id: str) -> list[str]:
    lines = (tmp_path / "state" / "audit.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    return [e["event"] for e in entries if e["fields"].get("file_id") == file_id]


def test_a_power_cut_at_the_attestation_leaves_nothing_deletable_unaudited(
    tmp_path: Path, recipient: RecipientPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    with store_on(tmp_path, recipient) as store:
        record_evidence(store, 1000)
        (record,) = store.catalog.all()
        assert record.sha256_hex is not None
        cut_power_at(monkeypatch, store, "storage.file_attested")
        with pytest.raises(PowerCut):
            store.record_attestation(record.file_id, record.sha256_hex)
    monkeypatch.undo()
    with store_on(tmp_path, recipient) as store:  # the next start
        assert store.apply_retention() == []
        assert store.layout.sealed_path(record.recording_id, record.file_id).exists()
        store.record_attestation(record.file_id, record.sha256_hex)  # the back office, again
        assert [d.file_id for d in store.apply_retention()] == [record.file_id]
    assert events_of(tmp_path, record.file_id) == [
        "storage.file_sealed",
        "storage.file_attested",
        "storage.file_deleted",
    ]


def test_a_power_cut_at_the_deletion_is_audited_at_the_next_start(
    tmp_path: Path, recipient: RecipientPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    with store_on(tmp_path, recipient) as store:
        (file_id,) = attested_files(store, 1)
        cut_power_at(monkeypatch, store, "storage.file_deleted")
        with pytest.raises(PowerCut):
            store.apply_retention()
    monkeypatch.undo()
    with store_on(tmp_path, recipient) as store:  # the next start
        assert [d.file_id for d in store.apply_retention()] == [file_id]
        record = store.catalog.get(file_id)
        assert record is not None
        assert record.state is FileState.DELETED
    assert events_of(tmp_path, file_id) == [
        "storage.file_sealed",
        "storage.file_attested",
        "storage.file_deleted",
    ]


def test_a_power_cut_at_the_seal_leaves_no_sealed_file_unaudited(
    tmp_path: Path, recipient: RecipientPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soak found a file at the back office that the box's audit log never named: the cut
    came after the rename to `.mvbe` and before `storage.file_sealed`. The seal is audited
    first now: a cut there leaves a whole `.part`, which recovery completes and audits."""
    with store_on(tmp_path, recipient) as store:
        cut_power_at(monkeypatch, store, "storage.file_sealed")
        with pytest.raises(PowerCut):
            record_evidence(store, 1000)
        assert list(store.layout.sealed_files()) == []  # nothing sealed the log does not name
        (part,) = store.layout.part_files()
        file_id = part.name.split(".")[0]
    monkeypatch.undo()
    with store_on(tmp_path, recipient) as store:  # the next start: recovery completes the seal
        (record,) = store.catalog.all()
        assert (record.file_id, record.state) == (file_id, FileState.SEALED)
        assert record.interrupted_at_chunk is None  # its last chunk was on the card: whole
    assert events_of(tmp_path, file_id) == ["storage.seal_completed"]


def test_the_seal_is_audited_before_its_name_changes(
    tmp_path: Path, recipient: RecipientPrivateKey
) -> None:
    """When the audit entry is durable the file is still a `.part`: a cut right after it makes
    recovery complete a seal the log already named (the same SHA-256), never the reverse."""
    with store_on(tmp_path, recipient) as store:
        append = store.audit.append
        seen: list[tuple[bool, bool]] = []

        def append_and_look(name: str, /, **fields: Any) -> Any:
            entry = append(name, **fields)
            if name == "storage.file_sealed":
                recording, file_id = str(fields["recording_id"]), str(fields["file_id"])
                sealed = store.layout.sealed_path(recording, file_id).exists()
                part = store.layout.part_path(recording, file_id).exists()
                seen.append((part, sealed))
            return entry

        store.audit.append = append_and_look  # type: ignore[method-assign]
        record_evidence(store, 1000)
    assert seen == [(True, False)]
