"""A box's signed report of the configuration it applied: checked, kept, refused when wrong."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from backoffice.fleet_reports import ReportLog, ReportRefused, parse_report
from protocol.fleet_report import signed_message
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
    }
    fields.update(changes)
    message = signed_message(
        box_id, fields["config_serial"], fields["sha256"], fields["target_path"], fields["at_ms"]
    )
    fields.setdefault("signature", base64.b64encode(KEY.sign(message)).decode())
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
        (b"not json", "not JSON"),
        (b"{" + b" " * 9000 + b"}", "too large"),
    ],
)
def test_a_wrong_report_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(ReportRefused, match=message):
        parse_report("MVB-1", body)
