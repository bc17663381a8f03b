"""Card wear (issue 14 item 5): one camera through the box's storage code onto labdisk.

    python -m bench.wear [--minutes 60] [--no-upload] [--link cellular|wifi] [--chunk-kib 4096]
                         [--mode ext4|strict] [--out DIR]         (make bench-wear; root: FUSE)

The box's own objects write onto a labdisk mount holding `card/` and `state/` (the box's card
and state directory): `EvidenceStore` with its catalog, `AuditLog`, `TrustedClock`,
`UplinkLedger`. Only the drivers around them are emulated, call for call as the box makes them:

- **the camera and the muxer** (gateway/capture/muxer.py): `fps` packets a second of
  `bitrate_bps` media, a segment every `segment_s` (the default `segment_min_s`, one GOP),
  each ended by one GPS metadata object and `StreamWriter.end_segment` (the durable point); a
  file rolls after `file_s` of footage (the default `file_target_s`), a recording after
  `recording_s`;
- **the GPS watcher** (gateway/gps.py): a fix a second observed by trusted time, which is
  saved when it asks to be (`needs_save`), and at each retention pass when dirty;
- **the uplink** (transport/uplink.py `_mark_uploading`, `_on_exchange`, `_conclude`) for every
  sealed file at once: UPLOADING, the upload URL into the ledger at creation, the link's data
  budget into the ledger after every chunk (`cellular`: a link with a monthly cap; `wifi`: none),
  the attestation (audit, catalog), `uplink.uploaded`, the retention pass that deletes the
  attested file, the ledger forgetting it, and the audit shipper's position (one per upload: the
  shipper is hurried after each);
- **the retention timer** (gateway/watchers.py `keep_retention`): a pass every
  `retention_check_s` of footage.

Footage time, not wall time, paces all of it: the run takes as long as the disk needs, and a
simulated hour is an hour's writes (bench/wear_figures.py: how a shorter run is scaled, what
each figure means). The wall and monotonic clocks the store and trusted time read are the
footage clock. Each run records twice, on a card whose sqlite files were made before (4 KiB
pages: the baseline) and on a new card, and prints both and their comparison.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.wear_figures import (
    WEAR_CLASSES,
    WearFigures,
    figures_from_stats,
    render,
    render_comparison,
)
from common.durable import atomic_write_text, make_dirs
from gateway.box import AUDIT_LOG_NAME
from labdisk import LabDisk
from labdisk.durability import Mode
from storage.audit_io import AuditLog
from storage.card import CATALOG_DIR
from storage.devicekey import DeviceKey
from storage.envelope import RecipientPrivateKey
from storage.models import FileState
from storage.space import SpacePolicy
from storage.sqlite_files import create_database
from storage.store import EvidenceStore, StoreSettings, StreamWriter
from storage.trusted_time_io import TrustedClock
from storage.writer import SealedFile
from transport.audit_shipping_io import POSITION_FILE
from transport.budget import BudgetState
from transport.chunk_size import DEFAULT_MAX_CHUNK_BYTES
from transport.ledger import LEDGER_DIR, FileUpload, UplinkLedger

START_WALL_MS = 1_796_000_000_000  # 2026-11: any fixed start; the footage clock runs from it
RANDOM_POOL_BYTES = 1 << 20  # the media: encrypted before it reaches the card, so any bytes do


@dataclass(frozen=True)
class Workload:
    """What is recorded and uploaded. Units in the names; defaults are the box's defaults."""

    footage_s: int = 3600
    bitrate_bps: int = 4_000_000
    fps: int = 25
    segment_s: int = 1
    file_s: int = 60
    recording_s: int = 600
    upload: bool = True
    link: str = "cellular"  # "cellular": a data budget written per chunk; "wifi": none
    chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    retention_check_s: int = 600

    @property
    def packet_bytes(self) -> int:
        return self.bitrate_bps // 8 // self.fps


@dataclass(frozen=True)
class CardVariant:
    """Which card the box finds: `page_bytes` None is a new card (the box makes its databases,
    storage/sqlite_files.py); a number is a card whose catalog and ledger were made with that
    page size before (4096: every card written before small pages)."""

    name: str
    page_bytes: int | None


NEW_CARD: Final = CardVariant("new card (1 KiB sqlite pages)", None)
OLD_CARD: Final = CardVariant("card from before (4 KiB sqlite pages)", 4096)


class FootageClock:
    """Wall and monotonic milliseconds that advance only when the workload says so."""

    def __init__(self) -> None:
        self.elapsed_ms = 0

    def wall_ms(self) -> int:
        return START_WALL_MS + self.elapsed_ms

    def mono_ms(self) -> int:
        return 1_000_000 + self.elapsed_ms


@dataclass
class RunResult:
    footage_s: int
    evidence_bytes: int
    files_sealed: int
    files_deleted: int
    wall_s: float
    stats: dict[str, dict[str, int]]

    def figures(self) -> WearFigures:
        return figures_from_stats(self.stats, self.footage_s, self.evidence_bytes)


class Box:
    """The box's storage objects on one mount, and the drivers that make it write."""

    def __init__(
        self, root: Path, workload: Workload, clock: FootageClock, card: CardVariant
    ) -> None:
        self.workload = workload
        self.clock = clock
        self.card, self.state = root / "card", root / "state"
        make_dirs(self.card)
        make_dirs(self.state)
        if card.page_bytes is not None:  # a card whose databases were made before
            for folder in (self.card / CATALOG_DIR, self.card / LEDGER_DIR):
                make_dirs(folder)
                create_database(folder, page_bytes=card.page_bytes)
        self.device_key = DeviceKey.load_or_create(self.state)
        self.audit = AuditLog.open(
            self.state / AUDIT_LOG_NAME, self.device_key, clock_ms=clock.wall_ms
        )
        self.trusted = TrustedClock.open(
            self.state,
            boot_id="wear-bench-boot",
            mono_ms=clock.mono_ms,
            wall_ms=clock.wall_ms,
            audit=self.audit.append,
        )
        settings = StoreSettings(
            card_dir=self.card,
            # The box rolls a file when `file_target_s` passed on its monotonic clock; here
            # footage runs faster than the wall clock, so the same roll comes by size: a file
            # reaches `file_s` seconds of media exactly at the segment that ends its minute.
            file_target_s=float("inf"),
            file_target_bytes=workload.file_s * workload.bitrate_bps // 8,
            space=SpacePolicy(reserve_bytes=0, min_free_to_start_bytes=1),
        )
        recipient = RecipientPrivateKey.generate().public()
        self.store, _report = EvidenceStore.open(
            settings, (recipient,), self.device_key, self.audit, clock.wall_ms, trusted=self.trusted
        )
        self.ledger = UplinkLedger(self.card / LEDGER_DIR)
        self.budget = BudgetState(datetime.date(2026, 11, 1), 0)
        self._pool = os.urandom(RANDOM_POOL_BYTES)
        self._pool_at = 0
        self.evidence_bytes = 0
        self.files_sealed = 0

    def close(self) -> None:
        self.ledger.close()
        self.store.close()
        self.trusted.close()
        self.audit.close()

    # -- drivers ----------------------------------------------------------------------------

    def record(self) -> None:
        """The whole footage: recordings of `recording_s`, files of `file_s`, 1 s segments."""
        w = self.workload
        self._gps_fix()  # the box has a fix before it records (trusted time known)
        for recording_start_s in range(0, w.footage_s, w.recording_s):
            recording = self.store.start_recording({"trigger": {"source": "officer"}})
            stream = recording.open_stream("dashcam", device_serial="CAM-WEAR-1")
            seconds = min(w.recording_s, w.footage_s - recording_start_s)
            for second in range(recording_start_s, recording_start_s + seconds):
                for index in range(0, w.fps):
                    self.clock.elapsed_ms = second * 1000 + index * 1000 // w.fps
                    stream.append_media(self._packet())
                self.clock.elapsed_ms = (second + 1) * 1000
                sealed_before = len(recording.sealed)
                self._end_segment(stream, second)  # rolls the file when it is full
                self._upload_all(recording.sealed[sealed_before:])
                self._gps_fix()
                if (second + 1) % w.retention_check_s == 0:
                    self._retention_timer()
            sealed_before = len(recording.sealed)
            recording.close()
            self._upload_all(recording.sealed[sealed_before:])

    def _packet(self) -> bytes:
        size = self.workload.packet_bytes
        if self._pool_at + size > len(self._pool):
            self._pool_at = 0
        self._pool_at += size
        self.evidence_bytes += size
        return self._pool[self._pool_at - size : self._pool_at]

    def _end_segment(self, stream: StreamWriter, second: int) -> None:
        """As gateway/capture/muxer.py `_end_segment`: the GPS window, then the segment facts."""
        now_ms = self.clock.wall_ms()
        stream.add_metadata(
            {
                "type": "gps",
                "time_ms": now_ms,
                "lat": 52.0907 + second * 1e-5,
                "lon": 5.1214,
                "alt_m": 4.2,
                "speed_mps": 13.9,
                "track_deg": 271.3,
                "mode": 3,
                "eph_m": 3.1,
            }
        )
        per_segment = self.workload.packet_bytes * self.workload.fps * self.workload.segment_s
        stream.end_segment(
            {
                "index": second,
                "start_wall_ms": now_ms - 1000,
                "start_mono_ns": (self.clock.mono_ms() - 1000) * 1_000_000,
                "end_wall_ms": now_ms - 40,
                "end_mono_ns": (self.clock.mono_ms() - 40) * 1_000_000,
                "media_offset": second * per_segment,
                "media_bytes": per_segment,
                "first_pts": second * 90_000,
                "last_pts": second * 90_000 + 86_400,
                "time_base": "1/90000",
                "packets": self.workload.fps,
                "keyframe_start": True,
                "connection": 1,
            }
        )

    def _gps_fix(self) -> None:
        """gateway/gps.py: each fix is observed; a first anchor or a conflict is saved soon."""
        self.trusted.observe_gps(self.clock.wall_ms(), self.clock.mono_ms())
        if self.trusted.needs_save:
            self.trusted.save()

    def _retention_timer(self) -> None:
        """gateway/watchers.py `keep_retention`: a pass, and trusted time saved when dirty."""
        self.store.apply_retention()
        if self.trusted.dirty:
            self.trusted.save()

    def _upload_all(self, sealed: list[SealedFile]) -> None:
        for file in sealed:
            self.files_sealed += 1
            if self.workload.upload:
                self._upload(file)

    def _upload(self, file: SealedFile) -> None:
        """transport/uplink.py, one file over a link that works: its writes, in its order."""
        file_id, size = file.sidecar.file_id, file.sidecar.size_bytes
        self.store.catalog.transition(file_id, FileState.UPLOADING)  # _mark_uploading
        self.ledger.file(file_id)
        # _on_exchange: the creation's answer brings the upload URL (no body bytes) ...
        self.ledger.put_file(file_id, FileUpload(upload_url=f"/files/{file_id}"))
        # ... then every PATCH with a body spends the link's budget, written at once.
        for _offset in range(0, size, self.workload.chunk_bytes):
            if self.workload.link == "cellular":
                sent = min(self.workload.chunk_bytes, size - _offset)
                self.budget = BudgetState(self.budget.cycle_start, self.budget.used_bytes + sent)
                self.ledger.put_budget("lte", self.budget.to_dict())
        # _conclude: the attestation, the upload, the deletion it allows, the ledger forgets.
        self.store.record_attestation(file_id, file.sidecar.sha256_hex)
        self.audit.append("uplink.uploaded", file_id=file_id, link="lte", transport="https")
        self.store.apply_retention()
        self.ledger.forget_file(file_id)
        # The audit shipper, hurried: it sends the new entries and keeps its position.
        head, end_bytes = self.audit.durable_end()
        position = f'{{"end_bytes": {end_bytes}, "seq": {head.seq}, "sha256": "{head.sha256_hex}"}}'
        atomic_write_text(self.state / POSITION_FILE, position, mode=0o600)

    def files_deleted(self) -> int:
        return sum(r.state is FileState.DELETED for r in self.store.catalog.all())


def run(
    workload: Workload, workdir: Path, *, card: CardVariant = NEW_CARD, mode: Mode = "ext4"
) -> RunResult:
    """Mount labdisk under `workdir`, record `workload`, return the counters and facts."""
    clock = FootageClock()
    with LabDisk(workdir / "backing", workdir / "mount", mode=mode, classes=WEAR_CLASSES) as disk:
        box = Box(workdir / "mount", workload, clock, card)
        try:
            disk.stats(reset=True)  # what opening wrote once (the catalog's creation): not wear
            started = time.perf_counter()
            box.record()
            wall_s = time.perf_counter() - started
            stats: dict[str, dict[str, int]] = disk.stats()["classes"]
            deleted = box.files_deleted()
        finally:
            box.close()
    return RunResult(
        workload.footage_s, box.evidence_bytes, box.files_sealed, deleted, wall_s, stats
    )


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Card wear: bytes written per byte of evidence")
    parser.add_argument("--minutes", type=float, default=60.0, help="footage recorded (min)")
    parser.add_argument("--no-upload", action="store_true", help="record only, nothing uploaded")
    parser.add_argument("--link", choices=("cellular", "wifi"), default="cellular")
    parser.add_argument(
        "--chunk-kib",
        type=int,
        default=DEFAULT_MAX_CHUNK_BYTES // 1024,
        help="upload chunk (KiB): 4096 on a good link, 256 (the floor) on a slow one",
    )
    parser.add_argument("--mode", choices=("ext4", "strict"), default="ext4")
    parser.add_argument("--out", type=Path, default=None, help="work dir (default: cwd)")
    return parser.parse_args()


def main() -> None:
    """Both cards in one run: the box as it is (a new card) and the baseline (an old card)."""
    args = _args()
    workload = Workload(
        footage_s=round(args.minutes * 60),
        upload=not args.no_upload,
        link=args.link,
        chunk_bytes=args.chunk_kib * 1024,
    )
    workdir = Path(tempfile.mkdtemp(prefix="mvb-wear-", dir=args.out or Path.cwd()))
    print(f"# bench/wear.py: {workload}, labdisk mode {args.mode}")
    results: dict[str, WearFigures] = {}
    try:
        for card in (OLD_CARD, NEW_CARD):
            result = run(workload, workdir / str(len(results)), card=card, mode=args.mode)
            print(
                f"\n## {card.name}: files sealed {result.files_sealed}, deleted after "
                f"attestation {result.files_deleted}, wall {result.wall_s:.1f} s\n"
            )
            print(render(result.figures()))
            results[card.name] = result.figures()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n" + render_comparison(results, baseline=OLD_CARD.name))


if __name__ == "__main__":
    main()
