"""`make demo`: the newcomer's first minute. The real box service end to end on a machine without
hardware: one command, then the officer's page with its address and a login, two cameras
recording a scripted incident, uploads visibly progressing to a local back office, and a summary
in numbers.

It runs the service `mvb run` runs (`gateway.run.start_box`), in-process on a thread of its own
(demo/steps.py `LiveBox`), with two synthetic cameras and a simulated gpsd
(`demo.gps_sim`: no receiver, no Debian gpsd), and the reference back office (`mvb-admin
serve`) as a process of its own. Everything else goes through the same entry points as the
commands (`gateway.cli.main`, `backoffice.cli.main`). In a fresh folder (default `demo-out/` at
the repository root; `--out DIR` for another):

 1. the back office: its recording key pair, CA and server certificate (`pki init`) and fleet
    repository (`config init`); then `mvb-admin serve` with pairing starts and runs to the end;
 2. the box: its configuration (dashcam and bodycam, 10 s pre-record, files sealed every 3 s so
    that they upload while the incident goes on, the simulated gpsd, the local API, the
    officer's page on 127.0.0.1 with one demo officer account whose random password exists only
    as a PBKDF2 hash, `[uplink] enabled = true` and nothing else), its device key, and pairing
    with a one-time code (`mvb-admin pair-code`, `mvb pair`);
 3. a power cut before the shift: a writer process is SIGKILLed mid-recording and the card
    recovered (`mvb recover`); the interrupted file waits for the uplink like any other;
 4. the box starts and the officer's page comes up: its URL, the account, the password (printed
    once, here) and the certificate's SHA-256; the demo waits (GET /api/status) until both
    pre-record rings hold 10 s and GPS has a fix, while the recovered file uploads;
 5. the incident: the emergency lights go on (a trigger); 6 s later the officer presses stop
    (POST /api/record/stop) and a thief copies the card (`cp -a`); post-record runs out; the
    uplink (tus, pinned mutual TLS) sends every file as it is sealed, the back office attests
    each with the SHA-256 it computed and the box deletes its copy (RULES S3, S6). A progress
    line every second: the box's state, the files by state, the bytes in flight and attested;
 6. the thief's copy is searched for plaintext: camera names and serials, device serial, vehicle
    id, GPS members, and the MPEG-TS sync pattern any plaintext footage would show;
 7. the back office checks what it holds against the box's catalog (its SHA-256 of each copy =
    the one it attested = the one the box wrote; nothing left on the card) and decrypts it
    (`mvb-admin decrypt`): the power cut's file is reported interrupted, signed by the box;
 8. what was recorded is checked and shown per camera: duration by PTS, keyframe start,
    pre-record before the trigger, post-record after the stop, GPS samples on the route, trigger
    and stop sources; one frame per camera, at the trigger, is saved as PNG;
 9. the box's audit log is verified (`mvb-admin audit verify`), trigger and stop included;
10. a summary in numbers: recorded, encrypted, uploaded, verified, deleted, audit; and where to
    look. Then the box and its page stay up for `--linger-s` seconds (default 60; Ctrl-C ends
    the demo at once, cleanly).

Against the previous demo: the back office runs from the start and the box is paired instead
of configured by hand; the power cut moved before the shift (its file uploads with the rest);
the back office decrypts its own copies instead of the card's; the separate `mvb catalog`
listing and the retention step are gone (the progress lines and step 7 show the catalog; the
uplink deletes attested files itself). Nothing had to be dropped for time: measured on a 2-core
machine, the run takes about 28 s of wall time before the linger (10 s of it the rings filling,
11 s the incident).

Every check that fails stops the demo with a message and exit status 1. The private helper
`--child-writer CONFIG CLIP` is the process that step 3 kills; it is not a product command.
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
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backoffice import cli as admin_cli
from config.accounts import hash_password
from config.local import WebSection
from demo.steps import (
    CHILD_TIMEOUT_S,
    STEPS,
    CameraReport,
    DemoFailure,
    Incident,
    LiveBox,
    LivePlan,
    PowerCut,
    WebPage,
    camera_report,
    check,
    check_report,
    child_lines,
    child_writer,
    describe_report,
    echo,
    heading,
    kill_writer,
    media_of,
    next_line,
    parts_by_camera,
    save_frame_png,
    say,
    ts_sync_run,
    video_facts,
)
from demo.synthetic import generate_clip
from gateway import cli as box_cli
from gateway.box import AUDIT_LOG_NAME
from storage.card import PART_SUFFIX, SEALED_SUFFIX
from storage.models import FileRecord, FileState

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
FILE_TARGET_S = 3  # short files: they are sealed, and upload, while the incident goes on
POWER_CUT_CLIP_S = 8.0
BACKOFFICE_NAME = "backoffice.demo"
OFFICER = "officer"  # the demo account's name: what the newcomer types
OFFICER_ID = "BOA-DEMO-7"
SYMBOLS = "abcdefghijkmnpqrstuvwxyz23456789"  # 32 symbols: no 0/o or 1/l to confuse
GROUPS, GROUP_SYMBOLS = 4, 4  # the demo password: 16 symbols of 5 bits, 80 random bits
DEFAULT_LINGER_S = 60.0
BACKOFFICE_STOP_S = 10.0
# The back office runs as its own process, as `mvb-admin serve` (the console script may not be
# on PATH when the demo runs from a plain checkout; the module always is, from the repository).
SERVE_MAIN = "import sys; from backoffice.cli import main; sys.exit(main())"
SERVING = re.compile(
    r"serving (?:pairing at )?https://127\.0\.0\.1:(?P<port>\d+)/(?P<what>[a-z]+)/"
)

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
# Written by `make demo` (demo/run.py): a box with no hardware, on a folder as its SD card.
[box]
device_serial = "{device_serial}"
vehicle_id = "{vehicle_id}"
state_dir = "state"
card_dir = "../card"
recipient_keys = ["recording.pub"]

[storage]
chunk_max_bytes = 65536
file_target_s = {file_target_s}  # the box's default is 60 s; short files upload during the demo
file_target_bytes = 16777216
card_reserve_bytes = 4194304
min_free_to_start_bytes = 8388608
retention_days = 28

# The demo is short, so 10 s of pre-record. The municipalities' protocols ask 30 s (Borsele),
# 60 s (Hattem/Heerde/Oldebroek) or 120 s (Westerkwartier); the box's default is 30 s.
[recording]
prerecord_s = {prerecord_s:g}
postrecord_s = {postrecord_s:g}

[gps]  # the simulated gpsd of demo/gps_sim.py
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

WEB_TOML = """
[web]  # the officer's page: HTTPS with the box's own certificate, on this machine only
host = "127.0.0.1"
https_port = {https_port}
http_port = 0  # no redirect listener: the HTTPS port itself redirects plain http://

[[accounts]]  # the demo's officer: the password was printed once; only its PBKDF2 hash is here
name = "{name}"
role = "officer"
officer_id = "{officer_id}"
password_hash = "{password_hash}"
"""

UPLINK_TOML = """
[uplink]  # where to, the pins and the credentials come from pairing (state/pairing/)
enabled = true

[[links]]  # the demo's one link: the default route (loopback)
name = "wifi"
cost_class = "wifi"
"""

CliMain = Callable[[Sequence[str] | None], int]


def box_toml(gps_port: int, api_port: int, https_port: int, password_hash: str) -> str:
    """The demo box's configuration file."""
    cameras = "".join(
        CAMERA_TOML.format(name=name, serial=serial, bitrate=bitrate)
        for name, serial, bitrate in CAMERAS
    )
    base = BOX_TOML.format(
        device_serial=DEVICE_SERIAL,
        vehicle_id=VEHICLE_ID,
        file_target_s=FILE_TARGET_S,
        prerecord_s=PRERECORD_S,
        postrecord_s=POSTRECORD_S,
        gps_port=gps_port,
        api_port=api_port,
        cameras=cameras,
    )
    return base + web_toml(https_port, password_hash) + UPLINK_TOML


def web_toml(https_port: int, password_hash: str) -> str:
    return WEB_TOML.format(
        https_port=https_port, name=OFFICER, officer_id=OFFICER_ID, password_hash=password_hash
    )


def new_password() -> str:
    """A fresh random password for the demo officer, e.g. `kq7m-x2pd-9fwh-3ncv`."""
    groups = ("".join(secrets.choice(SYMBOLS) for _ in range(GROUP_SYMBOLS)) for _ in range(GROUPS))
    return "-".join(groups)


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback TCP ports nobody listens on right now (held open together while
    the OS picks them, so it cannot hand out the same one twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def web_port(preferred: int = WebSection().https_port) -> int:
    """The configured default HTTPS port (8443) when it is free on loopback, else a free one.
    Probed as the web listener binds (socket.create_server), so "free" means the same to both."""
    try:
        with socket.create_server(("127.0.0.1", preferred)):
            return preferred
    except OSError:
        return free_ports(1)[0]


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
    def pki(self) -> Path:
        return self.backoffice / "pki"

    @property
    def store(self) -> Path:
        return self.backoffice / "store"

    @property
    def stored(self) -> Path:
        """Where the back office keeps finished uploads: complete/<file_id>.mvbe."""
        return self.store / "complete"

    @property
    def pairing_state(self) -> Path:
        return self.backoffice / "pairing"

    @property
    def fleet_repo(self) -> Path:
        return self.backoffice / "fleet-repo"

    @property
    def fleet_keys(self) -> Path:
        return self.backoffice / "fleet-keys"

    @property
    def serve_log(self) -> Path:
        return self.backoffice / "serve.log"

    @property
    def device_pub(self) -> Path:
        return self.backoffice / f"{DEVICE_SERIAL}.device.pub.pem"

    @property
    def audit_copy(self) -> Path:
        return self.backoffice / f"{DEVICE_SERIAL}.audit.jsonl"

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

    @property
    def thief_copy(self) -> Path:
        return self.out / "thief-copy"

    def clip(self, camera: str) -> Path:
        return self.clips / f"{camera}.ts"

    def rel(self, path: Path) -> str:
        """`path` relative to the demo folder, as the narration shows it."""
        return str(path.relative_to(self.out))


@dataclass(slots=True)
class DemoFacts:
    """Facts gathered along the way, for the checks and the summary."""

    plan: LivePlan
    incident: Incident = field(default_factory=Incident)
    page: WebPage | None = None
    reports: dict[str, CameraReport] = field(default_factory=dict)
    frames: list[Path] = field(default_factory=list)
    clip_bytes: bytes = b""
    power_cut: PowerCut | None = None
    thief_files: int = 0  # evidence files (being written or sealed) in the thief's copy
    thief_bytes: int = 0
    records: list[FileRecord] = field(default_factory=list)  # the box's catalog at the end
    stored_bytes: int = 0
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

    def show(self, name: str, argv: Sequence[str | Path]) -> None:
        """Print a command line as the demo shows them: paths relative to the demo folder."""
        prefix = f"{self.out}{os.sep}"
        say("$ " + " ".join([name, *(str(a).replace(prefix, "") for a in argv)]))

    def _run(self, name: str, entry: CliMain, argv: list[str]) -> str:
        self.show(name, argv)
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


# --- the back office process -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackOffice:
    """The running `mvb-admin serve`: its mutual-TLS (tus, fleet) port and its pairing port."""

    files_port: int
    pair_port: int


@contextlib.contextmanager
def backoffice_running(paths: DemoPaths, run: Runner) -> Iterator[BackOffice]:
    """`mvb-admin serve` with pairing, in a process of its own, until the context ends; its log
    goes to backoffice/serve.log. It is always stopped (SIGTERM, then SIGKILL)."""
    argv: list[str | Path] = [
        "serve", "--dir", paths.store, "--cert", paths.pki / "server.crt",
        "--key", paths.pki / "server.key", "--client-ca", paths.pki / "ca.crt",
        "--port", "0", "--reserve-bytes", "0", "--pair-port", "0",
        "--pairing-state", paths.pairing_state, "--pki-dir", paths.pki,
        "--fleet-repo", paths.fleet_repo,
    ]  # fmt: skip
    run.show("mvb-admin", [*argv, "&"])
    command = [sys.executable, "-c", SERVE_MAIN, *map(str, argv)]
    with (
        paths.serve_log.open("w") as log,
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO_ROOT
        ) as process,
    ):
        try:
            yield serving_ports(child_lines(process, "backoffice"))
        finally:
            process.send_signal(signal.SIGTERM)  # it closes its listeners and store cleanly
            try:
                process.wait(BACKOFFICE_STOP_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serving_ports(lines: queue.Queue[str | None]) -> BackOffice:
    """Read `serve`'s start lines (files, fleet, pairing) until both ports are known."""
    ports: dict[str, int] = {}
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while not {"files", "pair"} <= ports.keys():
        line = next_line(lines, deadline, "mvb-admin serve")
        echo(line)
        match = SERVING.match(line)
        if match is not None:
            ports[match["what"]] = int(match["port"])
    return BackOffice(files_port=ports["files"], pair_port=ports["pair"])


# --- the steps ---------------------------------------------------------------------------------


def prepare_out(out: Path) -> None:
    """Wipe and recreate the demo folder; refuse a folder the demo did not make."""
    if out.exists():
        if not (out / MARKER).exists() and any(out.iterdir()):
            raise DemoFailure(f"{out} is not empty and not a demo folder; not wiping it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by demo/run.py; wiped at every run\n")


def step_backoffice(paths: DemoPaths, run: Runner) -> None:
    """1 (first half): the back office's keys, PKI and fleet repository."""
    heading(1, "back office: keys, certificates, fleet repository; then it serves (pairing, tus)")
    run.admin("keys", "create", "--dir", paths.keys)
    output = run.admin("pki", "init", "--dir", paths.pki, "--host", BACKOFFICE_NAME, "127.0.0.1")
    pins = [word for word in output.split() if word.startswith("sha256/")]
    check(len(pins) == 2, "pki init printed no primary and backup pin")
    run.admin("config", "init", "--repo", paths.fleet_repo, "--keys", paths.fleet_keys)
    say("every pairing code carries both pins: a box trusts exactly these two server keys")


def step_box(paths: DemoPaths, run: Runner, office: BackOffice, password: str) -> int:
    """2: the box's configuration, its device key, and pairing. Returns the GPS port."""
    heading(2, f"box: configure it, make its device key, pair it ({DEVICE_SERIAL}, {VEHICLE_ID})")
    paths.box.mkdir(parents=True)
    shutil.copyfile(paths.keys / "recording.pub", paths.box / "recording.pub")
    gps_port, api_port = free_ports(2)
    https_port = web_port()
    password_hash = hash_password(password)
    paths.config.write_text(box_toml(gps_port, api_port, https_port, password_hash))
    say(
        f"{paths.rel(paths.config)}: dashcam and bodycam (synthetic), {PRERECORD_S:g} s "
        f"pre-record, files sealed every {FILE_TARGET_S} s, the simulated gpsd, the local API, and:"
    )
    echo((web_toml(https_port, password_hash) + UPLINK_TOML).strip("\n"))
    say("first start creates the box's device key; the back office registers its public half:")
    paths.device_pub.write_text(run.mvb("device-key"))
    say(f"saved as {paths.rel(paths.device_pub)}")
    say("the admin makes a one-time pairing code; the officer enters it on the box:")
    output = run.admin(
        "pair-code", "--state", paths.pairing_state, "--pki", paths.pki,
        "--box-id", DEVICE_SERIAL, "--address", f"127.0.0.1:{office.pair_port}",
    )  # fmt: skip
    run.mvb("pair", output.strip().splitlines()[-1])
    say("the box now holds its client certificate, the CA, the pins and the upload address")
    return gps_port


def step_power_cut(paths: DemoPaths, run: Runner, facts: DemoFacts) -> None:
    """3: before the shift, kill a writer mid-recording and recover the card."""
    heading(3, "power cut before the shift: SIGKILL a recording writer, then recover (mvb recover)")
    paths.clips.mkdir(parents=True)
    clip = generate_clip(paths.clip("dashcam"), seconds=POWER_CUT_CLIP_S, camera="dashcam")
    facts.clip_bytes = clip.read_bytes()
    say(
        f"{paths.rel(clip)}: {POWER_CUT_CLIP_S:g} s of synthetic H.264, "
        f"{len(facts.clip_bytes):,} bytes, fed to a writer process as a camera would"
    )
    facts.power_cut = kill_writer(paths.config, paths.clip("dashcam"))
    output = run.mvb("recover")
    check("interrupted at chunk" in output, "recovery reported no interrupted file")
    say("the recovered file is sealed and signed by the box; it waits for the uplink")


def step_start(live: LiveBox, facts: DemoFacts, password: str) -> None:
    """4: the box starts; the officer's page; ready (rings full, GPS fix)."""
    heading(4, "box: start the service; the officer's page comes up")
    page = live.call(live.start)
    check(page.state == "listening", f"the officer's page did not start: {page.reason}")
    check(page.url.startswith("https://127.0.0.1:"), f"the page is not on loopback: {page.url}")
    facts.page = page
    banner(page, password)
    live.call(live.wait_ready)


def banner(page: WebPage, password: str) -> None:
    """The officer's page, prominently: where, who, the password (its only appearance) and the
    certificate's fingerprint the browser shows."""
    rule = "=" * 96
    print(
        "\n".join(
            [
                "",
                rule,
                "  THE OFFICER'S PAGE is up. Open it in a browser on this machine and log in:",
                "",
                f"    URL          {page.url}",
                f"    user         {OFFICER}",
                f"    password     {password}   (random for this run; printed only here)",
                f"    certificate  SHA-256 {page.certificate_sha256}",
                "",
                "  The browser warns about the certificate: the box signed it itself (no public CA"
                " vouches for a box in a car); go on if the SHA-256 above matches.",
                rule,
            ]
        ),
        flush=True,
    )


def step_incident(paths: DemoPaths, live: LiveBox, facts: DemoFacts) -> None:
    """5: the incident; uploads run all along; a thief copies the card at the officer's stop."""
    heading(5, "incident: the emergency lights go on; the officer stops it; uploads run all along")

    def copy_card() -> str:
        return thief_copy(paths, facts)

    live.call(lambda: live.play_incident(copy_card))
    live.call(live.wait_uploaded)
    uploaded = facts.incident.uploaded_counts
    check(uploaded == sorted(uploaded), f"uploaded counts went down: {uploaded}")


def thief_copy(paths: DemoPaths, facts: DemoFacts) -> str:
    """The card as a thief copies it mid-incident, by another process (`cp -a`).

    Never read the catalog's sqlite files from this process: it holds connections to them, and
    closing any descriptor of a file drops every POSIX lock the process has on it, so another
    process would take the WAL for unused and delete it under our connections. A file the uplink
    deleted while cp ran is simply missing from the copy.
    """
    copy = paths.thief_copy
    done = subprocess.run(
        ["cp", "-a", str(paths.card), str(copy)], capture_output=True, text=True, check=False
    )
    problems = [line for line in done.stderr.splitlines() if "No such file" not in line]
    check(done.returncode == 0 or not problems, f"cp -a of the card failed: {done.stderr}")
    evidence = [*copy.rglob(f"*{PART_SUFFIX}"), *copy.rglob(f"*{SEALED_SUFFIX}")]
    facts.thief_files = len(evidence)
    facts.thief_bytes = sum(p.stat().st_size for p in evidence)
    return (
        f"cp -a card {paths.rel(copy)}: {facts.thief_files} evidence files "
        f"({facts.thief_bytes:,} bytes), the catalog and the uplink's ledger"
    )


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
        "decrypt", *files, "--key", key, "--out", paths.decrypted, "--device-key", paths.device_pub
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


def step_summary(paths: DemoPaths, facts: DemoFacts, elapsed_s: float) -> None:
    """10: what the demo showed, in numbers, and where everything is."""
    heading(10, "summary")
    cut, page = facts.power_cut, facts.page
    assert cut is not None
    assert page is not None
    dash, body = facts.reports["dashcam"], facts.reports["bodycam"]
    files = len(facts.records)
    written = sum(r.size_bytes for r in facts.records)
    seconds = dash.video.duration_s + body.video.duration_s + cut.recovered_s
    attested = sum(r.is_attested for r in facts.records)
    deleted = sum(r.state is FileState.DELETED for r in facts.records)
    uploaded = facts.incident.uploaded_counts[-1]
    say(
        f"recorded:   {files} files, {seconds:.1f} s of video, {written:,} bytes on the card: "
        f"dashcam {dash.video.duration_s:.1f} s + bodycam {body.video.duration_s:.1f} s of the "
        f"incident, {cut.recovered_s:.1f} s recovered from the power cut"
    )
    say(
        f"encrypted:  no plaintext in the thief's copy of the card ({facts.thief_files} evidence "
        f"files, {facts.thief_bytes:,} bytes): no footage, identity or position"
    )
    say(
        f"uploaded:   {uploaded} files, {facts.stored_bytes:,} bytes to the local back office "
        f"(tus, pinned mutual TLS); {facts.incident.uploaded_while_recording} of them before the "
        "recording ended"
    )
    say(
        f"verified:   {attested} of {files} files: the SHA-256 the back office attested = the "
        "box's = its stored copy's"
    )
    say(f"deleted:    {deleted} of {files} files deleted after attestation; the card holds none")
    say(f"audit:      chain and signatures verified, {facts.audit_entries} entries")
    say(
        f"incident:   lights -> officer's stop; pre-record {dash.prerecord_s:.1f} / "
        f"{body.prerecord_s:.1f} s, post-record {dash.postrecord_s:.1f} / "
        f"{body.postrecord_s:.1f} s, {len(dash.gps)} / {len(body.gps)} GPS positions on the "
        "route, keyframe starts"
    )
    say(f"power cut:  {cut.describe_line}")
    say(f"look at:    {page.url} (user {OFFICER}, the password printed in step 4)")
    out = paths.out
    say(f"            {out}/backoffice/store/complete   what the back office received")
    say(f"            {out}/backoffice/decrypted        decrypted footage (.ts) and metadata")
    say(f"            {out}/backoffice/frames           one frame per camera at the trigger (PNG)")
    say(f"            {out}/box    box.toml, state/ (device key, pairing, {AUDIT_LOG_NAME})")
    say(f"            {out}/card   the SD card: catalog only, no evidence left")
    say(f"demo took {elapsed_s:.1f} s")


def linger(seconds: float, wait: Callable[[float], None] = time.sleep) -> None:
    """Keep the box and its page up for `seconds` (0: not at all); Ctrl-C ends it early and
    cleanly (the caller then stops the box and the back office as after a full wait)."""
    if seconds <= 0:
        return
    print(f"\nthe page stays up for {seconds:g} s; Ctrl-C ends the demo now", flush=True)
    try:
        wait(seconds)
    except KeyboardInterrupt:
        print("Ctrl-C: ending the demo", flush=True)


# --- entry point -------------------------------------------------------------------------------


def _non_negative_seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds >= 0")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo", description="Mobile Video Box demo (no hardware needed)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="demo folder, wiped first (default demo-out/)"
    )
    parser.add_argument(
        "--linger-s",
        type=_non_negative_seconds,
        default=DEFAULT_LINGER_S,
        help="keep the box and its page up this long after the summary (default 60; 0: stop)",
    )
    parser.add_argument("--child-writer", nargs=2, type=Path, help=argparse.SUPPRESS)
    return parser


def run_demo(out: Path, linger_s: float) -> None:
    """All steps in order, then the linger; raises DemoFailure at the first failed check. The
    box and the back office are stopped however it ends."""
    started = time.monotonic()
    paths = DemoPaths(out.resolve())
    prepare_out(paths.out)
    print(f"Mobile Video Box demo in {paths.out} (no hardware; paths below are relative to it)")
    print("Times are UTC, as the synthetic cameras paint them into the picture.")
    run = Runner(paths.out)
    password = new_password()
    step_backoffice(paths, run)
    with backoffice_running(paths, run) as office:
        gps_port = step_box(paths, run, office, password)
        facts = DemoFacts(LivePlan(paths.config, gps_port, PRERECORD_S, INCIDENT_S, POSTRECORD_S))
        step_power_cut(paths, run, facts)
        with LiveBox(facts.plan) as live:
            facts.incident = live.incident
            step_start(live, facts, password)
            step_incident(paths, live, facts)
            step_no_plaintext(paths, facts)
            step_verify(paths, run, live, facts)
            step_recorded(paths, facts)
            step_audit(paths, run, facts)
            step_summary(paths, facts, time.monotonic() - started)
            print("\nDemo OK: every check passed.", flush=True)
            linger(linger_s)
    print("back office stopped; the demo is over.", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo (or, privately, the child writer of step 3)."""
    args = _parser().parse_args(argv)
    if args.child_writer:
        return child_writer(*args.child_writer)
    try:
        run_demo(args.out, args.linger_s)
    except DemoFailure as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo interrupted (Ctrl-C): box and back office stopped", file=sys.stderr)
        return 130
    return 0
