"""The shell of trusted time (storage/trusted_time.py): the clocks it reads, the file it keeps,
the alarm and audit entries it writes.

- The boot's identity is /proc/sys/kernel/random/boot_id (new at every boot, so after a power
  cut); the monotonic clock is CLOCK_BOOTTIME (ms since that boot, suspend included, never
  stepped by anyone). A state saved in another boot keeps only its floor.
- `trusted_time.json` in the state directory holds the anchors of this boot and the floor, so a
  restarted service (same boot) keeps its trusted time. Written through common/durable.py, and
  only by the service (`save`): a command (`mvb retention`) reads it and never writes it back.
- A conflict between sources raises the `time_conflict` alarm (cleared when they agree again);
  the first anchor of each source in a boot and each new conflict are audited. Callers never
  block: audit entries are appended on the object's own writer thread.

Thread-safe: the event loop feeds anchors (GPS watcher, the uplink's probe) while the store reads
trusted time on worker threads.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.alarms import Alarms
from common.durable import atomic_write_text
from storage.trusted_time import (
    Anchor,
    CreatedTime,
    Reading,
    TimeSource,
    TrustedNow,
    TrustedState,
    Verdict,
    advance_floor,
    back_office_anchor,
    created_now,
    gps_anchor,
    observe,
    state_from_json,
    state_to_json,
    trusted_now,
)

log = logging.getLogger(__name__)

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
STATE_FILE = "trusted_time.json"
CONFLICT_ALARM = "time_conflict"
NS_PER_MS = 1_000_000

AuditAppend = Callable[..., object]
"""The audit log's append (storage/audit_io.py AuditLog.append): durable when it returns."""


def boottime_ms() -> int:
    """This boot's monotonic clock, suspend included (CLOCK_BOOTTIME), in ms."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // NS_PER_MS


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    """The kernel's id of this boot. Unreadable (not Linux): an id of this process alone, so
    that nothing of its monotonic clock is ever carried to another process."""
    try:
        boot_id = path.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("boot id unreadable (%s): trusted time will not outlive this process", exc)
        return f"process-{uuid.uuid4()}"
    return boot_id or f"process-{uuid.uuid4()}"


def _wall_ms() -> int:
    return time.time_ns() // NS_PER_MS


class TrustedClock:
    """The box's trusted time. Create with `TrustedClock.open`."""

    def __init__(
        self,
        state: TrustedState,
        *,
        path: Path | None = None,
        mono_ms: Callable[[], int] = boottime_ms,
        wall_ms: Callable[[], int] = _wall_ms,
        alarms: Alarms | None = None,
        audit: AuditAppend | None = None,
    ) -> None:
        self._state = state
        self._path = path
        self._mono_ms = mono_ms
        self._wall_ms = wall_ms  # only to tell the audit log how far off the wall clock is
        self._alarms = alarms
        self._audit = audit
        self._lock = threading.Lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="trusted-time")
        self.needs_save = False
        """A change worth writing at once: a source's first anchor in this boot, a conflict
        that begins or ends (the GPS watcher saves within seconds)."""
        self._dirty = False

    @classmethod
    def open(
        cls,
        state_dir: Path | None,
        *,
        boot_id: str | None = None,
        mono_ms: Callable[[], int] = boottime_ms,
        wall_ms: Callable[[], int] = _wall_ms,
        alarms: Alarms | None = None,
        audit: AuditAppend | None = None,
    ) -> TrustedClock:
        """The trusted time kept in `state_dir` (None: kept nowhere, e.g. a test), carried into
        this boot. An unreadable file is logged and read as nothing known (the safe side:
        retention then deletes less, never more)."""
        boot = read_boot_id() if boot_id is None else boot_id
        state = TrustedState(boot)
        path = None if state_dir is None else state_dir / STATE_FILE
        if path is not None:
            try:
                state = state_from_json(path.read_text("utf-8")).for_boot(boot)
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as exc:
                log.warning("%s unreadable, trusted time starts unknown: %s", STATE_FILE, exc)
        clock = cls(state, path=path, mono_ms=mono_ms, wall_ms=wall_ms, alarms=alarms, audit=audit)
        if state.conflict_ms is not None and alarms is not None:
            alarms.raise_(CONFLICT_ALARM, _conflict_message(None, state.conflict_ms))
        return clock

    # -- reading ----------------------------------------------------------------------------------

    def reading(self) -> Reading:
        return Reading(self._state.boot_id, self._mono_ms())

    @property
    def state(self) -> TrustedState:
        with self._lock:
            return self._state

    def snapshot(self) -> tuple[TrustedState, TrustedNow]:
        """The state and trusted time now, taken together (a retention pass judges on both)."""
        with self._lock:
            return self._state, trusted_now(self._state, self.reading())

    def now(self) -> TrustedNow:
        return self.snapshot()[1]

    def stamp(self) -> tuple[Reading, CreatedTime | None]:
        """For a file created now: this boot's reading and, if known, its trusted time."""
        with self._lock:
            reading = self.reading()
            return reading, created_now(self._state, reading)

    # -- anchors ----------------------------------------------------------------------------------

    def observe(self, anchor: Anchor) -> Verdict:
        with self._lock:
            before = self._state
            self._state, verdict = observe(before, anchor)
            after = self._state
            self._dirty = self._dirty or after != before
        first = _anchor_of(before, anchor.source) is None and _anchor_of(after, anchor.source)
        if first:
            # The first of its source in this boot (the back office's may also correct GPS).
            self._audit_later("time.anchored", **self._anchored_fields(anchor))
        if after.conflict_ms is not None:
            message = _conflict_message(anchor.source, after.conflict_ms)
            if self._alarms is not None:
                self._alarms.raise_(CONFLICT_ALARM, message)  # its figure follows the latest
            if before.conflict_ms is None:  # a new episode: once, not at every refused fix
                log.warning("trusted time: %s", message)
                self._audit_later(
                    "time.conflict",
                    source=anchor.source.value,
                    verdict=verdict.value,
                    apart_s=round(after.conflict_ms / 1000),
                )
        elif self._alarms is not None:
            self._alarms.clear(CONFLICT_ALARM)
        if first or (before.conflict_ms is None) != (after.conflict_ms is None):
            self.needs_save = True  # worth a write now; a mere refresh waits for the next pass
        return verdict

    def observe_gps(self, gps_time_ms: int, received_mono_ms: int) -> Verdict:
        """A GPS fix's time, received when this boot's clock read `received_mono_ms`."""
        reading = Reading(self._state.boot_id, received_mono_ms)
        return self.observe(gps_anchor(gps_time_ms, reading))

    def observe_server_date(self, date: str | None, rtt_s: float) -> None:
        """The back office's `Date`, read over the pinned link just now, `rtt_s` after the
        request left. Never raises: it is called from the uplink's probe."""
        try:
            anchor = back_office_anchor(date, self.reading(), max(0, round(rtt_s * 1000)))
            if anchor is not None:
                self.observe(anchor)
        except Exception:  # the uplink must never fail for trusted time
            log.exception("trusted time: the back office's Date was not taken")

    def passed(self, now: TrustedNow) -> None:
        """A retention pass judged at `now`: what it proved becomes the floor."""
        with self._lock:
            before = self._state
            self._state = advance_floor(before, now)
            self._dirty = self._dirty or self._state != before

    @property
    def dirty(self) -> bool:
        """Anything changed since the last save (a GPS refresh, the floor): saved by the
        retention timer at its pace, never at the pace of fixes (the card wears)."""
        return self._dirty or self.needs_save

    # -- keeping it -------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the state durably (blocks on fsync: call it off the event loop)."""
        with self._lock:
            text = state_to_json(self._state)
            self.needs_save = self._dirty = False
        if self._path is not None:  # kept nowhere (a test, a tool): nothing to write
            atomic_write_text(self._path, text)

    def close(self) -> None:
        """Wait for the audit entries on their way; the object is not used afterwards."""
        self._writer.shutdown(wait=True)

    def _audit_later(self, event: str, **fields: str | int | bool) -> None:
        audit = self._audit
        if audit is None:
            return

        def job() -> None:
            try:
                audit(event, **fields)
            except Exception:  # the writer must not die; the alarm (if any) still shows it
                log.exception("trusted time: audit entry %s not written", event)

        self._writer.submit(job)

    def _anchored_fields(self, anchor: Anchor) -> dict[str, str | int | bool]:
        middle_ms = (anchor.wall.low_ms + anchor.wall.high_ms) // 2
        return {
            "source": anchor.source.value,
            "doubt_ms": anchor.wall.width_ms,
            # How far off the wall clock was: a box with a dead RTC battery shows it here.
            "wall_clock_off_s": round((self._wall_ms() - middle_ms) / 1000),
        }


def _anchor_of(state: TrustedState, source: TimeSource) -> Anchor | None:
    return state.gps if source is TimeSource.GPS else state.back_office


def _conflict_message(source: TimeSource | None, apart_ms: int) -> str:
    apart_s = round(apart_ms / 1000)
    if source is TimeSource.BACK_OFFICE:
        return (
            f"GPS time and the back office's time disagree by {apart_s} s; "
            "the back office's time is used"
        )
    if source is TimeSource.GPS:
        return (
            f"GPS time is {apart_s} s away from the time the box trusts; that GPS time is ignored"
        )
    return f"the time sources disagreed by {apart_s} s in this boot"
