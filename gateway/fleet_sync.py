"""The box's fleet configuration loop: check the signed repository, apply, remember.

Every `poll_s` (and at start) a paired box with its uplink configured asks the back office's TUF
repository, over the pinned mutual-TLS link, for a newer document for itself or its groups
(config/fleet_client.py, run off the event loop because ngclient is synchronous). A document
that verifies is applied (gateway/fleet_apply.py); once healthy, the serial is recorded in
`<state>/fleet-state.json` (common/durable.py: tmp, fsync, rename, fsync dir), so a correctly
signed older serial is refused for good. A document refused by the schema or rolled back is
remembered by serial, so the box does not download and try it again every round; a newer serial
is tried.

Faults by kind: a failing link (DownloadError, TransportError) waits for the next round;
a hostile or tampered repository (RepositoryError) is logged, audited and alarmed, and the box
keeps its configuration. Nothing here can stop recording.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuf.api.exceptions import DownloadError, RepositoryError

from common.alarms import Alarms
from common.durable import atomic_write_text
from config.fleet_client import FleetConfigClient
from config.fleet_fetch import FleetLink, LinkFetch
from config.fleet_targets import AppliedState, FleetDocument
from gateway.fleet_apply import ApplyOutcome, FleetApplier
from protocol.fleet_report import signed_message
from storage.audit_io import AuditLog
from transport.connect import BackOffice
from transport.errors import TransportError

log = logging.getLogger(__name__)

STATE_FILE = "fleet-state.json"
REPORT_PATH = "/fleet/report"


def _no_link(url_path: str, _max_bytes: int) -> bytes:
    raise DownloadError(f"a pushed bundle is verified without a link ({url_path} not in it)")


@dataclass
class FleetSyncStatus:
    """What the status page shows."""

    applied_serial: int = 0
    reported_serial: int = 0
    last_check: str = "never"
    last_outcome: str | None = None


class FleetSync:
    def __init__(
        self,
        *,
        state_dir: Path,
        metadata_dir: Path,
        box_id: str,
        groups: tuple[str, ...],
        back_office: BackOffice | None,
        applier: FleetApplier,
        audit: AuditLog,
        alarms: Alarms,
        sign: Callable[[bytes], bytes],
        device_public_pem: bytes,
        poll_s: float = 300.0,
    ) -> None:
        self.state_path = state_dir / STATE_FILE
        self.metadata_dir = metadata_dir
        self.box_id = box_id
        self.groups = groups
        self.back_office = back_office
        self.applier = applier
        self.audit = audit
        self.alarms = alarms
        self.poll_s = poll_s
        self._sign = sign
        self._device_public_pem = device_public_pem
        self._unreported: FleetDocument | None = None  # applied, not yet told to the back office
        self.status = FleetSyncStatus(applied_serial=self._load_state().config_serial)
        self._refused_serials: set[int] = set()
        # The last rejection written to the audit log: a repository under attack is polled every
        # few minutes for as long as the attack lasts, and the log must not grow by one entry
        # per poll for months. A new reason, or the same one after a good check, is audited.
        self._last_rejection: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Poll as a task of its own (tests); `mvb run` supervises `run()` instead."""
        self._task = asyncio.create_task(self.run(), name="fleet-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        """Check for signed configuration every `poll_s`, forever."""
        while True:
            try:
                await self.check_once()
            except Exception:
                log.exception("fleet configuration round failed")  # next round tries again
            await asyncio.sleep(self.poll_s)

    async def push(self, bundle: bytes) -> ApplyOutcome | str:
        """A signed bundle from the web UI or a USB stick, for a box without a link: the same
        verification (trust root, thresholds, serial, this box) and the same apply. Returns the
        outcome, or why the bundle was refused before applying."""
        client = FleetConfigClient(
            self.metadata_dir, self.box_id, self.groups, _no_link, self._load_state()
        )
        try:
            document = await asyncio.to_thread(client.verify_bundle, bundle)
        except RepositoryError as exc:
            reason = f"{type(exc).__name__}: {exc}"[:300]
            await asyncio.to_thread(self.audit.append, "config.rejected", reason=reason)
            return f"refused: {reason}"
        if document is None:
            return "refused: this configuration is already applied"
        outcome = await self.applier.apply(document)
        await self._remember(client, document, outcome)
        return outcome

    async def check_once(self) -> ApplyOutcome | None:
        """One round: returns the outcome of applying a new document, or None."""
        office = self.back_office
        if office is None:
            return None  # no uplink: configuration arrives by push only
        link = await FleetLink.connect(office.host, office.https_port, office.tls)
        try:
            await self._report(link)
            client = FleetConfigClient(
                self.metadata_dir,
                self.box_id,
                self.groups,
                LinkFetch(link, asyncio.get_running_loop()),
                self._load_state(),
            )
            document = await self._fetch(client)
            if document is None or document.config_serial in self._refused_serials:
                return None
            outcome = await self.applier.apply(document)
            await self._remember(client, document, outcome)
            await self._report(link)
            return outcome
        finally:
            await link.aclose()

    async def _report(self, link: FleetLink) -> None:
        """Tell the back office what was applied, signed with the device key (once accepted,
        forgotten; a failed report is sent again next round)."""
        document = self._unreported
        if document is None:
            return
        at_ms = int(time.time() * 1000)
        message = signed_message(
            self.box_id, document.config_serial, document.sha256, document.target_path, at_ms
        )
        report = {
            "config_serial": document.config_serial,
            "sha256": document.sha256,
            "target_path": document.target_path,
            "at_ms": at_ms,
            "device_public_key": self._device_public_pem.decode(),
            "signature": base64.b64encode(self._sign(message)).decode(),
        }
        try:
            status = await link.post_json(REPORT_PATH, json.dumps(report).encode())
        except (DownloadError, TransportError) as exc:
            log.info("configuration report not delivered: %s", type(exc).__name__)
            return
        if status == 204:
            self._unreported = None
            self.status.reported_serial = document.config_serial

    async def _fetch(self, client: FleetConfigClient) -> FleetDocument | None:
        try:
            document = await asyncio.to_thread(client.check)
        except (DownloadError, TransportError) as exc:
            self.status.last_check = f"back office unreachable ({type(exc).__name__})"
            return None
        except RepositoryError as exc:
            reason = f"{type(exc).__name__}: {exc}"[:300]
            self.status.last_check = f"refused: {reason}"
            # Sticky: a refused configuration stays in view across restarts until a good check.
            self.alarms.raise_(
                "fleet_config", f"fleet configuration refused: {reason}", sticky=True
            )
            if reason != self._last_rejection:
                self._last_rejection = reason
                await asyncio.to_thread(self.audit.append, "config.rejected", reason=reason)
            return None
        self.status.last_check = "ok"
        self._last_rejection = None
        self.alarms.clear("fleet_config")
        return document

    async def _remember(
        self, client: FleetConfigClient, document: FleetDocument, outcome: ApplyOutcome
    ) -> None:
        self.status.last_outcome = "applied" if outcome.applied else outcome.reason
        if not outcome.applied:
            self._refused_serials.add(document.config_serial)
            return
        state = client.record_applied(document)
        await asyncio.to_thread(self._save_state, state)
        self.status.applied_serial = state.config_serial
        self._unreported = document

    def _load_state(self) -> AppliedState:
        try:
            return AppliedState.from_json(self.state_path.read_text())
        except FileNotFoundError:
            return AppliedState()

    def _save_state(self, state: AppliedState) -> None:
        """tmp, fsync, rename, fsync dir: the highest serial survives a power cut."""
        atomic_write_text(self.state_path, state.to_json(), mode=0o600)
