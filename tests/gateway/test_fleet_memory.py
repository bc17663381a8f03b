"""What the fleet sync keeps across restarts (gateway/fleet_memory.py): the outbox of signed
reports and a deferred document, as values and their JSON."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from config.fleet_targets import FleetDocument
from gateway.fleet_memory import (
    MAX_WAITING_REPORTS,
    FleetMemoryError,
    Outbox,
    document_from_json,
    document_to_json,
)


def report(serial: int, outcome: str = "applied") -> dict[str, Any]:
    return {
        "config_serial": serial,
        "sha256": "ab" * 32,
        "target_path": "boxes/MVB-1.toml",
        "at_ms": 1_790_000_000_000 + serial,
        "outcome": outcome,
        "reason": "" if outcome == "applied" else f"{outcome}: x",
        "device_public_key": "PEM",
        "signature": "c2ln",
    }


def test_an_accepted_applied_report_is_confirmed_and_a_dropped_one_is_not() -> None:
    outbox = Outbox().with_report(report(3, "deferred")).with_report(report(3))
    outbox = outbox.delivered(report(3, "deferred"))
    assert (outbox.reported_serial, len(outbox.waiting)) == (0, 1)
    assert outbox.dropped(report(3)).reported_serial == 0
    delivered = outbox.delivered(report(3))
    assert (delivered.reported_serial, delivered.waiting) == (3, ())
    assert Outbox.from_json(outbox.to_json()) == outbox


def test_a_full_outbox_gives_up_refusals_before_what_the_box_runs() -> None:
    outbox = Outbox().with_report(report(1))
    for serial in range(2, MAX_WAITING_REPORTS + 5):
        outbox = outbox.with_report(report(serial, "refused"))
    assert len(outbox.waiting) == MAX_WAITING_REPORTS
    assert outbox.waiting[0] == report(1), "the applied report stays"
    assert outbox.waiting[-1]["config_serial"] == MAX_WAITING_REPORTS + 4


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"format": 2, "reported_serial": 0, "waiting": []}',
        '{"format": 1, "reported_serial": -1, "waiting": []}',
        '{"format": 1, "reported_serial": 0, "waiting": [{"config_serial": 1}]}',
        "not json",
    ],
)
def test_an_outbox_this_code_did_not_write_is_refused(text: str) -> None:
    with pytest.raises(FleetMemoryError):
        Outbox.from_json(text)


def test_a_deferred_document_reads_back_only_as_the_bytes_that_were_verified() -> None:
    data = b"[recording]\nprerecord_s = 60\n"
    document = FleetDocument(
        "groups/city.toml", 9, hashlib.sha256(data).hexdigest(), (), ("city",), data
    )
    assert document_from_json(document_to_json(document)) == document
    other_bytes = document_to_json(
        FleetDocument("groups/city.toml", 9, document.sha256, (), ("city",), b"[x]\n")
    )
    with pytest.raises(FleetMemoryError, match="not the document that was verified"):
        document_from_json(other_bytes)
