"""A power cut at every durable step of an A/B release switch leaves a bootable release
(docs/releases.md 4; the SIGKILLs of tests/test_release_switch_e2e.py keep the page cache, this
one does not).

The release root (links, switch.json, each release's release.json) lives on a strict-mode
labdisk. The switch runs against a real HTTP status peer that answers healthy for the target;
the service is a recorder of calls (starting a real box is the end-to-end test's part). For
every k, the k-th file-system operation of the switch that can change what is durable waits in
a stall, the power goes, and then the boot step runs on what is left: `current` must name a
complete release, and the state must explain it (the table's invariant).

Left out: the releases' venvs themselves (section 3's install fsyncs them before release.json).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from common.durable import make_dirs
from gateway.release_switch import Event, EventKind, Outcome, Phase
from gateway.release_switch_io import ReleaseRoot, Switcher, Timing, activate_first
from tests.labdisk.conftest import MakeDisk
from tests.labdisk.test_labdisk import wait_for_stall
from tests.release_switch_helpers import fake_install

pytestmark = pytest.mark.root

OLD, NEW = "1.0.0", "1.0.1"
DURABLE_OPS = ["create", "symlink", "fsync", "rename", "fsyncdir"]
QUICK = Timing(health_deadline_s=10.0, healthy_polls=1, poll_interval_s=0.05, standby_poll_s=0.05)


class Calls:
    """The service, as far as the links are concerned: it records stop and start."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def stop(self) -> None:
        self.calls.append("stop")

    def start(self) -> None:
        self.calls.append("start")


@pytest.fixture(scope="module")
def healthy_api() -> Iterator[str]:
    """A real HTTP peer answering /api/status as a healthy box on NEW."""
    body = json.dumps(
        {
            "box": {"software_version": NEW},
            "state": "standby",
            "cameras": {"dashcam": {"connected": True, "last_packet_age_s": 0.1}},
        }
    ).encode()

    class Status(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def bootable(root: ReleaseRoot) -> str:
    """The release `current` names after the boot step, checked complete; and the state agrees.
    Even before the boot step (a boot unit that failed) `current` names a complete release."""
    before = root.linked_version("current")
    assert before is not None, "the cut left no current link"
    root.check_installed(before)
    Switcher(root, Calls()).run(Event(EventKind.BOOT))
    current = root.linked_version("current")
    assert current is not None, "no current link: the box cannot start"
    root.check_installed(current)
    state = root.load()
    expected = state.target if state.phase is Phase.TRIAL else state.good
    assert current == expected, (state, current)
    return current


def test_a_cut_at_any_step_of_a_switch_leaves_a_bootable_release(
    make_disk: MakeDisk, tmp_path: Path, healthy_api: str
) -> None:
    disk = make_disk("strict")
    root = ReleaseRoot(tmp_path / "card" / "opt")
    seen: set[tuple[str, str]] = set()
    step = 0
    while True:
        disk.cut()
        for leftover in sorted((tmp_path / "card").glob("*")):
            shutil.rmtree(leftover)  # a fresh root for each cut
        make_dirs(root.path)
        for version in (OLD, NEW):
            fake_install(root, version)
        activate_first(root, OLD)
        rule = disk.stall(30.0, ops=DURABLE_OPS, path="opt*", after=step, times=1)
        switcher = Switcher(root, Calls(), api_url=healthy_api, timing=QUICK)
        worker = threading.Thread(target=_run, args=(switcher,), daemon=True)
        worker.start()
        deadline = time.monotonic() + 20
        while worker.is_alive() and disk.status()["stalled"] == 0:
            assert time.monotonic() < deadline, "neither finished nor stalled"
            time.sleep(0.01)
        if not worker.is_alive():
            disk.clear_faults(rule)
            break  # the switch finished before the k-th operation: every step was cut once
        wait_for_stall(disk)
        disk.cut()  # the power goes while the k-th operation waits
        worker.join(10)
        current = bootable(root)
        seen.add((root.load().phase.value, current))
        disk.clear_faults(rule)
        step += 1
        assert step < 60, "the switch never finished"
    state = root.load()
    assert (state.phase, state.last, state.good) == (Phase.IDLE, Outcome.SWITCHED, NEW)
    assert step >= 20, f"only {step} durable operations were cut"
    assert ("pending", OLD) in seen, seen
    assert ("trial", NEW) in seen, seen
    assert ("idle", NEW) in seen, seen


def _run(switcher: Switcher) -> None:
    with contextlib.suppress(OSError):  # the card lost power under the switcher
        switcher.run(Event(EventKind.REQUEST, version=NEW))
