"""Version 1 files, as boxes in the field wrote them, stay readable (docs/evidence-format.md 9).

The vectors in tests/data/evidence_v1 were written by the version 1 writer itself (how: its
make_vectors.py). A reader must open them with either recipient key, report them as version 1
and not key-committed, check the power cut's signature, refuse a v1 file whose two stanzas hold
different keys when it holds both, and recovery must still close a v1 file cut by a power cut.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.DH import import_x25519_public_key, key_agreement
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey import ECC

from storage.card import CardLayout, Sidecar
from storage.devicekey import DeviceKey, DevicePublicKey
from storage.envelope import RecipientPrivateKey, RecipientPublicKey
from storage.errors import BadHeaderMac, TruncatedFile
from storage.evidence_format import FIXED_HEADER_BYTES, STANZA_BYTES, decode_framing, decode_header
from storage.reader import ReadReport, read_evidence
from storage.recovery import recover_part_file

VECTORS = Path(__file__).resolve().parents[1] / "data" / "evidence_v1"
EXPECTED: dict[str, dict[str, Any]] = json.loads((VECTORS / "vectors.json").read_text())
KEYS = ("recipient-a.key", "recipient-b.key")


def key(name: str) -> RecipientPrivateKey:
    return RecipientPrivateKey.load(VECTORS / name)


def read(data: bytes, *keys: RecipientPrivateKey, device: bool = True) -> tuple[ReadReport, bytes]:
    media = io.BytesIO()
    device_key = DevicePublicKey.load(VECTORS / "device_key.pub.pem") if device else None
    report = read_evidence(io.BytesIO(data), list(keys), media_out=media, device_key=device_key)
    return report, media.getvalue()


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("keys", [(KEYS[0],), (KEYS[1],), KEYS])
def test_a_version_1_file_reads_with_either_key_and_says_it_is_not_committed(
    name: str, keys: tuple[str, ...]
) -> None:
    data = (VECTORS / name).read_bytes()
    assert data[8:10] == b"\x00\x01"
    report, media = read(data, *(key(k) for k in keys))
    expected = EXPECTED[name]
    assert hashlib.sha256(media).hexdigest() == expected["media_sha256"]
    assert report.media_bytes == expected["media_bytes"]
    assert report.interrupted_at_chunk == expected["interrupted_at_chunk"]
    assert report.format_version == 1
    assert not report.key_committed
    if expected["interrupted_at_chunk"] is not None:
        assert report.interruption_signature_checked


def v1_stanza_for(recipient: RecipientPublicKey, data_key: bytes, recording_id: bytes) -> bytes:
    """A version 1 stanza made by the spec's section 9 (what a malicious v1 box could write)."""
    ephemeral = ECC.generate(curve="X25519")
    e_raw = bytes(ephemeral.public_key().export_key(format="raw"))
    static = import_x25519_public_key(recipient.raw)  # pycryptodome's, beside the box's own
    shared = key_agreement(static_pub=static, eph_priv=ephemeral, kdf=lambda x: x)
    kek = HKDF(shared, 32, e_raw + recipient.raw, SHA256, context=b"MVB evidence v1 key wrap")
    cipher = AES.new(kek, AES.MODE_GCM, nonce=bytes(12))
    cipher.update(recording_id)
    wrapped, tag = cipher.encrypt_and_digest(data_key)
    return recipient.key_id + e_raw + wrapped + tag


def test_a_version_1_file_whose_stanzas_disagree_is_refused_by_a_reader_with_both_keys() -> None:
    data = bytearray((VECTORS / "sealed-two-recipients.mvbe").read_bytes())
    header, _ = decode_header(bytes(data))
    b = key(KEYS[1])
    second = FIXED_HEADER_BYTES + STANZA_BYTES
    data[second : second + STANZA_BYTES] = v1_stanza_for(
        b.public(), bytes(32 * [7]), header.recording_id
    )
    with pytest.raises(BadHeaderMac, match="version 1"):
        read(bytes(data), key(KEYS[0]), b)


def test_recovery_still_closes_a_version_1_file_cut_by_a_power_cut(tmp_path: Path) -> None:
    """A box upgraded with a v1 `.part` on its card recovers it and signs the cut (spec 6)."""
    data = (VECTORS / "sealed-two-recipients.mvbe").read_bytes()
    header, offset = decode_header(data)
    for _ in range(3):  # keep three whole records, then half of the fourth
        offset += decode_framing(data[offset : offset + 16]).record_len()
    torn = offset + decode_framing(data[offset : offset + 16]).record_len() // 2
    layout = CardLayout(tmp_path)
    part = layout.part_path(header.recording_id.hex(), header.file_id.hex())
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:torn])
    with pytest.raises(TruncatedFile):
        read(data[:torn], key(KEYS[0]))

    device = DeviceKey.generate()
    sidecar = recover_part_file(
        layout, part, device, lambda *a, **k: None, 1_790_000_200_000, catalog_checked=True
    )
    assert isinstance(sidecar, Sidecar)
    assert sidecar.interrupted_at_chunk == 3
    sealed = layout.sealed_path(header.recording_id.hex(), header.file_id.hex())
    media = io.BytesIO()
    report = read_evidence(
        io.BytesIO(sealed.read_bytes()),
        key(KEYS[1]),
        media_out=media,
        device_key=device.public_key(),
    )
    assert report.interrupted_at_chunk == 3
    assert report.interruption_signature_checked
    assert report.format_version == 1
    assert report.media_bytes == len(media.getvalue()) > 0
