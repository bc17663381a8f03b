"""Shared by the capture tests: a store on a temporary card, decryption, demuxing, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av

from storage.audit_io import AuditLog
from storage.devicekey import DeviceKey
from storage.envelope import RecipientPrivateKey
from storage.reader import ReadReport, read_evidence
from storage.space import SpacePolicy
from storage.store import EvidenceStore, StoreSettings


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Poll `condition` until true; fail naming `what` after `timeout_s` (no timed asserts)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def store_on(tmp_path: Path, recipient: RecipientPrivateKey) -> Iterator[EvidenceStore]:
    """An evidence store with its card and state under `tmp_path`, closed afterwards."""
    device = DeviceKey.load_or_create(tmp_path / "state")
    audit = AuditLog.open(tmp_path / "state" / "audit.jsonl", device)
    settings = StoreSettings(card_dir=tmp_path / "card", space=SpacePolicy(1 << 20, 2 << 20))
    store, _ = EvidenceStore.open(settings, (recipient.public(),), device, audit)
    try:
        yield store
    finally:
        store.close()
        audit.close()


def decrypt_all(store: EvidenceStore, key: RecipientPrivateKey) -> list[tuple[ReadReport, bytes]]:
    """Every sealed file on the card: its report and its media bytes."""
    out = []
    for path in store.layout.sealed_files():
        media = io.BytesIO()
        with path.open("rb") as handle:
            out.append((read_evidence(handle, key, media_out=media), media.getvalue()))
    return out


def video_packets(media: bytes) -> list[Any]:
    with av.open(io.BytesIO(media), mode="r", format="mpegts") as container:
        return [p for p in container.demux(video=0) if p.size]


def segments(report: ReadReport) -> list[dict[str, Any]]:
    return [m for m in report.metadata if m["type"] == "segment"]


def write_sound_clip(path: Path, *, seconds: float, fps: int) -> Path:
    """An MPEG-TS clip of H.264 (a keyframe every second, no B-frames) and AAC sound at 48 kHz,
    made by the ffmpeg CLI: the capture tests' camera with sound."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc=s=160x120:r={fps}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", "-g", str(fps), "-bf", "0",
         "-c:a", "aac", "-f", "mpegts", str(path)],
        check=True,
    )  # fmt: skip
    return path
