"""What the box does about the senders a camera's ingest refused or admitted (pure).

A refused sender (no certificate, another camera's certificate, a wrong password...) is audited
and alarmed; an admitted camera is audited with the way it proved itself. The shell
(gateway/capture/ingest_report.py) carries the decisions out: audit appends and the box's alarm
`camera_refused_<camera>`. Time is the caller's monotonic `now_ns`.

Invariants:
- The first event of a kind (refused for a reason from a peer; admitted by a method from a peer)
  is audited at once; more of the same within `audit_interval_ns` fold into one later entry
  with their `count`, so a flood of connections cannot flood the audit log (each entry is an
  fsync on the card) while every refusal is still counted. `flush` writes what is folded.
- At most MAX_WINDOWS kinds are open at once; beyond that the peer is recorded as `many`.
- The alarm is raised at a refusal and cleared `alarm_hold_ns` after the last one: an attempt
  stays visible to the officer for a while even when the real camera reconnects at once.
- Audit fields are the camera's name, the reason or method, the peer's address and a count:
  nothing secret (no certificate content, no user name, no password).
"""

from __future__ import annotations

from dataclasses import dataclass, field

NS_PER_S = 1_000_000_000
AUDIT_INTERVAL_S = 60.0
ALARM_HOLD_S = 600.0
MAX_WINDOWS = 32
ALARM_PREFIX = "camera_refused_"
REFUSED_EVENT = "camera.refused"
ADMITTED_EVENT = "camera.admitted"
MANY_PEERS = "many"


def alarm_code(camera: str) -> str:
    return ALARM_PREFIX + camera


@dataclass(frozen=True, slots=True)
class AuditNote:
    event: str
    fields: dict[str, str | int]


@dataclass(frozen=True, slots=True)
class Decisions:
    """What to do now: audit these entries (in order); raise the alarm with `alarm_message`
    (None: leave it as it is); clear it (`clear_alarm`)."""

    audits: tuple[AuditNote, ...] = ()
    alarm_message: str | None = None
    clear_alarm: bool = False


@dataclass(slots=True)
class _Window:
    opened_ns: int
    folded: int = 0


@dataclass(slots=True)
class IngestLedger:
    """One camera's refusals and admissions."""

    camera: str
    audit_interval_ns: int = int(AUDIT_INTERVAL_S * NS_PER_S)
    alarm_hold_ns: int = int(ALARM_HOLD_S * NS_PER_S)
    refused_total: int = 0
    last_refused_ns: int | None = None
    _windows: dict[tuple[str, str, str], _Window] = field(default_factory=dict)

    def refused(self, now_ns: int, reason: str, peer: str) -> Decisions:
        audits = list(self._expired(now_ns))
        audits += self._note(now_ns, REFUSED_EVENT, reason, peer)
        self.refused_total += 1
        self.last_refused_ns = now_ns
        message = (
            f"camera {self.camera}: {self.refused_total} sender(s) refused, the last for "
            f"{reason} from {peer}; nothing they sent was recorded"
        )
        return Decisions(tuple(audits), alarm_message=message)

    def admitted(self, now_ns: int, method: str, peer: str) -> Decisions:
        audits = list(self._expired(now_ns))
        audits += self._note(now_ns, ADMITTED_EVENT, method, peer)
        return Decisions(tuple(audits))

    def tick(self, now_ns: int) -> Decisions:
        """Folded entries whose interval ended; the alarm cleared once the hold has passed."""
        audits = tuple(self._expired(now_ns))
        quiet = self.last_refused_ns is not None and (
            now_ns - self.last_refused_ns >= self.alarm_hold_ns
        )
        if quiet:
            self.last_refused_ns = None
        return Decisions(audits, clear_alarm=quiet)

    def flush(self) -> Decisions:
        """Every folded entry now (the source stops)."""
        audits = [self._summary(key, w) for key, w in self._windows.items() if w.folded]
        self._windows.clear()
        return Decisions(tuple(audits))

    def _note(self, now_ns: int, event: str, what: str, peer: str) -> list[AuditNote]:
        key = (event, what, peer)
        if key not in self._windows and len(self._windows) >= MAX_WINDOWS:
            key = (event, what, MANY_PEERS)
        window = self._windows.get(key)
        if window is not None:
            window.folded += 1
            return []
        self._windows[key] = _Window(now_ns)
        return [self._entry(key, 1)]

    def _expired(self, now_ns: int) -> list[AuditNote]:
        ended = [
            key
            for key, window in self._windows.items()
            if now_ns - window.opened_ns >= self.audit_interval_ns
        ]
        notes = [self._summary(k, self._windows[k]) for k in ended if self._windows[k].folded]
        for key in ended:
            del self._windows[key]
        return notes

    def _summary(self, key: tuple[str, str, str], window: _Window) -> AuditNote:
        return self._entry(key, window.folded)

    def _entry(self, key: tuple[str, str, str], count: int) -> AuditNote:
        event, what, peer = key
        label = "reason" if event == REFUSED_EVENT else "method"
        return AuditNote(event, {"camera": self.camera, label: what, "peer": peer, "count": count})
