"""A box's signed report of what became of a fleet document (applied, refused, deferred):
checked, kept, refused when wrong; version 1 reports (applied only) still accepted."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from backoffice.fleet_reports import ReportLog, ReportRefused, parse_report
from protocol.fleet_report import signed_message, signed_message_v1
from storage.devicekey import DeviceKey

KEY = DeviceKey.generate()
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
    log.append(parse_report("MVB-1", report()))
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
    log.append(parse_report("MVB-1", report_v1()))
    deferred = parse_report(
        "MVB-1", report(outcome="deferred", reason="deferred: camera(s) not delivering: dashcam")
    )
    log.append(deferred)
    log.append(
        parse_report("MVB-1", report(config_serial=4, outcome="refused", reason="refused: x"))
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
        parse_report("MVB-1", body)
