"""The uplink service: the async shell around the pure scheduler, link health and tus session.

Every `tick_s` it (1) probes links that may come back, (2) builds the upload queue from the catalog
and a view of every link, (3) asks `scheduler.plan` what to start, and (4) cancels uploads on links
that went down, so those files return to the queue and resume on another link from the server's
offset (the tus URL is in the ledger). One task per running upload.

What a fault means is transport/refusals.py's (pure) decision; in short (DESIGN principle 5):
- transient (cut, reset, stall, 408, 413, 423, 429, 5xx): tenacity backoff with jitter on the same
  link, then the file waits (longer after each failure, at least Retry-After); 429 and 5xx pause
  every upload to the back office; only network faults count against the link's health;
- 401/403: the back office refuses the box's credentials: nothing more is sent but an hourly
  recheck, an alarm says so, and new credentials (a re-pair) resume the uplink at once
  (transport/withdrawal.py);
- pin mismatch: the link is blocked for uploads until the service restarts with new config, an
  alarm is raised and audited; never retried, never downgraded (RULES L1);
- hostile server, integrity: that file is blocked with the reason and a sticky alarm until a
  person releases it (`mvb uploads retry`, transport/uplink_files.py); its local copy is kept
  (RULES S3) and its unfinished upload terminated;
- attested: the back office's SHA-256 equals ours -> VERIFIED -> deleted by retention at once;
  completed without attestation (a plain tus server): asked again (HEAD) on a backoff, and at
  once when the back office turns out to attest (`Mvb-Attestation` on OPTIONS).
Uploads the box abandons are terminated (tus DELETE): blocked files', and those of files that
retention deleted (the periodic sweep). The audit log ships beside the evidence, and every
creation carries its signed head (transport/audit_shipping_io.py, docs/audit-custody.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

from storage.models import FileRecord
from storage.store import EvidenceStore
from transport.audit_shipping_io import AuditShipper, LinkCourier
from transport.audit_wire import METADATA_KEY
from transport.chunk_size import (
    DEFAULT_CHUNK_TARGET_S,
    DEFAULT_MIN_CHUNK_BYTES,
    ChunkBounds,
)
from transport.credentials import Credentials, FixedCredentials
from transport.errors import (
    CredentialsWithdrawn,
    PinMismatch,
    TransientNetworkError,
    TransportError,
)
from transport.http import HttpRequest
from transport.ledger import FileUpload, UplinkLedger
from transport.links import LinkConfig, LinkState, rate_limit_bytes_per_s
from transport.refusals import Rechecks, Verdict, Wait, next_wait, verdict_of
from transport.scheduler import SchedulerPolicy, UploadCandidate, UploadClass, plan
from transport.tus_messages import ServerCapabilities, UploadOutcome, UploadSpec
from transport.tus_session import TusSession
from transport.tus_statuses import refusal_error
from transport.uplink_files import FileDesk
from transport.uplink_links import Connector, UplinkLink, open_link
from transport.uplink_outcomes import PROBE_TIMEOUT_S, UplinkOutcomes, fault_kind
from transport.uplink_view import (
    QUEUED_STATES,
    Uploading,
    uplink_status,
    upload_rows,
)
from transport.upload import Exchange, RetryPolicy, SliceReader, drive, drive_with_retries
from transport.withdrawal import CredentialsGuard

log = logging.getLogger(__name__)

QUEUE_REFRESH_S = 5.0
SWEEP_S = 60.0  # how often ledger entries of files gone from the card are swept
MIN_DURATION_S = 1e-6  # a coarse clock can measure 0 s; the health model needs > 0


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    links: tuple[LinkConfig, ...]
    endpoint_path: str = "/files/"
    chunk_bytes: int = 4 * 1024 * 1024  # the largest chunk; the goodput picks the size below
    policy: SchedulerPolicy = field(default_factory=SchedulerPolicy)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    device_serial: str = "MVB-UNPAIRED"
    tick_s: float = 1.0
    h3_available: bool = True
    chunk_min_bytes: int = DEFAULT_MIN_CHUNK_BYTES
    chunk_target_s: float = DEFAULT_CHUNK_TARGET_S


class UplinkService(UplinkOutcomes):
    """Uploads sealed evidence until each file is attested, then lets retention delete it."""

    def __init__(
        self,
        store: EvidenceStore,
        ledger: UplinkLedger,
        settings: UplinkSettings,
        connect: Connector,
        *,
        carrier_up: Callable[[LinkConfig], bool] = lambda _link: True,
        clock_s: Callable[[], float] = time.monotonic,
        today: Callable[[], datetime.date] = datetime.date.today,
        credentials: Credentials | None = None,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.settings = settings
        self._connect = connect
        self._carrier_up = carrier_up
        self._clock_s = clock_s
        self._today = today
        bounds = ChunkBounds.clamped(
            settings.chunk_min_bytes, settings.chunk_bytes, settings.chunk_target_s
        )
        self.links = {
            c.name: open_link(c, ledger, carrier_up, today(), bounds) for c in settings.links
        }
        self.guard = CredentialsGuard(
            ledger, credentials or FixedCredentials(), store.alarms, self._audit, clock_s
        )
        self.desk = FileDesk(store, ledger, self._audit, self._ask, lambda: self._capabilities)
        courier = LinkCourier(self.links, connect, ledger, clock_s, today)
        self.audit_shipper = AuditShipper(store.audit, store.alarms, courier)
        self._waits: dict[str, Wait] = {}  # files in backoff after a fault
        self._rechecks = Rechecks()  # completed unattested: when to ask again
        self._pause: Wait | None = None  # the back office asked every upload to wait (429, 5xx)
        self._swept_s = -SWEEP_S
        self._progress: dict[str, Uploading] = {}
        self._known_urls: dict[str, str | None] = {}  # the ledger's upload URL of running uploads
        self._queue_cache: tuple[list[FileRecord], list[UploadCandidate]] | None = None
        self._queue_read_s = 0.0
        self._queue_dirty = False
        self._capabilities: ServerCapabilities | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self.uploaded_files = 0
        self.uploaded_bytes = 0
        # The back office's Date, as read over the pinned link, and the request's round trip:
        # an authenticated clock for retention's trusted time (storage/trusted_time_io.py).
        self.on_server_date: Callable[[str | None, float], None] = lambda _date, _rtt_s: None

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Run the scheduling loop as a task of its own (tests); `mvb run` supervises `run()`."""
        self._loop_task = asyncio.create_task(self.run(), name="uplink")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        tasks = [t for link in self.links.values() for t in link.uploads.values()]
        tasks += [link.probing for link in self.links.values() if link.probing is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.audit_shipper.stop()
        for link in self.links.values():
            await link.drop_transports()

    def usable_cost_classes(self) -> list[str]:
        """The cost classes (`wifi`, `cellular`) of the links usable now, cheapest first: a
        summary without names or addresses (systemd's STATUS line)."""
        now_s = self._clock_s()
        usable = [link for link in self.links.values() if link.usable(now_s)]
        return sorted({str(link.config.cost_class) for link in usable}, key=lambda c: c != "wifi")

    async def run(self) -> None:
        """The scheduling loop, forever; `stop()` still ends its uploads and transports.

        It begins with a retention pass: a file attested just before a power cut is deletable
        (S3), and otherwise would wait for the next upload to finish, or forever if it was the
        last one (found by the soak)."""
        await asyncio.to_thread(self.store.apply_retention)
        await self.guard.load()
        while True:
            # A failing card (its alarm raised): no round reads it until the card watch took it
            # back (gateway/card_watch.py), rather than one failed round per tick.
            if not self.store.card_faulted():
                try:
                    await self.run_once()
                except Exception:
                    # A bug in one round must not stop uploads for years: log it, try again.
                    log.exception("uplink round failed")
            await asyncio.sleep(self.settings.tick_s)

    async def run_once(self) -> list[str]:
        """One scheduling round; returns the file ids it started (for tests)."""
        if await self.guard.renewed():
            await self._renew_connections()
        now_s = self._clock_s()
        quiet = self._everything_waits(now_s) is not None
        recheck = self.guard.recheck_due()
        for link in self.links.values():
            link.health.observe_carrier(now_s, self._carrier_up(link.config))
            if recheck and link.probing is None and link.pin_blocked is None:
                recheck = False  # one OPTIONS asks whether the refusal still holds
                link.probing = asyncio.create_task(self._probe(link), name="recheck")
            elif not quiet:
                self._maybe_probe(link, now_s)
            if not link.usable(now_s):
                for task in list(link.uploads.values()):
                    task.cancel()  # the file returns to the queue and resumes elsewhere
        records, candidates = await self._queue(now_s)
        if quiet:
            return []  # withdrawn or paused: nothing is sent to the back office
        self.audit_shipper.poke(now_s)
        sweep_due = now_s - self._swept_s >= SWEEP_S and self._capabilities is not None
        if sweep_due and self.any_link_usable():  # terminations need a link and capabilities
            self._swept_s = now_s
            in_flight_ids = {f for link in self.links.values() for f in link.uploads}
            await self.desk.sweep(records, in_flight_ids)
            await self.desk.report_blocks(records)
        in_flight = {f: link.config.name for link in self.links.values() for f in link.uploads}
        views = [link.view(now_s, self._today()) for link in self.links.values()]
        by_id = {r.file_id: r for r in records}
        started = []
        for assignment in plan(now_s, candidates, views, in_flight, self.settings.policy):
            link = self.links[assignment.link]
            kind = assignment.transport if self.settings.h3_available else "https"
            record = by_id[assignment.file_id]
            task = asyncio.create_task(self._upload(record, link, kind), name=record.file_id)
            link.track(record.file_id, task)
            started.append(record.file_id)
        return started

    # -- queue and views --------------------------------------------------------------------------

    async def _queue(self, now_s: float) -> tuple[list[FileRecord], list[UploadCandidate]]:
        """The catalog's records and the upload candidates, re-read at most every
        QUEUE_REFRESH_S unless an upload ended (a card holding weeks of backlog has thousands of
        records: decoding them every tick would cost a tenth of a core)."""
        stale = now_s - self._queue_read_s >= QUEUE_REFRESH_S or self._queue_dirty
        if stale or self._queue_cache is None:
            records = await asyncio.to_thread(self.store.catalog.all)
            candidates = await asyncio.to_thread(self._candidates, records)  # ledger: sqlite
            self._queue_cache = (records, candidates)
            self._queue_read_s, self._queue_dirty = now_s, False
        records, candidates = self._queue_cache
        # Backoffs change between reads; the rest of a candidate only changes with the catalog.
        return records, [self._with_wait(c) for c in candidates]

    def _with_wait(self, candidate: UploadCandidate) -> UploadCandidate:
        wait = self._rechecks.get(candidate.file_id) or self._waits.get(candidate.file_id)
        if wait is None:
            return replace(candidate, not_before_s=0.0, wait_reason=None)
        return replace(candidate, not_before_s=wait.until_s, wait_reason=wait.reason)

    def _candidates(self, records: list[FileRecord]) -> list[UploadCandidate]:
        """Every file waiting on the card (blocked ones too: the scheduler skips them and says
        why); completed unattested ones wait for their next question (`_rechecks`)."""
        return [
            self._with_wait(
                UploadCandidate(
                    file_id=record.file_id,
                    size_bytes=record.size_bytes,
                    remaining_bytes=record.size_bytes,
                    upload_class=UploadClass(record.upload_class),
                    created_at_ms=record.created_at_ms,
                    blocked_reason=self.ledger.file(record.file_id).blocked_reason,
                )
            )
            for record in records
            if record.state in QUEUED_STATES and record.sha256_hex is not None
        ]

    def _everything_waits(self, now_s: float) -> Wait | None:
        """Why no upload may start now (credentials withdrawn, a server-wide pause), if so."""
        withdrawn = self.guard.wait()
        if withdrawn is not None:
            return withdrawn
        pause = self._pause
        return pause if pause is not None and pause.active(now_s) else None

    # -- probes -----------------------------------------------------------------------------------

    def _maybe_probe(self, link: UplinkLink, now_s: float) -> None:
        """A link in PROBING gets one OPTIONS request (which also checks the pin)."""
        if link.pin_blocked is not None or link.probing is not None:
            return
        if link.health.state(now_s) is not LinkState.PROBING:
            return
        link.probing = asyncio.create_task(self._probe(link), name=f"probe-{link.config.name}")

    async def _probe(self, link: UplinkLink) -> None:
        """One OPTIONS (which also checks the pin): a link coming back, or the hourly recheck
        while the back office refuses the credentials."""
        try:
            started_s = time.monotonic()  # a duration: real time, whatever clock schedules
            request = HttpRequest(
                "OPTIONS", self.settings.endpoint_path, (("Tus-Resumable", "1.0.0"),)
            )
            response = await link.ask(request, None, self._connect, PROBE_TIMEOUT_S)
            if response.status not in (200, 204):
                raise refusal_error(request, response)
            self._adopt(ServerCapabilities.from_response(response))
            rtt_s = max(time.monotonic() - started_s, MIN_DURATION_S)
            self.on_server_date(response.headers.get("date"), rtt_s)
            link.health.observe_success(self._clock_s(), rtt_s)
            await self.guard.lift("the back office accepts the box again")
        except PinMismatch as exc:
            await self._block_link(link, exc)
        except CredentialsWithdrawn as exc:
            link.health.observe_success(self._clock_s())  # the link carried the answer
            await self._withdraw(exc)
        except (TransportError, TimeoutError, OSError) as exc:
            log.info("uplink probe on %s failed: %s", link.config.name, fault_kind(exc))
            await link.drop_transport("https")
            link.health.observe_failure(self._clock_s())
        finally:
            link.probing = None

    # -- one upload -------------------------------------------------------------------------------

    async def _upload(self, record: FileRecord, link: UplinkLink, kind: str) -> None:
        file_id = record.file_id
        self._progress[file_id] = Uploading(link.config.name, kind, 0, record.size_bytes)
        try:
            await self._mark_uploading(record)
            outcome = await self._transfer(record, link, kind)
            await self._conclude(record, link, kind, outcome)
        except asyncio.CancelledError:
            await self._requeue(file_id)
            raise
        except Exception as exc:
            await self._after_fault(record, link, kind, exc)
        finally:
            self._progress.pop(file_id, None)
            self._known_urls.pop(file_id, None)
            self._queue_dirty = True  # its state changed: the next round reads the catalog

    async def _after_fault(
        self, record: FileRecord, link: UplinkLink, kind: str, exc: Exception
    ) -> None:
        """What the upload's fault means (transport/refusals.py), done; the file is requeued."""
        file_id, now_s = record.file_id, self._clock_s()
        verdict = verdict_of(exc)
        if verdict is Verdict.BLOCK_FILE:
            await self._block_file(file_id, link, exc)
        elif verdict is Verdict.BLOCK_LINK:
            assert isinstance(exc, PinMismatch)
            await self._block_link(link, exc)
        elif verdict is Verdict.WITHDRAWN:
            assert isinstance(exc, CredentialsWithdrawn)
            await self._withdraw(exc)
        elif verdict is Verdict.SERVER_PAUSE:
            self._pause = next_wait(self._pause, exc, now_s, self.settings.retry.max_s)
            log.info("uplink: every upload waits: %s", self._pause.reason)
        else:
            wait = next_wait(self._waits.get(file_id), exc, now_s, self.settings.retry.max_s)
            self._waits[file_id] = wait
            if kind == "h3" and isinstance(exc, TransientNetworkError):
                link.udp_blocked = link.udp_blocked or self._https_works(link)
            if isinstance(exc, OSError):
                # The file went away under us (retention deleted it) or the card failed.
                log.warning("uplink: cannot read evidence file %s: %s", file_id, exc.strerror)
            elif not isinstance(exc, TransportError):
                # A bug must not stop the uplink for years: log it, keep the file, try later.
                log.error("uplink: upload of %s failed unexpectedly", file_id, exc_info=exc)
        await self._requeue(file_id)

    def _https_works(self, link: UplinkLink) -> bool:
        """UDP counts as blocked when HTTP/3 fails on a link whose HTTPS probe succeeded."""
        return link.health.state(self._clock_s()) is LinkState.UP

    async def _transfer(self, record: FileRecord, link: UplinkLink, kind: str) -> UploadOutcome:
        assert record.sha256_hex is not None
        upload = await asyncio.to_thread(self.ledger.file, record.file_id)
        head = await asyncio.to_thread(self.store.audit.signed_head)
        spec = UploadSpec(
            file_id=record.file_id,
            size_bytes=record.size_bytes,
            sha256_hex=record.sha256_hex,
            metadata={
                "recording_id": record.recording_id,
                "device": self.settings.device_serial,
                METADATA_KEY: head.render(),
            },
            endpoint=self.settings.endpoint_path,
        )
        session = TusSession(
            spec,
            chunk_bytes=link.chunks.size_bytes(),
            capabilities=self._capabilities,
            upload_url=upload.upload_url,
            min_chunk_bytes=link.chunks.bounds.min_bytes,
        )
        self._known_urls[record.file_id] = upload.upload_url
        path = self.store.layout.sealed_path(record.recording_id, record.file_id)
        reader = await asyncio.to_thread(SliceReader, path)
        try:
            return await drive_with_retries(
                lambda: self._attempt(record.file_id, session, reader, link, kind),
                self.settings.retry,
                on_retry=lambda exc, delay_s: log.info(
                    "uplink %s on %s: %s, retry in %.1f s",
                    record.file_id,
                    link.config.name,
                    fault_kind(exc),
                    delay_s,
                ),
            )
        finally:
            reader.close()

    async def _attempt(
        self, file_id: str, session: TusSession, reader: SliceReader, link: UplinkLink, kind: str
    ) -> UploadOutcome:
        link.pacer.set_rate(rate_limit_bytes_per_s(link.config, link.health))
        try:
            transport = await link.transport(kind, self._connect)
            return await drive(
                session,
                transport,
                reader,
                on_exchange=lambda s, e: self._on_exchange(file_id, s, e, link),
                pace=link.pacer.take,
                sizer=link.chunks,
            )
        except TransientNetworkError:
            # Only network faults judge the link: a server's answer (5xx, 429) came over it.
            if kind == "h3":
                # A QUIC connection does not recover from an idle timeout; and a failing UDP
                # path says nothing about the link (udp_blocked judges it, see _after_fault).
                await link.drop_transport(kind)
            else:
                link.health.observe_failure(self._clock_s())
            raise

    async def _on_exchange(
        self, file_id: str, session: TusSession, exchange: Exchange, link: UplinkLink
    ) -> None:
        now_s = self._clock_s()
        duration_s = max(exchange.duration_s, MIN_DURATION_S)
        if exchange.body_bytes:
            rate = rate_limit_bytes_per_s(link.config, link.health)
            link.health.observe_transfer(now_s, exchange.body_bytes, duration_s, rate)
            link.health.observe_success(now_s)
            if link.budget is not None:
                link.budget.spend(exchange.body_bytes, self._today())
                state = link.budget.state.to_dict()
                await asyncio.to_thread(self.ledger.put_budget, link.config.name, state)
        else:
            link.health.observe_success(now_s, duration_s)
        if session.upload_url != self._known_urls.get(file_id):
            # Persisted before the next chunk: a box that loses power resumes this upload.
            upload = FileUpload(upload_url=session.upload_url)
            await asyncio.to_thread(self.ledger.put_file, file_id, upload)
            self._known_urls[file_id] = session.upload_url
        if session.capabilities is not None and session.capabilities != self._capabilities:
            self._adopt(session.capabilities)
        progress = self._progress.get(file_id)
        if progress is not None:
            progress.offset_bytes = session.offset_bytes

    # -- status -----------------------------------------------------------------------------------

    def any_link_usable(self) -> bool:
        """True when some link is UP and not pin-blocked (a configuration's health check)."""
        now_s = self._clock_s()
        return any(link.usable(now_s) for link in self.links.values())

    def status(self) -> dict[str, Any]:
        """For the local API / officer page: links, what uploads, and why the rest waits.
        Blocking (catalog, ledger): call it off the event loop."""
        now_s = self._clock_s()
        links = [link.status(now_s, self._today()) for link in self.links.values()]
        return uplink_status(
            links,
            self._running(),
            self._rows(now_s),
            self.uploaded_files,
            credentials_withdrawn=self.guard.withdrawn is not None,
        )

    def uploads(self) -> dict[str, Any]:
        """`mvb uploads`: every file waiting on the card with its state and reason. Blocking."""
        now_s = self._clock_s()
        everything = self._everything_waits(now_s)
        return {
            "credentials_withdrawn": self.guard.withdrawn is not None,
            "waiting_for_back_office": None if everything is None else everything.reason,
            "files": self._rows(now_s),
        }

    async def release(self, file_ids: Collection[str] | None, by: str) -> list[dict[str, Any]]:
        """`mvb uploads retry`: release the blocked files (None: all of them) or try waiting
        files now (transport/uplink_files.py); UnknownUpload for a file not waiting."""
        in_flight = {f for link in self.links.values() for f in link.uploads}
        released = await self.desk.release(file_ids, in_flight, by)
        for item in released:
            self._waits.pop(item["file_id"], None)
            self._rechecks.forget(item["file_id"])
        self._queue_dirty = True
        return released

    def _running(self) -> dict[str, Uploading]:
        return {f: replace(p) for f, p in list(self._progress.items())}  # copies: they change

    def _rows(self, now_s: float) -> list[dict[str, Any]]:
        records = self.store.catalog.all()
        candidates = {c.file_id: c for c in self._candidates(records)}
        uploads = {f: self.ledger.file(f) for f in candidates}
        return upload_rows(
            records,
            uploads,
            candidates,
            self._running(),
            [link.view(now_s, self._today()) for link in self.links.values()],
            self.settings.policy,
            now_s,
            everything_waits=self._everything_waits(now_s),
        )
