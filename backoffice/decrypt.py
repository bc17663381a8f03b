"""Decrypting evidence in the back office: exact media bytes out, metadata as JSON.

Nothing is left behind for a file that fails: media goes to a temporary file that is renamed into
place only after the whole file authenticated (common/durable.py `pending_file`).

Fail closed on power cuts: a file that ends in an interruption record claims "the box was
writing this when it stopped", and only the box's device key can check that claim
(docs/evidence-format.md 6). Without the device key such a file is refused
(`InterruptionUnchecked`), unless the caller explicitly allows it (`allow_unverified`, the CLI's
`--unverified`): then the output line and the metadata written say that the claim was not
checked (`interruption_signature: "not checked (--unverified)"`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.durable import atomic_write_text, make_dirs, pending_file
from common.faults import MisuseFault
from storage.envelope import RecipientPrivateKey
from storage.reader import ReadReport, SignatureVerifier, read_evidence

_EXTENSIONS = {"mpegts": ".ts", "mp4": ".mp4", "matroska": ".mkv"}


UNVERIFIED_NOTE = "not checked (--unverified)"


class InterruptionUnchecked(MisuseFault):
    """The file ends in an interruption record and no device key was given to check it."""


@dataclass(frozen=True, slots=True)
class DecryptedFile:
    media_path: Path
    metadata_path: Path
    report: ReadReport
    unverified: bool = False
    """Decrypted with an interruption record nobody checked (`allow_unverified`)."""


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
    allow_unverified: bool = False,
) -> DecryptedFile:
    """Decrypt `path` into `out_dir`; raises EvidenceError (one-line message) on any fault, and
    InterruptionUnchecked for an interrupted file without `device_key` unless
    `allow_unverified` (nothing is written then, and `before_commit` is not called).

    `keys`: the key, or the key holders' keys (a four-eyes file needs as many as its threshold).
    `before_commit` runs once the whole file authenticated and before the plaintext is put in
    place (the viewing log's entry); if it raises, nothing is left behind.
    """
    make_dirs(out_dir)
    # mode=None: 0o666 less the umask, as the plain open() that wrote these before.
    with path.open("rb") as source, pending_file(out_dir, name=path.name, mode=None) as media:
        report = read_evidence(source, keys, media_out=media.handle, device_key=device_key)
        unverified = unchecked_interruption(report)
        if unverified and not allow_unverified:
            raise InterruptionUnchecked(
                f"ends in an interruption record (a power cut at chunk "
                f"{report.interrupted_at_chunk}, it claims) that only the box's device key can "
                "check: pass --device-key, or --unverified to decrypt it marked unverified"
            )
        if before_commit is not None:
            before_commit(report)
        stem = report.header.file_id.hex()
        media_path = out_dir / (stem + _extension(report))
        media.commit(media_path)
    metadata_path = out_dir / (stem + ".json")
    metadata_text = json.dumps(_metadata_document(path, report), indent=2) + "\n"
    atomic_write_text(metadata_path, metadata_text, mode=None)
    return DecryptedFile(media_path, metadata_path, report, unverified)


def unchecked_interruption(report: ReadReport) -> bool:
    """The file claims a power cut whose device signature was not checked."""
    return report.interrupted_at_chunk is not None and not report.interruption_signature_checked


def _interruption_signature(report: ReadReport) -> str | None:
    if report.interrupted_at_chunk is None:
        return None
    return "verified" if report.interruption_signature_checked else UNVERIFIED_NOTE


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
        "interruption_signature": _interruption_signature(report),
        "metadata": report.metadata,
    }


def describe(result: DecryptedFile) -> str:
    """One line for the CLI."""
    r = result.report
    state = "sealed"
    if r.interrupted_at_chunk is not None and r.interruption_signature_checked:
        state = (
            f"interrupted at chunk {r.interrupted_at_chunk} (power cut; device signature verified)"
        )
    elif r.interrupted_at_chunk is not None:
        state = (
            f"interrupted at chunk {r.interrupted_at_chunk} (a power cut it claims: UNVERIFIED, "
            "device signature not checked, decrypted with --unverified)"
        )
    if not r.key_committed:  # a version 1 file (docs/evidence-format.md 9)
        state += ", format v1: header not key-committed"
    return f"{result.media_path.name}: {r.media_bytes} media bytes, {r.chunks} chunks, {state}"
