"""The box's alarms, owned in one place: what a person must know of now.

An alarm is a code (`card_full`, `camera_dashcam`, `uplink_pin_lte`, `fleet_config` ...) and a
message in plain English. Every part of the box raises and clears its alarms through the one
`Alarms` object the box opens at start (gateway/box.py); the status document shows what is raised
and the officer's page turns codes into alerts.

Invariants:
- An alarm is audited once per episode: `alarm.raised` when it goes up, `alarm.cleared` when it
  goes down. Raising a raised alarm only replaces its message (a blocked upload may say more the
  second time); it is not audited again.
- Callers never block: raising and clearing change memory under a lock and return; the audit
  entry and the saved file are written in the order of the changes on the object's own writer
  thread. `flush()` waits for them; `close()` flushes and stops the writer. A failed write is
  logged and the alarm stays raised in memory (an alarm must never be lost to the disk that
  caused it).
- `sticky` alarms survive a restart: every change rewrites `alarms.json` in the state directory
  durably (tmp, fsync, rename, fsync dir), and `load` brings the sticky ones back, in the same
  episode (no new `alarm.raised`). The others describe conditions the box re-detects after a
  restart, so they start cleared.
- The message is for a person on the box's own page; the audit log gets the code only.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from common.durable import atomic_write_bytes

log = logging.getLogger(__name__)

ALARMS_FILE = "alarms.json"
MAX_MESSAGE_CHARS = 300  # the status document stays small whatever a caller passes
FORMAT_VERSION = 1


class AuditSink(Protocol):
    """The audit log's append (storage/audit_io.py): durable when it returns."""

    def __call__(self, event: str, /, **fields: str | bool) -> object: ...


@dataclass(frozen=True, slots=True)
class Alarm:
    message: str
    sticky: bool


class Alarms:
    """The raised alarms of one box. Thread-safe: the event loop and worker threads (a card full
    mid-write) raise and clear alike."""

    def __init__(self, path: Path | None = None, audit: AuditSink | None = None) -> None:
        """`path`: where sticky alarms are kept (None: nowhere, e.g. a tool or a test);
        `audit`: where episodes are recorded (None: nowhere)."""
        self._path = path
        self._audit = audit
        self._raised: dict[str, Alarm] = {}
        self._lock = threading.Lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="alarms")
        self._pending: list[Future[None]] = []

    @classmethod
    def load(cls, state_dir: Path, audit: AuditSink | None) -> Alarms:
        """The box's alarms with the sticky ones of the last run raised again (an unreadable
        file is logged and read as none: the owners raise again what still holds)."""
        alarms = cls(state_dir / ALARMS_FILE, audit)
        try:
            alarms._raised = _parse(alarms._stored_bytes())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable, no alarms carried over: %s", ALARMS_FILE, exc)
        return alarms

    def _stored_bytes(self) -> bytes:
        assert self._path is not None
        return self._path.read_bytes()

    # -- changes ------------------------------------------------------------------------------

    def raise_(self, code: str, message: str, *, sticky: bool = False) -> None:
        alarm = Alarm(message[:MAX_MESSAGE_CHARS], sticky)
        with self._lock:
            before = self._raised.get(code)
            self._raised[code] = alarm
            if before == alarm:
                return
            event = "alarm.raised" if before is None else None
            sticky_changed = alarm.sticky or (before is not None and before.sticky)
            self._submit(self._write_job(event, code, sticky_changed))

    def clear(self, code: str) -> None:
        with self._lock:
            before = self._raised.pop(code, None)
            if before is None:
                return
            self._submit(self._write_job("alarm.cleared", code, before.sticky))

    # -- reading ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, str]:
        """Every raised alarm's message by code (a copy)."""
        with self._lock:
            return {code: alarm.message for code, alarm in self._raised.items()}

    def get(self, code: str, default: str | None = None) -> str | None:
        with self._lock:
            alarm = self._raised.get(code)
        return default if alarm is None else alarm.message

    def __getitem__(self, code: str) -> str:
        message = self.get(code)
        if message is None:
            raise KeyError(code)
        return message

    def __contains__(self, code: object) -> bool:
        with self._lock:
            return code in self._raised

    def __len__(self) -> int:
        with self._lock:
            return len(self._raised)

    def codes(self) -> list[str]:
        with self._lock:
            return sorted(self._raised)

    # -- the writer ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Wait until every change made so far is audited and saved."""
        with self._lock:
            pending, self._pending = self._pending, []
        for job in pending:
            job.result()

    def close(self) -> None:
        self.flush()
        self._writer.shutdown(wait=True)

    def _submit(self, job: Callable[[], None]) -> None:
        """Called under the lock, so jobs queue in the order of the changes."""
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._writer.submit(job))

    def _write_job(self, event: str | None, code: str, sticky_changed: bool) -> Callable[[], None]:
        """The job for one change, made under the lock: it carries the sticky set as it is
        now, so the file written last is the set after the last change."""
        stored = _render({c: a for c, a in self._raised.items() if a.sticky})
        save = sticky_changed and self._path is not None

        def job() -> None:
            try:
                if event is not None and self._audit is not None:
                    self._audit(event, code=code)
                if save:
                    assert self._path is not None
                    atomic_write_bytes(self._path, stored)
            except Exception:  # the writer must not die: the next change tries again
                log.exception("alarm %s: the audit entry or the alarms file was not written", code)

        return job


def _render(sticky: dict[str, Alarm]) -> bytes:
    alarms = {code: alarm.message for code, alarm in sorted(sticky.items())}
    return json.dumps({"version": FORMAT_VERSION, "sticky": alarms}, sort_keys=True).encode()


def _parse(raw: bytes) -> dict[str, Alarm]:
    """The sticky alarms of `raw` (ValueError unless it is what `_render` wrote)."""
    document = json.loads(raw)
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise ValueError("not an alarms file of this version")
    sticky = document.get("sticky")
    if not isinstance(sticky, dict) or not all(
        isinstance(code, str) and isinstance(message, str) for code, message in sticky.items()
    ):
        raise ValueError("the sticky alarms are not codes and messages")
    return {code: Alarm(message[:MAX_MESSAGE_CHARS], True) for code, message in sticky.items()}
