"""Does what a box sends extend the audit log the back office holds? The judge (pure).

The back office holds, per box (keyed by the client certificate's CN), the box's audit log as
far as it was shipped, the device key it was signed with, and the heads the box sent that reach
beyond it (claims: the box said its log reached seq N with hash H, and must later ship exactly
that entry). The shell is backoffice/audit_store.py; the protocol docs/audit-custody.md.

Invariants (each a refusal, with an alarm, when broken):
- The held log only grows: new entries follow the last held one (`prev` is its hash, seq +1),
  entries sent again are the held ones byte for byte, and every entry and head is signed by the
  device key pinned at the box's first shipment (`foreign_key`, `bad_signature`).
- An append's head is the box's log as the request leaves: it is never below what is held
  (`truncation`) and never another entry at a held seq (`fork`).
- A head sent with an upload or a report may be late (a report waits in its outbox for days),
  so a lower seq is no alarm there: but its entry, once held, must be the one it names (`fork`).
- A head beyond the held log is a claim; the entry shipped later at that seq must match it
  (`claim_broken`): a box cannot take back a head it signed.
Nothing is decided from a clock: `at_ms` only stamps the records.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from storage.audit import signature_verifies
from storage.audit_head import AuditHead, SignedHead
from storage.devicekey import DevicePublicKey
from transport.audit_wire import Batch

MAX_CLAIMS: Final = 1024
"""Claims kept per box; beyond it the lowest are forgotten (the box ships its log soon after
any upload, so more than a handful wait only when shipping is held back)."""

HeldHash = Callable[[int], str]
"""The line hash of the held entry with that seq (0 <= seq <= the held head's)."""


class Outcome(enum.StrEnum):
    HELD = "held"  # an append was taken (or was already held)
    START_ELSEWHERE = "start_elsewhere"  # an append does not start at the held head + 1
    EXTENDS = "extends"  # a head equal to the held one
    STALE = "stale"  # a head below the held one, and its entry is the held one
    PENDING = "pending"  # a head beyond the held log: a claim
    UNVERIFIED = "unverified"  # a head before any device key is pinned: recorded only
    REFUSED = "refused"


class Refusal(enum.StrEnum):
    TRUNCATION = "truncation"
    FORK = "fork"
    REWRITE = "rewrite"
    CLAIM_BROKEN = "claim_broken"
    FOREIGN_KEY = "foreign_key"
    BAD_SIGNATURE = "bad_signature"


@dataclass(frozen=True, slots=True)
class Claim:
    """A signed head beyond the held log, and where it came from."""

    head: SignedHead
    via: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Custody:
    """What the back office holds of one box (see the module docstring)."""

    held: AuditHead = field(default_factory=AuditHead.empty)
    device_key: DevicePublicKey | None = None
    claims: Mapping[int, Claim] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judge's answer: the outcome, why when refused, the new custody, and for a HELD
    append the lines to append (without LF), in order."""

    outcome: Outcome
    custody: Custody
    refusal: Refusal | None = None
    detail: str = ""
    new_lines: tuple[bytes, ...] = ()

    @property
    def refused(self) -> bool:
        return self.outcome is Outcome.REFUSED


def _refuse(custody: Custody, refusal: Refusal, detail: str) -> Verdict:
    return Verdict(Outcome.REFUSED, custody, refusal, detail)


def judge_append(
    custody: Custody,
    batch: Batch | None,
    head: SignedHead,
    device_key: DevicePublicKey,
    held_hash: HeldHash,
    *,
    at_ms: int,
) -> Verdict:
    """An append request: `batch` (None: no entries) and the box's head as it sent them."""
    if custody.device_key is not None and device_key != custody.device_key:
        detail = (
            f"device key {device_key.key_id()} is not the key {custody.device_key.key_id()} "
            "this box's log is signed with"
        )
        return _refuse(custody, Refusal.FOREIGN_KEY, detail)
    if not head.verifies(device_key):
        return _refuse(custody, Refusal.BAD_SIGNATURE, f"head {head.seq}: signature")
    held = custody.held
    new_lines: tuple[bytes, ...] = ()
    if batch is not None:
        for entry in batch.entries:
            if not signature_verifies(entry, device_key):
                return _refuse(custody, Refusal.BAD_SIGNATURE, f"entry {entry.seq}: signature")
        if batch.first_seq > held.seq + 1:
            detail = f"entries start at seq {batch.first_seq}, the held log ends at {held.seq}"
            return Verdict(Outcome.START_ELSEWHERE, custody, None, detail)
        problem = _link_problem(held, batch, held_hash)
        if problem is not None:
            return _refuse(custody, *problem)
        fresh = [i for i, e in enumerate(batch.entries) if e.seq > held.seq]
        for index in fresh:
            entry = batch.entries[index]
            claim = custody.claims.get(entry.seq)
            if claim is not None and claim.head.sha256_hex != entry.line_sha256_hex:
                return _refuse(custody, Refusal.CLAIM_BROKEN, _broken_claim(claim, entry.seq))
        new_lines = tuple(batch.lines[i] for i in fresh)
        if fresh:
            last = batch.entries[fresh[-1]]
            held = AuditHead(last.seq, last.line_sha256_hex)
    if head.seq < held.seq:
        detail = f"the box's head is seq {head.seq}, below seq {held.seq} the back office holds"
        return _refuse(custody, Refusal.TRUNCATION, detail)
    if head.seq == held.seq and head.sha256_hex != held.sha256_hex:
        return _refuse(custody, Refusal.FORK, f"head {head.seq} is not the held entry {held.seq}")
    claims = {seq: c for seq, c in custody.claims.items() if seq > held.seq}
    if head.seq > held.seq:
        known = claims.get(head.seq)
        if known is not None and known.head.sha256_hex != head.sha256_hex:
            return _refuse(custody, Refusal.FORK, _broken_claim(known, head.seq))
        claims = _with_claim(claims, Claim(head, "append", at_ms))
    after = Custody(held, device_key, claims)
    return Verdict(Outcome.HELD, after, None, "", new_lines)


def _link_problem(held: AuditHead, batch: Batch, held_hash: HeldHash) -> tuple[Refusal, str] | None:
    """Why the batch does not continue the held log, or None. Its own chain is checked (the
    wire parser): so when its entry at the last overlapping seq is the held one, every earlier
    one is too (each line's hash commits to the one before), and only that one is compared."""
    if batch.first_seq <= held.seq:
        overlap = min(batch.last_seq, held.seq)
        entry = batch.entries[overlap - batch.first_seq]
        if entry.line_sha256_hex != held_hash(overlap):
            return Refusal.REWRITE, f"entry {overlap} is not the entry the back office holds"
        return None
    if batch.entries[0].prev_hex != held.sha256_hex:
        return Refusal.FORK, f"entry {batch.first_seq} does not follow held entry {held.seq}"
    return None


def judge_head(
    custody: Custody, head: SignedHead, via: str, held_hash: HeldHash, *, at_ms: int
) -> Verdict:
    """A head sent with an upload's creation or a configuration report (`via`)."""
    key = custody.device_key
    if key is None:
        return Verdict(Outcome.UNVERIFIED, custody, None, "no device key pinned yet")
    if not head.verifies(key):
        return _refuse(custody, Refusal.BAD_SIGNATURE, f"head {head.seq} via {via}: signature")
    held = custody.held
    if head.seq <= held.seq:
        if head.sha256_hex != held_hash(head.seq):
            detail = f"head {head.seq} via {via} is not the entry the back office holds"
            return _refuse(custody, Refusal.FORK, detail)
        outcome = Outcome.EXTENDS if head.seq == held.seq else Outcome.STALE
        return Verdict(outcome, custody)
    known = custody.claims.get(head.seq)
    if known is not None and known.head.sha256_hex != head.sha256_hex:
        return _refuse(custody, Refusal.FORK, _broken_claim(known, head.seq))
    claims = _with_claim(custody.claims, Claim(head, via, at_ms))
    return Verdict(Outcome.PENDING, replace(custody, claims=claims))


def _with_claim(claims: Mapping[int, Claim], claim: Claim) -> dict[int, Claim]:
    """`claims` with `claim` (the first claim at a seq stays: a later equal one adds nothing),
    bounded by MAX_CLAIMS (the lowest go first)."""
    kept = dict(claims)
    kept.setdefault(claim.head.seq, claim)
    for seq in sorted(kept)[: max(0, len(kept) - MAX_CLAIMS)]:
        del kept[seq]
    return kept


def _broken_claim(claim: Claim, seq: int) -> str:
    return (
        f"the box signed head {seq} with hash {claim.head.sha256_hex[:16]}... (via {claim.via}, "
        f"at_ms {claim.at_ms}); it now shows another entry {seq}"
    )
