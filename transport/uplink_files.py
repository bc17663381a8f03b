"""Blocking, releasing and forgetting files' uploads: the uplink's desk for a person's decisions.

A shell part of the uplink (transport/uplink.py), over the catalog, the ledger, the box's alarms
and the audit log.

- `block`: only for integrity (a hostile server, another SHA-256: transport/refusals.py). The
  ledger keeps the reason, a sticky alarm `uplink_file_<first 12 of the id>` survives restarts
  and shows on the officer's page (alert `upload_blocked`), `uplink.upload_blocked` is audited,
  and an unfinished upload on the server is terminated (tus DELETE: it will not be resumed).
- `release`: `mvb uploads retry` and `POST /api/uploads/retry`. A blocked file starts over with
  a new upload (the old one is terminated if it still can be), its alarm is cleared; a waiting
  file is tried at once. Audited `uplink.upload_released` with who asked.
- `sweep`: ledger entries of files no longer waiting on the card (deleted by retention,
  attested before a power cut) are forgotten; an unfinished upload of a deleted file is
  terminated first, and the alarm of a blocked file retention deleted is cleared.
- `report_blocks`: the back office is told of each block once (`POST /uplink/blocked`,
  transport/blocked_report.py); a back office without that route (404, 405) is not asked
  again; one that did not answer is asked at the next sweep.

Invariants: a file is blocked exactly while its ledger entry has a `blocked_reason`, and then
its sticky alarm is raised; release and sweep never touch a file that is uploading.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any, Final

from common.faults import MisuseFault, TransientFault
from storage.models import FileRecord, FileState
from storage.store import EvidenceStore
from transport.blocked_report import BLOCKED_PATH, BlockedReport
from transport.errors import TransportError
from transport.http import BodySlice, HttpRequest, HttpResponse
from transport.ledger import FileUpload, UplinkLedger
from transport.tus_messages import ServerCapabilities
from transport.tus_statuses import check_termination, termination_request
from transport.uplink_view import QUEUED_STATES

log = logging.getLogger(__name__)

ALARM_PREFIX: Final = "uplink_file_"
MAX_REASON_CHARS: Final = 300

Ask = Callable[[HttpRequest, bytes | None], Awaitable[HttpResponse | None]]
"""Send a request (and its body) to the back office over a usable link; None when no link is
usable."""
NO_SUCH_ROUTE: Final = frozenset({404, 405})
Audit = Callable[..., Awaitable[None]]


class UnknownUpload(MisuseFault, LookupError):
    """A release named a file that is not waiting on the card."""


def alarm_code(file_id: str) -> str:
    return ALARM_PREFIX + file_id[:12]


class FileDesk:
    """See the module docstring."""

    def __init__(
        self,
        store: EvidenceStore,
        ledger: UplinkLedger,
        audit: Audit,
        ask: Ask,
        capabilities: Callable[[], ServerCapabilities | None],
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._audit = audit
        self._ask = ask
        self._capabilities = capabilities
        self._wall_ms = wall_ms
        self._blocked_at_ms: dict[str, int] = {}  # when (this run) each file was blocked

    async def terminate(self, file_id: str, upload_url: str, why: str) -> bool | None:
        """DELETE an upload the box abandons (docs/tus-profile.md 9), best effort: True once
        gone; None when the server cannot or will not (no `termination`, or a refusal such as
        403 for a finished upload: its expiration or its owner decides); False when it could
        not be asked now (no usable link, no answer, 5xx/429: ask again later)."""
        request = termination_request(upload_url, self._capabilities())
        if request is None:
            return None
        try:
            response = await self._ask(request, None)
            if response is None:
                return False
            check_termination(request, response)
        except (TransientFault, TimeoutError, OSError) as exc:
            log.info("uplink: could not terminate the upload of %s now: %s", file_id, exc)
            return False
        except TransportError as exc:  # an answered refusal: asking again changes nothing
            log.info("uplink: the server keeps the upload of %s: %s", file_id, exc)
            return None
        await self._audit("uplink.upload_terminated", file_id=file_id, reason=why)
        return True

    async def block(self, file_id: str, reason: str, *, upload_finished: bool) -> None:
        upload = await asyncio.to_thread(self._ledger.file, file_id)
        url = upload.upload_url
        if url is not None and not upload_finished:
            await self.terminate(file_id, url, "blocked")
        blocked = FileUpload(None, False, reason[:MAX_REASON_CHARS])
        await asyncio.to_thread(self._ledger.put_file, file_id, blocked)
        self._store.alarms.raise_(
            alarm_code(file_id), f"upload of {file_id} blocked: {reason}", sticky=True
        )
        self._blocked_at_ms[file_id] = self._wall_ms()

    async def report_blocks(self, records: Iterable[FileRecord]) -> int:
        """Tell the back office of every block it was not told of yet; how many it took."""
        waiting = {r.file_id: r for r in records if r.state in QUEUED_STATES}
        entries = await asyncio.to_thread(lambda: list(self._ledger.files()))
        told = 0
        for file_id, upload in entries:
            record = waiting.get(file_id)
            if record is None or upload.blocked_reason is None or upload.block_reported:
                continue
            at_ms = self._blocked_at_ms.get(file_id, self._wall_ms())
            report = BlockedReport.of(file_id, record.recording_id, upload.blocked_reason, at_ms)
            body = report.render()
            headers = (("Content-Type", "application/json"),)
            # The transport sends bytes a BodySlice describes; here the slice is the report.
            request = HttpRequest("POST", BLOCKED_PATH, headers, BodySlice(0, len(body)))
            try:
                response = await self._ask(request, body)
            except (TransportError, TimeoutError, OSError) as exc:
                log.info("uplink: could not report the block of %s now: %s", file_id, exc)
                continue
            if response is None or not (response.status == 204 or response.status in NO_SUCH_ROUTE):
                continue  # no link, or not now: the next sweep asks again
            reported = FileUpload(None, False, upload.blocked_reason, block_reported=True)
            await asyncio.to_thread(self._ledger.put_file, file_id, reported)
            told += response.status == 204
        return told

    async def release(
        self,
        file_ids: Collection[str] | None,
        in_flight: Collection[str],
        by: str,
    ) -> list[dict[str, Any]]:
        """Release `file_ids` (None: every blocked file); what was released, each with whether
        it had been blocked. UnknownUpload if one of `file_ids` is not waiting on the card."""
        waiting = await asyncio.to_thread(self._waiting_uploads)
        if file_ids is None:
            chosen = [f for f, upload in waiting.items() if upload.blocked_reason is not None]
        else:
            unknown = sorted(set(file_ids) - set(waiting))
            if unknown:
                raise UnknownUpload(f"no file {unknown[0][:64]!r} is waiting on the card")
            chosen = sorted(set(file_ids))
        released = []
        for file_id in chosen:
            if file_id in in_flight:
                continue  # already going: nothing to release
            was_blocked = await self._release_one(file_id, waiting[file_id])
            await self._audit(
                "uplink.upload_released", file_id=file_id, was_blocked=was_blocked, by=by
            )
            released.append({"file_id": file_id, "was_blocked": was_blocked})
        return released

    async def _release_one(self, file_id: str, upload: FileUpload) -> bool:
        if upload.blocked_reason is None:
            return False  # a waiting file: the caller forgets its backoff
        if upload.upload_url is not None:
            await self.terminate(file_id, upload.upload_url, "released")  # entries of older boxes
        await asyncio.to_thread(self._ledger.put_file, file_id, FileUpload())
        self._store.alarms.clear(alarm_code(file_id))
        return True

    def _waiting_uploads(self) -> dict[str, FileUpload]:
        """Every file waiting on the card with its upload facts (blocking: catalog, ledger)."""
        records = self._store.catalog.all()
        return {
            r.file_id: self._ledger.file(r.file_id)
            for r in records
            if r.state in QUEUED_STATES and r.sha256_hex is not None
        }

    async def sweep(self, records: Iterable[FileRecord], in_flight: Collection[str]) -> int:
        """Forget the upload facts of files no longer waiting (see the module docstring);
        how many were forgotten."""
        by_id = {record.file_id: record for record in records}
        entries = await asyncio.to_thread(lambda: list(self._ledger.files()))
        forgotten = 0
        for file_id, upload in entries:
            record = by_id.get(file_id)
            if file_id in in_flight or (record is not None and record.state in QUEUED_STATES):
                continue
            gone = record is None or record.state is FileState.DELETED
            unfinished = upload.upload_url is not None and not upload.completed_unattested
            if gone and unfinished and upload.blocked_reason is None:
                assert upload.upload_url is not None
                if await self.terminate(file_id, upload.upload_url, "deleted") is False:
                    continue  # the server did not answer: the next sweep tries again
            if upload.blocked_reason is not None:
                self._store.alarms.clear(alarm_code(file_id))
            await asyncio.to_thread(self._ledger.forget_file, file_id)
            forgotten += 1
        return forgotten
