"""Shared builders for evidence tests: keys, headers and writers with known content."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.card import CardLayout
from storage.envelope import RecipientPrivateKey, RecordingKey
from storage.evidence_format import NONCE_PREFIX_BYTES, EvidenceHeader
from storage.writer import EvidenceFileWriter, SealedFile

FIXED_NOW_MS = 1_790_000_000_000


def fixed_clock() -> int:
    return FIXED_NOW_MS


@dataclass
class WrittenFile:
    path: Path
    media: bytes
    sealed: SealedFile | None
    key: RecordingKey


def new_header(
    key: RecordingKey, *, chunk_max_bytes: int = 4096, file_seq: int = 0
) -> EvidenceHeader:
    return EvidenceHeader(
        recording_id=key.recording_id,
        file_id=uuid.uuid4().bytes,
        file_seq=file_seq,
        created_at_ms=FIXED_NOW_MS,
        chunk_max_bytes=chunk_max_bytes,
        nonce_prefix=os.urandom(NONCE_PREFIX_BYTES),
        recipients=key.stanzas,
        threshold=key.threshold,
    )


def open_writer(
    card: Path,
    recipient: RecipientPrivateKey,
    *,
    chunk_max_bytes: int = 4096,
    key: RecordingKey | None = None,
) -> tuple[EvidenceFileWriter, RecordingKey]:
    key = key or RecordingKey(uuid.uuid4().bytes, (recipient.public(),))
    header = new_header(key, chunk_max_bytes=chunk_max_bytes)
    writer = EvidenceFileWriter(
        CardLayout(card), header, key.file_keys(header.file_id), clock_ms=fixed_clock
    )
    return writer, key


def write_file(
    card: Path,
    recipient: RecipientPrivateKey,
    media: bytes,
    *,
    segments: int = 4,
    chunk_max_bytes: int = 4096,
    key: RecordingKey | None = None,
) -> WrittenFile:
    """A sealed file whose media is `media`, cut into `segments` segment boundaries."""
    writer, key = open_writer(card, recipient, chunk_max_bytes=chunk_max_bytes, key=key)
    writer.append_metadata({"type": "recording", "camera": "dashcam", "container": "mpegts"})
    step = max(1, len(media) // segments)
    for index, start in enumerate(range(0, len(media), step)):
        writer.append_media(media[start : start + step])
        writer.append_metadata({"type": "segment", "index": index})
        writer.sync()
    sealed = writer.seal()
    return WrittenFile(sealed.path, media, sealed, key)


def open_evidence_fds(card: Path) -> list[str]:
    """Evidence files on the card this process still holds open (the catalog's sqlite aside)."""
    evidence = str(CardLayout(card).evidence_root)
    found: list[str] = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # an fd closed meanwhile (the listing's own, say)
            target = str(fd.readlink())
            if target.startswith(evidence):
                found.append(target)
    return found


@contextlib.contextmanager
def mounted_tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A real size-limited file system (the suite runs as root), unmounted whatever happens.

    A mount still busy at the end means the code under test leaked an open file: it is detached
    lazily (never left behind) and the test fails with the reason.
    """
    assert os.geteuid() == 0, "mounting a tmpfs needs root; the suite runs as root"
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)], check=True
    )
    try:
        yield mountpoint
    finally:
        done = subprocess.run(
            ["umount", str(mountpoint)], check=False, capture_output=True, text=True
        )
        if done.returncode != 0:
            subprocess.run(["umount", "--lazy", str(mountpoint)], check=True)
            pytest.fail(f"card still in use at teardown: {done.stderr.strip()}")


def write_box_config(
    root: Path,
    recipient_pub: Path,
    *,
    device_serial: str = "MVB-TEST-0001",
    vehicle_id: str = "veh-test-1",
    storage_lines: str = "",
    data_dir: Path | None = None,
) -> Path:
    """`root/box.toml` for a box whose card and state live under `root` (or under `data_dir`: a
    labdisk mount); `storage_lines` are appended to [storage] (tests use it to set sizes, or to
    break the file on purpose).

    The officer's web listener is off unless `storage_lines` has a [web] table: its default
    ports are fixed, and boxes of tests running side by side must not race for them."""
    root.mkdir(parents=True, exist_ok=True)
    web_lines = "" if "[web]" in storage_lines else "\n[web]\nenabled = false\n"
    config = root / "box.toml"
    config.write_text(
        f"""
[box]
device_serial = "{device_serial}"
vehicle_id = "{vehicle_id}"
state_dir = "{(data_dir or root) / "state"}"
card_dir = "{(data_dir or root) / "card"}"
recipient_keys = ["{recipient_pub}"]

[storage]
chunk_max_bytes = 65536
card_reserve_bytes = 4194304
min_free_to_start_bytes = 8388608
{storage_lines}
{web_lines}"""
    )
    return config
