"""The rig of the fleet admin page's tests: the real `mvb-admin serve` with its admin listener, a
fleet with a group document, a box paired by `mvb pair` and a health report that box signed
with its enrolled device key and sent over its pinned mutual-TLS link.

`admin_back_office(pki, root)` starts it all (one per test module: the tests share it, and each
test uses accounts of its own where one could spoil another, e.g. the lockout's). Every process
started here is stopped when the context ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backoffice.admin_accounts import add_account
from backoffice.fleet_repo import init_repository, load_fleet_signers
from config.fleet_fetch import FleetLink
from config.fleet_targets import group_target_path
from config.local import load_config
from gateway.uplink_credentials import resolve_back_office
from protocol.health_report import HEALTH_PATH, Health, QueueClass, signed_message, wire
from storage.devicekey import DeviceKey
from tests.gateway.fleet_rig import (
    BOX,
    MVB_ADMIN,
    STEP_TIMEOUT_S,
    TRUST_DIR,
    mvb_pair,
    read_lines,
    run,
    running_box_config,
    write_recipient_pub,
)
from tests.tls_helpers import TestPki
from transport.connect import BackOffice

GROUP = "h2o"
PASSWORDS = {
    "alice": "alice's admin passphrase",  # logs in
    "carol": "carol's admin passphrase",  # locked out by the lockout test
}
METRICS_TOKEN = "a-metrics-token-of-enough-length-0123456789"  # noqa: S105 (a test's token)
ALARM = "card_full"
VERSION = "9.8.7"
_SERVING = re.compile(
    r"serving (?:pairing at |the fleet admin page at )?https://127\.0\.0\.1:(\d+)/(\S*)"
)


@dataclass(frozen=True)
class AdminOffice:
    pki: TestPki
    root: Path
    uploads: Path
    admin_port: int
    pair_port: int

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.admin_port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client that trusts the test CA (the back office's certificate names 127.0.0.1)."""
        return ssl.create_default_context(cafile=str(self.pki.ca_cert))


def health_with_alarm() -> Health:
    return Health(
        at_ms=1_800_000_000_000,
        software_version=VERSION,
        uptime_s=3600,
        recording=False,
        config_applied_serial=1,
        config_pending_serial=None,
        config_last_outcome="applied",
        config_reports_waiting=0,
        card_total_bytes=64_000_000_000,
        card_free_bytes=16_000_000_000,
        files_on_card=12,
        interrupted_files=0,
        queue={
            "P0": QueueClass(1, 5_000_000),
            "P1": QueueClass(3, 30_000_000),
            "P2": QueueClass(0, 0),
        },
        oldest_waiting_age_s=5400,
        blocked_files=0,
        alarms=(ALARM,),
        gps_status="fix",
        gps_fix_age_s=2,
        clock_offset_ms=-250,
    )


async def send_health(box_config: Path, health: Health) -> int:
    """The paired box's signed report over its pinned link: the status of the answer."""
    local = load_config(box_config)
    office = resolve_back_office(local, local)
    assert isinstance(office, BackOffice), office
    key = DeviceKey.load_or_create(local.state_dir)
    body = wire(health, key.sign(signed_message(BOX, health.body())))
    link = await FleetLink.connect(office.host, office.https_port, office.tls)
    try:
        return await link.post_json(HEALTH_PATH, body)
    finally:
        await link.aclose()


def _fleet(root: Path) -> None:
    """The fleet repository with one group document naming BOX, published."""
    now = datetime.now(UTC)
    fleet = init_repository(root / "repo", root / "fleet-keys", now=now, trust_dir=root / TRUST_DIR)
    signers = load_fleet_signers(root / "fleet-keys")
    fleet.add_config(
        group_target_path(GROUP),
        b"[recording]\nprerecord_s = 30\n",
        boxes=[BOX],
        groups=[GROUP],
        config_serial=1,
        targets_signer=signers.targets,
        now=now,
    )
    fleet.publish(signers.snapshot, signers.timestamp, now=now)


@contextlib.contextmanager
def admin_back_office(pki: TestPki, root: Path) -> Iterator[AdminOffice]:
    _fleet(root)
    for name, password in PASSWORDS.items():
        add_account(root / "admin", name, password)
    token_file = root / "metrics.token"
    token_file.write_text(METRICS_TOKEN + "\n")
    command = [
        str(MVB_ADMIN), "serve", "--dir", str(root / "uploads"),
        "--cert", str(pki.server_cert), "--key", str(pki.server_key),
        "--client-ca", str(pki.ca_cert), "--port", "0", "--reserve-bytes", "0",
        "--pair-port", "0", "--pairing-state", str(root / "pairing-state"),
        "--pki-dir", str(pki.directory), "--fleet-repo", str(root / "repo"),
        "--admin-port", "0", "--admin-state", str(root / "admin"),
        "--metrics-token-file", str(token_file),
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            ports: dict[str, int] = {}
            for line in read_lines(process, 4, timeout_s=STEP_TIMEOUT_S):
                match = _SERVING.match(line.strip())
                assert match is not None, line
                ports[match[2].split("/")[0] or "admin"] = int(match[1])
            office = AdminOffice(pki, root, root / "uploads", ports["admin"], ports["pair"])
            _pair_and_report(office)
            yield office
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(STEP_TIMEOUT_S)


def _pair_and_report(office: AdminOffice) -> None:
    """BOX pairs with a code of `mvb-admin pair-code` and sends one report with an alarm."""
    root = office.root
    code = run(
        MVB_ADMIN, "pair-code", "--state", root / "pairing-state", "--pki", office.pki.directory,
        "--box-id", BOX, "--address", f"127.0.0.1:{office.pair_port}",
    )  # fmt: skip
    assert code.returncode == 0, code.stderr
    recipient_pub = write_recipient_pub(root)
    config = running_box_config(root / "box", recipient_pub, root / "no-clip.ts")
    paired = mvb_pair(config, code.stdout.strip().splitlines()[-1])
    assert paired.returncode == 0, paired.stderr
    assert asyncio.run(send_health(config, health_with_alarm())) == 204
