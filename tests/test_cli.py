"""`mvb` and `mvb-admin` as an operator runs them: real subprocesses, real clips, real keys.

Every case checks the exit code and the one line the command prints about it.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import signal
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import pytest

from demo.synthetic import generate_clip
from storage.evidence_format import RECORD_FRAMING_BYTES, decode_framing, decode_header
from tests.evidence_helpers import write_box_config as shared_box_config
from tests.torture_harness import media_for, write_config

REPO = Path(__file__).resolve().parents[1]
MVB = Path(sys.executable).with_name("mvb")
MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
SERIAL = "MVB-CLI-0042"
VEHICLE = "veh-cli-7"
IMPORTED = re.compile(
    r"imported clip\.ts as bodycam: recording (?P<rec>[0-9a-f]{32}) file (?P<file>[0-9a-f]{32}) "
    r"\((?P<size>\d+) bytes encrypted, sha256 (?P<sha>[0-9a-f]{16})\.\.\.\)"
)


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=120, check=False
    )


def one_line(text: str) -> str:
    """The command's message: exactly one line."""
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {lines!r}"
    return lines[0]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def create_keys(directory: Path) -> tuple[Path, Path]:
    result = run(MVB_ADMIN, "keys", "create", "--dir", directory)
    assert result.returncode == 0, result.stderr
    return directory / "recording.key", directory / "recording.pub"


def write_box_config(root: Path, recipient_pub: Path, *, storage_extra: str = "") -> Path:
    return shared_box_config(
        root, recipient_pub, device_serial=SERIAL, vehicle_id=VEHICLE, storage_lines=storage_extra
    )


def catalog_rows(config: Path) -> list[list[str]]:
    """`mvb catalog`: the rows (split on whitespace) after checking the header and the count."""
    result = run(MVB, "--config", config, "catalog")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["file", "recording", "seq"]
    rows = [line.split() for line in lines[1:-1]]
    assert lines[-1] == f"{len(rows)} file(s)"
    return rows


def files_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


VIEWING_HEAD = re.compile(
    r"viewing log (?P<log>\S+): head (?P<seq>\d+):(?P<hash>[0-9a-f]{16}) \(note it on the "
    r"viewing form\)"
)


def decrypt(*args: str | Path, log: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`mvb-admin decrypt ARGS`, logged in the viewing log `log` (made if new): the result and
    its lines before the last, which must name the log's new head."""
    if not log.exists():
        made = run(MVB_ADMIN, "viewing", "init", "--log", log)
        assert made.returncode == 0, made.stderr
    result = run(MVB_ADMIN, "decrypt", *args, "--log", log, "--reason", "test: request 13")
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr
    assert VIEWING_HEAD.fullmatch(lines[-1]) is not None, lines[-1]
    return result, lines[:-1]


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path


@dataclass(frozen=True)
class ImportedBox:
    """A box that imported one synthetic clip; shared by the read-only cases."""

    root: Path
    config: Path
    keys: Keys
    clip: Path
    import_result: subprocess.CompletedProcess[str]
    recording_id: str
    file_id: str

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def device_pub(self) -> Path:
        return self.state / "device_key.pub.pem"

    @property
    def evidence(self) -> Path:
        return self.root / "card" / "evidence" / self.recording_id / f"{self.file_id}.mvbe"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    private, public = create_keys(tmp_path_factory.mktemp("backoffice") / "keys")
    return Keys(private, public)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_clip(tmp_path_factory.mktemp("camera") / "clip.ts", seconds=6)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory, keys: Keys, clip: Path) -> ImportedBox:
    root = tmp_path_factory.mktemp("box")
    config = write_box_config(root, keys.public)
    result = run(MVB, "--config", config, "import", clip, "--camera", "bodycam")
    match = IMPORTED.fullmatch(one_line(result.stdout)) if result.returncode == 0 else None
    assert match is not None, (result.returncode, result.stdout, result.stderr)
    return ImportedBox(root, config, keys, clip, result, match["rec"], match["file"])


# --- keys ----------------------------------------------------------------------------------------


def test_keys_create_makes_a_private_key_only_its_owner_reads_and_never_overwrites(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "keys"
    result = run(MVB_ADMIN, "keys", "create", "--dir", directory)
    assert result.returncode == 0, result.stderr
    private, public = directory / "recording.key", directory / "recording.pub"
    line = one_line(result.stdout)
    assert f"created {private}" in line
    assert str(public) in line
    assert "mode 0600" in line
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes()
    assert b"PUBLIC KEY" in public.read_bytes()
    before = (private.read_bytes(), public.read_bytes())

    again = run(MVB_ADMIN, "keys", "create", "--dir", directory)
    assert again.returncode != 0
    message = one_line(again.stderr)
    assert str(private) in message
    assert "exists; refusing to overwrite" in message
    assert again.stdout == ""
    assert (private.read_bytes(), public.read_bytes()) == before
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


# --- import, catalog, decrypt --------------------------------------------------------------------


def test_import_prints_the_recording_and_the_file(imported: ImportedBox) -> None:
    result = imported.import_result
    assert result.returncode == 0
    assert result.stderr == ""
    match = IMPORTED.fullmatch(one_line(result.stdout))
    assert match is not None
    assert imported.evidence.is_file()
    assert int(match["size"]) == imported.evidence.stat().st_size
    assert sha256_file(imported.evidence).startswith(match["sha"])
    assert b"bodycam" not in imported.evidence.read_bytes()  # the camera name is encrypted


def test_catalog_lists_the_file_as_sealed_with_its_checksum(imported: ImportedBox) -> None:
    [row] = catalog_rows(imported.config)
    file_id, recording_id, seq, state, size, sha = row
    assert (file_id, recording_id, seq, state) == (
        imported.file_id,
        imported.recording_id,
        "0",
        "sealed",
    )
    assert int(size) == imported.evidence.stat().st_size
    assert sha == sha256_file(imported.evidence)[:16]


def test_decrypt_returns_the_clip_byte_for_byte_with_its_facts(
    imported: ImportedBox, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result, [line] = decrypt(
        imported.evidence,
        "--key",
        imported.keys.private,
        "--out",
        out,
        "--device-key",
        imported.device_pub,
        log=tmp_path / "viewing-log",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    clip = imported.clip.read_bytes()
    assert line.startswith(f"{imported.file_id}.mvbe -> {imported.file_id}.ts: ")
    assert f"{len(clip)} media bytes" in line
    assert line.endswith(", sealed")

    media = out / f"{imported.file_id}.ts"
    assert media.read_bytes() == clip
    assert sorted(p.name for p in out.iterdir()) == sorted([media.name, f"{imported.file_id}.json"])
    frames = count_frames(media)
    assert frames > 0
    assert frames == count_frames(imported.clip)

    doc = json.loads((out / f"{imported.file_id}.json").read_text())
    assert doc["source_sha256"] == sha256_file(imported.evidence)
    assert doc["recording_id"] == imported.recording_id
    assert doc["file_id"] == imported.file_id
    assert doc["interrupted_at_chunk"] is None
    metadata: list[dict[str, Any]] = doc["metadata"]
    [recording] = [m for m in metadata if m["type"] == "recording"]
    assert recording["camera"] == "bodycam"
    assert recording["container"] == "mpegts"
    assert recording["device_serial"] == SERIAL
    assert recording["vehicle_id"] == VEHICLE
    assert recording["trigger"]["source"] == "import"
    segments = [m for m in metadata if m["type"] == "segment"]
    assert len(segments) >= 2  # 6 s at a keyframe every 2 s
    assert [s["index"] for s in segments] == list(range(len(segments)))
    assert sum(s["media_bytes"] for s in segments) == len(clip)
    assert all(s["keyframe_start"] for s in segments)
    [event] = [m for m in metadata if m["type"] == "event" and m["name"] == "import"]
    assert event["source_sha256"] == hashlib.sha256(clip).hexdigest()
    assert event["source_name"] == "clip.ts"
    assert metadata[-1]["type"] == "end"
    assert metadata[-1]["media_bytes"] == len(clip)


def flip_byte_in_a_media_chunk(data: bytes) -> bytes:
    """Flip one ciphertext byte in the middle of the third record (a media chunk)."""
    _, offset = decode_header(data)
    for _ in range(2):
        offset += decode_framing(data[offset : offset + RECORD_FRAMING_BYTES]).record_len()
    framing = decode_framing(data[offset : offset + RECORD_FRAMING_BYTES])
    assert not framing.is_last
    damaged = bytearray(data)
    damaged[offset + RECORD_FRAMING_BYTES + framing.body_len // 2] ^= 0x01
    return bytes(damaged)


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        ("other_key", "NoMatchingRecipient"),
        ("flipped_byte", "CorruptChunk"),
        ("truncated", "TruncatedFile"),
    ],
)
def test_decrypt_failures_name_the_error_and_leave_no_media(
    imported: ImportedBox, tmp_path: Path, damage: str, error: str
) -> None:
    original = imported.evidence.read_bytes()
    evidence = tmp_path / imported.evidence.name
    key = imported.keys.private
    if damage == "other_key":
        evidence.write_bytes(original)
        key, _ = create_keys(tmp_path / "other-keys")
    elif damage == "flipped_byte":
        evidence.write_bytes(flip_byte_in_a_media_chunk(original))
    else:
        evidence.write_bytes(original[: len(original) // 2])
    out = tmp_path / "out"

    result, lines = decrypt(
        evidence,
        "--key",
        key,
        "--out",
        out,
        "--device-key",
        imported.device_pub,
        log=tmp_path / "viewing-log",
    )
    assert result.returncode == 1
    assert lines == []
    assert one_line(result.stderr).startswith(f"{evidence}: {error}: ")
    assert files_in(out) == [], "a failed decrypt left files behind"
    assert imported.evidence.read_bytes() == original


# --- power cut -----------------------------------------------------------------------------------


def run_writer_until_first_ack(config: Path, seed: int) -> tuple[str, int]:
    """Start the torture writer, SIGKILL it once it acknowledged a segment: (recording, acked)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.torture_harness", str(config), str(seed)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    watchdog = threading.Timer(60, child.kill)  # a hung child ends the test instead of hanging it
    watchdog.start()
    try:
        assert child.stdout is not None
        lines: list[str] = []
        while not any(line.startswith("ACK ") for line in lines):
            line = child.stdout.readline()
            assert line, f"writer ended before acknowledging anything: {lines!r}"
            lines.append(line.strip())
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate()
    finally:
        watchdog.cancel()
    assert child.returncode == -signal.SIGKILL
    lines += rest.splitlines()
    assert "DONE" not in lines, "the writer finished before the power cut"
    [recording_id] = [line.removeprefix("REC ") for line in lines if line.startswith("REC ")]
    acked = max(int(line.removeprefix("ACK ")) for line in lines if line.startswith("ACK "))
    return recording_id, acked


def test_power_cut_is_recovered_and_decrypts_with_a_verified_device_signature(
    tmp_path: Path, keys: Keys
) -> None:
    root = tmp_path / "box"
    config = write_config(root, keys.public)
    seed = 4711
    recording_id, acked = run_writer_until_first_ack(config, seed)
    card = root / "card"
    assert list(card.rglob("*.mvbe.part")), "the kill should leave a file being written"

    recovered = run(MVB, "--config", config, "recover")
    assert recovered.returncode == 0, recovered.stderr
    lines = recovered.stdout.strip().splitlines()
    pattern = re.compile(r"recovered ([0-9a-f]{32}): interrupted at chunk (\d+)")
    interrupted = [m for m in map(pattern.fullmatch, lines) if m is not None]
    assert len(interrupted) == 1, lines
    file_id, chunks = interrupted[0][1], int(interrupted[0][2])
    assert chunks > 0
    assert lines[-1].startswith(f"recovery: {len(lines) - 1} file(s) recovered, ")
    assert list(card.rglob("*.mvbe.part")) == []

    files = sorted((card / "evidence" / recording_id).glob("*.mvbe"))
    assert card / "evidence" / recording_id / f"{file_id}.mvbe" in files
    device_pub = root / "state" / "device_key.pub.pem"
    out = tmp_path / "out"
    viewing_log = tmp_path / "viewing-log"
    verified, lines = decrypt(
        *files, "--key", keys.private, "--out", out, "--device-key", device_pub, log=viewing_log
    )
    assert verified.returncode == 0, verified.stderr
    [line] = [x for x in lines if x.startswith(f"{file_id}.mvbe -> ")]
    assert line.endswith(
        f", {chunks} chunks, interrupted at chunk {chunks} (power cut; device signature verified)"
    )

    # everything acknowledged before the kill is there, byte-exact, in file order
    docs = sorted(
        (json.loads(p.read_text()) for p in out.glob("*.json")), key=lambda d: d["file_seq"]
    )
    assert [d["file_seq"] for d in docs] == list(range(len(files)))
    media = b"".join((out / f"{d['file_id']}.ts").read_bytes() for d in docs)
    assert len(media) >= acked
    assert media == media_for(seed)[: len(media)]

    # Without the device key the power cut cannot be checked: refused, unless --unverified
    # (tests/backoffice/test_decrypt_unverified.py has the forged signature).
    power_cut_file = card / "evidence" / recording_id / f"{file_id}.mvbe"
    refused = run(
        MVB_ADMIN,
        "decrypt",
        power_cut_file,
        "--key",
        keys.private,
        "--out",
        tmp_path / "refused",
        "--log",
        viewing_log,
        "--reason",
        "test: request 13",
    )
    assert refused.returncode == 1
    assert "InterruptionUnchecked" in refused.stderr
    assert files_in(tmp_path / "refused") == []
    unverified, [unverified_line] = decrypt(
        power_cut_file,
        "--key",
        keys.private,
        "--out",
        tmp_path / "out-unverified",
        "--unverified",
        log=viewing_log,
    )
    assert unverified.returncode == 0, unverified.stderr
    assert unverified_line.endswith(
        f"interrupted at chunk {chunks} (a power cut it claims: UNVERIFIED, device signature "
        "not checked, decrypted with --unverified)"
    )


# --- audit log -----------------------------------------------------------------------------------


def test_audit_verify_accepts_the_log_and_names_the_line_that_was_edited(
    imported: ImportedBox, tmp_path: Path
) -> None:
    log = imported.state / "audit.jsonl"
    ok = run(MVB_ADMIN, "audit", "verify", log, "--device-key", imported.device_pub)
    assert ok.returncode == 0, ok.stderr
    verdict, warning = ok.stdout.splitlines()
    assert verdict.startswith("audit log OK: ")
    assert warning.startswith("without --head: entries cut off the end")

    lines = log.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 3
    middle = len(lines) // 2  # 0-based; never the first or the last line
    entry = json.loads(lines[middle])
    at_ms = str(entry["at_ms"]).encode()
    last_digit = at_ms[-1:]
    edited_at_ms = at_ms[:-1] + (b"1" if last_digit != b"1" else b"2")
    edited_line = lines[middle].replace(b'"at_ms":' + at_ms, b'"at_ms":' + edited_at_ms, 1)
    assert len(edited_line) == len(lines[middle])
    assert sum(a != b for a, b in zip(edited_line, lines[middle], strict=True)) == 1
    edited = tmp_path / "audit.jsonl"
    edited.write_bytes(b"".join([*lines[:middle], edited_line, *lines[middle + 1 :]]))

    broken = run(MVB_ADMIN, "audit", "verify", edited, "--device-key", imported.device_pub)
    assert broken.returncode == 1
    message = one_line(broken.stdout)
    assert message.startswith("audit log BROKEN: ")
    assert f"line {middle + 1} " in message


# --- what must not become evidence ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["garbage", "empty"])
def test_import_of_a_file_that_is_not_a_clip_fails_and_writes_nothing(
    tmp_path: Path, keys: Keys, kind: str
) -> None:
    config = write_box_config(tmp_path / "box", keys.public)
    assert catalog_rows(config) == []
    source = tmp_path / "clip.ts"
    source.write_bytes(random.Random(31337).randbytes(64 * 1024) if kind == "garbage" else b"")

    result = run(MVB, "--config", config, "import", source, "--camera", "bodycam")
    assert result.returncode == 1
    assert result.stdout == ""
    message = one_line(result.stderr)
    assert message.startswith("mvb import: clip.ts: ")
    assert "not a readable media file" in message
    assert "Traceback" not in result.stderr

    assert catalog_rows(config) == []
    card = tmp_path / "box" / "card"
    assert files_in(card / "evidence") == []
    assert list(card.rglob("*.part")) == []
    audit = (tmp_path / "box" / "state" / "audit.jsonl").read_text()
    assert "storage.recording_started" not in audit


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("storage_extra", "named"),
    [
        ("retention_dayz = 14", "unknown key storage.retention_dayz"),
        ("retention_days = 40", "storage.retention_days = 40 is outside 1..28"),
    ],
)
def test_a_bad_config_is_refused_naming_the_key_and_the_file(
    tmp_path: Path, keys: Keys, storage_extra: str, named: str
) -> None:
    config = write_box_config(tmp_path / "box", keys.public, storage_extra=storage_extra)
    result = run(MVB, "--config", config, "catalog")
    assert result.returncode == 2
    assert result.stdout == ""
    message = one_line(result.stderr)
    assert message.startswith(f"mvb: {config}: ")
    assert named in message
    assert not (tmp_path / "box" / "card").exists(), "a refused config must not touch the card"
    assert not (tmp_path / "box" / "state").exists()
