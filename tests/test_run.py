"""`mvb run` as a real process: a vehicle input line and the officer's CLI drive the recorder
through the local API; SIGTERM seals what is being recorded."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from demo.synthetic import generate_clip
from tests.cameras import free_port
from tests.evidence_helpers import write_box_config

if TYPE_CHECKING:
    from labdisk import LabDisk

MVB = Path(sys.executable).with_name("mvb")
MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")


def mvb(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MVB), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def status(config: Path) -> dict[str, object]:
    result = mvb(config, "status")
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


@contextlib.contextmanager
def mvb_run(
    config: Path, *, env: dict[str, str] | None = None, card: LabDisk | None = None
) -> Iterator[subprocess.Popen[str]]:
    """`mvb run` with `config` as a process, once its local API answers (degraded or not). A
    block left normally ends it as systemd does (SIGTERM) and asserts a graceful exit 0; whatever
    happened, a process still running is killed, and then `card` (a labdisk under the box) is
    closed. Its output goes to the test's captured output."""
    process = subprocess.Popen([str(MVB), "--config", str(config), "run"], text=True, env=env)
    try:
        wait_for(lambda: mvb(config, "status").returncode == 0, "the local API", timeout_s=60)
        yield process
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        if card is not None:
            card.close()


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[Path, Path, subprocess.Popen[str]]]:
    keys = tmp_path / "backoffice"
    subprocess.run(
        [str(MVB_ADMIN), "keys", "create", "--dir", str(keys)], check=True, capture_output=True
    )
    clip = generate_clip(tmp_path / "clip.ts", seconds=3, keyframe_interval_frames=25)
    lights = tmp_path / "gpio-lights-value"
    lights.write_text("0\n")
    (tmp_path / "gpio-officer-value").write_text("0\n")  # the officer's switch on the dashboard
    accel = tmp_path / "iio:device0"
    accel.mkdir()
    (accel / "in_accel_scale").write_text("0.009806650\n")
    for axis, value in (("x", 0), ("y", 0), ("z", 1000)):
        (accel / f"in_accel_{axis}_raw").write_text(f"{value}\n")
    config = write_box_config(
        tmp_path / "box",
        keys / "recording.pub",
        storage_lines=f"""
[recording]
prerecord_s = 5
postrecord_s = 1
[gps]
port = {free_port()}
[api]
port = {free_port()}
[[cameras]]
name = "dashcam"
kind = "replay"
url = "{clip}"
serial = "DC-9"
[[inputs]]
source = "lights"
kind = "sysfs"
path = "{lights}"
debounce_ms = 20
[[inputs]]
source = "officer"
kind = "sysfs"
path = "{tmp_path / "gpio-officer-value"}"
debounce_ms = 20
stop_on_release = true
[[inputs]]
source = "crash"
kind = "iio_accel"
path = "{accel}"
threshold_g = 0.5
[triggers.lights]
postrecord_s = 1
""",
    )
    with (tmp_path / IMPORT_LOG).open("w") as stderr:
        process = subprocess.Popen(
            [str(MVB), "--config", str(config), "run"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=logging_imports(),
        )
    try:
        wait_for(lambda: mvb(config, "status").returncode == 0, "the local API")
        yield config, tmp_path, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_input_line_and_officer_drive_recordings_and_sigterm_seals(
    box: tuple[Path, Path, subprocess.Popen[str]],
) -> None:
    config, root, process = box
    lights = root / "gpio-lights-value"
    assert status(config)["state"] == "standby"
    assert_loads_what_it_uses(process.pid)
    assert_imports_only_what_it_uses(root / IMPORT_LOG)

    lights.write_text("1\n")  # emergency lights on
    wait_for(lambda: status(config)["state"] == "recording", "the lights to start a recording")
    stopped = mvb(config, "record", "stop")
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: status(config)["state"] == "standby", "post-record to end")
    again = mvb(config, "record", "stop")
    assert again.returncode == 1
    assert "not recording" in again.stderr

    started = mvb(config, "record", "start")
    assert started.returncode == 0
    assert "recording" in started.stdout
    assert_loads_what_it_uses(process.pid)  # its key wrapped to the recipient, files written
    assert_imports_only_what_it_uses(root / IMPORT_LOG)
    gps = status(config)["gps"]
    assert isinstance(gps, dict)
    assert gps["status"] == "no_gpsd"  # no gpsd on that port: reported, nothing else disturbed

    process.send_signal(signal.SIGTERM)  # ignition off in the middle of a recording
    assert process.wait(30) == 0
    catalog = mvb(config, "catalog")
    assert catalog.returncode == 0
    rows = [line for line in catalog.stdout.splitlines() if " sealed " in line]
    assert len(rows) == 2, catalog.stdout
    audit = (config.parent / "state" / "audit.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in audit]
    triggers = [e["fields"] for e in events if e["event"] == "gateway.trigger"]
    assert triggers == [  # R3: the source, and who asked on which channel (issue 15, item 5)
        {"source": "lights", "started_recording": True, "channel": "input", "account": None},
        {"source": "officer", "started_recording": True, "channel": "cli", "account": "local"},
    ]
    [stop] = [e["fields"] for e in events if e["event"] == "gateway.stop"]
    assert stop == {"source": "officer", "postrecord_s": 0.0, "channel": "cli", "account": "local"}
    names = [e["event"] for e in events]
    assert names[0] == "gateway.started"
    assert "gateway.stopped" in names


def assert_loads_what_it_uses(pid: int) -> None:
    """Issue 18: the box loads what its configuration uses. No link prefers HTTP/3 here, so
    aioquic and its QPACK library are not in the running box; one recipient key (no four-eyes
    split), so its one cryptography library is `cryptography`: no pycryptodome. Their native
    modules would be in its memory map; PyAV's and cryptography's are, which shows the map is
    read right."""
    mapped = Path(f"/proc/{pid}/maps").read_text()
    assert "/av/" in mapped
    assert "/cryptography/" in mapped
    assert "/aioquic/" not in mapped
    assert "/pylsqpack/" not in mapped
    assert "/Crypto/" not in mapped


IMPORT_LOG = "box-imports.log"
IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+\d+ \|\s+(?P<module>\S+)")
NOT_UNTIL_USED = (
    "tuf.api.metadata",  # python-tuf: the first fleet verification (a paired box)
    "tuf.ngclient",
    "urllib3",
    "gateway.web.server",  # the officer's page: [web] on
    "common.sessions",
)


def logging_imports() -> dict[str, str]:
    """The environment for a box that logs each module it imports, when it imports it, on its
    stderr (CPython's `-X importtime`): what a running box has loaded, read from outside."""
    return {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}


def imported_modules(log: Path) -> set[str]:
    """The modules a process started with `logging_imports()` has imported so far."""
    return {m["module"] for m in IMPORT_LINE.finditer(log.read_text(errors="replace"))}


def assert_imports_only_what_it_uses(log: Path) -> None:
    """Issue 18: a box that is not paired and has the officer's page off has not loaded
    python-tuf's client, urllib3 or the page's modules; what it does load is in the log (the
    log is read right)."""
    imported = imported_modules(log)
    assert {"gateway.run", "gateway.web.local_channel", "tuf.api.exceptions", "av"} <= imported
    assert imported.isdisjoint(NOT_UNTIL_USED), imported & set(NOT_UNTIL_USED)


def test_a_taken_api_port_fails_cleanly(tmp_path: Path) -> None:
    keys = tmp_path / "backoffice"
    subprocess.run(
        [str(MVB_ADMIN), "keys", "create", "--dir", str(keys)], check=True, capture_output=True
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_box_config(
            tmp_path / "box",
            keys / "recording.pub",
            storage_lines=f"[api]\nport = {port}\n[gps]\nport = {free_port()}\n",
        )
        result = subprocess.run(
            [str(MVB), "--config", str(config), "run"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert "mvb run: cannot start" in result.stderr
    assert "Traceback" not in result.stderr
    audit = (config.parent / "state" / "audit.jsonl").read_text()
    assert "gateway.stopped" in audit


def post(config: Path, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    port = tomllib.loads(config.read_text())["api"]["port"]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bodycam_event_and_hard_braking_are_triggers(
    box: tuple[Path, Path, subprocess.Popen[str]],
) -> None:
    config, root, process = box
    code, reply = post(config, "/api/trigger", b'{"source": "bodycam"}')
    assert (code, reply["state"]) == (200, "recording")
    assert post(config, "/api/trigger", b"not json")[0] == 400
    assert post(config, "/api/trigger", b'{"source": "../etc"}')[0] == 400
    (root / "iio:device0" / "in_accel_x_raw").write_text("-700\n")  # 0.7 g: hard braking
    wait_for(
        lambda: (
            "gateway.trigger" in (config.parent / "state" / "audit.jsonl").read_text()
            and '"source":"crash"' in (config.parent / "state" / "audit.jsonl").read_text()
        ),
        "the accelerometer to trigger",
    )
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    events = [json.loads(line) for line in (config.parent / "state" / "audit.jsonl").open()]
    triggers = [e["fields"] for e in events if e["event"] == "gateway.trigger"]
    assert triggers == [
        {"source": "bodycam", "started_recording": True, "channel": "button", "account": None},
        {"source": "crash", "started_recording": False, "channel": "input", "account": None},
    ]


def test_the_officers_switch_is_the_button_channel_and_its_stop_is_at_once(
    box: tuple[Path, Path, subprocess.Popen[str]],
) -> None:
    """Issue 15, item 5: an input line whose source is the officer records and stops as the
    officer (no post-record by default), audited as channel `button` without an account."""
    config, root, process = box
    switch = root / "gpio-officer-value"
    switch.write_text("1\n")
    wait_for(lambda: status(config)["state"] == "recording", "the switch to start a recording")
    switch.write_text("0\n")
    wait_for(lambda: status(config)["state"] == "standby", "the switch to stop it")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    events = [json.loads(line) for line in (config.parent / "state" / "audit.jsonl").open()]
    [trigger] = [e["fields"] for e in events if e["event"] == "gateway.trigger"]
    [stop] = [e["fields"] for e in events if e["event"] == "gateway.stop"]
    assert trigger == {
        "source": "officer",
        "started_recording": True,
        "channel": "button",
        "account": None,
    }
    assert stop == {"source": "officer", "postrecord_s": 0.0, "channel": "button", "account": None}
