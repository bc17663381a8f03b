"""The audit log leaves the box: `AuditShipper` sends new entries, in order, to the back office.

A shell part of the uplink (transport/uplink.py starts it every round once the back office
may be asked; the decisions are transport/audit_shipping.py's; the protocol
docs/audit-custody.md). Each round sends whole lines from the confirmed position, at most
MAX_APPEND_BYTES a request and MAX_REQUESTS_PER_ROUND requests, each with the box's signed head
as it leaves; the back office's answer moves the position, which is written durably
(`<state>/audit-shipped.json`, common/durable.py) before the next request.

Invariants:
- Only entries that are durable on the box are sent (a power cut cannot take back an entry
  the back office holds); the position is taken from the back office's answer and checked
  against the local log, never assumed. A position file that is lost or does not match the
  local log is replaced by asking the back office (`GET /audit/v1/head`).
- A round that finds no usable link costs nothing on the network and is tried again at the
  uplink's next tick; every other round waits `interval_s` (or longer after a fault).
- Link costs: a request goes over the cheapest usable link (WiFi before cellular), only when
  the link's budget still allows P0 (the audit is small and is part of every incident), and its
  body is counted against that budget. Rounds are at least `interval_s` apart.
- A refusal (409: the log does not extend what the back office holds) raises the sticky alarm
  AUDIT_REFUSED_ALARM and waits REFUSED_RECHECK_S: nothing the box can send repairs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Final

from common.alarms import Alarms
from common.durable import atomic_write_text
from storage.audit import split_lines
from storage.audit_head import AuditHead
from storage.audit_io import AuditLog, AuditLogError
from transport.audit_shipping import (
    NO_ROUTE,
    Position,
    PositionUnreadable,
    Step,
    find_entry,
    seq_of_line,
    step_after,
)
from transport.audit_wire import (
    APPEND_PATH,
    CONTENT_TYPE,
    HEAD_HEADER,
    HEAD_PATH,
    HELD_HEADER,
    KEY_HEADER,
    MAX_APPEND_BYTES,
    AppendRefused,
    parse_held,
    render_key,
    whole_lines,
)
from transport.errors import TransportError
from transport.http import BodySlice, HttpRequest, HttpResponse
from transport.ledger import UplinkLedger
from transport.links import CostClass
from transport.scheduler import UploadClass
from transport.uplink_links import Connector, UplinkLink

log = logging.getLogger(__name__)

POSITION_FILE: Final = "audit-shipped.json"
AUDIT_REFUSED_ALARM: Final = "audit_refused"
INTERVAL_S: Final = 15.0
MAX_REQUESTS_PER_ROUND: Final = 16
REQUEST_TIMEOUT_S: Final = 30.0
RETRY_S: Final = 60.0
REFUSED_RECHECK_S: Final = 3600.0
NO_ROUTE_RECHECK_S: Final = 3600.0
SCAN_PIECE_BYTES: Final = 256 * 1024


class LinkCourier:
    """Sends one small request over the cheapest usable link within its P0 budget, and counts
    the body against that budget (saved in the ledger, as uploads do)."""

    def __init__(
        self,
        links: Mapping[str, UplinkLink],
        connect: Connector,
        ledger: UplinkLedger,
        clock_s: Callable[[], float],
        today: Callable[[], datetime.date],
    ) -> None:
        self._links = links
        self._connect = connect
        self._ledger = ledger
        self._clock_s = clock_s
        self._today = today

    async def send(self, request: HttpRequest, body: bytes | None) -> HttpResponse | None:
        """The answer, or None when no link may carry it now."""
        link = self._choose(len(body or b""))
        if link is None:
            return None
        response = await link.ask(request, body, self._connect, REQUEST_TIMEOUT_S)
        if body and link.budget is not None:
            link.budget.spend(len(body), self._today())
            state = link.budget.state.to_dict()
            await asyncio.to_thread(self._ledger.put_budget, link.config.name, state)
        return response

    def _choose(self, body_bytes: int) -> UplinkLink | None:
        now_s, today = self._clock_s(), self._today()
        usable = [
            link
            for link in self._links.values()
            if link.usable(now_s) and _p0_allows(link, body_bytes, today)
        ]
        usable.sort(key=lambda link: link.config.cost_class is not CostClass.WIFI)
        return usable[0] if usable else None


def _p0_allows(link: UplinkLink, body_bytes: int, today: datetime.date) -> bool:
    if link.budget is None:
        return True
    remaining = link.budget.remaining_bytes(UploadClass.P0, today)
    return remaining is None or remaining >= body_bytes


class AuditShipper:
    """See the module docstring. `poke(now_s)` starts a round when one is due."""

    def __init__(
        self,
        audit: AuditLog,
        alarms: Alarms,
        courier: LinkCourier,
        *,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self._audit = audit
        self._alarms = alarms
        self._courier = courier
        self._interval_s = interval_s
        self.path = audit.path.with_name(POSITION_FILE)
        self._key_text = render_key(audit.public_key())
        self._position: Position | None = None  # None: not known yet (read or asked)
        self._not_before_s = 0.0
        self._wait_is_interval = True  # False while a wait the back office caused holds
        self._now_s = 0.0  # the round's clock, for the waits it sets
        # After asking where the back office stands, one append even with nothing new: it
        # pins the device key there (heads on uploads are judged from then on).
        self._announce = False
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    @property
    def position(self) -> Position | None:
        """What the back office confirmed it holds (None before the first round)."""
        return self._position

    def poke(self, now_s: float) -> None:
        """Start a round unless one runs, the last was too recent, or a wait holds (a round
        that finds nothing new ends at once, off the event loop: the log's lock is held during
        an append's fsync)."""
        if self._task is not None and not self._task.done():
            return
        if now_s < self._not_before_s:
            return
        self._not_before_s = now_s + self._interval_s
        self._wait_is_interval = True
        self._task = asyncio.create_task(self._round(now_s), name="audit-shipping")

    def hurry(self) -> None:
        """The next `poke` starts a round at once, unless the back office asked for the wait
        (a refusal, no route, a fault): after something worth telling it at once."""
        if self._wait_is_interval:
            self._not_before_s = 0.0

    async def wait(self) -> None:
        """Until the running round (if any) has ended."""
        if self._task is not None:
            await asyncio.wait([self._task])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _round(self, now_s: float) -> None:
        self.rounds += 1
        self._now_s = now_s
        try:
            if self._position is None:
                self._position = await asyncio.to_thread(self._load_position)
            if self._position is None and not await self._resync(None):
                return
            for _ in range(MAX_REQUESTS_PER_ROUND):
                if not await self._send_once():
                    return
        except (TransportError, TimeoutError, OSError, AuditLogError) as exc:
            log.info("audit shipping: not now (%s: %s)", type(exc).__name__, exc)
            self._wait(RETRY_S)
        except Exception:
            log.exception("audit shipping round failed")  # a bug must not stop the uplink
            self._wait(RETRY_S)

    async def _send_once(self) -> bool:
        """One append from the position; True when there may be more to send now."""
        position = self._position
        assert position is not None
        head, size = await asyncio.to_thread(self._audit.durable_end)
        if position.head == head and position.end_bytes == size and not self._announce:
            return False
        raw = await asyncio.to_thread(
            self._audit.read_durable, position.end_bytes, MAX_APPEND_BYTES
        )
        body = whole_lines(raw)
        sent, end_bytes = position.head, position.end_bytes
        if body:
            last = split_lines(body)[0][-1]
            sent = AuditHead(seq_of_line(last), _sha256(last))
            end_bytes += len(body)
        signed = await asyncio.to_thread(self._audit.signed_head)  # after the read: never below
        headers = (
            ("Content-Type", CONTENT_TYPE),
            (HEAD_HEADER, signed.render()),
            (KEY_HEADER, self._key_text),
        )
        request = HttpRequest("POST", APPEND_PATH, headers, BodySlice(0, len(body)))
        response = await self._courier.send(request, body)
        if response is None:
            self._not_before_s = self._now_s  # no link may carry it now: ask at the next tick
            return False
        held = _held(response)
        step = step_after(response.status, held, sent)
        if step is Step.ADVANCE:
            self._announce = False
            await self._keep(Position(sent, end_bytes))
            self._alarms.clear(AUDIT_REFUSED_ALARM)
            return True
        if step is Step.RESYNC:
            return await self._resync(held)
        self._after_refusal(step, response)
        return False

    def _wait(self, wait_s: float) -> None:
        """A wait the back office's answer (or a fault) asked for: `hurry` leaves it."""
        self._not_before_s = self._now_s + wait_s
        self._wait_is_interval = False

    def _after_refusal(self, step: Step, response: HttpResponse) -> None:
        if step is Step.REFUSED:
            reason = response.body.decode("utf-8", "replace").strip()[:200]
            log.error("audit shipping: the back office refuses this box's audit log: %s", reason)
            self._alarms.raise_(
                AUDIT_REFUSED_ALARM,
                "the back office refuses this box's audit log (it does not extend what the "
                "back office holds): tell the fleet admin",
                sticky=True,
            )
            self._wait(REFUSED_RECHECK_S)
        elif step is Step.NO_ROUTE:
            log.info(
                "audit shipping: the back office has no audit route (HTTP %d)", response.status
            )
            self._wait(NO_ROUTE_RECHECK_S)
        elif step is Step.RETRY:
            # The back office's one-line reason, bounded: a 400 names what it could not read.
            reason = response.body.decode("utf-8", "replace").strip()[:200]
            log.info("audit shipping: HTTP %d, trying again later: %r", response.status, reason)
            self._wait(RETRY_S)
        # WITHDRAWN: the uplink's credentials guard stops every request until a re-pair.

    async def _resync(self, held: AuditHead | None) -> bool:
        """Take the back office's head as the position, found in the local log; True when a
        position is known afterwards. When the local log does not hold that entry (it is
        shorter, or has another entry there), the position is the local one that sends what
        the box has: the back office then judges it (and refuses a rewrite or truncation)."""
        if held is None:
            response = await self._courier.send(HttpRequest("GET", HEAD_PATH), None)
            if response is None:
                self._not_before_s = self._now_s  # no link yet: ask at the next tick
                return False
            held = _held(response)
            if held is None:
                if response.status in NO_ROUTE:
                    self._wait(NO_ROUTE_RECHECK_S)
                return False
        position = await asyncio.to_thread(self._locate, held)
        await self._keep(position)
        self._announce = True
        return True

    def _locate(self, held: AuditHead) -> Position:
        """The local position of `held` (blocking: reads the log from the start)."""
        if held.seq < 0:
            return Position.start()
        _local_head, size = self._audit.durable_end()
        offset = 0
        while offset < size:
            piece = whole_lines(self._audit.read_durable(offset, SCAN_PIECE_BYTES))
            if not piece:
                break
            found = find_entry(split_lines(piece)[0], offset, held.seq)
            if found is not None:
                end_bytes, sha256_hex = found
                if sha256_hex != held.sha256_hex:
                    log.warning("audit shipping: entry %d differs from the back office's", held.seq)
                return Position(AuditHead(held.seq, sha256_hex), end_bytes)
            offset += len(piece)
        log.warning("audit shipping: the local log ends before entry %d", held.seq)
        local, size = self._audit.durable_end()
        return Position(local, size)  # a head-only append: the back office judges it

    def _load_position(self) -> Position | None:
        """The saved position, if it still describes the local log (blocking)."""
        try:
            position = Position.from_json(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, PositionUnreadable) as exc:
            log.warning("%s unreadable, asking the back office: %s", self.path, exc)
            return None
        if position.head.seq < 0:
            return position if position.end_bytes == 0 else None
        start = max(0, position.end_bytes - MAX_APPEND_BYTES)
        try:
            window = self._audit.read_durable(start, position.end_bytes - start)
        except AuditLogError:
            return None  # the local log is shorter than the position
        lines = split_lines(window)[0] if window.endswith(b"\n") else []
        if not lines or _sha256(lines[-1]) != position.head.sha256_hex:
            log.warning("%s does not match the local log, asking the back office", self.path)
            return None
        return position

    async def _keep(self, position: Position) -> None:
        """The position, durable before the next request (a power cut re-sends, harmlessly)."""
        await asyncio.to_thread(atomic_write_text, self.path, position.to_json(), mode=0o600)
        self._position = position


def _held(response: HttpResponse) -> AuditHead | None:
    try:
        return parse_held(response.headers.get(HELD_HEADER.lower()))
    except AppendRefused:
        return None


def _sha256(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()
