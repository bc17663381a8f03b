"""The uplink service: the async shell around the pure scheduler, link health and tus session.

Every `tick_s` it (1) probes links that may come back, (2) builds the upload queue from the catalog
and a view of every link, (3) asks `scheduler.plan` what to start, and (4) cancels uploads on links
that went down, so those files return to the queue and resume on another link from the server's
offset (the tus URL is in the ledger). One task per running upload.

Faults by kind (DESIGN principle 5):
- transient (cut, reset, 5xx): tenacity backoff with jitter on the same link, then the file waits
  `retry.max_s` and the link health notes the failures (three in a row take the link down);
- pin mismatch: the link is blocked for uploads until the service restarts with new config, an
  alarm is raised and audited; never retried, never downgraded (RULES L1);
- hostile server, refusal, integrity: that file is blocked with the reason (a person decides);
  its local copy is kept (RULES S3);
- attested: the back office's SHA-256 equals ours -> VERIFIED -> deleted by retention at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from storage.catalog import AttestationMismatch
from storage.models import FileRecord, FileState
from storage.store import EvidenceStore
from transport.budget import BudgetState, BudgetStateError, DataBudget
from transport.chunk_size import (
    DEFAULT_CHUNK_TARGET_S,
    DEFAULT_MIN_CHUNK_BYTES,
    ChunkBounds,
    ChunkSizer,
)
from transport.errors import (
    HostileServer,
    IntegrityError,
    PinMismatch,
    ServerError,
    TransientNetworkError,
    TransportError,
    UploadRejected,
)
from transport.http import HttpRequest, Transport
from transport.ledger import FileUpload, UplinkLedger
from transport.links import LinkConfig, LinkHealth, LinkState, rate_limit_bytes_per_s
from transport.pacing import Pacer
from transport.scheduler import (
    LinkView,
    SchedulerPolicy,
    UploadCandidate,
    UploadClass,
    explain_waiting,
    plan,
)
from transport.tus_session import ServerCapabilities, TusSession, UploadOutcome, UploadSpec
from transport.upload import Exchange, RetryPolicy, SliceReader, drive, drive_with_retries

log = logging.getLogger(__name__)

QUEUED_STATES = frozenset({FileState.SEALED, FileState.UPLOADING})
PROBE_TIMEOUT_S = 20.0
QUEUE_REFRESH_S = 5.0
MIN_DURATION_S = 1e-6  # a coarse clock can measure 0 s; the health model needs > 0


class Connector(Protocol):
    """Opens a pinned transport ("https" or "h3") to the back office over one link."""

    async def __call__(self, link: LinkConfig, kind: str) -> Transport: ...


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


@dataclass
class _Link:
    """One link's runtime state. `pin_blocked` is sticky for the life of the service."""

    config: LinkConfig
    health: LinkHealth
    budget: DataBudget | None
    pacer: Pacer
    chunks: ChunkSizer
    transports: dict[str, Transport] = field(default_factory=dict)
    uploads: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    pin_blocked: str | None = None
    udp_blocked: bool = False
    probing: asyncio.Task[None] | None = None

    def usable(self, now_s: float) -> bool:
        return self.pin_blocked is None and self.health.usable(now_s)


@dataclass
class _Progress:
    """What the status page shows of a running upload."""

    link: str
    transport: str
    offset_bytes: int = 0
    size_bytes: int = 0


class UplinkService:
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
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.settings = settings
        self._connect = connect
        self._carrier_up = carrier_up
        self._clock_s = clock_s
        self._today = today
        self.links = {c.name: self._new_link(c) for c in settings.links}
        self._not_before_s: dict[str, float] = {}
        self._progress: dict[str, _Progress] = {}
        self._known_urls: dict[str, str | None] = {}  # the ledger's upload URL of running uploads
        self._queue_cache: tuple[list[FileRecord], list[UploadCandidate]] | None = None
        self._queue_read_s = 0.0
        self._queue_dirty = False
        self._capabilities: ServerCapabilities | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self.uploaded_files = 0
        self.uploaded_bytes = 0

    def _new_link(self, config: LinkConfig) -> _Link:
        budget = None
        if config.monthly_cap_bytes is not None:
            budget = self._load_budget(config)
        health = LinkHealth(carrier_up=self._carrier_up(config))
        # The pacer sleeps in real time, so it measures real time whatever clock schedules.
        settings = self.settings
        bounds = ChunkBounds.clamped(
            settings.chunk_min_bytes, settings.chunk_bytes, settings.chunk_target_s
        )
        chunks = ChunkSizer(bounds)
        return _Link(config, health, budget, Pacer(config.rate_cap_bytes_per_s), chunks)

    def _load_budget(self, config: LinkConfig) -> DataBudget:
        stored = self.ledger.budget(config.name)
        if stored is not None:
            try:
                return DataBudget(config, BudgetState.from_dict(stored))
            except BudgetStateError:
                # Unreadable: count from zero but say so; an over-spend of one cycle is bounded.
                log.warning(
                    "uplink budget of link %s unreadable; starting a fresh cycle", config.name
                )
        return DataBudget.fresh(config, self._today())

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
        for link in self.links.values():
            for transport in link.transports.values():
                await transport.aclose()
            link.transports.clear()

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
        while True:
            try:
                await self.run_once()
            except Exception:
                # A bug in one round must not stop uploads for years: log it, try again.
                log.exception("uplink round failed")
            await asyncio.sleep(self.settings.tick_s)

    async def run_once(self) -> list[str]:
        """One scheduling round; returns the file ids it started (for tests)."""
        now_s = self._clock_s()
        for link in self.links.values():
            link.health.observe_carrier(now_s, self._carrier_up(link.config))
            self._maybe_probe(link, now_s)
            if not link.usable(now_s):
                for task in list(link.uploads.values()):
                    task.cancel()  # the file returns to the queue and resumes elsewhere
        records, candidates = await self._queue(now_s)
        in_flight = {f: link.config.name for link in self.links.values() for f in link.uploads}
        views = [self._view(link, now_s) for link in self.links.values()]
        by_id = {r.file_id: r for r in records}
        started = []
        for assignment in plan(now_s, candidates, views, in_flight, self.settings.policy):
            link = self.links[assignment.link]
            kind = assignment.transport if self.settings.h3_available else "https"
            record = by_id[assignment.file_id]
            task = asyncio.create_task(self._upload(record, link, kind), name=record.file_id)
            link.uploads[record.file_id] = task
            task.add_done_callback(_forget_upload(link, record.file_id))
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
        return records, [
            replace(c, not_before_s=self._not_before_s.get(c.file_id, 0.0)) for c in candidates
        ]

    def _candidates(self, records: list[FileRecord]) -> list[UploadCandidate]:
        candidates = []
        for record in records:
            if record.state not in QUEUED_STATES or record.sha256_hex is None:
                continue
            upload = self.ledger.file(record.file_id)
            if upload.completed_unattested:
                continue
            candidates.append(
                UploadCandidate(
                    file_id=record.file_id,
                    size_bytes=record.size_bytes,
                    remaining_bytes=record.size_bytes,
                    upload_class=UploadClass(record.upload_class),
                    created_at_ms=record.created_at_ms,
                    not_before_s=self._not_before_s.get(record.file_id, 0.0),
                    blocked_reason=upload.blocked_reason,
                )
            )
        return candidates

    def _view(self, link: _Link, now_s: float) -> LinkView:
        today = self._today()
        if link.budget is None:
            budget: Mapping[UploadClass, int | None] = dict.fromkeys(UploadClass)
        else:
            budget = link.budget.remaining_by_class(today)
        return LinkView(
            config=link.config,
            usable=link.usable(now_s),
            active_uploads=len(link.uploads),
            budget_remaining_by_class=budget,
            rtt_s=link.health.rtt_s,
            loss_hint=link.health.loss_hint,
            udp_blocked=link.udp_blocked,
        )

    # -- probes -----------------------------------------------------------------------------------

    def _maybe_probe(self, link: _Link, now_s: float) -> None:
        """A link in PROBING gets one OPTIONS request (which also checks the pin)."""
        if link.pin_blocked is not None or link.probing is not None:
            return
        if link.health.state(now_s) is not LinkState.PROBING:
            return
        link.probing = asyncio.create_task(self._probe(link), name=f"probe-{link.config.name}")

    async def _probe(self, link: _Link) -> None:
        try:
            transport = await self._transport(link, "https")
            started_s = time.monotonic()  # a duration: real time, whatever clock schedules
            request = HttpRequest(
                "OPTIONS", self.settings.endpoint_path, (("Tus-Resumable", "1.0.0"),)
            )
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                response = await transport.request(request, None)
            self._capabilities = ServerCapabilities.from_response(response)
            rtt_s = max(time.monotonic() - started_s, MIN_DURATION_S)
            link.health.observe_success(self._clock_s(), rtt_s)
        except PinMismatch as exc:
            await self._block_link(link, exc)
        except (TransportError, TimeoutError, OSError) as exc:
            log.info("uplink probe on %s failed: %s", link.config.name, _kind(exc))
            await self._drop_transport(link, "https")
            link.health.observe_failure(self._clock_s())
        finally:
            link.probing = None

    # -- transports -------------------------------------------------------------------------------

    async def _transport(self, link: _Link, kind: str) -> Transport:
        transport = link.transports.get(kind)
        if transport is None:
            transport = await self._connect(link.config, kind)
            link.transports[kind] = transport
        return transport

    async def _drop_transport(self, link: _Link, kind: str) -> None:
        transport = link.transports.pop(kind, None)
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.aclose()

    # -- one upload -------------------------------------------------------------------------------

    async def _upload(self, record: FileRecord, link: _Link, kind: str) -> None:
        file_id = record.file_id
        self._progress[file_id] = _Progress(link.config.name, kind, 0, record.size_bytes)
        try:
            await self._mark_uploading(record)
            outcome = await self._transfer(record, link, kind)
            await self._conclude(record, link, kind, outcome)
        except asyncio.CancelledError:
            await self._requeue(file_id)
            raise
        except PinMismatch as exc:
            await self._block_link(link, exc)
            await self._requeue(file_id)
        except (HostileServer, UploadRejected, IntegrityError) as exc:
            await self._block_file(file_id, link, exc)
        except (TransientNetworkError, ServerError) as exc:
            self._not_before_s[file_id] = self._clock_s() + self.settings.retry.max_s
            if kind == "h3" and isinstance(exc, TransientNetworkError):
                link.udp_blocked = link.udp_blocked or self._https_works(link)
            await self._requeue(file_id)
        except OSError as exc:
            # The file went away under us (retention deleted it) or the card failed to read.
            log.warning("uplink: cannot read evidence file %s: %s", file_id, exc.strerror)
            self._not_before_s[file_id] = self._clock_s() + self.settings.retry.max_s
            await self._requeue(file_id)
        except Exception:
            # A bug must not stop the uplink for years: log it, keep the file, try later.
            log.exception("uplink: upload of %s failed unexpectedly", file_id)
            self._not_before_s[file_id] = self._clock_s() + self.settings.retry.max_s
            await self._requeue(file_id)
        finally:
            self._progress.pop(file_id, None)
            self._known_urls.pop(file_id, None)
            self._queue_dirty = True  # its state changed: the next round reads the catalog

    def _https_works(self, link: _Link) -> bool:
        """UDP counts as blocked when HTTP/3 fails on a link whose HTTPS probe succeeded."""
        return link.health.state(self._clock_s()) is LinkState.UP

    async def _transfer(self, record: FileRecord, link: _Link, kind: str) -> UploadOutcome:
        assert record.sha256_hex is not None
        upload = await asyncio.to_thread(self.ledger.file, record.file_id)
        spec = UploadSpec(
            file_id=record.file_id,
            size_bytes=record.size_bytes,
            sha256_hex=record.sha256_hex,
            metadata={"recording_id": record.recording_id, "device": self.settings.device_serial},
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
                    _kind(exc),
                    delay_s,
                ),
            )
        finally:
            reader.close()

    async def _attempt(
        self, file_id: str, session: TusSession, reader: SliceReader, link: _Link, kind: str
    ) -> UploadOutcome:
        link.pacer.set_rate(rate_limit_bytes_per_s(link.config, link.health))
        try:
            transport = await self._transport(link, kind)
            return await drive(
                session,
                transport,
                reader,
                on_exchange=lambda s, e: self._on_exchange(file_id, s, e, link),
                pace=link.pacer.take,
                sizer=link.chunks,
            )
        except (TransientNetworkError, ServerError):
            if kind == "h3":
                # A QUIC connection does not recover from an idle timeout; and a failing UDP
                # path says nothing about the link (udp_blocked judges it, see _upload).
                await self._drop_transport(link, kind)
            else:
                link.health.observe_failure(self._clock_s())
            raise

    async def _on_exchange(
        self, file_id: str, session: TusSession, exchange: Exchange, link: _Link
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
        if session.capabilities is not None:
            self._capabilities = session.capabilities
        progress = self._progress.get(file_id)
        if progress is not None:
            progress.offset_bytes = session.offset_bytes

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
        self, record: FileRecord, link: _Link, kind: str, outcome: UploadOutcome
    ) -> None:
        file_id = record.file_id
        self.uploaded_files += 1
        self.uploaded_bytes += record.size_bytes
        if outcome.attested_sha256_hex is None:
            done = FileUpload(upload_url=outcome.upload_url, completed_unattested=True)
            await asyncio.to_thread(self.ledger.put_file, file_id, done)
            await self._requeue(file_id)
            await self._audit(
                "uplink.uploaded_unattested", file_id=file_id, link=link.config.name, transport=kind
            )
            return
        try:
            await asyncio.to_thread(
                self.store.record_attestation, file_id, outcome.attested_sha256_hex
            )
        except AttestationMismatch as exc:
            raise IntegrityError(str(exc)) from exc
        await self._audit("uplink.uploaded", file_id=file_id, link=link.config.name, transport=kind)
        await asyncio.to_thread(self.store.apply_retention)  # S3: the attested copy goes now
        await asyncio.to_thread(self.ledger.forget_file, file_id)
        self._not_before_s.pop(file_id, None)

    async def _block_link(self, link: _Link, exc: PinMismatch) -> None:
        if link.pin_blocked is None:
            link.pin_blocked = str(exc)
            self.store.alarms.raise_(
                f"uplink_pin_{link.config.name}",
                f"link {link.config.name}: back office certificate not pinned; uploads stopped",
            )
            await self._audit("uplink.pin_mismatch", link=link.config.name, detail=str(exc))
        for kind in list(link.transports):
            await self._drop_transport(link, kind)

    async def _block_file(self, file_id: str, link: _Link, exc: TransportError) -> None:
        reason = f"{_kind(exc)}: {exc}"
        upload = await asyncio.to_thread(self.ledger.file, file_id)
        blocked = FileUpload(upload.upload_url, upload.completed_unattested, reason[:300])
        await asyncio.to_thread(self.ledger.put_file, file_id, blocked)
        self.store.alarms.raise_(
            f"uplink_file_{file_id[:12]}", f"upload of {file_id} stopped: {reason}"
        )
        await self._requeue(file_id)
        await self._audit(
            "uplink.upload_blocked", file_id=file_id, link=link.config.name, reason=_kind(exc)
        )

    async def _audit(self, event: str, **fields: Any) -> None:
        await asyncio.to_thread(self.store.audit.append, event, **fields)

    # -- status -----------------------------------------------------------------------------------

    def any_link_usable(self) -> bool:
        """True when some link is UP and not pin-blocked (a configuration's health check)."""
        now_s = self._clock_s()
        return any(link.usable(now_s) for link in self.links.values())

    def status(self) -> dict[str, Any]:
        """For the local API / officer page: links, what uploads, and why the rest waits."""
        now_s = self._clock_s()
        views = [self._view(link, now_s) for link in self.links.values()]
        records = self.store.catalog.all()
        in_flight = {f for link in self.links.values() for f in link.uploads}
        waiting = []
        for candidate in self._candidates(records):
            if candidate.file_id in in_flight:
                continue
            reason = explain_waiting(candidate, views, self.settings.policy, now_s)
            waiting.append(
                {
                    "file_id": candidate.file_id,
                    "class": str(candidate.upload_class),
                    "reason": reason,
                }
            )
        unattested = [
            r.file_id
            for r in records
            if r.state in QUEUED_STATES and self.ledger.file(r.file_id).completed_unattested
        ]
        return {
            "links": [self._link_status(link, now_s) for link in self.links.values()],
            "uploading": [{"file_id": f, **vars(p)} for f, p in sorted(self._progress.items())],
            "waiting": waiting,
            "uploaded_unattested": {
                "files": len(unattested),
                "note": "the server cannot attest; kept on the card until retention",
            },
            "uploaded_files": self.uploaded_files,
        }

    def _link_status(self, link: _Link, now_s: float) -> dict[str, Any]:
        health = link.health
        remaining = (
            None
            if link.budget is None
            else link.budget.remaining_bytes(UploadClass.P1, self._today())
        )
        return {
            "name": link.config.name,
            "cost_class": str(link.config.cost_class),
            "state": str(health.state(now_s)),
            "usable": link.usable(now_s),
            "pin_blocked": link.pin_blocked is not None,
            "udp_blocked": link.udp_blocked,
            "rtt_ms": None if health.rtt_s is None else round(health.rtt_s * 1000, 1),
            "goodput_mbit_s": None
            if health.goodput_bytes_per_s is None
            else round(health.goodput_bytes_per_s * 8 / 1e6, 2),
            "budget_remaining_bytes": remaining,
            "uploads": len(link.uploads),
        }


def _forget_upload(link: _Link, file_id: str) -> Callable[[asyncio.Task[None]], None]:
    def forget(_task: asyncio.Task[None]) -> None:
        link.uploads.pop(file_id, None)

    return forget


def _kind(exc: BaseException) -> str:
    return type(exc).__name__
