"""Benchmark of the evidence store: encrypted write vs plain write, CPU per GB, card recovery.

Every figure is a ratio against a baseline measured in the same run on the same disk:
- `plain`: os.write of the same bytes with the same fsync cadence (what an unencrypted box does);
- `plain+sha256`: plain plus the SHA-256 that RULES S6 demands of any box, encrypted or not;
- `encrypted`: our EvidenceFileWriter (AES-256-GCM STREAM chunks, crc32, background SHA-256).
Two cadences: `bulk` (fsync at close) and `segment` (fsync every `segment_bytes`, as in live
recording, where a segment boundary is a durability point). CPU is the process's CPU time
(`time.process_time`: every thread, the hashing thread included, user and system).

Issue 18's targets, printed with MET / NOT MET: at segment cadence, encrypted writes at >= 0.9
of plain+sha256's speed and costs <= 1.3x its CPU per GB (medians of the per-repetition ratios;
each repetition runs every variant back to back). Then the chunk-size sweep: the encrypted
writer at segment cadence with each chunk size, against plain+sha256 in the same repetition.

Run: `python -m bench.store [--mib 64] [--reps 9] [--chunk-sizes 65536,...] [--files 10000]`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from Crypto.Cipher import AES
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.audit_io import AuditLog
from storage.card import CardLayout
from storage.devicekey import DeviceKey
from storage.envelope import RecipientPrivateKey, RecordingKey
from storage.evidence_format import NONCE_PREFIX_BYTES, EvidenceHeader
from storage.space import SpacePolicy
from storage.store import EvidenceStore, StoreSettings
from storage.writer import DEFAULT_CHUNK_MAX_BYTES, EvidenceFileWriter

WRITE_BYTES = 64 * 1024  # what a capture loop hands over at a time
MiB = 1024 * 1024
SEGMENT_BYTES = 1 * MiB  # about 2 s of a 4 Mbit/s camera
TARGET_SPEED_RATIO = 0.9  # encrypted / plain+sha256, segment cadence (issue 18 item 3)
TARGET_CPU_RATIO = 1.3  # encrypted CPU per GB / plain+sha256's, segment cadence
SWEEP_CHUNK_BYTES = (64 * 1024, 128 * 1024, 256 * 1024, 512 * 1024, 1024 * 1024)


@dataclass(frozen=True)
class Sample:
    wall_s: float
    cpu_s: float


def _measure(fn: Callable[[], None]) -> Sample:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return Sample(time.perf_counter() - wall, time.process_time() - cpu)


def _median(samples: list[Sample]) -> Sample:
    return Sample(
        statistics.median(s.wall_s for s in samples), statistics.median(s.cpu_s for s in samples)
    )


def plain_write(path: Path, data: bytes, segment_bytes: int | None, sha256: bool) -> None:
    digest = hashlib.sha256() if sha256 else None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    since_sync = 0
    view = memoryview(data)  # slices of a view: no copy of the input in either variant
    for start in range(0, len(data), WRITE_BYTES):
        piece = view[start : start + WRITE_BYTES]
        os.write(fd, piece)
        if digest is not None:
            digest.update(piece)
        since_sync += len(piece)
        if segment_bytes is not None and since_sync >= segment_bytes:
            os.fsync(fd)
            since_sync = 0
    os.fsync(fd)
    os.close(fd)


def encrypted_write(
    card: Path,
    data: bytes,
    segment_bytes: int | None,
    key: RecordingKey,
    chunk_max_bytes: int = DEFAULT_CHUNK_MAX_BYTES,
) -> None:
    header = EvidenceHeader(
        recording_id=key.recording_id,
        file_id=uuid.uuid4().bytes,
        file_seq=0,
        created_at_ms=int(time.time() * 1000),
        chunk_max_bytes=chunk_max_bytes,
        nonce_prefix=os.urandom(NONCE_PREFIX_BYTES),
        recipients=key.stanzas,
    )
    writer = EvidenceFileWriter(
        CardLayout(card), header, key.file_keys(header.file_id), clock_ms=lambda: 0
    )
    since_sync = 0
    view = memoryview(data)
    for start in range(0, len(data), WRITE_BYTES):
        writer.append_media(view[start : start + WRITE_BYTES])
        since_sync += WRITE_BYTES
        if segment_bytes is not None and since_sync >= segment_bytes:
            writer.sync()
            since_sync = 0
    writer.seal()


def bench_write(workdir: Path, mib: int, reps: int) -> dict[str, dict[str, list[Sample]]]:
    """cadence -> variant -> one Sample per rep (reps interleaved across variants)."""
    data = os.urandom(mib * MiB)
    key = RecordingKey(uuid.uuid4().bytes, (RecipientPrivateKey.generate().public(),))
    results: dict[str, dict[str, list[Sample]]] = {}
    for cadence, segment in (("bulk", None), ("segment", SEGMENT_BYTES)):
        runs: dict[str, list[Sample]] = {"plain": [], "plain+sha256": [], "encrypted": []}
        for rep in range(reps):  # interleaved, so drift in the disk hits all variants alike
            target = workdir / f"w{rep}"
            target.mkdir()
            variants: dict[str, Callable[[], None]] = {
                "plain": partial(plain_write, target / "p", data, segment, sha256=False),
                "plain+sha256": partial(plain_write, target / "h", data, segment, sha256=True),
                "encrypted": partial(encrypted_write, target / "card", data, segment, key),
            }
            order = list(variants)
            shift = rep % len(order)  # rotate who goes first: page-cache writeback from one
            for name in order[shift:] + order[:shift]:  # variant must not tax only the next
                runs[name].append(_measure(variants[name]))
            shutil.rmtree(target)
        results[cadence] = runs
    return results


def _ratio_range(base: list[Sample], other: list[Sample]) -> str:
    """min..max over reps of base time / other time (each rep ran both back to back)."""
    ratios = [b.wall_s / o.wall_s for b, o in zip(base, other, strict=True)]
    return f"{min(ratios):.2f}..{max(ratios):.2f}"


def bench_chunk_sizes(
    workdir: Path, mib: int, reps: int, chunk_sizes: list[int]
) -> dict[int, tuple[list[Sample], list[Sample]]]:
    """chunk size -> (plain+sha256 samples, encrypted samples), segment cadence, interleaved:
    each repetition runs plain+sha256 and then every chunk size (rotated) back to back."""
    data = os.urandom(mib * MiB)
    key = RecordingKey(uuid.uuid4().bytes, (RecipientPrivateKey.generate().public(),))
    found: dict[int, tuple[list[Sample], list[Sample]]] = {size: ([], []) for size in chunk_sizes}
    for rep in range(reps):
        target = workdir / f"s{rep}"
        target.mkdir()
        shift = rep % len(chunk_sizes)
        for size in chunk_sizes[shift:] + chunk_sizes[:shift]:
            base = _measure(partial(plain_write, target / "h", data, SEGMENT_BYTES, sha256=True))
            card = target / f"card{size}"
            ours = _measure(partial(encrypted_write, card, data, SEGMENT_BYTES, key, size))
            found[size][0].append(base)
            found[size][1].append(ours)
        shutil.rmtree(target)
    return found


def speed_and_cpu_ratios(base: list[Sample], ours: list[Sample]) -> tuple[float, float]:
    """Medians over the repetitions of base wall / our wall and of our CPU / base CPU."""
    pairs = list(zip(base, ours, strict=True))
    speed = statistics.median(b.wall_s / o.wall_s for b, o in pairs)
    cpu = statistics.median(o.cpu_s / b.cpu_s for b, o in pairs)
    return speed, cpu


def target_lines(speed_ratio: float, cpu_ratio: float) -> list[str]:
    """Issue 18 item 3's two targets with the measured values, MET or NOT MET."""
    return [
        f"{'MET    ' if speed_ratio >= TARGET_SPEED_RATIO else 'NOT MET'} encrypted >= "
        f"{TARGET_SPEED_RATIO} of plain+sha256's speed at segment cadence: {speed_ratio:.2f}",
        f"{'MET    ' if cpu_ratio <= TARGET_CPU_RATIO else 'NOT MET'} encrypted CPU per GB <= "
        f"{TARGET_CPU_RATIO}x plain+sha256's at segment cadence: {cpu_ratio:.2f}x",
    ]


def bench_aead(mib: int) -> dict[str, float]:
    """Throughput (MB/s) of the two AES-GCM implementations on our chunk size."""
    key, chunk = os.urandom(32), os.urandom(DEFAULT_CHUNK_MAX_BYTES)
    count = max(1, mib * MiB // len(chunk))
    aad = bytes(44)

    def openssl() -> None:
        aead = AESGCM(key)
        for i in range(count):
            aead.encrypt(i.to_bytes(12, "big"), chunk, aad)

    def pycryptodome() -> None:
        for i in range(count):
            cipher = AES.new(key, AES.MODE_GCM, nonce=i.to_bytes(12, "big"))
            cipher.update(aad)
            cipher.encrypt_and_digest(chunk)

    total_mb = count * len(chunk) / 1e6
    return {
        "cryptography (OpenSSL)": total_mb / _measure(openssl).wall_s,
        "pycryptodome": total_mb / _measure(pycryptodome).wall_s,
    }


def bench_recovery(workdir: Path, files: int) -> dict[str, float]:
    """Open a card holding `files` sealed files and 10 interrupted ones, with and without a
    catalog (a lost catalog is rebuilt from the card)."""
    card, state = workdir / "card", workdir / "state"
    state.mkdir(parents=True)
    device = DeviceKey.load_or_create(state)
    recipient = RecipientPrivateKey.generate().public()
    settings = StoreSettings(
        card_dir=card, space=SpacePolicy(reserve_bytes=0, min_free_to_start_bytes=1)
    )
    audit = AuditLog.open(state / "audit.jsonl", device)
    store, _ = EvidenceStore.open(settings, (recipient,), device, audit)
    built = time.perf_counter()
    payload = os.urandom(16 * 1024)
    for index in range(files):
        recording = store.start_recording({})
        stream = recording.open_stream("dashcam")
        stream.append_media(payload)
        if index >= files - 10:  # the last ten are cut off by a "power cut"
            stream.end_segment({"index": 0})
            assert stream._writer is not None
            stream._writer.abandon()
            recording.key.destroy()
            continue
        recording.close()
    build_s = time.perf_counter() - built
    store.close()
    audit.close()

    def reopen() -> None:
        log = AuditLog.open(state / "audit.jsonl", device)
        opened, _report = EvidenceStore.open(settings, (recipient,), device, log)
        assert len(opened.catalog.all()) == files
        opened.close()
        log.close()

    with_catalog = _measure(reopen).wall_s  # includes recovering the 10 interrupted files
    shutil.rmtree(CardLayout(card).catalog_dir)
    without_catalog = _measure(reopen).wall_s
    return {
        "build_s": build_s,
        "open_with_catalog_s": with_catalog,
        "open_rebuilding_catalog_s": without_catalog,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="MiB written per variant and rep")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument(
        "--chunk-sizes",
        default=",".join(str(size) for size in SWEEP_CHUNK_BYTES),
        help="chunk sizes (bytes) of the sweep",
    )
    parser.add_argument("--out", type=Path, default=None, help="work dir (default: tmp on /var)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mvb-bench-", dir=args.out or Path.cwd()))
    try:
        print(f"# bench/store.py: {args.mib} MiB per variant, median of {args.reps}, in {workdir}")
        print(f"# load average (1, 5, 15 min) at the start: {os.getloadavg()}")
        results = bench_write(workdir, args.mib, args.reps)
        print(
            "\n| cadence | variant | MB/s | ratio to plain (range) "
            "| ratio to plain+sha256 (range) | CPU s/GB |"
        )
        print("|---|---|---:|---:|---:|---:|")
        size_gb = args.mib * MiB / 1e9
        for cadence, runs in results.items():
            plain, hashed = _median(runs["plain"]), _median(runs["plain+sha256"])
            for name, samples in runs.items():
                sample = _median(samples)
                print(
                    f"| {cadence} | {name} | {size_gb * 1000 / sample.wall_s:.0f} | "
                    f"{plain.wall_s / sample.wall_s:.2f} "
                    f"({_ratio_range(runs['plain'], samples)}) | "
                    f"{hashed.wall_s / sample.wall_s:.2f} "
                    f"({_ratio_range(runs['plain+sha256'], samples)}) | "
                    f"{sample.cpu_s / size_gb:.2f} |"
                )
        speed, cpu = speed_and_cpu_ratios(
            results["segment"]["plain+sha256"], results["segment"]["encrypted"]
        )
        print("\ntargets (issue 18 item 3), medians of the per-repetition ratios:")
        for line in target_lines(speed, cpu):
            print(f"  {line}")
        sizes = [int(size) for size in args.chunk_sizes.split(",")]
        print("\nchunk sizes, segment cadence, against plain+sha256 in the same repetition:")
        print("| chunk bytes | MB/s | speed ratio | CPU s/GB | CPU ratio |")
        print("|---:|---:|---:|---:|---:|")
        for size, (base, ours) in bench_chunk_sizes(workdir, args.mib, args.reps, sizes).items():
            speed, cpu = speed_and_cpu_ratios(base, ours)
            sample = _median(ours)
            print(
                f"| {size} | {size_gb * 1000 / sample.wall_s:.0f} | {speed:.2f} | "
                f"{sample.cpu_s / size_gb:.2f} | {cpu:.2f} |"
            )
        print("\n| AES-256-GCM, 256 KiB chunks | MB/s |")
        print("|---|---:|")
        for name, mb_s in bench_aead(min(args.mib, 256)).items():
            print(f"| {name} | {mb_s:.0f} |")
        recovery = bench_recovery(workdir / "recovery", args.files)
        print(f"\n| card with {args.files} files | seconds |")
        print("|---|---:|")
        for name, seconds in recovery.items():
            print(f"| {name} | {seconds:.2f} |")
        print(f"\n# load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
