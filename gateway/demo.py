"""`make demo`: the box end to end on a machine without hardware, saying plainly what it does.

Until the capture issue lands the demo exercises what exists, through the same code paths as the
commands (`gateway.cli.main`, `backoffice.cli.main`), in a fresh folder (default `demo-out/` at the
repository root; `--out DIR` for another):

 1. the back office creates its recording key pair;
 2. a box configuration is written and the box starts for the first time (device key);
 3. two synthetic H.264 clips stand in for a dashcam and a bodycam;
 4. both are imported as evidence (`mvb import`);
 5. the catalog is listed (`mvb catalog`);
 6. the card is searched for any byte sequence of the clips and for the box's identity;
 7. the back office decrypts (`mvb-admin decrypt`) and the media is compared with the clips;
 8. a writer process is SIGKILLed mid-recording (a power cut) and the card recovered
    (`mvb recover`); decryption reports the file as interrupted, signed by the box;
 9. the back office attests the first file, and retention deletes it (`mvb retention`, RULES S3);
10. the audit log is verified (`mvb-admin audit verify`);
11. a summary says what was shown and where the files are.

Every check that fails stops the demo with a message and exit status 1. The private helper
`--child-writer CONFIG CLIP` is the process that step 8 kills; it is not a product command.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import io
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backoffice import cli as admin_cli
from backoffice.keys import create_recording_keys
from config.local import load_config
from gateway import cli as box_cli
from gateway.box import AUDIT_LOG_NAME, open_box
from gateway.importer import probe_clip
from gateway.synthetic import generate_clip
from storage.models import FileState

STEPS = 11
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "demo-out"
MARKER = ".mvb-demo"  # only a folder holding this marker (or an empty one) is ever wiped
DEVICE_SERIAL = "MVB-DEMO-0001"
VEHICLE_ID = "demo-vehicle-1"
CLIPS = (("dashcam", 8.0), ("bodycam", 6.0))  # (camera, seconds)
WINDOW_BYTES = 64
WINDOWS_PER_CLIP = 8
PIECES_PER_SEGMENT = 4  # the child delivers each segment in pieces, as a camera does over time
PIECE_INTERVAL_S = 0.1
ACKS_BEFORE_POWER_CUT = 2
POWER_CUT_DELAY_S = 0.25  # after the last awaited ACK: mid-way through the next segment
CHILD_TIMEOUT_S = 30.0

# Paths are relative to this file's folder (config.local resolves them), so the tree is movable.
# Reserve and minimum free space are tiny so the demo runs on any disk; chunks are small so that a
# segment spans several chunks and the power cut lands between them.
BOX_TOML = f"""\
# Written by `make demo` (gateway/demo.py): a box with no hardware, on a folder as its SD card.
[box]
device_serial = "{DEVICE_SERIAL}"
vehicle_id = "{VEHICLE_ID}"
state_dir = "state"
card_dir = "../card"
recipient_keys = ["recording.pub"]

[storage]
chunk_max_bytes = 65536
file_target_s = 60
file_target_bytes = 1048576
card_reserve_bytes = 4194304
min_free_to_start_bytes = 8388608
retention_days = 28
"""

CliMain = Callable[[Sequence[str] | None], int]


class DemoFailure(Exception):
    """A check of the demo failed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class DemoPaths:
    """Where everything lives under the demo folder."""

    out: Path

    @property
    def clips(self) -> Path:
        return self.out / "clips"

    @property
    def backoffice(self) -> Path:
        return self.out / "backoffice"

    @property
    def keys(self) -> Path:
        return self.backoffice / "keys"

    @property
    def device_pub(self) -> Path:
        return self.backoffice / f"{DEVICE_SERIAL}.device.pub.pem"

    @property
    def decrypted(self) -> Path:
        return self.backoffice / "decrypted"

    @property
    def box(self) -> Path:
        return self.out / "box"

    @property
    def config(self) -> Path:
        return self.box / "box.toml"

    @property
    def audit_log(self) -> Path:
        return self.box / "state" / AUDIT_LOG_NAME

    @property
    def card(self) -> Path:
        return self.out / "card"

    def clip(self, camera: str) -> Path:
        return self.clips / f"{camera}.ts"


@dataclass(slots=True)
class PowerCut:
    """What step 8 learned: the killed recording, its acknowledged and recovered media."""

    recording_id: str
    acked_bytes: int
    recovered_bytes: int = 0
    describe_line: str = ""


@dataclass(slots=True)
class DemoFacts:
    """Facts gathered along the way, for the checks and the summary."""

    clip_bytes: dict[str, bytes] = field(default_factory=dict)
    recording_of: dict[str, str] = field(default_factory=dict)  # camera -> recording id
    identical: list[str] = field(default_factory=list)
    power_cut: PowerCut | None = None
    files_recorded: int = 0
    encrypted_bytes: int = 0
    deleted: list[str] = field(default_factory=list)
    audit_entries: int = 0
    audit_line: str = ""


# --- output ------------------------------------------------------------------------------------


def heading(number: int, text: str) -> None:
    """The one-line heading of a step."""
    print(f"\n[{number}/{STEPS}] {text}", flush=True)


def say(text: str) -> None:
    """A line of the demo's own narration, indented under the heading."""
    print(f"  {text}", flush=True)


def echo(output: str) -> None:
    """Show a command's real output, indented one level further."""
    for line in output.rstrip("\n").splitlines():
        print(f"    {line}", flush=True)


def check(condition: bool, message: str) -> None:
    """Raise DemoFailure with `message` unless `condition` holds."""
    if not condition:
        raise DemoFailure(message)


class Runner:
    """Runs the real command entry points in-process, showing the command and its output."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def mvb(self, *args: str | Path) -> str:
        """`mvb --config box/box.toml ARGS...`; returns stdout and stderr together."""
        config = DemoPaths(self.out).config
        return self._run("mvb", box_cli.main, ["--config", str(config), *map(str, args)])

    def admin(self, *args: str | Path) -> str:
        """`mvb-admin ARGS...`; returns stdout and stderr together."""
        return self._run("mvb-admin", admin_cli.main, [str(a) for a in args])

    def _run(self, name: str, entry: CliMain, argv: list[str]) -> str:
        prefix = f"{self.out}{os.sep}"
        say("$ " + " ".join([name, *(a.replace(prefix, "") for a in argv)]))
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            try:
                status = entry(argv)
            except SystemExit as exc:  # argparse rejected the command line
                status = exc.code if isinstance(exc.code, int) else 2
        output = buffer.getvalue()
        echo(output)
        check(status == 0, f"{name} {argv[0] if argv else ''} exited with status {status}")
        return output


# --- the steps ---------------------------------------------------------------------------------


def prepare_out(out: Path) -> None:
    """Wipe and recreate the demo folder; refuse a folder the demo did not make."""
    if out.exists():
        if not (out / MARKER).exists() and any(out.iterdir()):
            raise DemoFailure(f"{out} is not empty and not a demo folder; not wiping it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by gateway/demo.py; wiped at every run\n")


def step_keys(paths: DemoPaths) -> None:
    """1: the back office's recording key pair."""
    heading(1, "back office: create the recording key pair")
    private_path, public_path = create_recording_keys(paths.keys)
    say(f"private key {private_path.relative_to(paths.out)} (stays in the back office, 0600)")
    say(f"public key  {public_path.relative_to(paths.out)} (given to every box)")


def step_config(paths: DemoPaths, run: Runner) -> None:
    """2: the box's configuration, and its first start (the device key)."""
    heading(2, f"box: write the configuration and start it ({DEVICE_SERIAL}, {VEHICLE_ID})")
    paths.box.mkdir(parents=True)
    shutil.copyfile(paths.keys / "recording.pub", paths.box / "recording.pub")
    paths.config.write_text(BOX_TOML)
    say(f"{paths.config.relative_to(paths.out)}:")
    echo(BOX_TOML)
    say("first start creates the box's device key; the back office registers its public half:")
    pem = run.mvb("device-key")
    paths.device_pub.write_text(pem)
    say(f"saved as {paths.device_pub.relative_to(paths.out)}")


def step_clips(paths: DemoPaths, facts: DemoFacts) -> None:
    """3: synthetic footage standing in for the cameras."""
    heading(3, "cameras: generate two synthetic H.264 clips (no hardware needed)")
    paths.clips.mkdir(parents=True)
    for camera, seconds in CLIPS:
        clip = generate_clip(paths.clip(camera), seconds=seconds, camera=camera)
        data = clip.read_bytes()
        facts.clip_bytes[camera] = data
        probe = probe_clip(clip)
        say(
            f"{clip.relative_to(paths.out)}: {seconds:g} s {probe.codec} {probe.container}, "
            f"{len(data):,} bytes, {len(probe.segment_offsets)} segments, "
            f"sha256 {_sha256(data)[:16]}..."
        )


def step_import(paths: DemoPaths, run: Runner) -> None:
    """4: both clips become evidence through the real CLI."""
    heading(4, "box: import both clips as evidence (mvb import)")
    for camera, _seconds in CLIPS:
        output = run.mvb("import", paths.clip(camera), "--camera", camera)
        check(output.startswith("imported "), f"import of {camera} printed no result")


def step_catalog(run: Runner) -> None:
    """5: the catalog as the box sees it."""
    heading(5, "box: the catalog (mvb catalog)")
    run.mvb("catalog")


def step_no_plaintext(paths: DemoPaths, facts: DemoFacts) -> None:
    """6: no clip bytes and no identity of the box anywhere on the card."""
    heading(6, "card: search it for plaintext (what a thief would find)")
    windows = {
        f"{camera} bytes at {offset:,}": window
        for camera, data in facts.clip_bytes.items()
        for offset, window in sample_windows(data)
    }
    identity = {f"device serial {DEVICE_SERIAL!r}": DEVICE_SERIAL.encode()}
    identity[f"vehicle id {VEHICLE_ID!r}"] = VEHICLE_ID.encode()
    needles = windows | identity
    files = [p for p in sorted(paths.card.rglob("*")) if p.is_file()]
    scanned = 0
    for path in files:
        blob = path.read_bytes()
        scanned += len(blob)
        found = [name for name, needle in needles.items() if needle in blob]
        check(not found, f"plaintext on the card: {', '.join(found)} in {path}")
    check(scanned > 0, "the card is empty: nothing was recorded")
    say(f"searched {len(files)} files, {scanned:,} bytes (evidence, sidecars, catalog)")
    say(
        f"for {len(windows)} windows of {WINDOW_BYTES} bytes taken across the clips, "
        "the device serial and the vehicle id"
    )
    say("found none of them: the card holds no plaintext footage or identity (RULES S1)")


def sample_windows(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Windows of WINDOW_BYTES spread over the middle of `data`, skipping low-entropy runs
    (padding and headers, which could repeat by chance and prove nothing)."""
    start, end = len(data) // 10, len(data) * 9 // 10
    step = max((end - start) // WINDOWS_PER_CLIP, WINDOW_BYTES)
    for offset in range(start, end - WINDOW_BYTES, step):
        for candidate in range(offset, min(offset + step, end) - WINDOW_BYTES, WINDOW_BYTES):
            window = data[candidate : candidate + WINDOW_BYTES]
            if len(set(window)) >= WINDOW_BYTES // 2:
                yield candidate, window
                break


def step_decrypt(paths: DemoPaths, run: Runner, facts: DemoFacts) -> None:
    """7: the back office decrypts; the media must equal the clips byte for byte."""
    heading(7, "back office: decrypt with the recording key (mvb-admin decrypt)")
    files = sorted(paths.card.rglob("*.mvbe"))
    decrypt(run, paths, files)
    by_source = decrypted_by_source(paths.decrypted)
    for camera, original in facts.clip_bytes.items():
        name = paths.clip(camera).name
        check(name in by_source, f"no decrypted recording of {name}")
        recording_id, media = by_source[name]
        facts.recording_of[camera] = recording_id
        check(media == original, f"{name}: decrypted media differs from the clip")
        facts.identical.append(name)
        say(f"{name}: {len(media):,} bytes decrypted, byte-identical with the original clip")


def decrypt(run: Runner, paths: DemoPaths, files: Sequence[Path]) -> str:
    """`mvb-admin decrypt` of `files` into backoffice/decrypted, with the box's device key."""
    key = paths.keys / "recording.key"
    return run.admin(
        "decrypt", *files, "--key", key, "--out", paths.decrypted, "--device-key", paths.device_pub
    )


def decrypted_by_source(folder: Path) -> dict[str, tuple[str, bytes]]:
    """Imported clip name -> (recording id, its media: every file of the recording in order)."""
    files: dict[str, list[tuple[int, bytes]]] = collections.defaultdict(list)
    sources: dict[str, str] = {}
    for meta_path in folder.glob("*.json"):
        meta = json.loads(meta_path.read_text())
        recording_id = meta["recording_id"]
        files[recording_id].append((meta["file_seq"], media_of(meta_path)))
        for obj in meta["metadata"]:
            if obj.get("type") == "event" and obj.get("name") == "import":
                sources[recording_id] = obj["source_name"]
    return {
        name: (rid, b"".join(media for _, media in sorted(files[rid])))
        for rid, name in sources.items()
    }


def media_of(meta_path: Path) -> bytes:
    """The decrypted media next to a decrypted file's metadata JSON."""
    media = [p for p in meta_path.parent.glob(meta_path.stem + ".*") if p.suffix != ".json"]
    check(len(media) == 1, f"expected one media file for {meta_path.name}, found {len(media)}")
    return media[0].read_bytes()


def step_power_cut(paths: DemoPaths, run: Runner, facts: DemoFacts) -> None:
    """8: kill a writer mid-recording, recover the card, decrypt the interrupted file."""
    heading(8, "power cut: SIGKILL a recording writer, then recover (mvb recover)")
    cut = kill_writer(paths)
    facts.power_cut = cut
    output = run.mvb("recover")
    check("interrupted at chunk" in output, "recovery reported no interrupted file")
    files = sorted((paths.card / "evidence" / cut.recording_id).glob("*.mvbe"))
    check(bool(files), f"recording {cut.recording_id} has no file on the card after recovery")
    output = decrypt(run, paths, files)
    line = next((line for line in output.splitlines() if "interrupted at chunk" in line), "")
    cut.describe_line = line[line.find("interrupted at chunk") :]
    check(
        "(power cut; device signature verified)" in cut.describe_line,
        "decrypt did not report a power cut verified by the device signature",
    )
    check_recovered_media(paths, facts, cut)


def check_recovered_media(paths: DemoPaths, facts: DemoFacts, cut: PowerCut) -> None:
    """Every acknowledged byte must be back, and everything back must equal the clip."""
    media = b"".join(
        media_of(meta_path)
        for meta_path in sorted(paths.decrypted.glob("*.json"))
        if json.loads(meta_path.read_text())["recording_id"] == cut.recording_id
    )
    original = facts.clip_bytes["dashcam"]
    cut.recovered_bytes = len(media)
    check(len(media) >= cut.acked_bytes, f"acknowledged {cut.acked_bytes} bytes, got {len(media)}")
    check(media == original[: len(media)], "recovered media differs from what was written")
    say(
        f"writer acknowledged {cut.acked_bytes:,} bytes before the cut; {len(media):,} bytes "
        "recovered, every one equal to the clip"
    )


def kill_writer(paths: DemoPaths) -> PowerCut:
    """Start the child writer, SIGKILL it shortly after its ACKS_BEFORE_POWER_CUT-th ACK."""
    argv = [sys.executable, "-m", "gateway.demo", "--child-writer"]
    argv += [str(paths.config), str(paths.clip("dashcam"))]
    say("$ python -m gateway.demo --child-writer box/box.toml clips/dashcam.ts &")
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as child:
        try:
            recording_id, acked = await_acks(child_lines(child))
            time.sleep(POWER_CUT_DELAY_S)
            child.send_signal(signal.SIGKILL)
            say(f"SIGKILL to writer pid {child.pid} while it writes the next segment (power cut)")
        finally:
            child.kill()  # no-op if already dead; never leaves a writer behind
            child.wait()
    check(child.returncode == -signal.SIGKILL, f"writer ended with status {child.returncode}")
    return PowerCut(recording_id, acked)


def child_lines(child: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The child's stdout lines, read by a thread into a queue; None marks the end."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=pump, name="demo-writer-stdout", daemon=True).start()
    return lines


def await_acks(lines: queue.Queue[str | None]) -> tuple[str, int]:
    """Read the child's lines until enough ACKs; return (recording id, acknowledged bytes)."""
    recording_id, acks, acked = "", 0, 0
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while acks < ACKS_BEFORE_POWER_CUT:
        line = next_line(lines, deadline)
        say(f"writer: {line}")
        word, *rest = line.split()
        if word == "REC":
            recording_id = rest[0]
        elif word == "ACK":
            acks, acked = acks + 1, int(rest[-1].partition("=")[2])
        check(word != "DONE", "the writer finished before the power cut")
    check(bool(recording_id), "the writer never reported its recording id")
    return recording_id, acked


def next_line(lines: queue.Queue[str | None], deadline: float) -> str:
    """The child's next line, or DemoFailure at the deadline or at the end of its output."""
    try:
        line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
    except queue.Empty:
        raise DemoFailure(f"the writer printed nothing for {CHILD_TIMEOUT_S:g} s") from None
    if line is None:
        raise DemoFailure("the writer stopped before the power cut (see its error above)")
    return line


def step_retention(paths: DemoPaths, run: Runner, facts: DemoFacts) -> None:
    """9: the back office attests the dashcam file; retention deletes it (RULES S3)."""
    heading(9, "back office attests the first recording; retention deletes it (mvb retention)")
    file_id = attest_first_recording(paths, facts)
    output = run.mvb("retention")
    check(f"deleted {file_id}" in output, f"retention did not delete attested file {file_id}")
    check(not list(paths.card.rglob(f"{file_id}*")), f"file {file_id} is still on the card")
    facts.deleted.append(file_id)
    say(f"{file_id}.mvbe and its sidecar are gone from the card; the catalog keeps the record:")
    output = run.mvb("catalog")
    line = next((line for line in output.splitlines() if line.startswith(file_id)), "")
    check(FileState.DELETED.value in line.split(), "the catalog does not show the deletion")


def attest_first_recording(paths: DemoPaths, facts: DemoFacts) -> str:
    """Record the back office's echoed sha256 for the dashcam file, as the uplink will."""
    recording_id = facts.recording_of["dashcam"]
    box = open_box(load_config(paths.config))
    try:
        records = box.store.catalog.all()
        facts.files_recorded = len(records)
        facts.encrypted_bytes = sum(r.size_bytes for r in records)
        record = next(r for r in records if r.recording_id == recording_id)
        sha256_hex = _sha256(box.store.layout.sealed_path(recording_id, record.file_id))
        attested = box.store.record_attestation(record.file_id, sha256_hex)
    finally:
        box.close()
    check(attested.state is FileState.VERIFIED, f"attestation left {record.file_id} unverified")
    say(
        f"back office echoes sha256 {sha256_hex[:16]}... for {record.file_id} (dashcam); "
        "catalog state -> verified"
    )
    say("(simulated: the uplink issue will carry this echo from the back office)")
    return record.file_id


def step_audit(paths: DemoPaths, run: Runner, facts: DemoFacts) -> None:
    """10: the audit log's chain and signatures, checked with the box's public key."""
    heading(10, "back office: verify the box's audit log (mvb-admin audit verify)")
    output = run.admin("audit", "verify", paths.audit_log, "--device-key", paths.device_pub)
    facts.audit_line = output.strip()
    check(facts.audit_line.startswith("audit log OK"), "the audit log does not verify")
    events = [json.loads(line)["event"] for line in paths.audit_log.read_text().splitlines()]
    facts.audit_entries = len(events)
    say("events logged:")
    for event, count in collections.Counter(events).items():
        say(f"  {count:2} x {event}")


def step_summary(paths: DemoPaths, facts: DemoFacts, elapsed_s: float) -> None:
    """11: what the demo showed, and where everything is."""
    heading(11, "summary")
    cut = facts.power_cut
    assert cut is not None
    rel = paths.out
    say(f"recorded:   {facts.files_recorded} evidence files (2 imported clips, 1 power-cut write)")
    say(f"encrypted:  {facts.encrypted_bytes:,} bytes written to the card; no plaintext on it")
    say(f"decrypted:  {', '.join(facts.identical)} byte-identical with the originals")
    say(f"power cut:  interrupted file recovered: {cut.describe_line}")
    say(f"            {cut.acked_bytes:,} bytes acknowledged, {cut.recovered_bytes:,} recovered")
    say(f"retention:  {len(facts.deleted)} file deleted after attestation (RULES S3)")
    say(f"audit:      audit OK, {facts.audit_entries} audit log entries verified")
    say(f"files:      {rel}/clips        the original clips")
    say(f"            {rel}/card         the SD card (evidence/, catalog/)")
    say(f"            {rel}/box          box.toml, state/ (device key, {AUDIT_LOG_NAME})")
    say(f"            {rel}/backoffice   keys/, decrypted/, the box's device public key")
    say(f"demo took {elapsed_s:.1f} s")


def _sha256(source: bytes | Path) -> str:
    data = source.read_bytes() if isinstance(source, Path) else source
    return hashlib.sha256(data).hexdigest()


# --- the child writer (step 8) -----------------------------------------------------------------


def child_writer(config_path: Path, clip: Path) -> int:
    """Record `clip` as a live dashcam would deliver it; print ACK once a segment is durable.

    Lines: `REC <recording id>`, then per segment `ACK segment=<i> clip_bytes=<n>` where n clip
    bytes are durable, then `DONE` (never reached in the demo: the parent kills this process).
    """
    probe = probe_clip(clip)
    data = clip.read_bytes()
    box = open_box(load_config(config_path))
    recording = box.store.start_recording(
        {**box.facts, "trigger": {"source": "demo", "at_ms": box.store.clock_ms()}}
    )
    print(f"REC {recording.recording_id}", flush=True)
    stream = recording.open_stream("dashcam", container=probe.container)
    bounds = [*probe.segment_offsets[1:], len(data)]
    for index, (start, end) in enumerate(zip(probe.segment_offsets, bounds, strict=True)):
        for piece in split(data[start:end], PIECES_PER_SEGMENT):
            stream.append_media(piece)
            time.sleep(PIECE_INTERVAL_S)
        stream.end_segment({"index": index, "media_offset": start, "media_bytes": end - start})
        print(f"ACK segment={index} clip_bytes={end}", flush=True)
    recording.close()
    box.close()
    print("DONE", flush=True)
    return 0


def split(data: bytes, parts: int) -> list[bytes]:
    """`data` in `parts` nearly equal pieces (the last may be shorter)."""
    size = -(-len(data) // parts)
    return [data[i : i + size] for i in range(0, len(data), size)]


# --- entry point -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.demo", description="Mobile Video Box demo (no hardware needed)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="demo folder, wiped first (default demo-out/)"
    )
    parser.add_argument("--child-writer", nargs=2, type=Path, help=argparse.SUPPRESS)
    return parser


def run_demo(out: Path) -> None:
    """All steps in order; raises DemoFailure at the first failed check."""
    started = time.monotonic()
    paths = DemoPaths(out.resolve())
    prepare_out(paths.out)
    print(f"Mobile Video Box demo in {paths.out} (no hardware; paths below are relative to it)")
    run, facts = Runner(paths.out), DemoFacts()
    step_keys(paths)
    step_config(paths, run)
    step_clips(paths, facts)
    step_import(paths, run)
    step_catalog(run)
    step_no_plaintext(paths, facts)
    step_decrypt(paths, run, facts)
    step_power_cut(paths, run, facts)
    step_retention(paths, run, facts)
    step_audit(paths, run, facts)
    step_summary(paths, facts, time.monotonic() - started)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo (or, privately, the child writer of step 8)."""
    args = _parser().parse_args(argv)
    if args.child_writer:
        return child_writer(*args.child_writer)
    try:
        run_demo(args.out)
    except DemoFailure as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        return 1
    print("\nDemo OK: every check passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
