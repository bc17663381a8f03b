"""The shell of gateway/capture/ingest_ledger.py: a camera's refusals and admissions become audit
entries and its `camera_refused_<camera>` alarm.

Called from the camera's own source thread only (an audit append fsyncs: never on the event
loop). A failing audit write is logged and the source goes on: refusing senders must not depend
on the card being writable, and the alarm still goes up (common/alarms.py never blocks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from common.faults import StorageFault
from gateway.capture.ingest_ledger import Decisions, IngestLedger, alarm_code

log = logging.getLogger(__name__)


class AlarmPanel(Protocol):
    """The part of the box's Alarms (common/alarms.py) a camera uses."""

    def raise_(self, code: str, message: str, *, sticky: bool = False) -> None: ...

    def clear(self, code: str) -> None: ...


AuditAppend = Callable[..., object]  # storage/audit_io.py AuditLog.append(event, **fields)


class IngestReport:
    """One camera's ingest outcomes, carried out. Without `alarms` and `audit` (a capture test,
    a tool) it only counts."""

    def __init__(
        self,
        camera: str,
        *,
        alarms: AlarmPanel | None = None,
        audit: AuditAppend | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        ledger: IngestLedger | None = None,
    ) -> None:
        self.camera = camera
        self.ledger = ledger or IngestLedger(camera)
        self._alarms = alarms
        self._audit = audit
        self._clock_ns = clock_ns

    @property
    def refused_total(self) -> int:
        return self.ledger.refused_total

    def refused(self, reason: str, peer: str) -> None:
        log.warning("camera %s: refused a sender from %s (%s)", self.camera, peer, reason)
        self._carry_out(self.ledger.refused(self._clock_ns(), reason, peer))

    def admitted(self, method: str, peer: str) -> None:
        self._carry_out(self.ledger.admitted(self._clock_ns(), method, peer))

    def tick(self) -> None:
        self._carry_out(self.ledger.tick(self._clock_ns()))

    def flush(self) -> None:
        self._carry_out(self.ledger.flush())

    def _carry_out(self, decisions: Decisions) -> None:
        if self._alarms is not None:
            if decisions.alarm_message is not None:
                self._alarms.raise_(alarm_code(self.camera), decisions.alarm_message)
            if decisions.clear_alarm:
                self._alarms.clear(alarm_code(self.camera))
        if self._audit is None:
            return
        for note in decisions.audits:
            try:
                self._audit(note.event, **note.fields)
            except (OSError, ValueError, StorageFault) as exc:
                log.error("camera %s: %s not audited: %s", self.camera, note.event, exc)
