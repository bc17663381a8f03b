"""The back office's judge of a box's audit log (backoffice/audit_custody.py, pure): the held
log only grows, and a box cannot take back a head it signed. Logs are real AuditLog files."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from backoffice.audit_custody import (
    MAX_CLAIMS,
    Claim,
    Custody,
    Outcome,
    Refusal,
    Verdict,
    judge_append,
    judge_head,
)
from storage.audit import split_lines
from storage.audit_head import AuditHead, SignedHead
from storage.audit_io import AuditLog
from storage.devicekey import DeviceKey
from transport.audit_wire import Batch, parse_batch


class Box:
    """A box's log, and what the back office would hold of it."""

    def __init__(self, path: Path, key: DeviceKey) -> None:
        ticks = itertools.count(1_700_000_000_000, 1000)
        self.key = key
        self.log = AuditLog.open(path, key, clock_ms=lambda: next(ticks))

    def add(self, count: int, event: str = "gateway.trigger") -> None:
        for number in range(count):
            self.log.append(event, number=number)

    def lines(self) -> list[bytes]:
        return split_lines(self.log.path.read_bytes())[0]

    def batch(self, first: int, last: int) -> Batch:
        batch = parse_batch(b"".join(line + b"\n" for line in self.lines()[first : last + 1]))
        assert batch is not None
        return batch

    def head(self) -> SignedHead:
        return self.log.signed_head()


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    made = Box(tmp_path / "audit.jsonl", DeviceKey.generate())
    yield made
    made.log.close()


class Office:
    """The held custody and the held lines, as the shell keeps them."""

    def __init__(self) -> None:
        self.custody = Custody()
        self.lines: list[bytes] = []

    def held_hash(self, seq: int) -> str:
        return hashlib.sha256(self.lines[seq]).hexdigest()

    def append(self, box: Box, batch: Batch | None, head: SignedHead | None = None) -> Verdict:
        verdict = judge_append(
            self.custody,
            batch,
            head or box.head(),
            box.key.public_key(),
            self.held_hash,
            at_ms=1,
        )
        self._take(verdict)
        return verdict

    def observe(self, head: SignedHead, via: str = "upload") -> Verdict:
        verdict = judge_head(self.custody, head, via, self.held_hash, at_ms=2)
        self._take(verdict)
        return verdict

    def _take(self, verdict: Verdict) -> None:
        self.lines += verdict.new_lines
        self.custody = verdict.custody


def test_a_log_shipped_in_pieces_is_held_whole_and_resending_is_idempotent(box: Box) -> None:
    office = Office()
    box.add(5)
    first = office.append(box, box.batch(0, 2))
    assert (first.outcome, office.custody.held.seq) == (Outcome.HELD, 2)
    assert office.custody.device_key == box.key.public_key()
    again = office.append(box, box.batch(0, 2))  # the answer was lost: sent again
    assert (again.outcome, again.new_lines) == (Outcome.HELD, ())
    overlapping = office.append(box, box.batch(1, 4))
    assert overlapping.outcome is Outcome.HELD
    assert office.lines == box.lines()
    assert office.custody.held == box.log.durable_end()[0]


def test_a_gap_asks_the_box_to_start_after_what_is_held(box: Box) -> None:
    office = Office()
    box.add(6)
    office.append(box, box.batch(0, 1))
    verdict = office.append(box, box.batch(4, 5))
    assert verdict.outcome is Outcome.START_ELSEWHERE
    assert office.custody.held.seq == 1


def test_a_truncated_log_that_goes_on_is_a_rewrite(box: Box, tmp_path: Path) -> None:
    office = Office()
    box.add(6)
    office.append(box, box.batch(0, 5))
    # The attacker cuts the box's log to 3 entries; the box appends on from there.
    box.log.close()
    lines = box.lines()[:3]
    box.log.path.write_bytes(b"".join(line + b"\n" for line in lines))
    reopened = Box(box.log.path, box.key)
    reopened.add(4, event="gateway.stop")
    verdict = office.append(reopened, reopened.batch(3, 6))
    assert (verdict.outcome, verdict.refusal) == (Outcome.REFUSED, Refusal.REWRITE)
    assert verdict.detail == "entry 5 is not the entry the back office holds"
    assert office.custody.held.seq == 5  # nothing of it was taken
    reopened.log.close()


def test_a_truncated_log_whose_head_is_below_what_is_held_is_truncation(box: Box) -> None:
    office = Office()
    box.add(6)
    office.append(box, box.batch(0, 5))
    lower = AuditHead(2, office.held_hash(2)).sign(box.key)
    verdict = office.append(box, None, lower)
    assert (verdict.outcome, verdict.refusal) == (Outcome.REFUSED, Refusal.TRUNCATION)
    assert verdict.detail == "the box's head is seq 2, below seq 5 the back office holds"


def test_an_emptied_log_begins_again_and_is_refused(box: Box, tmp_path: Path) -> None:
    office = Office()
    box.add(4)
    office.append(box, box.batch(0, 3))
    fresh = Box(tmp_path / "emptied.jsonl", box.key)
    fresh.add(2, event="gateway.started")
    verdict = office.append(fresh, fresh.batch(0, 1))
    assert (verdict.outcome, verdict.refusal) == (Outcome.REFUSED, Refusal.REWRITE)
    fresh.log.close()


def test_a_log_rewritten_and_signed_again_does_not_follow_the_held_entry(
    box: Box, tmp_path: Path
) -> None:
    office = Office()
    box.add(3)
    office.append(box, box.batch(0, 2))
    forged = Box(tmp_path / "forged.jsonl", box.key)  # the same key: signed again
    forged.add(5, event="gateway.stop")
    verdict = office.append(forged, forged.batch(3, 4))
    assert (verdict.outcome, verdict.refusal) == (Outcome.REFUSED, Refusal.FORK)
    assert verdict.detail == "entry 3 does not follow held entry 2"
    forged.log.close()


def test_another_device_key_or_a_bad_signature_is_refused(box: Box, tmp_path: Path) -> None:
    office = Office()
    box.add(2)
    office.append(box, box.batch(0, 1))
    stranger = Box(tmp_path / "other.jsonl", DeviceKey.generate())
    stranger.add(3)
    verdict = office.append(stranger, stranger.batch(2, 2))
    assert verdict.refusal is Refusal.FOREIGN_KEY
    unsigned = SignedHead(box.head().head, stranger.head().sig_b64)
    assert office.append(box, None, unsigned).refusal is Refusal.BAD_SIGNATURE
    stranger.log.close()


def test_heads_on_uploads_may_be_late_but_never_another_entry(box: Box, tmp_path: Path) -> None:
    office = Office()
    box.add(3)
    late = box.head()  # taken when the upload was created
    box.add(3)
    office.append(box, box.batch(0, 5))
    assert office.observe(late).outcome is Outcome.STALE
    assert office.observe(box.head()).outcome is Outcome.EXTENDS
    forged = Box(tmp_path / "forged.jsonl", box.key)
    forged.add(4, event="gateway.stop")
    verdict = office.observe(forged.head(), "report")
    assert (verdict.outcome, verdict.refusal) == (Outcome.REFUSED, Refusal.FORK)
    assert verdict.detail == "head 3 via report is not the entry the back office holds"
    forged.log.close()


def test_a_head_beyond_the_held_log_is_a_claim_its_entry_must_keep(
    box: Box, tmp_path: Path
) -> None:
    office = Office()
    box.add(2)
    office.append(box, box.batch(0, 1))
    box.add(3)
    claim = box.head()  # seq 4, sent with an upload before the entries were shipped
    assert office.observe(claim).outcome is Outcome.PENDING
    assert set(office.custody.claims) == {4}
    # The box's tail is cut before shipping; it goes on and ships another entry 4.
    box.log.close()
    kept = box.lines()[:3]
    box.log.path.write_bytes(b"".join(line + b"\n" for line in kept))
    again = Box(box.log.path, box.key)
    again.add(2, event="gateway.stop")
    verdict = office.append(again, again.batch(2, 4))
    assert (verdict.outcome, verdict.refusal) == (Outcome.REFUSED, Refusal.CLAIM_BROKEN)
    assert "it now shows another entry 4" in verdict.detail
    again.log.close()


def test_a_claim_kept_is_settled_when_its_entries_arrive(box: Box) -> None:
    office = Office()
    box.add(2)
    office.append(box, box.batch(0, 1))
    box.add(3)
    office.observe(box.head())
    verdict = office.append(box, box.batch(2, 4))
    assert verdict.outcome is Outcome.HELD
    assert office.custody.claims == {}


def test_heads_before_any_shipment_are_recorded_unverified(box: Box) -> None:
    box.add(1)
    assert Office().observe(box.head()).outcome is Outcome.UNVERIFIED


def test_claims_are_bounded(box: Box) -> None:
    office = Office()
    box.add(1)
    office.append(box, box.batch(0, 0))
    claims = {
        seq: Claim(AuditHead(seq, "ab" * 32).sign(box.key), "upload", 0)
        for seq in range(1, MAX_CLAIMS + 1)
    }
    office.custody = Custody(office.custody.held, office.custody.device_key, claims)
    office.observe(AuditHead(MAX_CLAIMS + 5, "cd" * 32).sign(box.key))
    assert len(office.custody.claims) == MAX_CLAIMS
    assert min(office.custody.claims) == 2  # the lowest went first
