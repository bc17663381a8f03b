"""What each box says became of a fleet document: `POST /fleet/report` on the mutual-TLS
listener.

The report (JSON) names the serial, the document's SHA-256 and path, the box's clock, and the
outcome (`applied`; `refused`, final; `deferred`, the box's state kept it from being judged and
the box tries again) with its reason, and is signed with the box's device key (Ed25519, the key
that signs its audit log), so the fleet admin keeps a statement the box cannot later deny, next
to the channel's own authentication (the client certificate names the box). The back office
appends each accepted report to a JSONL file (fsync per line) and answers 204; `latest()` gives
the newest *applied* report per box (the configuration it runs). A box keeps its reports until
they are accepted (gateway/fleet_sync.py), so one may arrive days after its `at_ms`.

The signature is verified against the device key the box enrolled at pairing (the pairing
ledger, backoffice/pairing_ledger.py), never against the key the report carries: a report is
whatever its sender wrote, so a key it carries proves only that someone holds that key. A report
whose carried key is not the enrolled one is refused (ForeignDeviceKey, 400: the box drops it;
the back office logs it at ERROR, since a box does not change its key); a box with no enrolled
key (paired before pairing enrolled it) is answered KeyNotEnrolled (409: the box keeps the report
and delivers it once it is re-paired).

The message format and the signed bytes are shared with the box: protocol/fleet_report.py.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.durable import fsync_dir, make_dirs
from common.faults import RemoteFault
from protocol.fleet_report import (
    AUDIT_HEAD,
    MAX_AUDIT_HEAD_CHARS,
    MAX_REASON_CHARS,
    MAX_REPORT_BYTES,
    OUTCOMES,
    REPORT_FIELDS,
    REPORT_FIELDS_V1,
    one_line,
    signed_message,
    signed_message_v1,
)
from storage.devicekey import DeviceKeyError, DevicePublicKey

_SHA256 = re.compile(r"[0-9a-f]{64}")
_PATH = re.compile(r"(boxes|groups)/[A-Za-z0-9._-]{1,64}\.toml")


class ReportRefused(ValueError, RemoteFault):
    """The report is malformed or its signature does not verify (400)."""


class ForeignDeviceKey(ReportRefused):
    """The report carries another device key than the one its box enrolled at pairing (400)."""


class KeyNotEnrolled(RemoteFault):
    """The box has no device key enrolled: it paired before pairing enrolled one (409)."""


@dataclass(frozen=True, slots=True)
class ConfigReport:
    box_id: str
    config_serial: int
    sha256: str
    target_path: str
    at_ms: int
    device_key_id: str
    outcome: str = "applied"  # lines written before outcomes existed were applied reports
    reason: str = ""
    audit_head: str = ""  # the box's signed audit head, when it sent one (not signed over)


def parse_report(box_id: str, body: bytes, enrolled: DevicePublicKey | None) -> ConfigReport:
    """Check a report from client `box_id` against `enrolled`, the device key that box enrolled
    at pairing (None: none). ReportRefused says what is wrong (ForeignDeviceKey for another
    key); KeyNotEnrolled when there is no key to check against."""
    if len(body) > MAX_REPORT_BYTES:
        raise ReportRefused("report too large")
    try:
        raw: Any = json.loads(body)
    except ValueError as exc:
        raise ReportRefused("report is not JSON") from exc
    if not isinstance(raw, dict) or set(raw) - {AUDIT_HEAD} not in (
        REPORT_FIELDS,
        REPORT_FIELDS_V1,
    ):
        raise ReportRefused(f"report must have exactly {sorted(REPORT_FIELDS)}")
    audit_head = raw.get(AUDIT_HEAD, "")
    if not isinstance(audit_head, str) or len(audit_head) > MAX_AUDIT_HEAD_CHARS:
        raise ReportRefused(f"{AUDIT_HEAD} must be a head's text (docs/audit-custody.md)")
    serial, sha256, path, at_ms = (
        raw["config_serial"],
        raw["sha256"],
        raw["target_path"],
        raw["at_ms"],
    )
    if not (isinstance(serial, int) and serial > 0 and isinstance(at_ms, int)):
        raise ReportRefused("config_serial and at_ms must be positive integers")
    if not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
        raise ReportRefused("sha256 must be 64 lower-case hex characters")
    if not (isinstance(path, str) and _PATH.fullmatch(path)):
        raise ReportRefused("target_path must be boxes/<id>.toml or groups/<name>.toml")
    key = _public_key(raw["device_public_key"])
    signature = _base64(raw["signature"])
    if set(raw) == REPORT_FIELDS_V1:
        outcome, reason = "applied", ""
        message = signed_message_v1(box_id, serial, sha256, path, at_ms)
    else:
        outcome, reason = _outcome(raw["outcome"], raw["reason"])
        message = signed_message(box_id, serial, sha256, path, at_ms, outcome, reason)
    if enrolled is None:
        raise KeyNotEnrolled(
            f"box {box_id} has no device key enrolled at pairing: re-pair it to report"
        )
    if key != enrolled:
        raise ForeignDeviceKey(
            f"the report's device key {key.key_id()} is not the key box {box_id} enrolled at "
            f"pairing ({enrolled.key_id()})"
        )
    if not enrolled.verify(message, signature):
        raise ReportRefused("the signature does not verify with the box's enrolled device key")
    key_id = enrolled.key_id()
    return ConfigReport(box_id, serial, sha256, path, at_ms, key_id, outcome, reason, audit_head)


def _outcome(outcome: object, reason: object) -> tuple[str, str]:
    if outcome not in OUTCOMES:
        raise ReportRefused(f"outcome must be one of {', '.join(OUTCOMES)}")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS or one_line(reason) != reason:
        raise ReportRefused(f"reason must be one line of at most {MAX_REASON_CHARS} characters")
    if (outcome == "applied") != (reason == ""):
        raise ReportRefused("an applied report has no reason, any other has one")
    return str(outcome), reason


def _public_key(value: object) -> DevicePublicKey:
    if not isinstance(value, str):
        raise ReportRefused("device_public_key must be a PEM string")
    try:
        return DevicePublicKey.from_pem(value.encode(), source="report device key")
    except DeviceKeyError as exc:
        raise ReportRefused(str(exc)) from exc


def _base64(value: object) -> bytes:
    if not isinstance(value, str):
        raise ReportRefused("signature must be base64")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ReportRefused("signature must be base64") from exc


class ReportLog:
    """The reports file (JSONL, one fsynced line per accepted report) and the newest per box."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._latest: dict[str, ConfigReport] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                report = ConfigReport(**json.loads(line))
                if report.outcome == "applied":
                    self._latest[report.box_id] = report

    def append(self, report: ConfigReport) -> None:
        make_dirs(self.path.parent)
        new_file = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(json.dumps(asdict(report), sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if new_file:
            fsync_dir(self.path.parent)  # the first line is durable only with the file's entry
        if report.outcome == "applied":
            self._latest[report.box_id] = report

    def latest(self, box_id: str) -> ConfigReport | None:
        """The newest applied report of the box: the configuration it says it runs."""
        return self._latest.get(box_id)
