"""The monthly data budget of one link, counted per billing cycle. PURE: `today` is given.

A billing cycle starts on the link's `billing_day` (1..28, so every month has it) and runs to the
day before the next month's billing day. P0 may spend the whole cap; P1 and P2 only the cap less
the P0 reserve, so a flagged incident can still go out over LTE late in the month. No cap (None)
means unlimited. Bytes already sent are always recorded, even past the cap: the count is a fact,
the cap only gates new uploads.

The date comes from the wall clock, which can be wrong. A clock error must never free budget:

    today's cycle vs the stored cycle | what happens
    ----------------------------------+--------------------------------------------------------
    later                             | a new cycle: used 0
    the same                          | counted in it
    the stored one is the next cycle  | the clock stepped back a little: keep counting in the
                                      | stored cycle
    the stored one is further ahead   | the clock had run far ahead: re-anchor to today's cycle
                                      | and keep the used bytes (else the budget stays stuck
                                      | until that far-off date)
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from common.faults import StorageFault
from transport.links import MAX_BILLING_DAY, LinkConfig
from transport.scheduler import UploadClass

_ISO_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_STATE_KEYS: Final = frozenset({"cycle_start", "used_bytes"})


class BudgetStateError(ValueError, StorageFault):
    """A stored budget state is malformed (wrong keys, types or values)."""


@dataclass(frozen=True, slots=True)
class BudgetState:
    """What is persisted per link: the cycle's first day and the bytes spent in it.

    Invariants (checked): `cycle_start` is a date (not a datetime); `used_bytes` is an int >= 0.
    """

    cycle_start: datetime.date
    used_bytes: int

    def __post_init__(self) -> None:
        start = self.cycle_start
        if isinstance(start, datetime.datetime) or not isinstance(start, datetime.date):
            raise BudgetStateError(f"cycle_start must be a date, not {start!r}")
        used = self.used_bytes
        if isinstance(used, bool) or not isinstance(used, int) or used < 0:
            raise BudgetStateError(f"used_bytes must be an int >= 0, not {used!r}")

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict: {"cycle_start": "YYYY-MM-DD", "used_bytes": int}."""
        return {"cycle_start": self.cycle_start.isoformat(), "used_bytes": self.used_bytes}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> BudgetState:
        """The inverse of `to_dict`; BudgetStateError on any other shape."""
        if not isinstance(data, Mapping) or set(data) != _STATE_KEYS:
            keys = sorted(data) if isinstance(data, Mapping) else data
            raise BudgetStateError(
                f"budget state needs exactly {sorted(_STATE_KEYS)}, got {keys!r}"
            )
        return cls(_parse_date(data["cycle_start"]), _parse_used(data["used_bytes"]))


def cycle_start_for(day: datetime.date, billing_day: int) -> datetime.date:
    """The first day of the billing cycle that contains `day`."""
    _check_billing_day(billing_day)
    if day.day >= billing_day:
        return day.replace(day=billing_day)
    if day.month == 1:
        return datetime.date(day.year - 1, 12, billing_day)
    return datetime.date(day.year, day.month - 1, billing_day)


def next_cycle_start(cycle_start: datetime.date, billing_day: int) -> datetime.date:
    """The first day of the cycle after the one starting at (or containing) `cycle_start`."""
    start = cycle_start_for(cycle_start, billing_day)
    if start.month == 12:
        return datetime.date(start.year + 1, 1, billing_day)
    return datetime.date(start.year, start.month + 1, billing_day)


class DataBudget:
    """A link's config and its budget state. Queries never change the state; `roll` and `spend`
    do, and `state` is what the shell persists after them."""

    __slots__ = ("_config", "_state")

    def __init__(self, config: LinkConfig, state: BudgetState) -> None:
        self._config = config
        self._state = state

    @classmethod
    def fresh(cls, config: LinkConfig, today: datetime.date) -> DataBudget:
        """A budget with nothing spent yet in today's cycle."""
        return cls(config, BudgetState(cycle_start_for(today, config.billing_day), 0))

    @property
    def config(self) -> LinkConfig:
        return self._config

    @property
    def state(self) -> BudgetState:
        return self._state

    def roll(self, today: datetime.date) -> None:
        """Move the state to today's cycle (see the module's table)."""
        self._state = self._state_on(today)

    def remaining_bytes(self, upload_class: UploadClass, today: datetime.date) -> int | None:
        """Bytes `upload_class` may still send this cycle (>= 0); None when there is no cap."""
        cap = self._config.monthly_cap_bytes
        if cap is None:
            return None
        usable_cap = cap if upload_class is UploadClass.P0 else cap - self._config.p0_reserve_bytes
        return max(0, usable_cap - self._state_on(today).used_bytes)

    def remaining_by_class(self, today: datetime.date) -> dict[UploadClass, int | None]:
        """`remaining_bytes` for every class (what a scheduler LinkView carries)."""
        return {
            upload_class: self.remaining_bytes(upload_class, today) for upload_class in UploadClass
        }

    def may_spend(self, upload_class: UploadClass, body_bytes: int, today: datetime.date) -> bool:
        """Does `body_bytes` fit in what `upload_class` may still send this cycle?"""
        _check_bytes(body_bytes)
        remaining = self.remaining_bytes(upload_class, today)
        return remaining is None or body_bytes <= remaining

    def spend(self, body_bytes: int, today: datetime.date) -> None:
        """Record bytes sent today (wire bytes where the shell knows them). Never refused."""
        _check_bytes(body_bytes)
        rolled = self._state_on(today)
        self._state = BudgetState(rolled.cycle_start, rolled.used_bytes + body_bytes)

    def _state_on(self, today: datetime.date) -> BudgetState:
        billing_day = self._config.billing_day
        current = cycle_start_for(today, billing_day)
        stored = self._state
        if current > stored.cycle_start:
            return BudgetState(current, 0)
        if stored.cycle_start <= next_cycle_start(current, billing_day):
            return stored
        return BudgetState(current, stored.used_bytes)


def _parse_date(value: object) -> datetime.date:
    if not isinstance(value, str) or _ISO_DATE.fullmatch(value) is None:
        raise BudgetStateError(f"cycle_start must be a 'YYYY-MM-DD' string, not {value!r}")
    try:
        return datetime.date.fromisoformat(value)
    except ValueError as exc:
        raise BudgetStateError(f"cycle_start {value!r} is not a calendar date") from exc


def _parse_used(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BudgetStateError(f"used_bytes must be an int, not {value!r}")
    return value


def _check_billing_day(billing_day: int) -> None:
    if isinstance(billing_day, bool) or not isinstance(billing_day, int):
        raise ValueError(f"billing_day must be an int, not {billing_day!r}")
    if not 1 <= billing_day <= MAX_BILLING_DAY:
        raise ValueError(f"billing_day must be 1..{MAX_BILLING_DAY}, not {billing_day}")


def _check_bytes(body_bytes: int) -> None:
    if isinstance(body_bytes, bool) or not isinstance(body_bytes, int) or body_bytes < 0:
        raise ValueError(f"body_bytes must be an int >= 0, not {body_bytes!r}")
