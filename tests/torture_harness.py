"""The power-cut torture: a writer process is SIGKILLed at a random moment, recovery runs, and
every segment the writer acknowledged before the kill must decrypt byte-exact.

Two kinds of cut (`torture(..., power=...)`):
- **SIGKILL only** (`power=None`): the kernel's page cache keeps every byte written, fsynced or
  not: this proves recovery from torn *process* state, not durability.
- **SIGKILL plus a labdisk cut** (`power=PowerCut(disk)`, issue 14): the card and the state
  directory live on one labdisk mount (labdisk/), and once the writer has exited the disk loses
  everything not made durable (strict POSIX or ext4-like, with a torn last write). Then what
  the box claimed durable must be there: every acknowledged segment, every file of the
  recording in sequence, the catalog (no `storage.catalog_rebuilt`: it lost no record), the
  audit entries the writer reported written (`storage.recording_started` of every recording
  it named), the device key the files are signed with, and an audit chain that verifies.

Used by tests/storage/test_torture.py (50 SIGKILLs, a few labdisk cuts per mode) and
bench/torture.py (as many as asked). Run as a script, this module is the writer child:
`python -m tests.torture_harness CONFIG SEED`.
"""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.durable import make_dirs
from config.local import load_config
from gateway.box import AUDIT_LOG_NAME, open_box
from labdisk import LabDiskClient
from storage.audit import verify_audit_log
from storage.card import CardLayout
from storage.devicekey import DevicePublicKey
from storage.envelope import RecipientPrivateKey
from storage.reader import read_evidence
from tests.evidence_helpers import write_box_config

MEDIA_BYTES_PER_RUN = 3 * 1024 * 1024
AUDIT_VERIFY_EVERY = 20


def media_for(seed: int) -> bytes:
    """The deterministic 'footage' of run `seed`: both processes can produce it."""
    return random.Random(seed).randbytes(MEDIA_BYTES_PER_RUN)


def write_config(root: Path, recipient_pub: Path, data_dir: Path | None = None) -> Path:
    """Files roll at 1 MiB, so a 3 MiB run spans several files and kills land in any of them.
    Card and state below `data_dir` (a labdisk mount) when given, else below `root`."""
    return write_box_config(
        root,
        recipient_pub,
        device_serial="MVB-TORTURE",
        storage_lines="file_target_s = 600\nfile_target_bytes = 1048576",
        data_dir=data_dir,
    )


@dataclass
class PowerCut:
    """The labdisk holding the box's card and state (`mount`), cut after every kill."""

    disk: LabDiskClient
    mount: Path
    torn: bool = True
    cuts: int = 0
    files_restored: int = 0
    bytes_lost: int = 0
    entries_reverted: int = 0
    torn_pages_kept: int = 0
    torn_pages: int = 0

    def prepare(self) -> None:
        make_dirs(self.mount / "card")
        make_dirs(self.mount / "state")

    def cut(self) -> None:
        report = self.disk.cut(torn=self.torn)
        self.cuts += 1
        self.files_restored += int(report.get("files_restored", 0))
        self.bytes_lost += int(report.get("bytes_lost", 0))
        self.entries_reverted += int(report.get("entries_reverted", 0))
        self.torn_pages_kept += int(report.get("torn_pages_kept", 0))
        self.torn_pages += int(report.get("torn_pages", 0))


def child_main(config_path: Path, seed: int) -> None:
    """Write one recording in random-sized segments; print `ACK n` once n bytes are durable."""
    print("READY", flush=True)  # imported: from here on every moment is worth a cut
    rng = random.Random(seed ^ 0x5EED)
    media = media_for(seed)
    box = open_box(load_config(config_path))
    recording = box.store.start_recording(box.facts)
    print(f"REC {recording.recording_id}", flush=True)
    stream = recording.open_stream("dashcam")
    offset = 0
    while offset < len(media):
        size = rng.randint(1, 200_000)
        stream.append_media(media[offset : offset + size])
        offset = min(offset + size, len(media))
        stream.end_segment({"index": offset})
        print(f"ACK {offset}", flush=True)
        # A camera delivers segments over time. The pace keeps a run (about 31 segments) longer
        # than the cut's delay window (up to 1.2 s after READY) on a fast, quiet machine too:
        # at 0 to 30 ms a quiet machine finished more than half the runs before their cut.
        time.sleep(rng.uniform(0.02, 0.06))
    recording.close()
    print("DONE", flush=True)
    box.close()


@dataclass
class TortureResult:
    kills: int = 0
    recordings_checked: int = 0
    acked_bytes_checked: int = 0
    interrupted_files: int = 0
    completed_runs: int = 0
    recovery_s: list[float] = field(default_factory=list)


def run_one(config: Path, seed: int, kill_after_s: float) -> tuple[str | None, int, bool]:
    """Start the child, SIGKILL it `kill_after_s` after its READY (on a loaded machine Python's
    start-up alone outlasted the delay, and few kills landed while it recorded); return
    (recording, acked bytes, done)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.torture_harness", str(config), str(seed)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert child.stdout is not None
    ready = child.stdout.readline()
    assert ready == b"READY\n", f"the writer did not start: {ready!r}"
    time.sleep(kill_after_s)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate()
    recording_id, acked, done = None, 0, False
    for line in out.decode().splitlines():
        word, _, value = line.partition(" ")
        if word == "REC":
            recording_id = value
        elif word == "ACK":
            acked = int(value)
        elif word == "DONE":
            done = True
    return recording_id, acked, done


def check_recording(
    card: Path,
    recording_id: str,
    seed: int,
    acked: int,
    key: RecipientPrivateKey,
    device_key: DevicePublicKey,
) -> int:
    """Decrypt every file of the recording in order; return how many were interrupted.

    Raises AssertionError if acknowledged media is missing or anything decrypts differently.
    """
    layout = CardLayout(card)
    files = list(layout.recording_dir(recording_id).glob("*.mvbe"))
    reports = []
    for path in files:
        media = io.BytesIO()
        with path.open("rb") as handle:
            report = read_evidence(handle, key, media_out=media, device_key=device_key)
        reports.append((report.header.file_seq, media.getvalue(), report))
    reports.sort(key=lambda item: item[0])
    assert [seq for seq, _, _ in reports] == list(range(len(reports))), "a file is missing"
    got = b"".join(m for _, m, _ in reports)
    expected = media_for(seed)
    assert len(got) >= acked, f"acknowledged {acked} bytes, recovered only {len(got)}"
    assert got == expected[: len(got)], "recovered media differs from what was written"
    interrupted = [r for _, _, r in reports if r.interrupted_at_chunk is not None]
    assert all(r.interruption_signature_checked for r in interrupted)
    assert len(interrupted) <= 1, "only the file open at the kill may be interrupted"
    return len(interrupted)


def torture(
    root: Path,
    kills: int,
    key: RecipientPrivateKey,
    recipient_pub: Path,
    rng_seed: int,
    max_delay_s: float = 1.2,
    power: PowerCut | None = None,
) -> TortureResult:
    """`kills` runs of the writer, each SIGKILLed after a random delay (and, with `power`, its
    disk cut once it has exited); recovery and the checks after every one (module docstring).
    Raises AssertionError at the first thing lost."""
    data_dir = root if power is None else power.mount
    if power is not None:
        power.prepare()
    config = write_config(root, recipient_pub, data_dir)
    card, audit_path = data_dir / "card", data_dir / "state" / AUDIT_LOG_NAME
    rng = random.Random(rng_seed)
    result = TortureResult()
    for run in range(kills):
        seed = rng_seed * 100_000 + run
        # run_one returns once the writer has exited: nothing of it can land after the cut.
        delay_s = rng.uniform(0.0, max_delay_s)
        recording_id, acked, done = run_one(config, seed, delay_s)
        if power is not None:
            power.cut()
        result.kills += 0 if done else 1
        result.completed_runs += 1 if done else 0
        started = time.perf_counter()
        box = open_box(load_config(config))  # recovery runs here, as at a real start
        result.recovery_s.append(time.perf_counter() - started)
        device_key = box.device_key.public_key()
        box.close()
        if recording_id is not None:
            result.interrupted_files += check_recording(
                card, recording_id, seed, acked, key, device_key
            )
            result.recordings_checked += 1
            result.acked_bytes_checked += acked
        assert not list(CardLayout(card).part_files()), "a .part file survived recovery"
        # The whole chain every so often and after the last run (it grows with every run).
        verify_chain = run % AUDIT_VERIFY_EVERY == 0 or run == kills - 1
        check_audit_claims(audit_path.read_bytes(), recording_id, device_key, verify_chain)
    return result


def check_audit_claims(
    log: bytes, recording_id: str | None, device_key: DevicePublicKey, verify_chain: bool
) -> None:
    """The chain verifies, names the recording the writer reported started (its entry was
    durable before `start_recording` returned), and holds no `storage.catalog_rebuilt`: a
    catalog that lost a record it had committed is rebuilt from the card, and says so."""
    if verify_chain:
        report = verify_audit_log(log, device_key)
        assert report.ok, f"audit chain broken after a cut: {report.first_problem}"
    text = log.decode()
    assert '"storage.catalog_rebuilt"' not in text, "the catalog lost records at a cut"
    if recording_id is not None:
        assert recording_id in text, f"recording {recording_id} started but not in the log"


def audit_log_path(root: Path) -> Path:
    return root / "state" / AUDIT_LOG_NAME


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    child_main(Path(sys.argv[1]), int(sys.argv[2]))
