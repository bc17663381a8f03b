"""The box's fleet configuration loop: check the signed repository, apply, remember, report.

Every `poll_s` (and at start) a paired box with its uplink configured asks the back office's TUF
repository, over the pinned mutual-TLS link, for a newer document for itself or its groups
(config/fleet_client.py, run off the event loop because ngclient is synchronous). A signed bundle
(USB stick, web upload) takes the same verification without a link (`push`). A document that
verifies is applied (gateway/fleet_apply.py). Then, by outcome:
- applied: the serial is recorded in `<state>/fleet-state.json`, so a correctly signed older
  serial is refused for good;
- refused for good (outside the schema, rolled back because of the document): remembered by
  serial until the service restarts, so the box does not download and try it every round;
- deferred (the box's state, not the document: a camera was already down): kept with its bytes
  in `<state>/fleet-pending.json` and tried again every `retry_s` once the reason is gone
  (`FleetApplier.deferral_reason`), across a restart too; a newer document replaces it.
Every outcome becomes a report signed with the device key (protocol/fleet_report.py), kept in
`<state>/fleet-outbox.json` until the back office accepts it: reports made while every link is
down are delivered at the first round with a link, after restarts too (gateway/fleet_memory.py).
Every state file is written with common/durable.py (tmp, fsync, rename, fsync dir).

A re-pair (`mvb pair --re-pair` in another process, or the page's pairing) replaces the pairing
directory and resets the files the sync kept under the old root (`forget_fleet_state`): at its
next round the sync sees the new directory (`follow_pairing`) and takes everything from disk
again (applied serial, outbox, pending document, refusals) and the new back office's address;
with no pairing directory left (an unpair) it polls nothing.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tuf.api.exceptions import DownloadError, RepositoryError

from common.alarms import Alarms
from common.durable import atomic_write_text, durable_unlink
from config.fleet_client import (
    MAX_RELEASE_BUNDLE_BYTES,
    Fetch,
    FleetConfigClient,
    read_bundle,
    serve_from,
)
from config.fleet_fetch import FleetLink, LinkFetch, UnpairedByBackOffice
from config.fleet_schema import release_pin
from config.fleet_targets import AppliedState, FleetDocument
from config.local import ConfigError
from gateway.fleet_apply import ApplyOutcome, FleetApplier
from gateway.fleet_memory import (
    FleetMemoryError,
    Outbox,
    document_from_json,
    document_to_json,
)
from gateway.fleet_refusals import ALREADY_APPLIED, refusal_code
from gateway.release_update import ReleaseUpdater
from protocol.fleet_report import AUDIT_HEAD, one_line, signed_message
from storage.audit_io import AuditLog
from transport.connect import BackOffice
from transport.errors import TransportError

log = logging.getLogger(__name__)

STATE_FILE = "fleet-state.json"
OUTBOX_FILE = "fleet-outbox.json"
PENDING_FILE = "fleet-pending.json"
REPORT_PATH = "/fleet/report"
RETRY_S = 10.0
_T = TypeVar("_T")


def _no_link(url_path: str, _max_bytes: int) -> bytes:
    raise DownloadError(f"a pushed bundle is verified without a link ({url_path} not in it)")


@dataclass
class FleetSyncStatus:
    """What the status page shows. `reported_serial`: the highest applied serial the back
    office confirmed; `pending_serial`: a deferred document waiting to be tried again;
    `reports_waiting`: reports not yet delivered."""

    applied_serial: int = 0
    reported_serial: int = 0
    last_check: str = "never"
    last_outcome: str | None = None
    last_refusal_code: str | None = None  # the last refusal as the page's code (fleet_refusals)
    pending_serial: int | None = None
    reports_waiting: int = 0
    release: str | None = None  # the pinned release's last outcome: "<version> <outcome> <code>"


@dataclass(frozen=True, slots=True)
class BundleRejected:
    """A pushed bundle refused before it was applied: the English and the page's code."""

    reason: str
    code: str


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
        retry_s: float = RETRY_S,
        pairing_dir: Path | None = None,
        resolve_office: Callable[[], Awaitable[BackOffice | None]] | None = None,
        on_unpaired: Callable[[], Awaitable[None]] | None = None,
        releases: ReleaseUpdater | None = None,
    ) -> None:
        """`pairing_dir`: the box's pairing directory, watched for a re-pair or an unpair;
        `resolve_office`: the back office as the pairing files now say (after a re-pair);
        `on_unpaired`: what to do when the back office says the box was unpaired
        (gateway/unpairing.py); `releases`: follows the release the applied document pins
        (gateway/release_update.py), after each round and each pushed bundle."""
        self.state_path = state_dir / STATE_FILE
        self.outbox_path = state_dir / OUTBOX_FILE
        self.pending_path = state_dir / PENDING_FILE
        self.metadata_dir = metadata_dir
        self.box_id = box_id
        self.groups = groups
        self.back_office = back_office
        self.applier = applier
        self.audit = audit
        self.alarms = alarms
        self.poll_s = poll_s
        self.retry_s = retry_s
        self._sign = sign
        self._device_public_pem = device_public_pem
        self.status = FleetSyncStatus(applied_serial=self._load_state().config_serial)
        self._outbox = self._load_outbox()
        self._pending = self._load_pending()
        self._show_memory()
        # (serial, sha256): a serial is unique only among documents of one targets key.
        self._refused: set[tuple[int, str]] = set()
        # The last rejection written to the audit log: a repository under attack is polled every
        # few minutes for as long as the attack lasts, and the log must not grow by one entry
        # per poll for months. A new reason, or the same one after a good check, is audited.
        self._last_rejection: str | None = None
        self._last_deferral_report: tuple[int, str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pairing_dir = pairing_dir
        self._resolve_office = resolve_office
        self._on_unpaired = on_unpaired
        self._pairing_mark = pairing_mark(pairing_dir)
        # Set by `check_soon` (the back office's check-now instruction): ends the wait in `run`.
        self._check_soon = asyncio.Event()
        self.releases = releases

    async def start(self) -> None:
        """Poll as a task of its own (tests); `mvb run` supervises `run()` instead."""
        self._task = asyncio.create_task(self.run(), name="fleet-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        """Check for signed configuration every `poll_s` (at once when `check_soon` was
        called), forever; between checks, try a deferred document every `retry_s`."""
        while True:
            self._check_soon.clear()  # this round is the check asked for so far
            try:
                await self.check_once()
            except Exception:
                log.exception("fleet configuration round failed")  # next round tries again
            waited_s = 0.0
            while waited_s < self.poll_s and not self._check_soon.is_set():
                step_s = min(self.retry_s, self.poll_s - waited_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._check_soon.wait(), step_s)
                waited_s += step_s
                try:
                    await self.retry_pending()
                except Exception:
                    log.exception("retrying a deferred fleet document failed")

    def check_soon(self) -> None:
        """Check for signed configuration now rather than at the end of `poll_s` (the back
        office asked: `Mvb-Fleet-Check`, gateway/health_io.py). Asked during a round, one more
        round follows it (that round may have fetched the timestamp before the admin asked);
        asked again before the round starts, still one round."""
        self._check_soon.set()

    async def push(self, bundle: bytes) -> ApplyOutcome | BundleRejected:
        """A signed bundle from the web UI or a USB stick, for a box without a link: the same
        verification (trust root, thresholds, serial, this box) and the same apply. Returns the
        outcome, or why the bundle was refused before applying."""
        client = FleetConfigClient(
            self.metadata_dir, self.box_id, self.groups, _no_link, self._load_state()
        )
        try:
            files = await asyncio.to_thread(read_bundle, bundle, max_bytes=MAX_RELEASE_BUNDLE_BYTES)
            document = await asyncio.to_thread(client.verify_files, files)
        except RepositoryError as exc:
            reason = f"{type(exc).__name__}: {exc}"[:300]
            await asyncio.to_thread(self.audit.append, "config.rejected", reason=reason)
            return BundleRejected(f"refused: {reason}", refusal_code(exc))
        finally:
            await self._note_repair(client)
        if document is None:
            await self._follow_release(serve_from(files))  # the release may be what is new
            already = "refused: this configuration is already applied"
            return BundleRejected(already, ALREADY_APPLIED)
        outcome = await self._apply(document)
        await self._follow_release(serve_from(files))
        return outcome

    async def _follow_release(self, fetch: Fetch, *, key_fetch: Fetch | None = None) -> None:
        """The release the applied document pins (docs/releases.md 7): fetched from `fetch`
        (the link, or a pushed bundle's files), opened, handed to the switch; a refusal is
        shown as the configuration's are (status, health, the audit log, an alarm)."""
        if self.releases is None:
            return
        current = await asyncio.to_thread(self.applier.slots.current)
        try:
            pinned = None if current is None else release_pin(current[1], "the applied document")
        except ConfigError as exc:  # applied before [release] was known: nothing pinned
            log.warning("fleet: the applied document's [release] is unreadable: %s", exc)
            pinned = None
        result = await self.releases.follow(pinned, fetch, key_fetch=key_fetch)
        if result is None:
            self.status.release = None
            return
        self.status.release = " ".join(filter(None, (result.version, result.outcome, result.code)))
        if result.outcome == "refused":
            self.status.last_outcome = f"release {result.version} refused: {result.code}"
            self.status.last_refusal_code = result.code

    async def follow_pairing(self) -> bool:
        """If the pairing directory changed since the last look (a re-pair, an unpair), take
        the fleet state from disk again and the back office from the new pairing (None when
        unpaired). True when it changed."""
        if self._pairing_dir is None:
            return False
        mark = await asyncio.to_thread(pairing_mark, self._pairing_dir)
        if mark == self._pairing_mark:
            return False
        self._pairing_mark = mark
        self.alarms.clear("fleet_metadata")  # a new pairing installed a new trust root
        self._refused.clear()
        self._last_rejection = None
        self._last_deferral_report = None
        self.status = FleetSyncStatus(applied_serial=self._load_state().config_serial)
        self._outbox = self._load_outbox()
        self._pending = self._load_pending()
        self._show_memory()
        if mark is None:
            self.back_office = None
            log.info("fleet: the box is no longer paired; nothing is polled")
        elif self._resolve_office is not None:
            self.back_office = await self._resolve_office()
            log.info("fleet: the box was paired again; fleet state taken from disk")
        return True

    async def check_once(self) -> ApplyOutcome | None:
        """One round: deliver waiting reports, then the outcome of applying a new document,
        or None."""
        await self.follow_pairing()
        office = self.back_office
        if office is None:
            return None  # no uplink: configuration arrives by push only
        link = await FleetLink.connect(office.host, office.https_port, office.tls)
        try:
            await self._deliver(link)
            client = FleetConfigClient(
                self.metadata_dir,
                self.box_id,
                self.groups,
                LinkFetch(link, asyncio.get_running_loop()),
                self._load_state(),
            )
            try:
                document = await self._fetch(client)
            finally:
                await self._note_repair(client)
            outcome = None
            if (
                document is not None
                and (document.config_serial, document.sha256) not in self._refused
            ):
                outcome = await self._apply(document)
            fetch = LinkFetch(link, asyncio.get_running_loop())
            if self.releases is not None and self.status.last_check == "ok":
                # The key at the first round after pairing (for a stick later), and the release
                # only from a repository that just verified over a working link.
                await self.releases.ensure_key(fetch)
                await self._follow_release(fetch, key_fetch=fetch)
            await self._deliver(link)
            return outcome
        finally:
            await link.aclose()

    async def retry_pending(self) -> ApplyOutcome | None:
        """Try the deferred document again once nothing defers it any more; None when there
        is none, or its reason is still there."""
        document = self._pending
        if document is None:
            return None
        if await self.applier.deferral_reason() is not None:
            return None
        return await self._apply(document)

    async def _apply(self, document: FleetDocument) -> ApplyOutcome:
        outcome = await self.applier.apply(document)
        await self._remember(document, outcome)
        return outcome

    async def _note_repair(self, client: FleetConfigClient) -> None:
        """The stored metadata was unusable (torn by a power cut, damaged) and the check started
        again from the durable trust root (config/fleet_store.py): a sticky alarm for the fleet
        admin (the box lost metadata it had verified, and it may happen again on a failing
        card), cleared by the next pairing; audited at each repair."""
        if client.repaired is None:
            return
        self.alarms.raise_(
            "fleet_metadata", f"fleet metadata repaired: {client.repaired}", sticky=True
        )
        await asyncio.to_thread(
            self.audit.append, "config.metadata_repaired", reason=client.repaired[:300]
        )

    async def _fetch(self, client: FleetConfigClient) -> FleetDocument | None:
        try:
            document = await asyncio.to_thread(client.check)
        except UnpairedByBackOffice:
            if self._on_unpaired is not None:
                await self._on_unpaired()
                await self.follow_pairing()  # nothing is polled from now on
            self.status.last_check = "the back office unpaired this box"
            return None
        except (DownloadError, TransportError) as exc:
            self.status.last_check = f"back office unreachable ({type(exc).__name__})"
            return None
        except RepositoryError as exc:
            reason = f"{type(exc).__name__}: {exc}"[:300]
            self.status.last_check = f"refused: {reason}"
            self.status.last_refusal_code = refusal_code(exc)
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

    async def _remember(self, document: FleetDocument, outcome: ApplyOutcome) -> None:
        self.status.last_outcome = "applied" if outcome.applied else outcome.reason
        if not outcome.applied:
            self.status.last_refusal_code = outcome.reason_code
        serial = document.config_serial
        if outcome.applied:
            before = self._load_state()
            state = before.after_applying(document)
            if before.in_epoch(document.targets_keys) is not before:
                # The root rotated the targets key: serials start over (fleet_targets.py).
                await asyncio.to_thread(
                    self.audit.append,
                    "config.serials_restarted",
                    from_serial=before.config_serial,
                    to_serial=state.config_serial,
                    reason="the fleet's targets key changed",
                )
            await asyncio.to_thread(self._save_state, state)
            self.status.applied_serial = state.config_serial
            await self._queue_report(document, "applied", "")
        elif outcome.transient:
            reason = outcome.reason or "deferred"
            if self._last_deferral_report != (serial, reason):  # once, not at every retry
                self._last_deferral_report = (serial, reason)
                await self._queue_report(document, "deferred", reason)
            pending = self._pending
            if pending is None or pending.config_serial < serial:  # a serial is never reused
                await self._keep_pending(document)  # so not rewritten at every round
            return
        else:
            self._refused.add((serial, document.sha256))
            await self._queue_report(document, "refused", outcome.reason or "refused")
        pending = self._pending
        if pending is not None and pending.config_serial <= max(serial, self.status.applied_serial):
            await self._keep_pending(None)  # applied, refused, or overtaken by a newer one

    # -- reports -----------------------------------------------------------------------------

    async def _queue_report(self, document: FleetDocument, outcome: str, reason: str) -> None:
        """Make the signed report now (its `at_ms` is the outcome's) and keep it until sent."""
        at_ms = int(time.time() * 1000)
        reason = one_line(reason)
        message = signed_message(
            self.box_id,
            document.config_serial,
            document.sha256,
            document.target_path,
            at_ms,
            outcome,
            reason,
        )
        report = {
            "config_serial": document.config_serial,
            "sha256": document.sha256,
            "target_path": document.target_path,
            "at_ms": at_ms,
            "outcome": outcome,
            "reason": reason,
            "device_public_key": self._device_public_pem.decode(),
            "signature": base64.b64encode(self._sign(message)).decode(),
            # The audit log's signed head as the report is made (docs/audit-custody.md 4).
            AUDIT_HEAD: (await asyncio.to_thread(self.audit.signed_head)).render(),
        }
        await self._save_outbox(self._outbox.with_report(report))

    async def _deliver(self, link: FleetLink) -> None:
        """Send the waiting reports, oldest first; stop at the first that does not get through
        (the rest waits for the next round). One the back office refuses for good (400) is
        dropped, so it cannot hold back the others."""
        for report in list(self._outbox.waiting):
            try:
                status = await link.post_json(REPORT_PATH, json.dumps(report).encode())
            except (DownloadError, TransportError) as exc:
                log.info("configuration report not delivered: %s", type(exc).__name__)
                return
            if status == 204:
                await self._save_outbox(self._outbox.delivered(report))
            elif status == 400:
                log.warning(
                    "the back office refused the report of serial %s", report["config_serial"]
                )
                await self._save_outbox(self._outbox.dropped(report))
            else:
                log.info("configuration report not delivered: HTTP %d", status)
                return

    # -- the state directory -----------------------------------------------------------------

    def _show_memory(self) -> None:
        self.status.reported_serial = self._outbox.reported_serial
        self.status.reports_waiting = len(self._outbox.waiting)
        self.status.pending_serial = None if self._pending is None else self._pending.config_serial

    async def _save_outbox(self, outbox: Outbox) -> None:
        await asyncio.to_thread(atomic_write_text, self.outbox_path, outbox.to_json(), mode=0o600)
        self._outbox = outbox
        self._show_memory()

    async def _keep_pending(self, document: FleetDocument | None) -> None:
        if document is None:
            await asyncio.to_thread(durable_unlink, self.pending_path)
        else:
            text = document_to_json(document)
            await asyncio.to_thread(atomic_write_text, self.pending_path, text, mode=0o600)
        self._pending = document
        self._show_memory()

    def _load_outbox(self) -> Outbox:
        return _load(self.outbox_path, Outbox.from_json, Outbox())

    def _load_pending(self) -> FleetDocument | None:
        pending: FleetDocument | None = _load(self.pending_path, document_from_json, None)
        if pending is None:
            return None
        applied = self._load_state().in_epoch(pending.targets_keys)
        if pending.config_serial <= applied.config_serial:
            return None  # applied or overtaken since
        return pending

    def _load_state(self) -> AppliedState:
        try:
            return AppliedState.from_json(self.state_path.read_text())
        except FileNotFoundError:
            return AppliedState()

    def _save_state(self, state: AppliedState) -> None:
        """tmp, fsync, rename, fsync dir: the highest serial survives a power cut."""
        atomic_write_text(self.state_path, state.to_json(), mode=0o600)


def pairing_mark(directory: Path | None) -> tuple[int, int] | None:
    """What identifies one pairing: the pairing directory's device and inode (a pairing or
    re-pair replaces the directory as a whole); None when there is none."""
    if directory is None:
        return None
    try:
        info = directory.stat()
    except FileNotFoundError:
        return None
    return (info.st_dev, info.st_ino)


def forget_fleet_state(state_dir: Path) -> None:
    """A re-pair (a new trust root, docs/fleet-config.md 5.1 and 8): the applied serial, a
    deferred document verified under the old root and the reports meant for the old back
    office go with the old pairing."""
    for name in (STATE_FILE, PENDING_FILE, OUTBOX_FILE):
        durable_unlink(state_dir / name)


def _load(path: Path, parse: Callable[[str], _T], empty: _T) -> _T:
    """A small state file, or `empty` when there is none. One this code did not write is
    logged and ignored (never deleted: someone may want to look at it); the box goes on."""
    try:
        return parse(path.read_text())
    except FileNotFoundError:
        return empty
    except (OSError, FleetMemoryError) as exc:
        log.error("%s is unreadable and ignored: %s", path, exc)
        return empty
