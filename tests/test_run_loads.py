"""`mvb run` loads what its configuration uses, and what it defers works when used (issue 18
item 2): a paired box with the officer's page on, as real processes (the real back office
`mvb-admin serve`, pinned mutual TLS), loads python-tuf's client and urllib3 for its first fleet
check and applies the document, and serves the page. tests/test_run.py holds the other side: a
box that is not paired, with the page off, has loaded neither.

What a running box has imported is read from outside, from CPython's import-time lines on its
stderr (`PYTHONPROFILEIMPORTTIME`, tests/test_run.py `logging_imports`).

Left out: a USB or web push as the first verification (the same code path as a check:
config/fleet_client.py `verify_files`; tests/gateway/test_fleet_offline_live.py pushes).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from pathlib import Path

from demo.synthetic import generate_clip
from tests.cameras import free_port
from tests.gateway.fleet_rig import (
    MVB,
    api_status,
    box_config,
    mvb_pair,
    running_box_config,
    start_back_office,
    wait_for,
    write_recipient_pub,
)
from tests.test_run import IMPORT_LOG, imported_modules, logging_imports
from tests.tls_helpers import TestPki


def test_a_paired_box_loads_tuf_for_its_first_check_and_the_page_when_it_is_on(
    pki: TestPki, tmp_path: Path
) -> None:
    recipient_pub = write_recipient_pub(tmp_path)
    clip = generate_clip(tmp_path / "clip.ts", seconds=2, keyframe_interval_frames=25)
    root = tmp_path / "box"
    with start_back_office(pki, tmp_path / "office") as office:
        paired = mvb_pair(box_config(root, recipient_pub), office.code())
        assert paired.returncode == 0, paired.stderr
        config = running_box_config(root, recipient_pub, clip, config_poll_s=3600, prerecord_s=5)
        page_off = "\n[web]\nenabled = false\n"
        assert page_off in config.read_text()
        https_port = free_port()
        page_on = f"\n[web]\nenabled = true\nhttps_port = {https_port}\nhttp_port = 0\n"
        config.write_text(config.read_text().replace(page_off, page_on))
        log = tmp_path / IMPORT_LOG
        with log.open("w") as stderr:
            box = subprocess.Popen(
                [str(MVB), "--config", str(config), "run"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=logging_imports(),
            )
        try:
            wait_for(lambda: _applied_serial(config, box, log) == 1, "the box's first fleet check")
            imported = imported_modules(log)
            assert {"tuf.ngclient", "tuf.api.metadata", "urllib3"} <= imported
            assert "gateway.web.server" in imported
            web = api_status(config)["web"]
            assert web["state"] == "listening"
            assert web["url"].endswith(f":{https_port}/")
            box.send_signal(signal.SIGTERM)
            assert box.wait(30) == 0
        finally:
            if box.poll() is None:
                box.kill()
                box.wait(10)


def _applied_serial(config: Path, box: subprocess.Popen[bytes], log: Path) -> int | None:
    """The box's applied fleet serial, from its local API (None until the API answers)."""
    assert box.poll() is None, f"the box stopped: {_not_imports(log)[-2000:]}"
    with contextlib.suppress(OSError):  # the local API is not up yet
        serial: int = api_status(config)["fleet"]["applied_serial"]
        return serial
    return None


def _not_imports(log: Path) -> str:
    """The box's stderr without CPython's import-time lines: its own messages."""
    lines = log.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if not line.startswith("import time:"))
