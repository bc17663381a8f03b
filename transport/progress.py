"""Whether a request is stuck: progress decides, not silence. Pure: no clock, socket or asyncio.

A request with a body is alive while its bytes move: the socket accepts more of them, or the peer
acknowledges more of what the socket still holds. Its answer is awaited only once every body
byte has been handed over and acknowledged. So a slow link (4 MiB at 200 kbit/s takes almost
three minutes) is never taken for a dead one, and a dead link is found within `stall_timeout_s`
whatever the size of the chunk. The shell (transport/progress_io.py) samples the counters of one
request (`Progress`) and ends the request when `verdict()` gives a reason.

    phase     | the request is cut (a transient fault) when               | moves on when
    ----------+-----------------------------------------------------------+----------------------
    SENDING   | no body byte was accepted or acknowledged for             | every body byte is
              | stall_timeout_s (the start counts as progress, plus       | handed over and
              | `setup_allowance_s` for a connection still to open); or   | acknowledged, or a
              | the body, after a grace of request_timeout_s, averages    | response byte came
              | under MIN_SEND_RATE_BYTES_PER_S                           | (early): ANSWERING
    ANSWERING | no response byte for read_timeout_s (from the body's end, | the shell stops
              | then from the last byte); or the answer takes longer than | watching once the
              | request_timeout_s from the body's end                     | answer is read

A request without a body starts in ANSWERING, its body's end being its start plus the setup
allowance. Where the socket cannot tell what the peer acknowledged (`unacked_bytes` None), the
body ends when its last byte is handed over.

Invariants:
- `verdict(now_s)` is None exactly while `now_s < deadline_s`; the deadline is a pure function of
  the observations so far.
- Progress seen in an observation counts, even just past the deadline: the shell samples at the
  deadline, so a byte that moved since its last sample is never mistaken for a stall. It counts
  at the time the source says the body last moved (`Progress.moved_at_s`: the socket's last ACK),
  else at the observation's time. Dated, a stall is found `stall_timeout_s` after the last ACK
  however seldom the shell samples; undated, up to one sampling period later.
- Every phase is bounded: SENDING by its stall timer and by the minimum average rate, ANSWERING
  by request_timeout_s. A peer cannot hold a request forever by trickling.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

DEFAULT_CONNECT_TIMEOUT_S: Final = 15.0
DEFAULT_STALL_TIMEOUT_S: Final = 20.0
"""Below the reference back office's own 30 s body idle timeout, so the box gives up first; above
what TCP's retransmission backoff needs to recover from a radio gap of a few seconds."""
DEFAULT_READ_TIMEOUT_S: Final = 15.0
DEFAULT_REQUEST_TIMEOUT_S: Final = 120.0
MIN_SEND_RATE_BYTES_PER_S: Final = 1024.0
"""8 kbit/s: under any link the box uploads over (the reference back office holds bodies to the
same floor). Only a peer that trickles a byte now and then to dodge the stall timer falls under
it."""


@dataclass(frozen=True, slots=True)
class RequestTimeouts:
    """The time bounds of one request (module docstring). Every value must be > 0 (ValueError).

    `connect_timeout_s`: a new connection (TCP, TLS, pin check) must be up within it.
    `stall_timeout_s`: while the body is sent, the longest time without any byte moving.
    `read_timeout_s`: the longest silence of the answer, from the body's end.
    `request_timeout_s`: the whole answer, from the body's end to its last byte.
    """

    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S

    def __post_init__(self) -> None:
        for name in ("connect_timeout_s", "stall_timeout_s", "read_timeout_s", "request_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a number > 0, not {value!r}")


@dataclass(frozen=True, slots=True)
class Progress:
    """What the shell sees of one request at one moment. Counters only grow, except
    `unacked_bytes`, which rises as bytes are handed over and falls as the peer acknowledges.

    `handed_bytes`: body bytes the connection accepted. `unacked_bytes`: bytes it holds that the
    peer has not acknowledged yet (its buffers and the kernel's send queue; None where it cannot
    tell). `response_bytes`: response bytes read so far (a head counts once it is parsed).
    `moved_at_s`: when the counters last moved, as the source knows it (HTTPS: the latest of
    the last handover, the socket's last ACK and the answer's last byte), on the watch's clock;
    None where it cannot tell (the observation's own time is taken). A source gives it only if
    it is never earlier than the last real movement (an ACK that acknowledged nothing new may
    make it later, never earlier): so dating by it never cuts a moving request."""

    handed_bytes: int = 0
    unacked_bytes: int | None = None
    response_bytes: int = 0
    moved_at_s: float | None = None


class Phase(enum.StrEnum):
    SENDING = "sending"
    ANSWERING = "answering"


class RequestWatch:
    """The clock of one request; see the module docstring. Feed it `observe()`, ask `verdict()`."""

    def __init__(
        self,
        timeouts: RequestTimeouts,
        body_bytes: int,
        now_s: float,
        *,
        setup_allowance_s: float = 0.0,
    ) -> None:
        if body_bytes < 0 or setup_allowance_s < 0:
            raise ValueError("body_bytes and setup_allowance_s must be >= 0")
        self._timeouts = timeouts
        self._body_bytes = body_bytes
        # The allowance acts as progress made once the connection could at the latest be up.
        ready_s = now_s + setup_allowance_s
        self._send_bound_s = (
            ready_s + timeouts.request_timeout_s + body_bytes / MIN_SEND_RATE_BYTES_PER_S
        )
        self._last = Progress()
        self._last_progress_s = ready_s
        self._phase = Phase.SENDING
        self._answer_from_s = ready_s
        self._last_response_s = ready_s
        if body_bytes == 0:
            self._phase = Phase.ANSWERING

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def last(self) -> Progress:
        """The last observation (for messages and stats)."""
        return self._last

    def observe(self, now_s: float, progress: Progress) -> None:
        """What the shell saw at `now_s`; a change from the last observation is progress, dated
        at `progress.moved_at_s` when the source knows it (at most `now_s`), else at `now_s`."""
        before, self._last = self._last, progress
        moved_s = now_s if progress.moved_at_s is None else min(now_s, progress.moved_at_s)
        if progress.response_bytes > before.response_bytes:
            if self._phase is Phase.SENDING:
                self._answer(moved_s)  # an early answer (a refusal) ends the sending
            self._last_response_s = moved_s
            return
        if self._phase is not Phase.SENDING:
            return
        acknowledged = (
            progress.unacked_bytes is not None
            and before.unacked_bytes is not None
            and progress.unacked_bytes < before.unacked_bytes
        )
        if progress.handed_bytes > before.handed_bytes or acknowledged:
            self._last_progress_s = moved_s  # real progress replaces the setup allowance
        if progress.handed_bytes >= self._body_bytes and not progress.unacked_bytes:
            self._answer(moved_s)  # the body ended when its last byte moved

    @property
    def deadline_s(self) -> float:
        """When the request is cut unless something moves before."""
        timeouts = self._timeouts
        if self._phase is Phase.SENDING:
            return min(self._last_progress_s + timeouts.stall_timeout_s, self._send_bound_s)
        return min(
            self._last_response_s + timeouts.read_timeout_s,
            self._answer_from_s + timeouts.request_timeout_s,
        )

    def verdict(self, now_s: float) -> str | None:
        """None while the request may go on; else why it is cut (for TransientNetworkError)."""
        if now_s < self.deadline_s:
            return None
        timeouts = self._timeouts
        last = self._last
        if self._phase is Phase.SENDING:
            if self._last_progress_s + timeouts.stall_timeout_s <= now_s:
                unacked = "unknown" if last.unacked_bytes is None else str(last.unacked_bytes)
                return (
                    f"stalled: no body byte moved for {timeouts.stall_timeout_s:g} s "
                    f"({last.handed_bytes} of {self._body_bytes} bytes handed over, "
                    f"{unacked} unacknowledged)"
                )
            return (
                f"the body went under {MIN_SEND_RATE_BYTES_PER_S:g} bytes/s "
                f"({last.handed_bytes} of {self._body_bytes} bytes handed over)"
            )
        if self._answer_from_s + timeouts.request_timeout_s <= now_s:
            return f"the answer took longer than {timeouts.request_timeout_s:g} s"
        if last.response_bytes == 0:
            return f"no answer within {timeouts.read_timeout_s:g} s of the request's end"
        return f"the answer stopped for {timeouts.read_timeout_s:g} s"

    def _answer(self, now_s: float) -> None:
        self._phase = Phase.ANSWERING
        self._answer_from_s = now_s
        self._last_response_s = now_s
