"""The running box as the fleet applier's target: who gets which slice, and the health checks.

Applied at once: the recording policy (pre-record, post-record, maximum continuous recording,
trigger rules and upload classes) on the running cameras, and retention. Uplink and link
settings are read when the uplink starts, so they take effect at the next start of the service;
the applier still validates them with the rest.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from config.local import LocalConfig, upload_class_for
from gateway.fleet_apply import HealthCheck
from gateway.policy import recorder_policy
from storage.retention import RetentionPolicy

if TYPE_CHECKING:
    from gateway.run import RunningBox


class RunningBoxTarget:
    def __init__(self, running: RunningBox) -> None:
        self.running = running

    def hand_out(self, effective: LocalConfig) -> None:
        self.running.service.apply_policy(
            recorder_policy(effective),
            effective.recording.ring_max_bytes,
            lambda source: upload_class_for(source, effective.triggers),
        )
        store = self.running.box.store
        retention = RetentionPolicy(retention_days=effective.storage.retention_days)
        store.settings = replace(store.settings, retention=retention)


def cameras_delivering(running: RunningBox) -> HealthCheck:
    """Health check: every camera is connected (a camera that stopped is not the document's
    fault, but a document must not be judged good while the box cannot record)."""

    async def check(_effective: LocalConfig) -> str | None:
        down = [
            name
            for name, camera in running.service.cameras.items()
            if not camera.source.health.connected
        ]
        return f"camera(s) not delivering: {', '.join(sorted(down))}" if down else None

    return check


def back_office_reachable(running: RunningBox) -> HealthCheck:
    """Health check: with the uplink on, at least one link is usable (probed, pinned)."""

    async def check(_effective: LocalConfig) -> str | None:
        uplink = running.uplink
        if uplink is None or uplink.any_link_usable():
            return None
        return "the back office is not reachable on any link"

    return check
