"""A box's signed report of what became of a fleet document (applied, refused, deferred):
checked, kept, refused when wrong; version 1 reports (applied only) still accepted."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from backoffice.fleet_reports import (
    ForeignDeviceKey,
    KeyNotEnrolled,
    ReportLog,
    ReportRefused,
    parse_report,
)
from protocol.fleet_report import signed_message, signed_message_v1
from storage.devicekey import DeviceKey

KEY = DeviceKey.generate()
ENROLLED = KEY.public_key()
"""The device key MVB-1 enrolled at pairing (the ledger's, not the report's)."""
SHA = "ab" * 32


def report(box_id: str = "MVB-1", **changes: Any) -> bytes:
    fields: dict[str, Any] = {
        "config_serial": 3,
        "sha256": SHA,
        "target_path": "boxes/MVB-1.toml",
        "at_ms": 1_790_000_000_000,
        "device_public_key": KEY.public_pem().decode(),
        "outcome": "applied",
        "reason": "",
    }
    fields.update(changes)
    message = signed_message(
        box_id,
        fields["config_serial"],
        fields["sha256"],
        fields["target_path"],
        fields["at_ms"],
        fields["outcome"],
        fields["reason"],
    )
    fields.setdefault("signature", base64.b64encode(KEY.sign(message)).decode())
    return json.dumps(fields).encode()


def report_v1(box_id: str = "MVB-1") -> bytes:
    """What a box of the version before outcomes sends."""
    fields: dict[str, Any] = {
        "config_serial": 2,
        "sha256": SHA,
        "target_path": "boxes/MVB-1.toml",
        "at_ms": 1_780_000_000_000,
        "device_public_key": KEY.public_pem().decode(),
    }
    message = signed_message_v1(box_id, 2, SHA, "boxes/MVB-1.toml", 1_780_000_000_000)
    fields["signature"] = base64.b64encode(KEY.sign(message)).decode()
    return json.dumps(fields).encode()


def test_a_signed_report_is_kept_as_the_newest_for_its_box(tmp_path: Path) -> None:
    log = ReportLog(tmp_path / "reports.jsonl")
    log.append(parse_report("MVB-1", report(), ENROLLED))
    again = ReportLog(tmp_path / "reports.jsonl")  # survives a restart of the back office
    latest = again.latest("MVB-1")
    assert latest is not None
    assert (latest.config_serial, latest.sha256) == (3, SHA)
    assert latest.device_key_id == KEY.key_id()
    assert (tmp_path / "reports.jsonl").stat().st_mode & 0o777 == 0o600


def test_refusals_are_kept_beside_and_never_taken_for_the_running_configuration(
    tmp_path: Path,
) -> None:
    log = ReportLog(tmp_path / "reports.jsonl")
    log.append(parse_report("MVB-1", report_v1(), ENROLLED))
    reason = "deferred: camera(s) not delivering: dashcam"
    deferred = parse_report("MVB-1", report(outcome="deferred", reason=reason), ENROLLED)
    log.append(deferred)
    log.append(
        parse_report(
            "MVB-1", report(config_serial=4, outcome="refused", reason="refused: x"), ENROLLED
        )
    )
    again = ReportLog(tmp_path / "reports.jsonl")
    latest = again.latest("MVB-1")
    assert latest is not None
    assert (latest.config_serial, latest.outcome) == (2, "applied")
    lines = [json.loads(line) for line in (tmp_path / "reports.jsonl").read_text().splitlines()]
    assert [(line["config_serial"], line["outcome"]) for line in lines] == [
        (2, "applied"),
        (3, "deferred"),
        (4, "refused"),
    ]
    assert lines[1]["reason"] == "deferred: camera(s) not delivering: dashcam"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (report(box_id="MVB-2"), "does not verify"),  # signed for another box than the client
        (report(signature=base64.b64encode(b"x" * 64).decode()), "does not verify"),
        (report(sha256="xyz"), "64 lower-case hex"),
        (report(config_serial=0), "positive integers"),
        (report(target_path="../etc/passwd"), "target_path"),
        (report(device_public_key="not a key"), "key"),
        (report(signature="%%%"), "base64"),
        (b"[1, 2]", "exactly"),
        (report(outcome="rolled back", reason="x"), "outcome must be"),
        (report(outcome="refused", reason=""), "has one"),
        (report(outcome="applied", reason="why"), "has no reason"),
        (report(outcome="refused", reason="two\nlines"), "one line"),
        (report(outcome="refused", reason="x" * 301), "one line"),
        (b"not json", "not JSON"),
        (b"{" + b" " * 9000 + b"}", "too large"),
    ],
)
def test_a_wrong_report_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(ReportRefused, match=message):
        parse_report("MVB-1", body, ENROLLED)


def test_a_report_signed_by_a_key_it_carries_is_refused_unless_that_key_was_enrolled() -> None:
    """A thief with the box's certificate but not its device key signs with a key of its own
    and carries it: the signature is valid for that key, and worth nothing."""
    thief = DeviceKey.generate()
    fields = json.loads(report())
    fields["device_public_key"] = thief.public_pem().decode()
    message = signed_message("MVB-1", 3, SHA, "boxes/MVB-1.toml", fields["at_ms"], "applied", "")
    fields["signature"] = base64.b64encode(thief.sign(message)).decode()
    forged = json.dumps(fields).encode()
    with pytest.raises(ForeignDeviceKey, match="not the key box MVB-1 enrolled"):
        parse_report("MVB-1", forged, ENROLLED)
    assert parse_report("MVB-1", forged, thief.public_key()).device_key_id == thief.key_id()


def test_a_box_without_an_enrolled_key_is_asked_to_re_pair() -> None:
    with pytest.raises(KeyNotEnrolled, match="re-pair"):
        parse_report("MVB-1", report(), None)
