"""Make the version 2 evidence test vectors in this folder, with the version 2 writer.

They freeze the format (docs/evidence-format.md, version 2): if a change of the code makes these
files unreadable, the change broke the format that boxes write. Made by

    python tests/data/evidence_v2/make_vectors.py tests/data/evidence_v2

at the commit that added them. Three holder keys (test keys, stored unencrypted so the tests
stay fast), a file for 2 of those 3 holders, a file for one key alone, and `vectors.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import uuid
from pathlib import Path

from storage.card import CardLayout
from storage.envelope import RecipientPrivateKey, RecipientSet, RecordingKey
from storage.evidence_format import EvidenceHeader
from storage.writer import EvidenceFileWriter

CREATED_AT_MS = 1_790_000_000_000


def write(card: Path, key: RecordingKey, media: bytes, name: str, out: Path) -> dict[str, object]:
    header = EvidenceHeader(
        recording_id=key.recording_id,
        file_id=uuid.uuid4().bytes,
        file_seq=0,
        created_at_ms=CREATED_AT_MS,
        chunk_max_bytes=4096,
        nonce_prefix=os.urandom(7),
        recipients=key.stanzas,
        threshold=key.threshold,
    )
    writer = EvidenceFileWriter(
        CardLayout(card),
        header,
        key.file_keys(header.file_id),
        clock_ms=lambda: CREATED_AT_MS + 1000,
    )
    writer.append_metadata({"type": "recording", "camera": "dashcam", "container": "mpegts"})
    for index in range(3):
        writer.append_media(media[index * len(media) // 3 : (index + 1) * len(media) // 3])
        writer.append_metadata({"type": "segment", "index": index})
        writer.sync()
    shutil.copyfile(writer.seal().path, out / name)
    key.destroy()
    return {
        "media_sha256": hashlib.sha256(media).hexdigest(),
        "media_bytes": len(media),
        "threshold": header.threshold,
    }


def main(out: Path) -> None:
    card = out / "card"
    holders = {
        name: RecipientPrivateKey.generate() for name in ("holder-a", "holder-b", "holder-c")
    }
    for name, key in holders.items():
        (out / f"{name}.key").write_text(key.pem() + "\n")
    publics = tuple(key.public() for key in holders.values())
    vectors = {
        "two-of-three.mvbe": write(
            card,
            RecordingKey(uuid.uuid4().bytes, RecipientSet(publics, 2)),
            random.Random(2001).randbytes(15_000),
            "two-of-three.mvbe",
            out,
        ),
        "one-key.mvbe": write(
            card,
            RecordingKey(uuid.uuid4().bytes, RecipientSet(publics[:1], 1)),
            random.Random(2002).randbytes(9_000),
            "one-key.mvbe",
            out,
        ),
    }
    shutil.rmtree(card)
    (out / "vectors.json").write_text(json.dumps(vectors, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
