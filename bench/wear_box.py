"""Card wear of the whole box: the real `mvb run` on labdisk, recording and uploading in real time.

    python -m bench.wear_box [--minutes 5] [--new-card-only] [--out DIR]   (root; real time)

The check on bench/wear.py, which drives the box's storage code by footage time and emulates
the capture and uplink around it: here nothing is emulated but the camera. The real box
(`mvb run`, its card and state directory on one labdisk mount) records one replayed 4 Mbit/s
H.264 camera (bench/capture_clip.py, the capture benchmark's clip) and uploads over pinned
mutual TLS to the real back office (`mvb-admin serve`, on the local disk, not counted) through
one link with a monthly cap (the budget is written per chunk), which attests, so the box
deletes each file. Every writer of the box is counted, whatever it is: alarms, the trusted
time, the audit shipper, the fleet state, anything that a storage-level run could miss.

The window: the counters are reset once the box runs in standby (its start-up writes are not
wear per hour); then the officer's start, `minutes` of recording, the stop, and the drain (every
file uploaded, attested and deleted). The denominator here is the evidence files' bytes
(labdisk's `evidence` class): the media the muxer hands over is not visible from outside the
box (the storage-level run measures the files 0.12 % above it). The footage, for the scaling
to an hour, is those bytes at the clip's constant rate: the recording with its pre-record
(written at the trigger) and post-record (after the stop).

Left out: GPS (no gpsd: trusted time comes from the back office's Date; segments carry no GPS
object, some 150 B a second), the officer's web page (its session and TLS files are written at
start only), pairing and fleet configuration (not configured).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from bench.capture_clip import make_clip
from bench.wear import NEW_CARD, OLD_CARD
from bench.wear_figures import WEAR_CLASSES, figures_from_stats, render
from common.durable import make_dirs
from labdisk import LabDisk
from storage.card import CATALOG_DIR
from storage.sqlite_files import create_database
from tests.evidence_helpers import write_box_config
from tests.gpsfake import free_port
from tests.tls_helpers import SERVER_NAME, TestPki, make_test_pki
from transport.ledger import LEDGER_DIR

MVB: Final = Path(sys.executable).with_name("mvb")
MVB_ADMIN: Final = Path(sys.executable).with_name("mvb-admin")
SERVING: Final = re.compile(r"serving https://127\.0\.0\.1:(?P<port>\d+)/files/ from .*")
PRERECORD_S: Final = 10
START_TIMEOUT_S: Final = 60.0
DRAIN_TIMEOUT_S: Final = 600.0
POLL_S: Final = 0.5
LTE_CAP_BYTES: Final = 1 << 40  # a cap never reached: the budget is still written per chunk


def _box_config(root: Path, recipient: Path, clip: Path, pki: TestPki, api: int, bo: int) -> Path:
    sections = f"""[recording]
prerecord_s = {PRERECORD_S}
[api]
port = {api}
[web]
enabled = false
[[cameras]]
name = "dashcam"
kind = "replay"
url = "{clip}"
serial = "WEAR-CAM-1"
[uplink]
enabled = true
host = "127.0.0.1"
port = {bo}
server_name = "{SERVER_NAME}"
ca_file = "{pki.ca_cert}"
client_cert_file = "{pki.client_cert}"
client_key_file = "{pki.client_key}"
pins = ["{pki.server_pin}", "{pki.backup_pin}"]
[[links]]
name = "lte"
cost_class = "cellular"
monthly_cap_bytes = {LTE_CAP_BYTES}
headroom_fraction = 0.0
udp_allowed = false
"""
    return write_box_config(root, recipient, storage_lines=sections)


@contextmanager
def _back_office(workdir: Path, pki: TestPki) -> Iterator[int]:
    argv = [
        str(MVB_ADMIN), "serve", "--dir", str(workdir / "store"),
        "--cert", str(pki.server_cert), "--key", str(pki.server_key),
        "--client-ca", str(pki.ca_cert), "--port", "0", "--reserve-bytes", "0",
    ]  # fmt: skip
    with (workdir / "backoffice.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            match = SERVING.fullmatch(line)
            if match is None:
                raise RuntimeError(f"mvb-admin serve did not start: {line!r}")
            yield int(match["port"])
        finally:
            process.kill()
            process.wait(30)


@contextmanager
def _box(config: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(MVB), "--config", str(config), "run"], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


def _call(api_port: int, path: str, method: str = "GET") -> dict[str, Any] | None:
    """The box's loopback API; None when it does not answer (yet) or refuses."""
    connection = http.client.HTTPConnection("127.0.0.1", api_port, timeout=10)
    try:
        connection.request(method, path, body=b"" if method == "POST" else None)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            return None
        document: dict[str, Any] = json.loads(body or b"{}")
        return document
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def _until(api: int, done: Callable[[dict[str, Any]], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = _call(api, "/api/status")
        if status is not None and done(status):
            return
        time.sleep(POLL_S)
    raise TimeoutError(f"the box did not reach: {what} within {timeout_s:.0f} s")


def _drained(status: dict[str, Any]) -> bool:
    uplink = status["uplink"]
    return bool(
        status["state"] == "standby"
        and status["storage"]["files_on_card"] == 0
        and not uplink["uploading"]
        and not uplink["waiting_reasons"]
    )


def run_box(workdir: Path, minutes: float, *, old_card: bool = False) -> str:
    """Record `minutes` on the real box on labdisk; return the report. `old_card`: the card's
    catalog and ledger were made with 4 KiB pages before (bench/wear.py OLD_CARD)."""
    subprocess.run(
        [str(MVB_ADMIN), "keys", "create", "--dir", str(workdir / "keys")],
        check=True,
        capture_output=True,
    )
    (workdir / "clip").mkdir()
    clip = make_clip(workdir / "clip")
    pki = make_test_pki(workdir / "pki")
    api = free_port()
    mount = workdir / "mount"
    with (
        _back_office(workdir, pki) as bo_port,
        LabDisk(workdir / "backing", mount, mode="ext4", classes=WEAR_CLASSES) as disk,
    ):
        if old_card:
            for folder in (mount / "card" / CATALOG_DIR, mount / "card" / LEDGER_DIR):
                make_dirs(folder)
                create_database(folder, page_bytes=OLD_CARD.page_bytes or 4096)
        config = _box_config(
            mount, workdir / "keys" / "recording.pub", clip.path, pki, api, bo_port
        )
        with _box(config, workdir / "box.log") as box:
            _until(api, lambda s: s["state"] == "standby", "standby", START_TIMEOUT_S)
            time.sleep(PRERECORD_S + 2)  # the pre-record ring fills (in RAM)
            disk.stats(reset=True)
            if _call(api, "/api/record/start", "POST") is None:
                raise RuntimeError("the box refused the officer's start")
            started = time.monotonic()
            time.sleep(minutes * 60)
            _call(api, "/api/record/stop", "POST")
            recorded_s = time.monotonic() - started
            _until(api, _drained, "every file uploaded and deleted", DRAIN_TIMEOUT_S)
            stats: dict[str, dict[str, int]] = disk.stats()["classes"]
            if box.poll() is not None:
                raise RuntimeError(f"mvb run exited with {box.returncode}")
    # The footage is what the camera delivered into files: the recording, the pre-record the
    # trigger wrote at once, and the post-record after the stop; at the clip's constant rate.
    evidence = stats["evidence"]["bytes_written"]
    footage_s = evidence / (clip.bitrate_bps / 8)
    figures = figures_from_stats(stats, footage_s, evidence)
    header = (
        f"whole box: {recorded_s:.0f} s between start and stop, {footage_s:.0f} s of footage "
        f"with pre- and post-record (evidence bytes / the clip's {clip.bitrate_bps / 1e6:.2f} "
        "Mbit/s); denominator: the evidence files' bytes"
    )
    return header + "\n" + render(figures, evidence_label="evidence files' bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description="Card wear of the whole box (real time)")
    parser.add_argument("--minutes", type=float, default=5.0, help="recording time (min)")
    parser.add_argument("--out", type=Path, default=None, help="work dir (default: cwd)")
    parser.add_argument("--new-card-only", action="store_true", help="skip the old card's run")
    args = parser.parse_args()
    cards = (NEW_CARD,) if args.new_card_only else (OLD_CARD, NEW_CARD)
    for card in cards:
        workdir = Path(tempfile.mkdtemp(prefix="mvb-wear-box-", dir=args.out or Path.cwd()))
        try:
            print(f"\n## {card.name}\n")
            print(run_box(workdir, args.minutes, old_card=card is OLD_CARD))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
