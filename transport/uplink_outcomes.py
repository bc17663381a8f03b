"""What the uplink does with an upload's outcome: attested, completed unattested, a blocked
link or file, withdrawn credentials; and the requests and audit entries those need. A mixin of
`UplinkService` (transport/uplink.py), kept apart so that the service's file stays readable in
one sitting.

Invariants:
- an attested file is recorded (its SHA-256 must equal ours, else IntegrityError), audited, then
  deleted by retention and forgotten by the ledger, in that order (S3);
- a file completed without attestation is counted once and asked about again later
  (`_rechecks`), never deleted on the strength of its upload alone;
- a pin mismatch blocks the link (alarmed and audited once) and drops its connections; a
  withdrawal stops every other upload and every connection (they carry the refused certificate).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from storage.catalog import AttestationMismatch
from storage.models import FileRecord, FileState
from storage.store import EvidenceStore
from transport.audit_shipping_io import AuditShipper
from transport.errors import CredentialsWithdrawn, IntegrityError, PinMismatch
from transport.http import HttpRequest, HttpResponse
from transport.ledger import FileUpload, UplinkLedger
from transport.refusals import Rechecks, Wait, reason_of
from transport.tus_messages import ServerCapabilities, UploadOutcome
from transport.uplink_files import FileDesk
from transport.uplink_links import Connector, UplinkLink
from transport.uplink_view import UNATTESTED_NOTE
from transport.withdrawal import CredentialsGuard

log = logging.getLogger("transport.uplink")  # the service's log name, kept when this moved

PROBE_TIMEOUT_S = 20.0


class UplinkOutcomes:
    """Needs of the service it is mixed into (set by UplinkService.__init__)."""

    store: EvidenceStore
    ledger: UplinkLedger
    links: dict[str, UplinkLink]
    guard: CredentialsGuard
    desk: FileDesk
    audit_shipper: AuditShipper
    uploaded_files: int
    uploaded_bytes: int
    _connect: Connector
    _clock_s: Callable[[], float]
    _waits: dict[str, Wait]
    _rechecks: Rechecks
    _pause: Wait | None
    _queue_dirty: bool
    _capabilities: ServerCapabilities | None

    # -- outcomes ---------------------------------------------------------------------------------

    async def _mark_uploading(self, record: FileRecord) -> None:
        if record.state is FileState.SEALED:
            await asyncio.to_thread(
                self.store.catalog.transition, record.file_id, FileState.UPLOADING
            )

    async def _requeue(self, file_id: str) -> None:
        record = await asyncio.to_thread(self.store.catalog.get, file_id)
        if record is not None and record.state is FileState.UPLOADING:
            await asyncio.to_thread(self.store.catalog.transition, file_id, FileState.SEALED)

    async def _conclude(
        self, record: FileRecord, link: UplinkLink, kind: str, outcome: UploadOutcome
    ) -> None:
        file_id = record.file_id
        self._pause = None  # the back office answered: whatever paused it is over
        self._waits.pop(file_id, None)
        first = self._rechecks.get(file_id) is None
        if first:
            self.uploaded_files += 1
            self.uploaded_bytes += record.size_bytes
        if outcome.attested_sha256_hex is None:
            done = FileUpload(upload_url=outcome.upload_url, completed_unattested=True)
            await asyncio.to_thread(self.ledger.put_file, file_id, done)
            self._rechecks.unattested(file_id, self._clock_s(), UNATTESTED_NOTE)
            await self._requeue(file_id)
            if first:
                link_name = link.config.name
                event = "uplink.uploaded_unattested"
                await self._audit(event, file_id=file_id, link=link_name, transport=kind)
            return
        self._rechecks.forget(file_id)
        try:
            await asyncio.to_thread(
                self.store.record_attestation, file_id, outcome.attested_sha256_hex
            )
        except AttestationMismatch as exc:
            raise IntegrityError(str(exc)) from exc
        await self._audit("uplink.uploaded", file_id=file_id, link=link.config.name, transport=kind)
        await asyncio.to_thread(self.store.apply_retention)  # S3: the attested copy goes now
        await asyncio.to_thread(self.ledger.forget_file, file_id)
        self.audit_shipper.hurry()  # the delivery and the deletion reach the back office soon

    def _adopt(self, capabilities: ServerCapabilities) -> None:
        """New capabilities from an OPTIONS. A back office that attests where the last one did
        not (or nothing was known) is asked at once about every file completed unattested."""
        if self._rechecks.server_attests(capabilities.attests):
            log.info("uplink: the back office attests; asking about unattested files now")
            self._queue_dirty = True
        self._capabilities = capabilities

    async def _block_link(self, link: UplinkLink, exc: PinMismatch) -> None:
        if link.pin_blocked is None:
            link.pin_blocked = str(exc)
            self.store.alarms.raise_(
                f"uplink_pin_{link.config.name}",
                f"link {link.config.name}: back office certificate not pinned; uploads stopped",
            )
            await self._audit("uplink.pin_mismatch", link=link.config.name, detail=str(exc))
        await link.drop_transports()

    async def _block_file(self, file_id: str, link: UplinkLink, exc: Exception) -> None:
        """Integrity: the file waits for a person (transport/uplink_files.py)."""
        finished = isinstance(exc, IntegrityError)  # the server holds every byte: evidence
        await self.desk.block(file_id, reason_of(exc), upload_finished=finished)
        self._waits.pop(file_id, None)
        self._rechecks.forget(file_id)
        await self._audit(
            "uplink.upload_blocked", file_id=file_id, link=link.config.name, reason=fault_kind(exc)
        )

    async def _withdraw(self, exc: CredentialsWithdrawn) -> None:
        """401/403: stop, and drop every connection (they carry the refused certificate)."""
        await self.guard.withdraw(exc)
        for link in self.links.values():
            for task in list(link.uploads.values()):
                if task is not asyncio.current_task():
                    task.cancel()  # the others would only be refused too
            await link.drop_transports()
        if await self.guard.renewed():  # a re-pair may already have written new ones
            await self._renew_connections()

    async def _renew_connections(self) -> None:
        """New credentials are loaded: forget what the old connections learnt."""
        for link in self.links.values():
            await link.drop_transports()
        self._capabilities = None
        self._pause = None
        self._queue_dirty = True

    async def _ask(self, request: HttpRequest, body: bytes | None) -> HttpResponse | None:
        """A request on the first usable link (None: none is usable)."""
        now_s = self._clock_s()
        usable = [link for link in self.links.values() if link.usable(now_s)]
        if not usable:
            return None
        return await usable[0].ask(request, body, self._connect, PROBE_TIMEOUT_S)

    async def _audit(self, event: str, **fields: Any) -> None:
        await asyncio.to_thread(self.store.audit.append, event, **fields)


def fault_kind(exc: BaseException) -> str:
    return type(exc).__name__
