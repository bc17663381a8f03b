"""What the box does about refused and admitted senders (gateway/capture/ingest_ledger.py, pure):
audited at once, folded under a flood, alarmed, the alarm held after the last attempt."""

from __future__ import annotations

from gateway.capture.ingest_ledger import (
    ADMITTED_EVENT,
    MANY_PEERS,
    MAX_WINDOWS,
    REFUSED_EVENT,
    AuditNote,
    IngestLedger,
    alarm_code,
)

S = 1_000_000_000


def ledger() -> IngestLedger:
    return IngestLedger("bodycam", audit_interval_ns=60 * S, alarm_hold_ns=600 * S)


def refused(reason: str, peer: str, count: int) -> AuditNote:
    fields: dict[str, str | int] = {
        "camera": "bodycam",
        "reason": reason,
        "peer": peer,
        "count": count,
    }
    return AuditNote(REFUSED_EVENT, fields)


def test_the_first_refusal_is_audited_at_once_and_raises_the_alarm() -> None:
    book = ledger()
    decisions = book.refused(0, "no_certificate", "10.0.0.9")
    assert decisions.audits == (refused("no_certificate", "10.0.0.9", 1),)
    assert decisions.alarm_message is not None
    assert "camera bodycam: 1 sender(s) refused" in decisions.alarm_message
    assert "no_certificate from 10.0.0.9" in decisions.alarm_message
    assert alarm_code("bodycam") == "camera_refused_bodycam"


def test_a_flood_folds_into_one_entry_per_interval_and_every_refusal_is_counted() -> None:
    book = ledger()
    audits = list(book.refused(0, "no_certificate", "10.0.0.9").audits)
    for second in range(1, 500):
        audits += book.refused(second * S // 10, "no_certificate", "10.0.0.9").audits
    assert audits == [refused("no_certificate", "10.0.0.9", 1)], "folded within the interval"
    audits += book.tick(61 * S).audits
    assert audits[-1] == refused("no_certificate", "10.0.0.9", 499)
    assert book.refused_total == 500


def test_reasons_and_peers_are_kept_apart_and_flush_writes_what_is_folded() -> None:
    book = ledger()
    book.refused(0, "no_certificate", "10.0.0.9")
    book.refused(S, "no_certificate", "10.0.0.9")
    book.refused(2 * S, "foreign_camera", "10.0.0.9")
    book.refused(3 * S, "no_certificate", "10.0.0.7")
    assert book.flush().audits == (refused("no_certificate", "10.0.0.9", 1),)
    assert book.flush().audits == ()


def test_many_peers_share_one_window_beyond_the_bound() -> None:
    book = ledger()
    first = [book.refused(i, "not_tls", f"10.0.{i // 250}.{i % 250}") for i in range(200)]
    immediate = [note for decisions in first for note in decisions.audits]
    assert len(immediate) == MAX_WINDOWS + 1
    assert immediate[-1] == refused("not_tls", MANY_PEERS, 1)


def test_the_alarm_clears_only_after_the_hold_since_the_last_refusal() -> None:
    book = ledger()
    book.refused(0, "bad_credentials", "10.0.0.9")
    book.admitted(10 * S, "digest", "10.0.0.5")
    assert not book.tick(599 * S).clear_alarm
    book.refused(500 * S, "bad_credentials", "10.0.0.9")
    assert not book.tick(1000 * S).clear_alarm, "held 600 s after the last one"
    assert book.tick(1100 * S).clear_alarm
    assert not book.tick(1200 * S).clear_alarm, "cleared once"


def test_admissions_are_audited_with_their_method_without_an_alarm() -> None:
    book = ledger()
    decisions = book.admitted(0, "tls-ca", "10.0.0.5")
    fields: dict[str, str | int] = {
        "camera": "bodycam",
        "method": "tls-ca",
        "peer": "10.0.0.5",
        "count": 1,
    }
    assert decisions.audits == (AuditNote(ADMITTED_EVENT, fields),)
    assert decisions.alarm_message is None
    assert book.refused_total == 0
