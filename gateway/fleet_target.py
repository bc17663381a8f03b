"""The running box as the fleet applier's target: who gets which slice, and the health checks.

Applied at once: the recording policy (pre-record, post-record, maximum continuous recording,
trigger rules and upload classes) on the running cameras, and retention. Uplink and link
settings are read when the uplink starts, so they take effect at the next start of the service;
the applier still validates them with the rest.

Each piece takes only the parts it acts on or looks at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from config.local import LocalConfig
from config.local_sections import upload_class_for
from gateway.capture.service import CaptureService
from gateway.fleet_apply import HealthCheck
from gateway.policy import recorder_policy
from storage.retention import RetentionPolicy
from storage.store import EvidenceStore


class RunningBoxTarget:
    """Hands an applied configuration's slices to the capture service and the store."""

    def __init__(self, service: CaptureService, store: EvidenceStore) -> None:
        self.service = service
        self.store = store

    def hand_out(self, effective: LocalConfig) -> None:
        self.service.apply_policy(
            recorder_policy(effective),
            effective.recording.ring_max_bytes,
            lambda source: upload_class_for(source, effective.triggers),
            record_audio=effective.recording.record_audio,
        )
        retention = RetentionPolicy(retention_days=effective.storage.retention_days)
        self.store.settings = replace(self.store.settings, retention=retention)


def cameras_delivering(service: CaptureService) -> HealthCheck:
    """Health check: every camera is connected. A camera already down before the document is
    handed out is not the document's fault, but a document must not be judged good while the
    box cannot record: it is deferred until the cameras deliver (gateway/fleet_apply.py 3)."""

    async def judge(_effective: LocalConfig) -> str | None:
        down = [
            name for name, camera in service.cameras.items() if not camera.source.health.connected
        ]
        return f"camera(s) not delivering: {', '.join(sorted(down))}" if down else None

    return HealthCheck("cameras_delivering", judge, if_failing_before="defer")


class Uplink(Protocol):
    def any_link_usable(self) -> bool: ...


def back_office_reachable(uplink_of: Callable[[], Uplink | None]) -> HealthCheck:
    """Health check: with the uplink on, at least one link is usable (probed, pinned).
    `uplink_of` reads the uplink when the check runs (it starts after the applier is made).

    It judges a document only when the back office was reachable before it was handed out: a
    box whose links are all down (a signed bundle from a USB stick, a car in a garage) is judged
    on its other checks (`skip`, gateway/fleet_apply.py 3). What it catches is a document after
    which a reachable back office is no longer reachable."""

    async def judge(_effective: LocalConfig) -> str | None:
        uplink = uplink_of()
        if uplink is None or uplink.any_link_usable():
            return None
        return "the back office is not reachable on any link"

    return HealthCheck("back_office_reachable", judge, if_failing_before="skip")
