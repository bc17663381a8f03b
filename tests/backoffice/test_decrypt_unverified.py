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
import re
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


VIEWING_HEAD = re.compile(r"viewing log \S+: head \d+:[0-9a-f]{16} \(note it on the viewing form\)")


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


def decrypt(path: Path, tmp_path: Path, *args: str | Path) -> tuple[int, list[str], str]:
    """`mvb-admin decrypt PATH ARGS` as a viewing (its log made in `tmp_path`): the exit code,
    the lines before the viewing log's head (the last line, always printed), and stderr."""
    log = tmp_path / "viewing-log"
    if not log.exists():
        assert admin("viewing", "init", "--log", log).returncode == 0
    result = admin("decrypt", path, *args, "--log", log, "--reason", "test: laundering")
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr
    assert VIEWING_HEAD.fullmatch(lines[-1]) is not None, lines[-1]
    return result.returncode, lines[:-1], result.stderr


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Evidence:
    return Evidence(tmp_path_factory.mktemp("decrypt"))


@pytest.mark.parametrize("which", ["interrupted", "forged"])
def test_without_the_device_key_a_power_cut_claim_is_refused_and_nothing_written(
    evidence: Evidence, tmp_path: Path, which: str
) -> None:
    path = getattr(evidence, which)
    out = tmp_path / "out"
    code, lines, stderr = decrypt(path, tmp_path, "--key", evidence.private_key, "--out", out)
    assert code == 1
    assert lines == []
    assert stderr.startswith(f"{path}: InterruptionUnchecked: ends in an interruption")
    assert "--device-key" in stderr
    assert "--unverified" in stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_unverified_decrypts_a_forged_claim_and_says_so_in_line_and_metadata(
    evidence: Evidence, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, [line], stderr = decrypt(
        evidence.forged, tmp_path, "--key", evidence.private_key, "--out", out, "--unverified"
    )
    assert code == 0, stderr
    assert "UNVERIFIED, device signature not checked, decrypted with --unverified" in line
    [metadata] = out.glob("*.json")
    document = json.loads(metadata.read_text())
    assert document["interruption_signature_checked"] is False
    assert document["interruption_signature"] == "not checked (--unverified)"


def test_with_the_device_key_the_genuine_claim_is_verified_and_the_forged_one_refused(
    evidence: Evidence, tmp_path: Path
) -> None:
    key = ("--key", evidence.private_key, "--device-key", evidence.device_pub)
    code, [line], stderr = decrypt(evidence.interrupted, tmp_path, *key, "--out", tmp_path / "a")
    assert code == 0, stderr
    assert "device signature verified" in line
    [metadata] = (tmp_path / "a").glob("*.json")
    assert json.loads(metadata.read_text())["interruption_signature"] == "verified"
    code, _, stderr = decrypt(
        evidence.forged, tmp_path, *key, "--out", tmp_path / "b", "--unverified"
    )
    assert code == 1
    assert "BadInterruptionRecord" in stderr
    assert "not signed by this box" in stderr


def test_a_sealed_file_needs_no_device_key(evidence: Evidence, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, [line], stderr = decrypt(
        evidence.sealed, tmp_path, "--key", evidence.private_key, "--out", out
    )
    assert code == 0, stderr
    assert line.endswith("sealed")
    [metadata] = out.glob("*.json")
    assert json.loads(metadata.read_text())["interruption_signature"] is None
