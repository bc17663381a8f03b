"""The box's health reports to the back office (docs/fleet-health.md): the shell.

Every `look_s` the box builds its report from the status facts (gateway/health.py, pure); it
sends it at once when something that matters changed (an alarm, the serial, the queue, the
card...) and otherwise every `interval_s`, over the pinned mutual-TLS link of the fleet sync's
back office (followed across a re-pair; nothing is sent while unpaired), signed with the device
key. A report that does not get through is not queued: the next look sends the box's state as it
is then, which is all the fleet admin needs. Nothing here can stop recording.

The answer that takes a report may ask the box to check its fleet configuration now
(`Mvb-Fleet-Check: now`, the admin's `mvb-admin config check-now`): `on_check_now` is called
(the fleet sync's `check_soon`). It comes only in an answer of the pinned back office over
mutual TLS, and asks for nothing but an early poll, whose download TUF verifies as always.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from tuf.api.exceptions import DownloadError

from config.fleet_fetch import FleetLink
from gateway.health import health_of
from gateway.status_facts import StatusInputs
from protocol.health_report import (
    CHECK_NOW_HEADER,
    CHECK_NOW_VALUE,
    HEALTH_PATH,
    Health,
    signed_message,
    wire,
)
from transport.connect import BackOffice
from transport.errors import TransportError

log = logging.getLogger(__name__)

INTERVAL_S: Final = 300.0
"""A report at least this often: the fleet admin's "stale" is a few intervals."""
LOOK_S: Final = 15.0
"""How soon a change (an alarm raised) reaches the back office, at most."""


class HealthReporter:
    def __init__(
        self,
        *,
        box_id: str,
        sign: Callable[[bytes], bytes],
        gather: Callable[[], Awaitable[StatusInputs]],
        back_office: Callable[[], BackOffice | None],
        interval_s: float = INTERVAL_S,
        look_s: float = LOOK_S,
        clock_s: Callable[[], float] = time.monotonic,
        on_check_now: Callable[[], None] | None = None,
    ) -> None:
        self.box_id = box_id
        self.interval_s = interval_s
        self.look_s = look_s
        self.sent: Health | None = None
        self._sign = sign
        self._gather = gather
        self._back_office = back_office
        self._clock_s = clock_s
        self._on_check_now = on_check_now
        self._sent_at_s = 0.0

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except Exception:
                log.exception("health report round failed")  # the next look tries again
            await asyncio.sleep(self.look_s)

    async def round(self) -> bool:
        """One look: send when due. True when the back office took a report."""
        health = health_of(await self._gather())
        due = health.changed_from(self.sent) or (
            self._clock_s() - self._sent_at_s >= self.interval_s
        )
        office = self._back_office()
        if not due or office is None:
            return False
        body = wire(health, self._sign(signed_message(self.box_id, health.body())))
        try:
            link = await FleetLink.connect(office.host, office.https_port, office.tls)
            try:
                status, headers = await link.post_json_answer(HEALTH_PATH, body)
            finally:
                await link.aclose()
        except (DownloadError, TransportError) as exc:
            log.info("health report not delivered: %s", type(exc).__name__)
            return False
        if status != 204:
            # Refused (400), not served (404), no enrolled key (409): try again at the interval,
            # not at every look.
            log.warning("the back office did not take the health report: HTTP %d", status)
        self.sent, self._sent_at_s = health, self._clock_s()
        if status == 204 and headers.get(CHECK_NOW_HEADER.lower()) == CHECK_NOW_VALUE:
            log.info("the back office asks for a fleet configuration check now")
            if self._on_check_now is not None:
                self._on_check_now()
        return status == 204
