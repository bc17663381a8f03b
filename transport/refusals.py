"""What a fault means for the file, the link and the back office: the uplink's pure policy.

The tus session names each refusal by its kind (transport/errors.py, docs/tus-profile.md 7);
this module decides what the uplink does about it, and for how long. No I/O, no clock: the
shell (transport/uplink.py) passes `now_s` (monotonic) and keeps the `Wait`s it gets back.

| fault | verdict | who waits |
|---|---|---|
| cut, reset, stall, timeout | LINK_RETRY | the file; the link's health counts it |
| 429, 5xx (ServerError) | SERVER_PAUSE | every upload, at least Retry-After |
| 408, 413, 423 (ServerError) | FILE_WAIT | the file, at least Retry-After |
| another 4xx; Tus-Max-Size below the file | FILE_WAIT | the file, long (REJECTED_BACKOFF) |
| 401, 403 (CredentialsWithdrawn) | WITHDRAWN | every upload, until new credentials |
| HostileServer, IntegrityError | BLOCK_FILE | the file, until a person releases it |
| PinMismatch | BLOCK_LINK | the link, until the service restarts |

Invariants:
- only integrity (HostileServer, IntegrityError) blocks a file; every other fault ends in a wait
  that ends by itself;
- a wait is never shorter than the server's Retry-After (capped at RETRY_AFTER_MAX_S, so a
  hostile server cannot silence the box for ever) nor longer than its backoff's `max_s` unless
  Retry-After says so;
- consecutive failures double the wait, from `initial_s` up to `max_s`; a success forgets them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from transport.errors import (
    CredentialsWithdrawn,
    HostileServer,
    IntegrityError,
    PinMismatch,
    ServerError,
    TransientNetworkError,
    UploadRejected,
)

RETRY_AFTER_MAX_S: Final = 3600.0
"""The longest Retry-After the box honours: beyond it, a server's hint is read as this."""
LONG_WAIT_MAX_S: Final = 3600.0
"""The longest a transient fault makes a file (or the back office) wait between tries."""
WITHDRAWN_RECHECK_S: Final = 3600.0
"""With credentials withdrawn, the box asks the back office again (one OPTIONS) this often, in
case the refusal was the back office's mistake; new credentials end the wait at once."""
CREDENTIALS_CHECK_S: Final = 5.0
"""With credentials withdrawn, how often the box looks whether its credentials files changed."""


class Verdict(enum.Enum):
    LINK_RETRY = "link_retry"
    SERVER_PAUSE = "server_pause"
    FILE_WAIT = "file_wait"
    WITHDRAWN = "withdrawn"
    BLOCK_FILE = "block_file"
    BLOCK_LINK = "block_link"


SERVER_WIDE_STATUSES: Final = frozenset({429})
"""ServerError statuses (besides every 5xx) that pause the whole back office, not one file."""


def verdict_of(fault: BaseException) -> Verdict:
    """The verdict for a fault an upload ended with (see the table in the module docstring);
    anything unknown (a bug, a card read error) is a LINK_RETRY-like wait of the file alone:
    FILE_WAIT."""
    match fault:
        case PinMismatch():
            return Verdict.BLOCK_LINK
        case HostileServer() | IntegrityError():
            return Verdict.BLOCK_FILE
        case CredentialsWithdrawn():
            return Verdict.WITHDRAWN
        case ServerError() if fault.status in SERVER_WIDE_STATUSES or fault.status >= 500:
            return Verdict.SERVER_PAUSE
        case TransientNetworkError():
            return Verdict.LINK_RETRY
    return Verdict.FILE_WAIT


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: `initial_s` after the first failure, doubling, at most `max_s`."""

    initial_s: float
    max_s: float

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError("a backoff needs 0 < initial_s <= max_s")

    def delay_s(self, failures: int, retry_after_s: float | None = None) -> float:
        """The wait after `failures` (>= 1) failures in a row, never below Retry-After."""
        exponent = min(max(failures, 1) - 1, 32)  # 2**32 * any initial is past every max
        delay_s = min(self.max_s, self.initial_s * 2.0**exponent)
        if retry_after_s is not None and retry_after_s > 0:
            delay_s = max(delay_s, min(retry_after_s, RETRY_AFTER_MAX_S))
        return delay_s


REJECTED_BACKOFF: Final = Backoff(600.0, 6 * 3600.0)
"""UploadRejected: the same request gets the same answer for a while; ask rarely."""
UNATTESTED_BACKOFF: Final = Backoff(600.0, 24 * 3600.0)
"""A file a server completed without attesting is asked about again (HEAD) on this backoff."""


def transient_backoff(retry_max_s: float) -> Backoff:
    """Between assignments of a file that failed transiently: the configured `retry_max_s`
    first (the per-assignment retries already took their shorter steps), up to an hour."""
    return Backoff(retry_max_s, max(retry_max_s, LONG_WAIT_MAX_S))


@dataclass(frozen=True, slots=True)
class Wait:
    """Why a file (or every upload) waits, until when (monotonic s), and after how many
    failures in a row."""

    until_s: float
    reason: str
    failures: int = 1

    def active(self, now_s: float) -> bool:
        return self.until_s > now_s


def next_wait(
    previous: Wait | None, fault: BaseException, now_s: float, retry_max_s: float
) -> Wait:
    """The wait after `fault`, one failure more than `previous`."""
    failures = 1 if previous is None else previous.failures + 1
    backoff = REJECTED_BACKOFF if isinstance(fault, UploadRejected) else None
    backoff = backoff or transient_backoff(retry_max_s)
    retry_after_s = fault.retry_after_s if isinstance(fault, ServerError) else None
    return Wait(now_s + backoff.delay_s(failures, retry_after_s), reason_of(fault), failures)


def reason_of(fault: BaseException) -> str:
    """Why, in plain English, for `mvb uploads` and the status page (no server-sent text beyond
    the bounded messages the session builds)."""
    match fault:
        case CredentialsWithdrawn():
            return f"the back office refuses this box's certificate ({fault.status})"
        case ServerError() if fault.status == 429:
            return "the back office asks the box to slow down (429)"
        case ServerError() if fault.status == 408:
            return "the back office timed the request out (408)"
        case ServerError() if fault.status == 413:
            return "the back office refused the chunk size (413)"
        case ServerError() if fault.status == 423:
            return "the back office is busy with this upload (423)"
        case ServerError():
            return f"the back office is failing ({fault.status})"
        case UploadRejected():
            return f"the back office refused the upload: {fault}"
        case TransientNetworkError():
            return f"the connection failed: {fault}"[:200]
        case HostileServer():
            return f"the back office broke the protocol: {fault}"[:300]
        case IntegrityError():
            return f"the back office holds other bytes: {fault}"[:300]
    return f"the upload failed ({type(fault).__name__})"


class Rechecks:
    """When to ask again (HEAD) about files a server completed without attesting (pure).

    Invariants: a file has an entry from its unattested completion until it is attested,
    blocked, released or re-uploaded (`forget`); a back office that starts attesting (its
    OPTIONS says so, where the last one did not or nothing was known) makes every entry due at
    once."""

    def __init__(self) -> None:
        self._due: dict[str, Wait] = {}
        self._attesting: bool | None = None

    def get(self, file_id: str) -> Wait | None:
        return self._due.get(file_id)

    def unattested(self, file_id: str, now_s: float, note: str) -> bool:
        """The server completed `file_id` without attesting (again); True the first time."""
        previous = self._due.get(file_id)
        failures = 1 if previous is None else previous.failures + 1
        self._due[file_id] = Wait(now_s + UNATTESTED_BACKOFF.delay_s(failures), note, failures)
        return previous is None

    def forget(self, file_id: str) -> Wait | None:
        return self._due.pop(file_id, None)

    def server_attests(self, attests: bool) -> bool:
        """What the back office's OPTIONS said; True when that made every entry due now."""
        due_now = attests and self._attesting is not True and bool(self._due)
        if due_now:
            self._due.clear()
        self._attesting = attests
        return due_now
