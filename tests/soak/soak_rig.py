"""The whole-box soak (issue 7): real processes, scripted faults, and the audit-log oracle.

    mvb run (4 synthetic cameras, gpsd)  --wifi 127.0.0.2--+
                                                           +--> TcpFaultProxy --> mvb-admin serve
                                         --lte  127.0.0.3--+    (this process)    (same port and
                                                                                   store always)

- the box is the real `mvb run`, a subprocess, with four synthetic cameras and GPS replayed by a
  real gpsd (gpsfake, looping the shipped NMEA track);
- its two links differ by source address; one fault proxy in this process gives each address a
  plan of its own (labnet/proxy.py `plan_for_peer`): WiFi is refused, blackholed or reset while
  LTE carries on; LTE has a small monthly cap with a P0 reserve;
- the back office is the real `mvb-admin serve`, a subprocess, stopped (SIGTERM, and SIGKILL)
  and started again on the same port and store;
- the box is SIGKILLed at the cycle's kill phase (recording, upload, idle), then started again;
  with `SoakSettings.power` (issue 14) its card and state directory live on one labdisk mount
  (labdisk/), and once the killed box has exited the disk is cut too (strict POSIX or ext4-like,
  torn last write): everything not made durable is gone, as after a real power loss, and the
  oracle judges what the box claimed durable (a SIGKILL alone keeps the page cache);
- its wall clock (only its own: libfaketime reads the offset from a file at least every second,
  its monotonic clocks stay true) is stepped by the script now and then, 40 days forward and
  back: retention must delete nothing unattested, and the pinned link must keep working.

The script of cycles is tests/soak/script.py (pure, seeded); the oracle tests/soak/oracle.py.
The rig itself: its settings and counts (soak_settings.py), the processes (soak_processes.py),
the world they run in (soak_world.py), one cycle (soak_cycle.py); this module drains, judges and
runs the whole soak.
Everything waits on observable state (the box's API, its audit log, the proxy's counters) with a
bound; the only sleeps are the script's own (how long to record, when to cut the power).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labdisk import LabDisk
from storage.audit import verify_audit_log
from storage.card import CardLayout
from storage.catalog import Catalog
from storage.devicekey import DevicePublicKey
from storage.envelope import RecipientPrivateKey
from storage.models import FileState
from tests.soak.oracle import AuditFacts, find_problems, read_back_office, totals
from tests.soak.script import CycleScript
from tests.soak.soak_cycle import run_cycle
from tests.soak.soak_settings import (
    CELLULAR_LINKS,
    CLASSES_BY_SOURCE,
    DRAIN_REPORT_S,
    LTE_SOURCE,
    MAX_LOGGED_ERRORS,
    MVB_ADMIN,
    SOAK_BOX_ID,
    WIFI_SOURCE,
    SoakPaths,
    SoakReport,
    SoakSettings,
    SoakStats,
)
from tests.soak.soak_world import World, card_disk, soak_world
from tests.tls_helpers import TestPki

# -- the end: drain, stop, judge -----------------------------------------------------------------


async def drain(world: World, timeout_s: float) -> None:
    """A last life with every link healthy, until the card is empty; then a clean stop."""
    world.heal_wifi()
    world.stats.startup_s.append(await world.box.start(world.api.session))
    began_s = time.monotonic()
    progress = _DrainProgress(world.log, began_s)
    try:
        await world.status_until(
            progress.empty, "the card to empty (files left on it or still uploading)", timeout_s
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await _left_on_card(world)}") from None
    world.stats.drain_s = time.monotonic() - began_s
    assert await world.box.terminate() == 0, "mvb run did not stop cleanly on SIGTERM"


async def _left_on_card(world: World) -> str:
    """What a drain that did not finish left: the catalog's records not deleted, and the
    uplink's own account of them (so a failed soak says why, not only that)."""
    catalog = Catalog.open(CardLayout(world.paths.card))
    try:
        left = [r for r in catalog.all() if r.state is not FileState.DELETED]
    finally:
        catalog.close()
    lines = [
        f"  {r.file_id} {r.state.value} class {r.upload_class} held {r.held} "
        f"attested {r.attested_sha256_hex is not None} created {r.created_at_ms}"
        for r in left
    ]
    uploads = json.dumps(await world.api.uploads(), sort_keys=True)
    return "\n".join(["left on the card (catalog):", *lines, f"uplink: {uploads}"])


class _DrainProgress:
    """Says every DRAIN_REPORT_S how far the drain is (a long soak leaves a backlog)."""

    def __init__(self, log: Callable[[str], None], began_s: float) -> None:
        self._log = log
        self._began_s = began_s
        self._next_report_s = began_s + DRAIN_REPORT_S

    def empty(self, status: dict[str, Any]) -> bool:
        uplink = status["uplink"]
        on_card = status["storage"]["files_on_card"]
        now_s = time.monotonic()
        reasons = uplink["waiting_reasons"]
        if now_s >= self._next_report_s:
            self._next_report_s = now_s + DRAIN_REPORT_S
            self._log(
                f"drain {now_s - self._began_s:.0f} s: {on_card} files on the card, "
                f"{len(uplink['uploading'])} uploading, waiting: {reasons}"
            )
        return bool(on_card == 0 and not uplink["uploading"] and not reasons)


def judge(world: World, stats: SoakStats, seed: int) -> SoakReport:
    """The oracle over everything the processes left behind (all of them stopped)."""
    paths = world.paths
    audit_bytes = paths.audit.read_bytes()
    facts = AuditFacts.parse(audit_bytes.splitlines())
    device_key = DevicePublicKey.load(paths.device_pub)
    key = RecipientPrivateKey.load(paths.keys / "recording.key")
    stored = read_back_office(paths.store, key, device_key, paths.decrypted)
    problems = find_problems(facts, stored, CLASSES_BY_SOURCE, CELLULAR_LINKS)
    problems += _card_problems(paths)
    problems += [f"back office kept a corrupt upload: {p.name}" for p in _corrupt(paths)]
    for log in ("box.log", "backoffice.log"):
        problems += _logged_errors(paths.logs / log)
    verify = _audit_verify(paths)
    if not verify.startswith("audit log OK"):
        problems.append(f"mvb-admin audit verify: {verify}")
    problems += _custody_problems(paths, audit_bytes)
    if facts.starts != world.box.starts:
        problems.append(f"{world.box.starts} starts of mvb run, {facts.starts} audited")
    if verify_audit_log(audit_bytes, device_key).entries != facts.events:
        problems.append("the audit log holds entries the verifier did not reach")
    peer_bytes = world.proxy.peer_bytes_client_to_server
    return SoakReport(
        seed=seed,
        stats=stats,
        totals=totals(facts, stored),
        facts=facts,
        problems=problems,
        audit_verify=verify,
        lte_bytes=peer_bytes.get(LTE_SOURCE, 0),
        wifi_bytes=peer_bytes.get(WIFI_SOURCE, 0),
        lte_file_bytes=sum(
            stored[f].size_bytes
            for f, link in facts.uploaded_on.items()
            if link in CELLULAR_LINKS and f in stored
        ),
    )


def _card_problems(paths: SoakPaths) -> list[str]:
    evidence = paths.card / "evidence"
    left = sorted(p for p in evidence.rglob("*") if p.is_file()) if evidence.exists() else []
    return [f"left on the card: {p.relative_to(paths.card)}" for p in left]


# The box logs in logfmt (`level=error ...`), the back office as `<time> ERROR <logger>`;
# a Traceback at the start of a line is a crash Python printed itself.
LOGGED_ERROR = re.compile(r"(^|\d )(ERROR|CRITICAL) |(^|\s)level=(error|critical) |^Traceback ")


def _logged_errors(log: Path) -> list[str]:
    """ERROR lines and tracebacks of a process: the box logs a bug that way and carries on
    (a round, an upload), so a soak that lost nothing may still have hit one."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = sorted({line.strip() for line in lines if LOGGED_ERROR.search(line)})
    return [f"{log.name}: {line}" for line in errors[:MAX_LOGGED_ERRORS]]


def _corrupt(paths: SoakPaths) -> list[Path]:
    corrupt = paths.store / "corrupt"
    return sorted(corrupt.iterdir()) if corrupt.exists() else []


def _custody_problems(paths: SoakPaths, audit_bytes: bytes) -> list[str]:
    """The back office holds the box's audit log (docs/audit-custody.md) through every power
    cut and restart: its check passes with no alarm, what it holds is the start of the box's
    log byte for byte, and the box's log reaches the head it prints."""
    check = _admin("audit", "check", "--store", str(paths.store), "--box-id", SOAK_BOX_ID)
    if check.returncode != 0:
        return [f"mvb-admin audit check: {check.stdout.strip()} {check.stderr.strip()}"]
    held = (paths.store / "audit" / SOAK_BOX_ID / "log.jsonl").read_bytes()
    if not held or not audit_bytes.startswith(held):
        return ["the back office's copy of the audit log is not the start of the box's log"]
    heads = [line for line in check.stdout.splitlines() if line.startswith("last head: ")]
    head = heads[0].removeprefix("last head: ") if heads else "?"
    against = _admin(
        "audit", "verify", str(paths.audit), "--device-key", str(paths.device_pub), "--head", head
    )
    if against.returncode != 0:
        return [f"mvb-admin audit verify --head: {against.stdout.strip()}"]
    return []


def _admin(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(MVB_ADMIN), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def _audit_verify(paths: SoakPaths) -> str:
    """The back office's check of the whole chain, first entry to last, across all restarts."""
    command = [str(MVB_ADMIN), "audit", "verify", str(paths.audit)]
    result = subprocess.run(
        [*command, "--device-key", str(paths.device_pub)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return (result.stdout + result.stderr).strip()


async def run_soak(
    settings: SoakSettings, root: Path, pki: TestPki, log: Callable[[str], None] = print
) -> SoakReport:
    """The whole soak: cycles until `min_kills` power cuts (and `minutes`), drain, judge."""
    log(f"soak seed {settings.seed} (rerun with this seed to replay the script)")
    began_s = time.monotonic()
    paths = SoakPaths(root, on_labdisk=settings.power is not None)
    script = CycleScript(settings.seed)
    with card_disk(paths, settings.power, settings.seed) as disk:
        return await _soak(settings, paths, script, pki, log, disk, began_s)


async def _soak(
    settings: SoakSettings,
    paths: SoakPaths,
    script: CycleScript,
    pki: TestPki,
    log: Callable[[str], None],
    disk: LabDisk | None,
    began_s: float,
) -> SoakReport:
    async with soak_world(paths, pki, log, disk) as world:
        index = 0
        while sum(world.stats.kills.values()) < settings.min_kills or (
            time.monotonic() - began_s < settings.minutes * 60
        ):
            await run_cycle(world, script.cycle(index), settings.seed)
            index += 1
        await drain(world, settings.drain_timeout_s)
        await world.back_office.stop(signal.SIGTERM)
        world.stats.wall_s = time.monotonic() - began_s
        return await asyncio.to_thread(judge, world, world.stats, settings.seed)
