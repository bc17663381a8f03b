"""Make the version 1 evidence test vectors in this folder, with the version 1 writer.

Version 1 is what boxes wrote before issue 13 (docs/evidence-format.md section 9); readers must
keep reading it. These files were written by the real v1 writer, not by a re-implementation:

    git worktree add /tmp/mvb-v1 e983ee7          # the last commit that writes version 1
    PYTHONPATH=/tmp/mvb-v1 python tests/data/evidence_v1/make_vectors.py tests/data/evidence_v1

It writes two recipient keys, a device key's public half, a sealed file for both recipients, an
interrupted file (writer abandoned, then recovered and signed with the device key) and
`vectors.json`: what a reader must get out of each. The keys are test keys, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import uuid
from pathlib import Path

from storage.card import CardLayout
from storage.devicekey import DeviceKey
from storage.envelope import RecipientPrivateKey, RecordingKey
from storage.evidence_format import EvidenceHeader
from storage.recovery import recover_card
from storage.writer import EvidenceFileWriter

CREATED_AT_MS = 1_790_000_000_000
CHUNK_MAX_BYTES = 4096


def writer_for(card: Path, key: RecordingKey, seq: int) -> EvidenceFileWriter:
    header = EvidenceHeader(
        recording_id=key.recording_id,
        file_id=uuid.uuid4().bytes,
        file_seq=seq,
        created_at_ms=CREATED_AT_MS,
        chunk_max_bytes=CHUNK_MAX_BYTES,
        nonce_prefix=random.randbytes(7),
        recipients=key.stanzas,
    )
    file_key = key.file_key(header.file_id)
    return EvidenceFileWriter(
        CardLayout(card), header, file_key, clock_ms=lambda: CREATED_AT_MS + 1000
    )


def write_segments(writer: EvidenceFileWriter, media: bytes, segments: int) -> None:
    writer.append_metadata({"type": "recording", "camera": "dashcam", "container": "mpegts"})
    step = len(media) // segments
    for index in range(segments):
        writer.append_media(media[index * step : (index + 1) * step])
        writer.append_metadata({"type": "segment", "index": index})
        writer.sync()


def main(out: Path) -> None:
    card = out / "card"
    a, b = RecipientPrivateKey.generate(), RecipientPrivateKey.generate()
    device = DeviceKey.generate()
    key = RecordingKey(uuid.uuid4().bytes, (a.public(), b.public()))

    sealed_media = random.Random(1301).randbytes(20_000)
    writer = writer_for(card, key, 0)
    write_segments(writer, sealed_media, 4)
    sealed = writer.seal().path

    interrupted_media = random.Random(1302).randbytes(12_000)
    writer = writer_for(card, key, 1)
    write_segments(writer, interrupted_media, 3)
    writer.abandon()  # the power cut: recovery closes the file with a signed record
    [recovered] = recover_card(
        CardLayout(card), device, lambda *a, **k: None, 1_790_000_100_000
    ).recovered
    interrupted = CardLayout(card).sealed_path(recovered.recording_id, recovered.file_id)
    key.destroy()

    (out / "recipient-a.key").write_text(a.pem() + "\n")
    (out / "recipient-b.key").write_text(b.pem() + "\n")
    (out / "device_key.pub.pem").write_bytes(device.public_pem())
    shutil.copyfile(sealed, out / "sealed-two-recipients.mvbe")
    shutil.copyfile(interrupted, out / "interrupted.mvbe")
    shutil.rmtree(card)
    vectors = {
        "sealed-two-recipients.mvbe": {
            "media_sha256": hashlib.sha256(sealed_media).hexdigest(),
            "media_bytes": len(sealed_media),
            "interrupted_at_chunk": None,
        },
        "interrupted.mvbe": {
            "media_sha256": hashlib.sha256(interrupted_media).hexdigest(),
            "media_bytes": len(interrupted_media),
            "interrupted_at_chunk": recovered.interrupted_at_chunk,
        },
    }
    (out / "vectors.json").write_text(json.dumps(vectors, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
