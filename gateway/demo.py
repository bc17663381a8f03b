"""`make demo`: the real box service end to end on a machine without hardware, saying what it does.

It runs the service `mvb run` runs (`gateway.run.start_box`), in-process, with two synthetic
cameras and a simulated gpsd (`gateway.gps_sim`: no receiver, no Debian gpsd), plays one scripted
incident, and then looks at the result as a thief and as the back office would, through the same
entry points as the commands (`gateway.cli.main`, `backoffice.cli.main`). In a fresh folder
(default `demo-out/` at the repository root; `--out DIR` for another):

 1. the back office creates its recording key pair;
 2. a box configuration is written (dashcam and bodycam, 10 s pre-record, the simulated gpsd, the
    local API, the emergency lights as a trigger) and the box starts once (device key);
 3. the simulated gpsd and the box service start; the demo waits, reading the local API
    (GET /api/status), until both pre-record rings hold 10 s and GPS has a fix;
 4. the incident: the emergency lights go on (a trigger); 6 s later the officer presses stop
    (POST /api/record/stop); post-record runs out; the box stops (ignition off);
 5. the catalog is listed (`mvb catalog`);
 6. the card is searched for plaintext: camera names and serials, device serial, vehicle id, GPS
    members, and the MPEG-TS sync pattern that any plaintext footage would show;
 7. the back office decrypts (`mvb-admin decrypt`);
 8. what was recorded is checked and shown per camera: duration by PTS, keyframe start, pre-record
    before the trigger, post-record after the stop, GPS samples on the route, trigger and stop
    sources; one frame per camera, at the trigger, is saved as PNG;
 9. a writer process is SIGKILLed mid-recording (a power cut) and the card recovered
    (`mvb recover`); decryption reports the file as interrupted, signed by the box;
10. a local back office (`mvb-admin pki init`, `serve`) receives every file over tus with pinned
    mutual TLS; each is attested with the SHA-256 the back office computed and deleted from the
    card (RULES S3, S6); one is decrypted from the back office's store;
11. the audit log is verified (`mvb-admin audit verify`), trigger and stop included (RULES R3);
12. a summary says what was shown and where the files are.

Every check that fails stops the demo with a message and exit status 1. The private helper
`--child-writer CONFIG CLIP` is the process that step 9 kills; it is not a product command.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from backoffice import cli as admin_cli
from backoffice.keys import create_recording_keys
from backoffice.server import start_https_server
from backoffice.tus_app import TusApp
from backoffice.upload_store import UploadStore
from config.local import load_config
from gateway import cli as box_cli
from gateway.box import AUDIT_LOG_NAME, open_box
from gateway.demo_steps import (
    STEPS,
    CameraReport,
    DemoFailure,
    Incident,
    LivePlan,
    PowerCut,
    camera_report,
    check,
    check_report,
    child_writer,
    describe_report,
    echo,
    heading,
    kill_writer,
    media_of,
    parts_by_camera,
    run_live,
    save_frame_png,
    say,
    ts_sync_run,
    wait_until,
)
from gateway.synthetic import generate_clip
from storage.models import FileState
from transport.from_config import build_uplink

__all__ = ["MARKER", "STEPS", "DemoFailure", "main", "prepare_out", "ts_sync_run"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "demo-out"
MARKER = ".mvb-demo"  # only a folder holding this marker (or an empty one) is ever wiped
DEVICE_SERIAL = "MVB-DEMO-0001"
VEHICLE_ID = "demo-vehicle-1"
CAMERAS = (  # (name, serial, bitrate)
    ("dashcam", "DC-DEMO-0042", 1_000_000),
    ("bodycam", "BC-DEMO-0117", 800_000),
)
PRERECORD_S = 10.0
POSTRECORD_S = 5.0
INCIDENT_S = 6.0  # lights on -> the officer's stop
POWER_CUT_CLIP_S = 8.0
BACKOFFICE_NAME = "backoffice.demo"
UPLOAD_TIMEOUT_S = 60.0

# Step 10 appends this to box.toml once the local back office listens. No interface: the demo's
# one "WiFi" link is the default route (loopback).
UPLINK_TOML = """
[uplink]  # the local back office of step 10 (mvb-admin serve), pinned, mutual TLS
enabled = true
host = "127.0.0.1"
port = {port}
server_name = "{name}"
ca_file = "../backoffice/pki/ca.crt"
client_cert_file = "../backoffice/pki/clients/{serial}.crt"
client_key_file = "../backoffice/pki/clients/{serial}.key"
pins = {pins}
chunk_bytes = 1048576

[[links]]
name = "wifi"
cost_class = "wifi"
"""

CAMERA_TOML = """
[[cameras]]
name = "{name}"
kind = "synthetic"  # painted and encoded live (libx264): no hardware
serial = "{serial}"
width = 640
height = 360
fps = 25
bitrate_bps = {bitrate}
"""

# Paths are relative to this file's folder (config.local resolves them), so the tree is movable.
# Reserve and minimum free space are tiny so the demo runs on any disk; chunks are small so that a
# segment spans several chunks and the power cut lands between them.
BOX_TOML = """\
# Written by `make demo` (gateway/demo.py): a box with no hardware, on a folder as its SD card.
[box]
device_serial = "{device_serial}"
vehicle_id = "{vehicle_id}"
state_dir = "state"
card_dir = "../card"
recipient_keys = ["recording.pub"]

[storage]
chunk_max_bytes = 65536
file_target_s = 60
file_target_bytes = 16777216
card_reserve_bytes = 4194304
min_free_to_start_bytes = 8388608
retention_days = 28

# The demo is short, so 10 s of pre-record. The municipalities' protocols ask 30 s (Borsele),
# 60 s (Hattem/Heerde/Oldebroek) or 120 s (Westerkwartier); the box's default is 30 s.
[recording]
prerecord_s = {prerecord_s:g}
postrecord_s = {postrecord_s:g}

[gps]  # the simulated gpsd of gateway/gps_sim.py
host = "127.0.0.1"
port = {gps_port}

[api]  # the local JSON API (loopback only)
host = "127.0.0.1"
port = {api_port}
{cameras}
[triggers.lights]  # the emergency lights: a trigger that may also stop
may_stop = true
postrecord_s = {postrecord_s:g}
"""

CliMain = Callable[[Sequence[str] | None], int]


def box_toml(gps_port: int, api_port: int) -> str:
    """The demo box's configuration file."""
    cameras = "".join(
        CAMERA_TOML.format(name=name, serial=serial, bitrate=bitrate)
        for name, serial, bitrate in CAMERAS
    )
    return BOX_TOML.format(
        device_serial=DEVICE_SERIAL,
        vehicle_id=VEHICLE_ID,
        prerecord_s=PRERECORD_S,
        postrecord_s=POSTRECORD_S,
        gps_port=gps_port,
        api_port=api_port,
        cameras=cameras,
    )


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback TCP ports nobody listens on right now (held open together while
    the OS picks them, so it cannot hand out the same one twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


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
    def frames(self) -> Path:
        return self.backoffice / "frames"

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
class DemoFacts:
    """Facts gathered along the way, for the checks and the summary."""

    plan: LivePlan
    incident: Incident = field(default_factory=Incident)
    reports: dict[str, CameraReport] = field(default_factory=dict)
    frames: list[Path] = field(default_factory=list)
    clip_bytes: bytes = b""
    power_cut: PowerCut | None = None
    files_recorded: int = 0
    encrypted_bytes: int = 0
    deleted: list[str] = field(default_factory=list)
    audit_entries: int = 0


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


def step_config(paths: DemoPaths, run: Runner) -> int:
    """2: the box's configuration, and its first start (the device key). Returns the GPS port."""
    heading(2, f"box: write the configuration and start it once ({DEVICE_SERIAL}, {VEHICLE_ID})")
    paths.box.mkdir(parents=True)
    shutil.copyfile(paths.keys / "recording.pub", paths.box / "recording.pub")
    gps_port, api_port = free_ports(2)
    text = box_toml(gps_port, api_port)
    paths.config.write_text(text)
    say(f"{paths.config.relative_to(paths.out)}:")
    echo(text)
    say("first start creates the box's device key; the back office registers its public half:")
    pem = run.mvb("device-key")
    paths.device_pub.write_text(pem)
    say(f"saved as {paths.device_pub.relative_to(paths.out)}")
    return gps_port


def step_live(facts: DemoFacts) -> None:
    """3 and 4: the box service, the simulated gpsd and the scripted incident (asyncio)."""
    try:
        facts.incident = asyncio.run(run_live(facts.plan))
    except (OSError, aiohttp.ClientError) as exc:  # a port taken, the API not answering
        raise DemoFailure(f"the live box failed: {type(exc).__name__}: {exc}") from exc
    check(bool(facts.incident.recording_id), "the incident recorded nothing")
    say(
        f"the incident: recording {facts.incident.recording_id}, "
        f"{facts.incident.files_on_card} evidence files on the card"
    )


def step_catalog(run: Runner) -> None:
    """5: the catalog as the box sees it."""
    heading(5, "box: the catalog (mvb catalog)")
    run.mvb("catalog")


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


def step_no_plaintext(paths: DemoPaths) -> None:
    """6: nothing readable on the card: no identity, no position, no MPEG-TS."""
    heading(6, "card: search it for plaintext (what a thief would find)")
    needles = plaintext_needles()
    copy = thief_copy(paths)
    files = [p for p in sorted(copy.rglob("*")) if p.is_file()]
    scanned = 0
    for path in files:
        blob = path.read_bytes()
        scanned += len(blob)
        found = [name for name, needle in needles.items() if needle in blob]
        check(not found, f"plaintext on the card: {', '.join(found)} in {path}")
        offset = ts_sync_run(blob)
        check(offset is None, f"plaintext MPEG-TS on the card: {path} at offset {offset}")
    shutil.rmtree(copy)
    check(scanned > 0, "the card is empty: nothing was recorded")
    say(f"searched {len(files)} files, {scanned:,} bytes (evidence, sidecars, catalog) for:")
    for name in needles:
        say(f"  {name}")
    say(
        "  the MPEG-TS sync pattern (0x47 every 188 bytes, 10 packets in a row) that any "
        "plaintext footage shows"
    )
    say("found none of them: the card holds no plaintext footage, identity or position (RULES S1)")


def thief_copy(paths: DemoPaths) -> Path:
    """The card as a thief copies it, by another process (`cp -a`).

    Never read the catalog's sqlite files from this process: it holds connections to them, and
    closing any descriptor of a file drops every POSIX lock the process has on it, so another
    process would take the WAL for unused and delete it under our connections.
    """
    copy = paths.out / "thief-copy"
    subprocess.run(["cp", "-a", str(paths.card), str(copy)], check=True)
    return copy


def step_decrypt(paths: DemoPaths, run: Runner, facts: DemoFacts) -> None:
    """7: the back office decrypts every file on the card."""
    heading(7, "back office: decrypt with the recording key (mvb-admin decrypt)")
    output = decrypt(run, paths, sorted(paths.card.rglob("*.mvbe")))
    check("interrupted" not in output, "a file of the incident was not sealed")


def decrypt(run: Runner, paths: DemoPaths, files: Sequence[Path]) -> str:
    """`mvb-admin decrypt` of `files` into backoffice/decrypted, with the box's device key."""
    key = paths.keys / "recording.key"
    return run.admin(
        "decrypt", *files, "--key", key, "--out", paths.decrypted, "--device-key", paths.device_pub
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
        lines.append(f"  frame at {offset_s:.2f} s (the trigger): {frame.relative_to(paths.out)}")
        echo("\n".join(lines))
    say("step 6's search finds the MPEG-TS sync pattern in every decrypted file: it would have")
    say("found it on the card, had anything been written there in plaintext")


def step_power_cut(paths: DemoPaths, run: Runner, facts: DemoFacts) -> None:
    """9: kill a writer mid-recording, recover the card, decrypt the interrupted file."""
    heading(9, "power cut: SIGKILL a recording writer, then recover (mvb recover)")
    paths.clips.mkdir(parents=True)
    clip = generate_clip(paths.clip("dashcam"), seconds=POWER_CUT_CLIP_S, camera="dashcam")
    facts.clip_bytes = clip.read_bytes()
    say(
        f"{clip.relative_to(paths.out)}: {POWER_CUT_CLIP_S:g} s of synthetic H.264, "
        f"{len(facts.clip_bytes):,} bytes, fed to a writer process as a camera would"
    )
    cut = kill_writer(paths.config, paths.clip("dashcam"))
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
    cut.recovered_bytes = len(media)
    check(len(media) >= cut.acked_bytes, f"acknowledged {cut.acked_bytes} bytes, got {len(media)}")
    check(media == facts.clip_bytes[: len(media)], "recovered media differs from what was written")
    say(
        f"writer acknowledged {cut.acked_bytes:,} bytes before the cut; {len(media):,} bytes "
        "recovered, every one equal to the clip"
    )


def step_uplink(paths: DemoPaths, run: Runner, facts: DemoFacts) -> None:
    """10: a local back office; the box uploads every file, it is attested, the box deletes it."""
    heading(10, "upload to a local back office (tus, pinned mutual TLS); attested files deleted")
    pki = paths.backoffice / "pki"
    output = run.admin("pki", "init", "--dir", pki, "--host", BACKOFFICE_NAME, "127.0.0.1")
    pins = [word for word in output.split() if word.startswith("sha256/")]
    check(len(pins) == 2, "pki init printed no primary and backup pin")
    run.admin("pki", "issue-client", "--dir", pki, "--serial", DEVICE_SERIAL)
    asyncio.run(upload_everything(paths, pins, facts))
    output = run.mvb("catalog")
    rows = [line.split() for line in output.splitlines()[1:] if len(line.split()) >= 4]
    states = {row[3] for row in rows}
    check(states == {FileState.DELETED.value}, f"catalog still shows {sorted(states)}")
    check(not list(paths.card.rglob("*.mvbe")), "evidence files remain on the card after upload")
    stored = sorted((paths.backoffice / "store" / "complete").glob("*.mvbe"))
    say(
        f"back office holds {len(stored)} files; the card holds none; the catalog keeps the records"
    )
    output = decrypt(run, paths, stored[:1])
    check("ok" in output or "->" in output, "the back office's copy does not decrypt")


async def upload_everything(paths: DemoPaths, pins: list[str], facts: DemoFacts) -> None:
    """Serve tus (HTTPS) from backoffice/store, let the box's uplink run until the card is empty."""
    pki = paths.backoffice / "pki"
    with UploadStore.open(paths.backoffice / "store", reserve_bytes=0) as store:
        app = TusApp(store, max_upload_bytes=1 << 30, max_chunk_bytes=16 << 20)
        server = await start_https_server(
            app,
            host="127.0.0.1",
            port=0,
            cert_file=pki / "server.crt",
            key_file=pki / "server.key",
            client_ca_file=pki / "ca.crt",
        )
        try:
            say(f"back office: mvb-admin serve on https://127.0.0.1:{server.port}/files/")
            write_uplink_config(paths, server.port, pins)
            await run_uplink(paths, facts)
        finally:
            await server.close()


def write_uplink_config(paths: DemoPaths, port: int, pins: list[str]) -> None:
    text = paths.config.read_text() + UPLINK_TOML.format(
        port=port, name=BACKOFFICE_NAME, serial=DEVICE_SERIAL, pins=json.dumps(pins)
    )
    paths.config.write_text(text)
    say("box.toml gains [uplink] (pinned to both server keys, client certificate) and a WiFi link")


async def run_uplink(paths: DemoPaths, facts: DemoFacts) -> None:
    config = load_config(paths.config)
    box = await asyncio.to_thread(open_box, config)
    try:
        records = box.store.catalog.all()
        facts.files_recorded = len(records)
        facts.encrypted_bytes = sum(r.size_bytes for r in records)
        uplink = build_uplink(config, box.store)
        assert uplink is not None
        await uplink.start()
        try:
            await wait_until(
                lambda: all(r.state is FileState.DELETED for r in box.store.catalog.all()),
                UPLOAD_TIMEOUT_S,
                "the uplink did not deliver every file",
            )
        finally:
            await uplink.stop()
            uplink.ledger.close()
        facts.deleted = [r.file_id for r in box.store.catalog.all()]
        say(
            f"uploaded {uplink.uploaded_files} files ({uplink.uploaded_bytes:,} bytes); each "
            "attested with the SHA-256 the back office computed, then deleted (RULES S3, S6)"
        )
    finally:
        await asyncio.to_thread(box.close)


def step_audit(paths: DemoPaths, run: Runner, facts: DemoFacts) -> None:
    """11: the audit log's chain and signatures, checked with the box's public key."""
    heading(11, "back office: verify the box's audit log (mvb-admin audit verify)")
    output = run.admin("audit", "verify", paths.audit_log, "--device-key", paths.device_pub)
    check(output.strip().startswith("audit log OK"), "the audit log does not verify")
    entries = [json.loads(line) for line in paths.audit_log.read_text().splitlines()]
    facts.audit_entries = len(entries)
    seen = {(e["event"], e["fields"].get("source")) for e in entries}
    check(("gateway.trigger", "lights") in seen, "no audit entry for the lights' trigger")
    check(("gateway.stop", "officer") in seen, "no audit entry for the officer's stop")
    say("events logged:")
    for event, count in collections.Counter(e["event"] for e in entries).items():
        say(f"  {count:2} x {event}")
    say("gateway.trigger (source 'lights') and gateway.stop (source 'officer') are among them")


def step_summary(paths: DemoPaths, facts: DemoFacts, elapsed_s: float) -> None:
    """12: what the demo showed, and where everything is."""
    heading(12, "summary")
    cut = facts.power_cut
    assert cut is not None
    dash, body = facts.reports["dashcam"], facts.reports["bodycam"]
    rel = paths.out
    say(
        f"recorded:   dashcam {dash.video.duration_s:.1f} s, bodycam {body.video.duration_s:.1f} s "
        f"in one incident ({facts.incident.recording_id}), both starting on a keyframe"
    )
    say(
        f"trigger:    lights; pre-record {dash.prerecord_s:.1f} s / {body.prerecord_s:.1f} s "
        f"before it (configured {PRERECORD_S:g} s)"
    )
    say(
        f"stop:       officer via the local API; post-record {dash.postrecord_s:.1f} s / "
        f"{body.postrecord_s:.1f} s after it (configured {POSTRECORD_S:g} s)"
    )
    say(
        f"gps:        {len(dash.gps)} / {len(body.gps)} positions in the evidence, all on the route"
    )
    say(f"encrypted:  {facts.encrypted_bytes:,} bytes written to the card; no plaintext on it")
    say(f"frames:     {', '.join(p.name for p in facts.frames)} decoded by the back office")
    say(f"power cut:  interrupted file recovered: {cut.describe_line}")
    say(f"            {cut.acked_bytes:,} bytes acknowledged, {cut.recovered_bytes:,} recovered")
    say(
        f"uplink:     {len(facts.deleted)} files uploaded, attested by the back office's SHA-256 "
        "and deleted from the card (RULES S3)"
    )
    say(f"audit:      audit OK, {facts.audit_entries} audit log entries verified")
    say(f"files:      {rel}/card         the SD card (evidence/, catalog/)")
    say(f"            {rel}/box          box.toml, state/ (device key, {AUDIT_LOG_NAME})")
    say(f"            {rel}/backoffice   keys/, pki/, store/ (uploads), decrypted/, frames/")
    say(f"            {rel}/clips        the power-cut step's clip")
    say(f"demo took {elapsed_s:.1f} s")


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
    print("Times are UTC, as the synthetic cameras paint them into the picture.")
    run = Runner(paths.out)
    step_keys(paths)
    gps_port = step_config(paths, run)
    facts = DemoFacts(LivePlan(paths.config, gps_port, PRERECORD_S, INCIDENT_S, POSTRECORD_S))
    step_live(facts)
    step_catalog(run)
    step_no_plaintext(paths)
    step_decrypt(paths, run, facts)
    step_recorded(paths, facts)
    step_power_cut(paths, run, facts)
    step_uplink(paths, run, facts)
    step_audit(paths, run, facts)
    step_summary(paths, facts, time.monotonic() - started)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo (or, privately, the child writer of step 9)."""
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
