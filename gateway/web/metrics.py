"""GET /metrics: the box's health in Prometheus text format 0.0.4 (docs/webui.md section 5).

Pure core: `render_metrics(document)` turns the status document into metric lines, and
`may_read_metrics` decides access. Shell: `routes` serves it from the shared status build.

Invariants:
- only counts, bytes, states and ages leave the box here: no position, no names, no ids, no
  serials. The renderer picks numbers from the document member by member (an allow-list, never
  "everything in it"), and labels take values from fixed sets (upload classes, alert codes,
  recorder states) or the configured link names;
- access: a loopback client, or `Authorization: Bearer <token>` whose SHA-256 equals
  `[webui] metrics_token_sha256` of the configuration the box runs (compared in constant
  time); no token configured means loopback only.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.web.jsonbody import ApiError, error_response
from gateway.web.status_source import StatusSource
from gateway.web.status_view import ALERT_CODES
from storage.models import UPLOAD_CLASSES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RECORDER_STATES = ("standby", "recording", "postrecord")
SHARED_MAX_AGE_S = 1.0  # a scrape every few seconds costs at most one build a second
_LABEL_VALUE_UNSAFE = str.maketrans({"\\": r"\\", '"': r"\"", "\n": r"\n"})


@dataclass
class Family:
    """One metric family: HELP and TYPE once, then its samples (labels, value)."""

    name: str
    kind: str  # "gauge" | "counter"
    help: str
    samples: list[tuple[dict[str, str], float | int | None]] = field(default_factory=list)

    def add(self, value: float | int | bool | None, **labels: str) -> None:
        self.samples.append((labels, None if value is None else float(value)))

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.samples:
            if value is None:
                continue  # an unknown value is absent, never a made-up 0
            yield f"{self.name}{_labels(labels)} {_number(value)}"


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v.translate(_LABEL_VALUE_UNSAFE)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _gauge(name: str, help_text: str, value: float | int | bool | None) -> Family:
    family = Family(name, "gauge", help_text)
    family.add(value)
    return family


def _recording(document: Mapping[str, Any]) -> list[Family]:
    state = Family("mvb_recorder_state", "gauge", "1 for the recorder's current state")
    for name in RECORDER_STATES:
        state.add(document["state"] == name, state=name)
    recording = document["recording"]
    return [
        state,
        _gauge(
            "mvb_recording_elapsed_seconds",
            "Seconds since the running recording's trigger (0 in standby)",
            recording["elapsed_s"],
        ),
        _gauge(
            "mvb_recording_flagged",
            "1 when the running recording is flagged as an incident (P0)",
            recording["flagged"],
        ),
    ]


def _cameras(document: Mapping[str, Any]) -> list[Family]:
    cameras = list(document["cameras"].values())
    return [
        _gauge("mvb_cameras_configured", "Cameras in the configuration", len(cameras)),
        _gauge(
            "mvb_cameras_connected",
            "Cameras whose source is connected",
            sum(bool(c.get("connected")) for c in cameras),
        ),
        _gauge(
            "mvb_camera_senders_refused",
            "Senders refused this boot: they did not prove they are the camera (docs/capture.md)",
            sum(int(c.get("refused", 0)) for c in cameras),
        ),
    ]


def _storage(document: Mapping[str, Any]) -> list[Family]:
    storage = document["storage"]
    queue_files = Family("mvb_upload_queue_files", "gauge", "Files waiting to upload, by class")
    queue_bytes = Family("mvb_upload_queue_bytes", "gauge", "Bytes waiting to upload, by class")
    for upload_class in UPLOAD_CLASSES:
        waiting = storage["waiting_by_class"][upload_class]
        queue_files.add(waiting["files"], upload_class=upload_class)
        queue_bytes.add(waiting["bytes"], upload_class=upload_class)
    return [
        _gauge("mvb_card_size_bytes", "Size of the evidence card", storage["card_total_bytes"]),
        _gauge(
            "mvb_card_free_bytes", "Free bytes on the evidence card", storage["card_free_bytes"]
        ),
        _gauge(
            "mvb_card_reserve_bytes",
            "Bytes kept free for sealing and logs",
            storage["reserve_bytes"],
        ),
        _gauge("mvb_evidence_files", "Evidence files on the card", storage["files_on_card"]),
        _gauge("mvb_evidence_bytes", "Bytes of evidence on the card", storage["bytes_on_card"]),
        _gauge(
            "mvb_evidence_interrupted_files",
            "Files recovered after a power cut",
            storage["interrupted_files"],
        ),
        queue_files,
        queue_bytes,
        _gauge(
            "mvb_upload_oldest_waiting_age_seconds",
            "Age of the oldest file waiting to upload",
            storage["oldest_waiting_age_s"],
        ),
        _gauge("mvb_retention_seconds", "The retention period", storage["retention_s"]),
    ]


def _uplink(document: Mapping[str, Any]) -> list[Family]:
    uplink = document["uplink"]
    links = uplink.get("links", [])
    running = "links" in uplink
    usable = Family("mvb_uplink_link_usable", "gauge", "1 when the link can upload now")
    used = Family("mvb_uplink_budget_used_bytes", "gauge", "Bytes sent in the link's billing cycle")
    cap = Family("mvb_uplink_budget_cap_bytes", "gauge", "The link's monthly cap")
    goodput = Family("mvb_uplink_goodput_bytes_per_second", "gauge", "The link's measured goodput")
    for link in links:
        name = str(link["name"])
        usable.add(link["usable"], link=name)
        used.add(link["budget_used_bytes"], link=name)
        cap.add(link["monthly_cap_bytes"], link=name)
        mbit_s = link["goodput_mbit_s"]
        goodput.add(None if mbit_s is None else mbit_s * 1e6 / 8, link=name)
    uploaded = Family(
        "mvb_uploaded_files_total", "counter", "Files uploaded since the service started"
    )
    uploaded.add(uplink["uploaded_files"] if running else None)
    return [
        _gauge("mvb_uplink_running", "1 when the uplink runs", running),
        usable,
        used,
        cap,
        goodput,
        uploaded,
        _gauge(
            "mvb_uplink_eta_seconds",
            "Estimated time to empty the upload queue",
            uplink.get("eta_s"),
        ),
    ]


def _health(document: Mapping[str, Any]) -> list[Family]:
    active = {alert["code"] for alert in document["alerts"]}
    alerts = Family("mvb_alert", "gauge", "1 while the alert of that code is raised")
    for code in ALERT_CODES:
        alerts.add(code in active, code=code)
    gps = document["gps"]
    fleet = document["fleet"]
    return [
        alerts,
        _gauge("mvb_gps_fix", "1 with a current GPS fix", gps["fix"]),
        _gauge("mvb_gps_fix_age_seconds", "Age of the last GPS fix", gps["fix_age_s"]),
        _gauge("mvb_paired", "1 when the box is paired", document["pairing"]["paired"]),
        _gauge(
            "mvb_config_serial",
            "Applied fleet configuration serial",
            None if fleet is None else fleet["applied_serial"],
        ),
        _gauge(
            "mvb_config_reported_serial",
            "Configuration serial the back office confirmed",
            None if fleet is None else fleet["reported_serial"],
        ),
        _gauge("mvb_shift_active", "1 while a shift runs", document["shift"]["active"]),
        _gauge(
            "mvb_reports_missing",
            "Recordings still waiting for a report",
            document["reports"]["missing"],
        ),
        _gauge(
            "mvb_uptime_seconds", "Seconds since the service started", document["box"]["uptime_s"]
        ),
    ]


def render_metrics(document: Mapping[str, Any], open_streams: int = 0) -> str:
    """The exposition text of `document` (pure)."""
    families = [
        *_recording(document),
        *_cameras(document),
        *_storage(document),
        *_uplink(document),
        *_health(document),
        _gauge("mvb_event_streams", "Open event streams on this listener", open_streams),
    ]
    return "\n".join(line for family in families for line in family.lines()) + "\n"


def _is_loopback(remote: str | None) -> bool:
    if remote is None:
        return False
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False  # a unix socket peer or garbage: not the loopback interface


def may_read_metrics(remote: str | None, authorization: str | None, token_sha256_hex: str) -> bool:
    """Loopback, or a Bearer token whose SHA-256 is the configured one (pure)."""
    if _is_loopback(remote):
        return True
    if not token_sha256_hex or authorization is None:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    digest = hashlib.sha256(token.strip().encode()).hexdigest()
    return hmac.compare_digest(digest, token_sha256_hex.lower())


def routes(
    source: StatusSource, token_sha256: Callable[[], str], open_streams: Callable[[], int]
) -> list[web.RouteDef]:
    """`token_sha256()` reads the configured hash at each request (a fleet document may
    change it while the box runs)."""

    async def metrics(request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization")
        if not may_read_metrics(request.remote, authorization, token_sha256()):
            refused = ApiError(401, "unauthorized", "metrics need a loopback client or a token")
            return error_response(refused, headers={"WWW-Authenticate": 'Bearer realm="mvb"'})
        document = await source.shared(SHARED_MAX_AGE_S)
        text = render_metrics(document, open_streams())
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    return [web.get("/metrics", metrics)]
