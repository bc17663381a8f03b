"""Steps 6-9: what the card and the back office hold, checked.

6 the thief's copy of the card holds no plaintext; 7 the back office's copies equal what the box
wrote and it attested, none is left on the card, and they decrypt (the power cut's file reported
interrupted, signed by the box); 8 what each camera recorded; 9 the box's audit log verifies.
"""

from __future__ import annotations

import collections
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from demo.box_config import CAMERAS, DEVICE_SERIAL, VEHICLE_ID
from demo.evidence import (
    camera_report,
    check_report,
    describe_report,
    media_of,
    parts_by_camera,
    save_frame_png,
    ts_sync_run,
    video_facts,
)
from demo.live_box import LiveBox
from demo.narration import check, echo, heading, say
from demo.workspace import DemoFacts, DemoPaths, Runner
from storage.card import PART_SUFFIX, SEALED_SUFFIX
from storage.models import FileState


def plaintext_needles() -> dict[str, bytes]:
    """What a thief must not find on the card: the box's and the cameras' identities, and the
    metadata member every GPS position is written with."""
    needles = {f"device serial {DEVICE_SERIAL!r}": DEVICE_SERIAL.encode()}
    needles[f"vehicle id {VEHICLE_ID!r}"] = VEHICLE_ID.encode()
    for name, serial, _bitrate in CAMERAS:
        needles[f"camera name {name!r}"] = name.encode()
        needles[f"camera serial {serial!r}"] = serial.encode()
    needles["GPS member '\"lat\"'"] = b'"lat"'
    return needles


def step_no_plaintext(paths: DemoPaths, facts: DemoFacts) -> None:
    """6: nothing readable in the thief's copy: no identity, no position, no MPEG-TS."""
    heading(6, "card: search the thief's copy for plaintext")
    check(facts.thief_files > 0, "the thief's copy holds no evidence file")
    needles = plaintext_needles()
    files = [p for p in sorted(paths.thief_copy.rglob("*")) if p.is_file()]
    scanned = 0
    for path in files:
        blob = path.read_bytes()
        scanned += len(blob)
        found = [name for name, needle in needles.items() if needle in blob]
        check(not found, f"plaintext on the card: {', '.join(found)} in {path}")
        offset = ts_sync_run(blob)
        check(offset is None, f"plaintext MPEG-TS on the card: {path} at offset {offset}")
    shutil.rmtree(paths.thief_copy)
    say(f"searched {len(files)} files, {scanned:,} bytes (evidence, sidecars, catalog) for:")
    for name in needles:
        say(f"  {name}")
    say(
        "  the MPEG-TS sync pattern (0x47 every 188 bytes, 10 packets in a row) that any "
        "plaintext footage shows"
    )
    say("found none of them: the card holds no plaintext footage, identity or position (RULES S1)")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def step_verify(paths: DemoPaths, run: Runner, live: LiveBox, facts: DemoFacts) -> None:
    """7: every file the box catalogued is in the back office, equal, attested, and off the card;
    then the back office decrypts its copies."""
    heading(7, "back office: check what it holds against the box's catalog, then decrypt it")
    facts.records = live.call(live.records)
    check(bool(facts.records), "the box catalogued no file")
    columns = f"{'file':12}  {'recording':12}  seq  {'state':7}  {'bytes':>9}"
    say(f"{columns}  sha256: box = attested = copy")
    for record in facts.records:
        stored = paths.stored / f"{record.file_id}{SEALED_SUFFIX}"
        check(stored.is_file(), f"the back office has no copy of {record.file_id}")
        copy_sha = sha256_of(stored)
        equal = record.sha256_hex == record.attested_sha256_hex == copy_sha
        check(equal, f"{record.file_id}: box, attested and stored SHA-256 differ")
        check(record.state is FileState.DELETED, f"{record.file_id} is {record.state.value}")
        facts.stored_bytes += stored.stat().st_size
        say(
            f"{record.file_id[:12]}  {record.recording_id[:12]}  {record.file_seq:3}  "
            f"{record.state.value:7}  {record.size_bytes:9,}  {copy_sha[:16]}... (all three)"
        )
    left = [*paths.card.rglob(f"*{SEALED_SUFFIX}"), *paths.card.rglob(f"*{PART_SUFFIX}")]
    check(not left, f"evidence left on the card: {left}")
    stored_files = sorted(paths.stored.glob(f"*{SEALED_SUFFIX}"))
    check(len(stored_files) == len(facts.records), "the back office holds files the box never had")
    say(f"the card holds no evidence file; its catalog keeps the {len(facts.records)} records")
    output = decrypt(run, paths, stored_files)
    check_power_cut(paths, facts, output)


def decrypt(run: Runner, paths: DemoPaths, files: Sequence[Path]) -> str:
    """`mvb-admin decrypt` of `files` into backoffice/decrypted, with the box's device key."""
    key = paths.keys / "recording.key"
    return run.admin(
        "decrypt",
        *files,
        "--key",
        key,
        "--out",
        paths.decrypted,
        "--device-key",
        paths.device_pub,
        "--log",
        paths.viewing_log,
        "--reason",
        "demo: check what the back office received",
    )


def check_power_cut(paths: DemoPaths, facts: DemoFacts, output: str) -> None:
    """Exactly the power cut's file is interrupted, signed by the box; every acknowledged byte is
    back, and everything back equals the clip."""
    cut = facts.power_cut
    assert cut is not None
    lines = [line for line in output.splitlines() if "interrupted at chunk" in line]
    check(len(lines) == 1, f"expected one interrupted file, decrypt reported {len(lines)}")
    cut.describe_line = lines[0][lines[0].find("interrupted at chunk") :]
    check(
        "(power cut; device signature verified)" in cut.describe_line,
        "decrypt did not report a power cut verified by the device signature",
    )
    media = b"".join(
        media_of(meta_path)
        for meta_path in sorted(paths.decrypted.glob("*.json"))
        if json.loads(meta_path.read_text())["recording_id"] == cut.recording_id
    )
    cut.recovered_bytes = len(media)
    cut.recovered_s = video_facts(media).duration_s
    check(len(media) >= cut.acked_bytes, f"acknowledged {cut.acked_bytes} bytes, got {len(media)}")
    check(media == facts.clip_bytes[: len(media)], "recovered media differs from what was written")
    say(
        f"power cut: the writer acknowledged {cut.acked_bytes:,} bytes; {len(media):,} bytes "
        "recovered, every one equal to the clip"
    )


def step_recorded(paths: DemoPaths, facts: DemoFacts) -> None:
    """8: what each camera recorded, checked against the incident; one frame each as PNG."""
    heading(8, "back office: what was recorded (checked per camera)")
    parts = parts_by_camera(paths.decrypted, facts.incident.recording_id)
    names = [name for name, _serial, _bitrate in CAMERAS]
    check(sorted(parts) == sorted(names), f"cameras in the recording: {sorted(parts)}")
    paths.frames.mkdir(parents=True)
    for name in names:
        report = camera_report(name, parts[name], facts.incident)
        check_report(report, facts.plan, facts.incident)
        facts.reports[name] = report
        frame = paths.frames / f"{name}-at-trigger.png"
        offset_s = save_frame_png(report.media, report.prerecord_s, frame)
        facts.frames.append(frame)
        lines = describe_report(report)
        lines.append(f"  frame at {offset_s:.2f} s (the trigger): {paths.rel(frame)}")
        echo("\n".join(lines))
    say("step 6's search finds the MPEG-TS sync pattern in every decrypted file: it would have")
    say("found it on the card, had anything been written there in plaintext")


def step_audit(paths: DemoPaths, run: Runner, facts: DemoFacts) -> None:
    """9: the audit log's chain and signatures, checked with the box's public key."""
    heading(9, "back office: verify the box's audit log (mvb-admin audit verify)")
    data = paths.audit_log.read_bytes()
    paths.audit_copy.write_bytes(data[: data.rfind(b"\n") + 1])  # the box may be mid-line
    say(f"{paths.rel(paths.audit_copy)}: the box's log so far (it keeps appending while it runs)")
    output = run.admin("audit", "verify", paths.audit_copy, "--device-key", paths.device_pub)
    check(output.strip().startswith("audit log OK"), "the audit log does not verify")
    entries = [json.loads(line) for line in paths.audit_copy.read_text().splitlines()]
    facts.audit_entries = len(entries)
    seen = {(e["event"], e["fields"].get("source")) for e in entries}
    check(("gateway.trigger", "lights") in seen, "no audit entry for the lights' trigger")
    check(("gateway.stop", "officer") in seen, "no audit entry for the officer's stop")
    counts = collections.Counter(e["event"] for e in entries)
    for event in ("uplink.uploaded", "storage.file_attested", "storage.file_deleted"):
        check(counts[event] == len(facts.records), f"{counts[event]} x {event} in the audit log")
    say("events logged:")
    for event, count in counts.items():
        say(f"  {count:2} x {event}")
    say("gateway.trigger (source 'lights') and gateway.stop (source 'officer') are among them")
