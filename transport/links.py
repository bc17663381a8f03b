"""Uplinks: what each link is (`LinkConfig`) and whether it may carry uploads now (`LinkHealth`).

PURE: no I/O, no clock, no asyncio. Every observation carries `now_s` (monotonic seconds); the
async shell feeds request outcomes, RTT and transfer samples, and the OS's carrier up/down.

Health is a state machine with hysteresis, so a link at the edge of WiFi range does not flap
between "upload" and "do not upload" on every lost packet:

    state    | event                                   | next    | effect
    ---------+-----------------------------------------+---------+-------------------------------
    UP       | success                                 | UP      | failures in a row := 0
    UP       | failure, fewer than 3 in a row          | UP      | failures in a row += 1
    UP       | 3rd failure in a row                    | DOWN    | flap: new hold-down (below)
    UP       | carrier lost                            | DOWN    | flap: new hold-down (below)
    PROBING  | success (the probe)                     | UP      | up since now
    PROBING  | failure / carrier lost                  | DOWN    | hold-down restarts from now
    DOWN     | failure / carrier lost                  | DOWN    | hold-down restarts from now
    DOWN     | success                                 | DOWN    | RTT and loss only
    DOWN     | (time) carrier up and hold-down passed  | PROBING | the shell sends a probe
    any      | carrier up                              | same    | carrier flag only

Hold-down after a flap: 30 s; doubled when the link goes down again within 10 min of coming up,
up to 10 min; back to 30 s once the link stayed up for 10 min. A failed probe restarts the
hold-down without doubling it (the link never came up, so it did not flap).

A new link starts in PROBING (carrier assumed up until the shell says otherwise): it is not used
for uploads before one probe succeeded. Only UP is usable.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final

from transport.binding import LinkBinding

MAX_BILLING_DAY: Final = 28
"""Every month has a 28th, so a billing cycle always starts on a real calendar day."""
MAX_HEADROOM_FRACTION: Final = 0.5

FAILURES_TO_DOWN: Final = 3
HOLD_DOWN_MIN_S: Final = 30.0
HOLD_DOWN_MAX_S: Final = 600.0
STABLE_RESET_S: Final = 600.0
"""Up this long, the next outage is a fresh one (hold-down back to the minimum), not a flap."""

RTT_GAIN: Final = 0.125
"""EWMA gain of the smoothed RTT (RFC 6298's alpha)."""
GOODPUT_GAIN: Final = 0.25
LOSS_GAIN: Final = 0.1
"""EWMA gain of `loss_hint`: about the last ten requests weigh."""
MIN_GOODPUT_SAMPLE_BYTES: Final = 64 * 1024
"""A smaller transfer measures the RTT and the server, not the link's throughput."""
PACED_FRACTION: Final = 0.9
"""A transfer at >= 90 % of the pacer's rate was held back by the pacer, not by the link."""


class CostClass(enum.StrEnum):
    WIFI = "wifi"
    CELLULAR = "cellular"


class LinkState(enum.StrEnum):
    UP = "up"
    PROBING = "probing"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """One uplink as configured. Invariants (checked): a non-empty name; 1 <= billing_day <= 28;
    caps None or > 0; 0 <= headroom_fraction <= 0.5; 0 <= p0_reserve_bytes <= monthly_cap_bytes,
    and a reserve only with a cap.

    `headroom_fraction` is the share of the measured goodput left free for other traffic (the
    officer's radio and data); `p0_reserve_bytes` is the part of the monthly cap only P0 may use.
    """

    name: str
    cost_class: CostClass
    binding: LinkBinding
    monthly_cap_bytes: int | None = None
    billing_day: int = 1
    rate_cap_bytes_per_s: int | None = None
    headroom_fraction: float = 0.0
    p0_reserve_bytes: int = 0
    udp_allowed: bool = True
    prefer_h3: bool = False
    """Upload over HTTP/3 on this link (falls back to HTTPS when UDP turns out blocked). Off by
    default: on every emulated link of bench/uplink.py HTTPS over Linux TCP had the higher
    goodput, and aioquic (pure Python) costs 15-60x the CPU (docs/benchmarks.md)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"link name must be a non-empty string, not {self.name!r}")
        if not isinstance(self.cost_class, CostClass):
            raise ValueError(f"cost_class must be a CostClass, not {self.cost_class!r}")
        if not isinstance(self.binding, LinkBinding):
            raise ValueError(f"binding must be a LinkBinding, not {self.binding!r}")
        _check_optional_positive_int("monthly_cap_bytes", self.monthly_cap_bytes)
        _check_optional_positive_int("rate_cap_bytes_per_s", self.rate_cap_bytes_per_s)
        _check_int_range("billing_day", self.billing_day, 1, MAX_BILLING_DAY)
        self._check_headroom()
        self._check_reserve()
        if not isinstance(self.udp_allowed, bool):
            raise ValueError(f"udp_allowed must be a bool, not {self.udp_allowed!r}")
        if not isinstance(self.prefer_h3, bool):
            raise ValueError(f"prefer_h3 must be a bool, not {self.prefer_h3!r}")

    def _check_headroom(self) -> None:
        headroom = self.headroom_fraction
        if isinstance(headroom, bool) or not isinstance(headroom, int | float):
            raise ValueError(f"headroom_fraction must be a number, not {headroom!r}")
        if not 0.0 <= headroom <= MAX_HEADROOM_FRACTION:
            raise ValueError(
                f"headroom_fraction must be 0..{MAX_HEADROOM_FRACTION}, not {headroom}"
            )

    def _check_reserve(self) -> None:
        cap = self.monthly_cap_bytes
        if cap is None and self.p0_reserve_bytes != 0:
            raise ValueError("p0_reserve_bytes is part of a monthly cap; set monthly_cap_bytes")
        _check_int_range("p0_reserve_bytes", self.p0_reserve_bytes, 0, cap)


class LinkHealth:
    """The health of one link, fed by observations (see the module's state table).

    Invariants: UP implies the carrier is up; the hold-down is within [30 s, 600 s]; `loss_hint`
    is within [0, 1]; the failure counter never exceeds FAILURES_TO_DOWN (bounded).
    """

    __slots__ = (
        "_carrier_up",
        "_failures_in_a_row",
        "_goodput_bytes_per_s",
        "_hold_down_s",
        "_is_up",
        "_last_failure_s",
        "_loss_hint",
        "_rtt_s",
        "_up_since_s",
    )

    def __init__(self, *, carrier_up: bool = True) -> None:
        self._carrier_up = carrier_up
        self._is_up = False
        self._failures_in_a_row = 0
        self._last_failure_s: float | None = None
        self._up_since_s: float | None = None
        self._hold_down_s: float | None = None  # None: never went down from UP
        self._rtt_s: float | None = None
        self._goodput_bytes_per_s: float | None = None
        self._loss_hint = 0.0

    # -- reading ----------------------------------------------------------------------------

    def state(self, now_s: float) -> LinkState:
        """UP, PROBING or DOWN at `now_s` (DOWN turns PROBING by time alone)."""
        if self._is_up:
            return LinkState.UP
        if self._carrier_up and now_s >= self._probe_from_s():
            return LinkState.PROBING
        return LinkState.DOWN

    def usable(self, now_s: float) -> bool:
        """May uploads use this link now? Only when UP."""
        return self.state(now_s) is LinkState.UP

    def probe_due_at_s(self) -> float | None:
        """When a probe may be sent (the shell's timer), or None: UP, or the carrier is down."""
        if self._is_up or not self._carrier_up:
            return None
        return self._probe_from_s()

    @property
    def hold_down_s(self) -> float:
        """The hold-down of the current (or last) outage; the minimum before any flap."""
        return HOLD_DOWN_MIN_S if self._hold_down_s is None else self._hold_down_s

    @property
    def rtt_s(self) -> float | None:
        """Smoothed round-trip time; None before the first sample."""
        return self._rtt_s

    @property
    def goodput_bytes_per_s(self) -> float | None:
        """Smoothed upload goodput (body bytes per second); None before the first sample."""
        return self._goodput_bytes_per_s

    @property
    def loss_hint(self) -> float:
        """Smoothed fraction of failed requests, 0..1."""
        return self._loss_hint

    # -- observations ------------------------------------------------------------------------

    def observe_success(self, now_s: float, rtt_s: float | None = None) -> None:
        """A request (upload or probe) on this link got an answer."""
        _check_finite("now_s", now_s)
        if rtt_s is not None:
            self.observe_rtt(now_s, rtt_s)
        self._loss_hint = _ewma(self._loss_hint, 0.0, LOSS_GAIN)
        if self._is_up:
            self._failures_in_a_row = 0
        elif self.state(now_s) is LinkState.PROBING:
            self._come_up(now_s)

    def observe_failure(self, now_s: float) -> None:
        """A request on this link failed for a link fault (cut, reset, timeout, refused)."""
        _check_finite("now_s", now_s)
        self._loss_hint = _ewma(self._loss_hint, 1.0, LOSS_GAIN)
        if not self._is_up:
            self._last_failure_s = now_s
            return
        self._failures_in_a_row = min(self._failures_in_a_row + 1, FAILURES_TO_DOWN)
        if self._failures_in_a_row >= FAILURES_TO_DOWN:
            self._go_down(now_s)

    def observe_carrier(self, now_s: float, up: bool) -> None:
        """The OS reported the interface up or down. Repeats of the same value change nothing."""
        _check_finite("now_s", now_s)
        if up == self._carrier_up:
            return
        self._carrier_up = up
        if up:
            return
        if self._is_up:
            self._go_down(now_s)
        else:
            self._last_failure_s = now_s

    def observe_rtt(self, now_s: float, rtt_s: float) -> None:
        """One RTT sample (seconds)."""
        _check_finite("now_s", now_s)
        _check_non_negative("rtt_s", rtt_s)
        self._rtt_s = rtt_s if self._rtt_s is None else _ewma(self._rtt_s, rtt_s, RTT_GAIN)

    def observe_transfer(
        self,
        now_s: float,
        body_bytes: int,
        duration_s: float,
        paced_bytes_per_s: int | None = None,
    ) -> None:
        """One upload body of `body_bytes` took `duration_s`; its outcome is reported apart.

        Bodies under MIN_GOODPUT_SAMPLE_BYTES are ignored. `paced_bytes_per_s` is the rate the
        uploader was held to. A transfer that ran at the pacer's rate only shows the link can do
        at least that much, so it may raise the estimate but never lower it: otherwise a cap of
        (1 - headroom) * goodput would measure itself and shrink every round.
        """
        _check_finite("now_s", now_s)
        _check_int_range("body_bytes", body_bytes, 0, None)
        if not (math.isfinite(duration_s) and duration_s > 0):
            raise ValueError(f"duration_s must be a finite number > 0, not {duration_s!r}")
        if body_bytes < MIN_GOODPUT_SAMPLE_BYTES:
            return
        sample_bytes_per_s = body_bytes / duration_s
        current = self._goodput_bytes_per_s
        if current is None:
            self._goodput_bytes_per_s = sample_bytes_per_s
        elif _was_paced(sample_bytes_per_s, paced_bytes_per_s):
            self._goodput_bytes_per_s = max(current, sample_bytes_per_s)
        else:
            self._goodput_bytes_per_s = _ewma(current, sample_bytes_per_s, GOODPUT_GAIN)

    # -- transitions -------------------------------------------------------------------------

    def _probe_from_s(self) -> float:
        if self._last_failure_s is None:
            return -math.inf
        return self._last_failure_s + self.hold_down_s

    def _come_up(self, now_s: float) -> None:
        self._is_up = True
        self._up_since_s = now_s
        self._failures_in_a_row = 0

    def _go_down(self, now_s: float) -> None:
        """UP -> DOWN: a flap. Double the hold-down unless the link had been up long enough."""
        up_since_s = now_s if self._up_since_s is None else self._up_since_s
        stable = now_s - up_since_s >= STABLE_RESET_S
        if self._hold_down_s is None or stable:
            self._hold_down_s = HOLD_DOWN_MIN_S
        else:
            self._hold_down_s = min(2 * self._hold_down_s, HOLD_DOWN_MAX_S)
        self._is_up = False
        self._up_since_s = None
        self._failures_in_a_row = 0
        self._last_failure_s = now_s


def rate_limit_bytes_per_s(config: LinkConfig, health: LinkHealth) -> int | None:
    """The uploader's pace on this link: min(rate cap, (1 - headroom) * goodput); None = unpaced.

    The goodput term applies only with a headroom > 0 (with none there is nothing to leave free,
    and pacing at the measured goodput would stop the estimate from ever growing) and once a
    goodput was measured. Never 0: a link paced to nothing would never be measured again.
    """
    limits_bytes_per_s: list[int] = []
    if config.rate_cap_bytes_per_s is not None:
        limits_bytes_per_s.append(config.rate_cap_bytes_per_s)
    goodput = health.goodput_bytes_per_s
    if config.headroom_fraction > 0 and goodput is not None:
        share = math.floor((1.0 - config.headroom_fraction) * goodput)
        limits_bytes_per_s.append(max(1, share))
    return min(limits_bytes_per_s) if limits_bytes_per_s else None


def _was_paced(sample_bytes_per_s: float, paced_bytes_per_s: int | None) -> bool:
    return (
        paced_bytes_per_s is not None and sample_bytes_per_s >= PACED_FRACTION * paced_bytes_per_s
    )


def _ewma(current: float, sample: float, gain: float) -> float:
    return current + gain * (sample - current)


def _check_finite(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")


def _check_non_negative(name: str, value: float) -> None:
    _check_finite(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value!r}")


def _check_int_range(name: str, value: object, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, not {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"{low}..{high}"
        raise ValueError(f"{name} must be {bounds}, not {value}")


def _check_optional_positive_int(name: str, value: object) -> None:
    if value is not None:
        _check_int_range(name, value, 1, None)
