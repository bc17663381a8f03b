"""A recording box on a dying card: the capture service, its evidence store on a real labdisk
(tests/labdisk), and the card watch, as `mvb run` wires them (gateway/run.py), in-process.

The state directory (audit log, alarms, device key) is on the test's own file system: on a box
it is the internal flash, not the card. Files seal every second so that evidence is durable
before a fault is injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.alarms import Alarms
from demo.replay_source import ReplaySource
from gateway.capture.camera import Camera
from gateway.capture.service import CaptureService
from gateway.capture.source import SourceSpec
from gateway.card_watch import watch_card
from gateway.recorder import RecorderPolicy, TriggerPolicy
from labdisk import LabDisk
from storage.audit_io import AuditLog
from storage.devicekey import DeviceKey
from storage.envelope import RecipientPrivateKey
from storage.models import FileState
from storage.reader import ReadReport, read_evidence
from storage.space import SpacePolicy
from storage.store import EvidenceStore, StoreSettings
from tests.capture_helpers import wait_for

PRERECORD_S = 3.0
PROBE_S = 0.1
FACTS = {"device_serial": "MVB-14", "vehicle_id": "veh-14", "officer_id": "boa-14"}


@dataclass
class DyingCardRig:
    disk: LabDisk
    store: EvidenceStore
    service: CaptureService
    watch: asyncio.Task[None]
    audit_path: Path

    @property
    def camera(self) -> Camera:
        return self.service.cameras["dashcam"]

    def audit_events(self) -> list[dict[str, Any]]:
        self.store.alarms.flush()
        lines = self.audit_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    def audited(self, event: str, **fields: Any) -> bool:
        return any(
            e["event"] == event and all(e["fields"].get(k) == v for k, v in fields.items())
            for e in self.audit_events()
        )

    def sealed_files(self) -> list[Path]:
        return sorted(self.store.layout.sealed_files())

    def newest_in_ring_ns(self) -> int:
        items = self.camera.ring.snapshot(time.monotonic_ns())
        assert items, "the pre-record ring is empty"
        return items[-1].at_mono_ns

    async def ring_moves(self) -> None:
        """The pre-record ring takes new packets now (it runs in RAM whatever the card does):
        its newest packet is a second newer a moment later."""
        before_ns = self.newest_in_ring_ns()
        await wait_for(
            lambda: self.newest_in_ring_ns() >= before_ns + 1_000_000_000, "the ring to move"
        )

    async def alive(self) -> None:
        """No crash: every loop of the capture service and the card watch still runs."""
        assert not self.watch.done(), self.watch
        assert all(not task.done() for task in self.service._tasks)
        await self.ring_moves()


def every_file_reads(rig: DyingCardRig, recipient: RecipientPrivateKey) -> list[ReadReport]:
    """Every sealed file decrypts and verifies (a file the card lost at a pull may hold no more
    than its header and recovery's signed interruption record)."""
    reports = []
    for path in rig.sealed_files():
        with path.open("rb") as handle:
            reports.append(
                read_evidence(handle, recipient, device_key=rig.store.device_key.public_key())
            )
    return reports


def waiting_to_upload(store: EvidenceStore) -> dict[str, str]:
    """file id -> SHA-256 of every sealed file the uplink would send (the catalog's queue)."""
    return {
        r.file_id: str(r.sha256_hex)
        for r in store.catalog.all()
        if r.state is FileState.SEALED and r.sha256_hex is not None
    }


@contextlib.asynccontextmanager
async def dying_card_rig(
    tmp_path: Path,
    clip: Path,
    recipient: RecipientPrivateKey,
    *,
    seed: int = 14,
    probe_s: float = PROBE_S,
) -> AsyncIterator[DyingCardRig]:
    """`probe_s`: how often the card watch probes (a test that drives resume_on_card itself
    gives it an hour)."""
    disk = LabDisk(tmp_path / "card-backing", tmp_path / "card", mode="ext4", seed=seed).start()
    device = DeviceKey.load_or_create(tmp_path / "state")
    audit = AuditLog.open(tmp_path / "state" / "audit.jsonl", device)
    alarms = Alarms(None, audit.append)
    settings = StoreSettings(
        card_dir=disk.mountpoint,
        space=SpacePolicy(1 << 20, 2 << 20),
        file_target_s=1.0,
    )
    store, _ = EvidenceStore.open(settings, (recipient.public(),), device, audit, alarms=alarms)
    camera = Camera(
        ReplaySource(SourceSpec(name="dashcam", kind="replay", url=str(clip), serial="DC-14")),
        prerecord_s=PRERECORD_S,
        ring_max_bytes=32 << 20,
    )
    policy = RecorderPolicy(prerecord_s=PRERECORD_S, default_trigger=TriggerPolicy(postrecord_s=1))
    service = CaptureService(store, [camera], policy, FACTS, tick_s=0.05)
    await service.start()
    watch = asyncio.create_task(watch_card(store, service, probe_s=probe_s))
    rig = DyingCardRig(disk, store, service, watch, tmp_path / "state" / "audit.jsonl")
    try:
        yield rig
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        disk.clear_faults()
        disk.read_only(False)
        if disk.status().get("pulled"):
            disk.reinsert()
        await service.stop()
        store.close()
        alarms.close()
        audit.close()
        disk.close()
