"""Decrypting evidence in the back office: exact media bytes out, metadata as JSON.

Nothing is left behind for a file that fails: media goes to a temporary file that is renamed into
place only after the whole file authenticated (common/durable.py `pending_file`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.durable import atomic_write_text, make_dirs, pending_file
from storage.envelope import RecipientPrivateKey
from storage.reader import ReadReport, SignatureVerifier, read_evidence

_EXTENSIONS = {"mpegts": ".ts", "mp4": ".mp4", "matroska": ".mkv"}


@dataclass(frozen=True, slots=True)
class DecryptedFile:
    media_path: Path
    metadata_path: Path
    report: ReadReport


def _extension(report: ReadReport) -> str:
    container = next(
        (m.get("container") for m in report.metadata if m.get("type") == "recording"), None
    )
    return _EXTENSIONS.get(str(container), ".bin")


def decrypt_file(
    path: Path,
    keys: RecipientPrivateKey | Sequence[RecipientPrivateKey],
    out_dir: Path,
    device_key: SignatureVerifier | None = None,
    *,
    before_commit: Callable[[ReadReport], None] | None = None,
) -> DecryptedFile:
    """Decrypt `path` into `out_dir`; raises EvidenceError (one-line message) on any fault.

    `keys`: the key, or the key holders' keys (a four-eyes file needs as many as its threshold).
    `before_commit` runs once the whole file authenticated and before the plaintext is put in
    place (the viewing log's entry); if it raises, nothing is left behind.
    """
    make_dirs(out_dir)
    # mode=None: 0o666 less the umask, as the plain open() that wrote these before.
    with path.open("rb") as source, pending_file(out_dir, name=path.name, mode=None) as media:
        report = read_evidence(source, keys, media_out=media.handle, device_key=device_key)
        if before_commit is not None:
            before_commit(report)
        stem = report.header.file_id.hex()
        media_path = out_dir / (stem + _extension(report))
        media.commit(media_path)
    metadata_path = out_dir / (stem + ".json")
    metadata_text = json.dumps(_metadata_document(path, report), indent=2) + "\n"
    atomic_write_text(metadata_path, metadata_text, mode=None)
    return DecryptedFile(media_path, metadata_path, report)


def _metadata_document(path: Path, report: ReadReport) -> dict[str, object]:
    header = report.header
    return {
        "source_file": path.name,
        "source_sha256": report.file_sha256_hex,
        "recording_id": header.recording_id.hex(),
        "file_id": header.file_id.hex(),
        "file_seq": header.file_seq,
        "created_at_ms": header.created_at_ms,
        "chunks": report.chunks,
        "media_bytes": report.media_bytes,
        "interrupted_at_chunk": report.interrupted_at_chunk,
        "interruption_signature_checked": report.interruption_signature_checked,
        "format_version": report.format_version,
        "key_committed": report.key_committed,
        "threshold": header.threshold,
        "key_ids": list(report.key_ids),
        "metadata": report.metadata,
    }


def describe(result: DecryptedFile) -> str:
    """One line for the CLI."""
    r = result.report
    state = "sealed"
    if r.interrupted_at_chunk is not None:
        signed = (
            "device signature verified"
            if r.interruption_signature_checked
            else ("device signature not checked: pass --device-key")
        )
        state = f"interrupted at chunk {r.interrupted_at_chunk} (power cut; {signed})"
    if not r.key_committed:  # a version 1 file (docs/evidence-format.md 9)
        state += ", format v1: header not key-committed"
    return f"{result.media_path.name}: {r.media_bytes} media bytes, {r.chunks} chunks, {state}"
