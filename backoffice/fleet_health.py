"""Boxes' health reports at the back office (docs/fleet-health.md): `POST /fleet/health`.

A report is verified against the device key the box enrolled at pairing (as a configuration
report: backoffice/fleet_reports.py), then kept as that box's latest, with the back office's
own receive time beside the box's clock (which may be wrong): `<store>/fleet-health/<box>.json`,
one file per box, replaced durably (common/durable.py). `mvb-admin fleet status` and the fleet
metrics read them (backoffice/fleet_status.py).

Answers: 204 taken (with `Mvb-Fleet-Check: now` when the admin asked this box to check its fleet
configuration now: backoffice/check_now.py); 400 malformed or a signature that does not verify
(the box tries again at its interval, not at every look); 409 no enrolled key; 413 too large;
503 the ledger cannot be read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from backoffice.body_pace import read_whole_body
from backoffice.check_now import CHECK_NOW_HEADER, CHECK_NOW_VALUE, CheckNowBook
from backoffice.fleet_reports import KeyNotEnrolled
from common.durable import atomic_write_bytes, make_dirs
from common.faults import StorageFault
from protocol.health_report import (
    MAX_HEALTH_BYTES,
    Health,
    HealthRefused,
    parse_health,
    signed_message,
)
from protocol.strict_json import dump_json
from storage.devicekey import DevicePublicKey

log = logging.getLogger(__name__)

HEALTH_DIR: Final = "fleet-health"


@dataclass(frozen=True, slots=True)
class BoxHealth:
    """A box's latest report and when the back office received it (its own clock)."""

    box_id: str
    received_at_ms: int
    health: dict[str, Any]


class FleetHealthStore:
    def __init__(self, store_dir: Path) -> None:
        self.directory = store_dir / HEALTH_DIR

    def save(self, box_id: str, health: Health, received_at_ms: int) -> None:
        make_dirs(self.directory, mode=0o700)
        record = {"box_id": box_id, "received_at_ms": received_at_ms}
        record["health"] = health.to_json_object()
        atomic_write_bytes(self.directory / f"{box_id}.json", dump_json(record), mode=0o600)

    def all(self) -> list[BoxHealth]:
        """Every box's latest report; a file that cannot be read is skipped and logged."""
        if not self.directory.is_dir():
            return []
        boxes = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                record = json.loads(path.read_bytes())
                boxes.append(
                    BoxHealth(record["box_id"], int(record["received_at_ms"]), record["health"])
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("fleet health file %s unreadable: %s", path.name, exc)
        return boxes


def _answer(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")


async def health_route(
    request: web.Request,
    box_id: str,
    store: FleetHealthStore,
    enrolled_keys: Callable[[str], Awaitable[DevicePublicKey | None]] | None,
    check_now: CheckNowBook | None = None,
) -> web.Response:
    """One report of the box named by the client certificate (`box_id`); `enrolled_keys` is
    the pairing ledger's lookup (StorageFault when it cannot be read: 503). Only a report that
    verified is answered with the check-now instruction."""
    if request.method != "POST":
        return _answer(405, "POST only\n")
    if (request.content_length or 0) > MAX_HEALTH_BYTES:
        return _answer(413, "report too large\n")
    body = await read_whole_body(request.content, MAX_HEALTH_BYTES)
    if body is None:
        return _answer(413, "report too large\n")
    try:
        enrolled = None if enrolled_keys is None else await enrolled_keys(box_id)
    except StorageFault as exc:
        log.error("enrolled device keys unavailable client_id=%s: %s", box_id, exc)
        return _answer(503, "the back office cannot check reports now\n")
    try:
        health, signature = parse_health(body)
        if enrolled is None:
            raise KeyNotEnrolled(f"{box_id} has no enrolled device key: pair it again")
        if not enrolled.verify(signed_message(box_id, health.body()), signature):
            raise HealthRefused("the signature does not verify with the box's enrolled key")
    except HealthRefused as exc:
        log.warning("health report refused client_id=%s: %s", box_id, exc)
        return _answer(400, f"{exc}\n")
    except KeyNotEnrolled as exc:
        return _answer(409, f"{exc}\n")
    await asyncio.to_thread(store.save, box_id, health, time.time_ns() // 1_000_000)
    taken = _answer(204, "")
    if check_now is not None and await asyncio.to_thread(check_now.pending, box_id):
        taken.headers[CHECK_NOW_HEADER] = CHECK_NOW_VALUE
        log.info("asked box %s to check its fleet configuration now", box_id)
    return taken
