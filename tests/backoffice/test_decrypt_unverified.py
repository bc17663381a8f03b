"""`mvb-admin decrypt` fails closed on a power-cut claim it cannot check (issue 13, item 3).

As found: without `--device-key`, an interruption record carrying a random signature was
accepted and the command exited 0. Here the real command on a file recovered by the box, and on
the same file with its signature replaced by random bytes (crc fixed, so only the signature is
wrong): without the device key both are refused and nothing is written; `--unverified` decrypts
them and says so in the line and the metadata; with the device key the genuine one is verified
and the forged one refused. A sealed file needs no device key.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from backoffice.keys import create_recording_keys
from storage.card import CardLayout
from storage.devicekey import DeviceKey
from storage.envelope import RecipientPrivateKey
from storage.evidence_format import (
    FLAG_INTERRUPTED,
    INTERRUPTION_BODY_BYTES,
    RECORD_FRAMING_BYTES,
    RecordFraming,
    crc32,
    decode_framing,
)
from storage.models import FileState
from storage.recovery import CatalogKnowledge, KnownFile, recover_card
from tests.evidence_helpers import FIXED_NOW_MS, open_writer, write_file

MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")


def admin(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MVB_ADMIN), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


class Evidence:
    def __init__(self, root: Path) -> None:
        self.private_key, _ = create_recording_keys(root / "keys")
        recipient = RecipientPrivateKey.load(self.private_key)
        state = root / "state"
        state.mkdir()
        device = DeviceKey.load_or_create(state)
        self.device_pub = state / "device_key.pub.pem"
        card = root / "card"
        writer, _ = open_writer(card, recipient)
        writer.append_media(os.urandom(20_000))
        writer.sync()
        self.interrupted = writer.path.with_name(writer.path.name.removesuffix(".part"))
        writer.abandon()
        knows = {
            p.name.removesuffix(".mvbe.part"): KnownFile(FileState.RECORDING, p.parent.name)
            for p in CardLayout(card).part_files()
        }
        report = recover_card(
            CardLayout(card),
            device,
            lambda *_a, **_k: None,
            FIXED_NOW_MS,
            CatalogKnowledge(knows, True),
        )
        assert len(report.recovered) == 1
        self.forged = root / "forged" / self.interrupted.name
        self.forged.parent.mkdir()
        self.forged.write_bytes(with_random_signature(self.interrupted.read_bytes()))
        written = write_file(root / "card2", recipient, os.urandom(10_000))
        assert written.sealed is not None
        self.sealed = written.sealed.path


def with_random_signature(data: bytes) -> bytes:
    """The file with its interruption record's signature replaced by random bytes and the crc
    made right again: a record that passes every check but the device key's."""
    start = len(data) - RECORD_FRAMING_BYTES - INTERRUPTION_BODY_BYTES
    framing = decode_framing(data[start : start + RECORD_FRAMING_BYTES])
    assert framing.flags == FLAG_INTERRUPTED
    body = data[start + RECORD_FRAMING_BYTES :]
    (recovered_at_ms,) = struct.unpack(">Q", body[:8])
    forged_body = struct.pack(">Q", recovered_at_ms) + os.urandom(64)
    forged = RecordFraming(
        framing.file_tag, framing.index, FLAG_INTERRUPTED, len(forged_body), crc32(forged_body)
    )
    return data[:start] + forged.encode() + forged_body


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Evidence:
    return Evidence(tmp_path_factory.mktemp("decrypt"))


@pytest.mark.parametrize("which", ["interrupted", "forged"])
def test_without_the_device_key_a_power_cut_claim_is_refused_and_nothing_written(
    evidence: Evidence, tmp_path: Path, which: str
) -> None:
    path = getattr(evidence, which)
    out = tmp_path / "out"
    result = admin("decrypt", path, "--key", evidence.private_key, "--out", out)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"{path}: InterruptionUnchecked: ends in an interruption")
    assert "--device-key" in result.stderr
    assert "--unverified" in result.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_unverified_decrypts_a_forged_claim_and_says_so_in_line_and_metadata(
    evidence: Evidence, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = admin(
        "decrypt", evidence.forged, "--key", evidence.private_key, "--out", out, "--unverified"
    )
    assert result.returncode == 0, result.stderr
    assert "UNVERIFIED, device signature not checked, decrypted with --unverified" in result.stdout
    [metadata] = out.glob("*.json")
    document = json.loads(metadata.read_text())
    assert document["interruption_signature_checked"] is False
    assert document["interruption_signature"] == "not checked (--unverified)"


def test_with_the_device_key_the_genuine_claim_is_verified_and_the_forged_one_refused(
    evidence: Evidence, tmp_path: Path
) -> None:
    key = ("--key", evidence.private_key, "--device-key", evidence.device_pub)
    genuine = admin("decrypt", evidence.interrupted, *key, "--out", tmp_path / "a")
    assert genuine.returncode == 0, genuine.stderr
    assert "device signature verified" in genuine.stdout
    [metadata] = (tmp_path / "a").glob("*.json")
    assert json.loads(metadata.read_text())["interruption_signature"] == "verified"
    forged = admin("decrypt", evidence.forged, *key, "--out", tmp_path / "b", "--unverified")
    assert forged.returncode == 1
    assert "BadInterruptionRecord" in forged.stderr
    assert "not signed by this box" in forged.stderr


def test_a_sealed_file_needs_no_device_key(evidence: Evidence, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = admin("decrypt", evidence.sealed, "--key", evidence.private_key, "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("sealed")
    [metadata] = out.glob("*.json")
    assert json.loads(metadata.read_text())["interruption_signature"] is None
