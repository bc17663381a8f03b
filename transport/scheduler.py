"""Which evidence file goes on which link, and over which transport. PURE: `now_s` is given.

The shell builds one `LinkView` per link (health, budget, load) and calls `plan` whenever
something changed; it starts the assignments and calls again when one ends.

Classes, in order (within a class oldest first, ties by file id):

    class | WiFi | cellular                                          | slots per link
    ------+------+---------------------------------------------------+--------------------------
    P0    | yes  | yes, any size, may use the P0 reserve             | max_parallel_per_link + 1
    P1    | yes  | if remaining_bytes <= cellular_max_file_bytes and | max_parallel_per_link
          |      | the P1 budget covers it; with prefer_wifi only    |
          |      | while no usable WiFi link could take it           |
    P2    | yes  | never                                             | max_parallel_per_link

P0 may exceed the per-link limit by one (one extra slot per link, not one per P0 file): a flagged
incident must not wait behind routine uploads, and one more stream on a link only shares its
bandwidth. With prefer_wifi a P0 picks a WiFi link that has a slot before any cellular link.

Never scheduled: files in flight, files with a `blocked_reason` (integrity: they wait for a
person), files still in backoff (`not_before_s > now_s`, with the `wait_reason` the shell gave).
Budgets are checked on every link that has one, against what is left after the bytes still to
send by in-flight uploads and by the assignments made earlier in the same plan. The plan is
deterministic: the same inputs, in any order, give the same list.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from transport.links import CostClass, LinkConfig
from transport.wait_reasons import WaitCode, WaitReason

TransportName = Literal["https", "h3"]
HTTPS: Final = "https"
H3: Final = "h3"


MIB: Final = 1024 * 1024


class UploadClass(enum.StrEnum):
    P0 = "P0"
    """Flagged incident: any link, now; may use the P0 reserve of a cellular budget."""
    P1 = "P1"
    """Evidence: WiFi, or cellular while remaining <= cellular_max_file_bytes and budget lasts."""
    P2 = "P2"
    """Routine: WiFi only."""


@dataclass(frozen=True, slots=True)
class UploadCandidate:
    """One file waiting in the upload queue. Invariants (checked): a non-empty file id;
    0 <= remaining_bytes <= size_bytes; a finite `not_before_s`; `blocked_reason` None or text."""

    file_id: str
    size_bytes: int
    remaining_bytes: int
    upload_class: UploadClass
    created_at_ms: int
    not_before_s: float = 0.0
    blocked_reason: str | None = None
    wait_reason: str | None = None  # why it is in backoff (shown with the time left)

    def __post_init__(self) -> None:
        if not isinstance(self.file_id, str) or not self.file_id:
            raise ValueError(f"file_id must be a non-empty string, not {self.file_id!r}")
        _check_int("size_bytes", self.size_bytes, 0)
        _check_int("remaining_bytes", self.remaining_bytes, 0)
        if self.remaining_bytes > self.size_bytes:
            raise ValueError(
                f"remaining_bytes ({self.remaining_bytes}) exceeds size_bytes ({self.size_bytes})"
            )
        if not isinstance(self.upload_class, UploadClass):
            raise ValueError(f"upload_class must be an UploadClass, not {self.upload_class!r}")
        _check_int("created_at_ms", self.created_at_ms, None)
        _check_finite("not_before_s", self.not_before_s)
        reason = self.blocked_reason
        if reason is not None and (not isinstance(reason, str) or not reason):
            raise ValueError(f"blocked_reason must be None or a non-empty string, not {reason!r}")


@dataclass(frozen=True, slots=True)
class LinkView:
    """A snapshot of one link for one plan. Invariants (checked): active_uploads >= 0;
    0 <= loss_hint <= 1; a budget entry (None = unlimited, else >= 0) for every UploadClass.

    The budget mapping is copied into a read-only one, so the snapshot cannot change under a plan.
    """

    config: LinkConfig
    usable: bool
    active_uploads: int
    budget_remaining_by_class: Mapping[UploadClass, int | None]
    rtt_s: float | None
    loss_hint: float
    udp_blocked: bool

    def __post_init__(self) -> None:
        _check_int("active_uploads", self.active_uploads, 0)
        _check_finite("loss_hint", self.loss_hint)
        if not 0.0 <= self.loss_hint <= 1.0:
            raise ValueError(f"loss_hint must be 0..1, not {self.loss_hint}")
        if self.rtt_s is not None:
            _check_finite("rtt_s", self.rtt_s)
        budget = dict(self.budget_remaining_by_class)
        if set(budget) != set(UploadClass):
            raise ValueError(f"budget_remaining_by_class needs every class, got {sorted(budget)}")
        for upload_class, remaining in budget.items():
            if remaining is not None:
                _check_int(f"budget of {upload_class}", remaining, 0)
        object.__setattr__(self, "budget_remaining_by_class", MappingProxyType(budget))

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def is_cellular(self) -> bool:
        return self.config.cost_class is CostClass.CELLULAR


@dataclass(frozen=True, slots=True)
class SchedulerPolicy:
    """Invariants (checked): max_parallel_per_link >= 1; cellular_max_file_bytes >= 0."""

    max_parallel_per_link: int = 2
    cellular_max_file_bytes: int = 64 * MIB
    prefer_wifi: bool = True

    def __post_init__(self) -> None:
        _check_int("max_parallel_per_link", self.max_parallel_per_link, 1)
        _check_int("cellular_max_file_bytes", self.cellular_max_file_bytes, 0)


@dataclass(frozen=True, slots=True)
class Assignment:
    """Start (or resume) uploading `file_id` on link `link` over `transport`."""

    file_id: str
    link: str
    transport: TransportName


@dataclass(frozen=True, slots=True)
class ClassRule:
    """What one upload class may do (one row of the module's table)."""

    cellular_allowed: bool
    cellular_size_limited: bool
    holds_for_wifi: bool
    """With prefer_wifi: wait for a usable WiFi link (even a busy one) rather than use cellular."""
    extra_slots: int


CLASS_RULES: Final[Mapping[UploadClass, ClassRule]] = MappingProxyType(
    {
        UploadClass.P0: ClassRule(
            cellular_allowed=True, cellular_size_limited=False, holds_for_wifi=False, extra_slots=1
        ),
        UploadClass.P1: ClassRule(
            cellular_allowed=True, cellular_size_limited=True, holds_for_wifi=True, extra_slots=0
        ),
        UploadClass.P2: ClassRule(
            cellular_allowed=False, cellular_size_limited=False, holds_for_wifi=False, extra_slots=0
        ),
    }
)

_CLASS_ORDER: Final = {upload_class: rank for rank, upload_class in enumerate(UploadClass)}


class _Verdict(enum.IntEnum):
    """Why a link can or cannot take a file now; a lower value is closer to uploading."""

    OK = 0
    NO_SLOT = 1
    HELD_FOR_WIFI = 2
    BUDGET = 3
    TOO_LARGE = 4
    WIFI_ONLY = 5
    NOT_USABLE = 6


class _Ledger:
    """Slots taken and bytes committed per link while one plan (or one explanation) is built."""

    __slots__ = ("committed_bytes", "slots_used")

    def __init__(
        self,
        views: tuple[LinkView, ...],
        candidates: Iterable[UploadCandidate],
        in_flight: Mapping[str, str],
    ) -> None:
        in_flight_count = {view.name: 0 for view in views}
        for link_name in in_flight.values():
            if link_name in in_flight_count:
                in_flight_count[link_name] += 1
        # The larger of the view's count and the in-flight map, so a stale view never overbooks.
        self.slots_used: dict[str, int] = {
            view.name: max(view.active_uploads, in_flight_count[view.name]) for view in views
        }
        # In-flight uploads will still send their remaining bytes: reserve them in the budget.
        self.committed_bytes: dict[str, int] = dict.fromkeys(in_flight_count, 0)
        for candidate in candidates:
            in_flight_link = in_flight.get(candidate.file_id)
            if in_flight_link is not None and in_flight_link in self.committed_bytes:
                self.committed_bytes[in_flight_link] += candidate.remaining_bytes

    def budget_covers(self, view: LinkView, candidate: UploadCandidate) -> bool:
        remaining = view.budget_remaining_by_class[candidate.upload_class]
        if remaining is None:
            return True
        return candidate.remaining_bytes <= remaining - self.committed_bytes[view.name]

    def commit(self, view: LinkView, candidate: UploadCandidate) -> None:
        self.slots_used[view.name] += 1
        self.committed_bytes[view.name] += candidate.remaining_bytes


def plan(
    now_s: float,
    candidates: Iterable[UploadCandidate],
    links: Iterable[LinkView],
    in_flight: Mapping[str, str],
    policy: SchedulerPolicy,
) -> list[Assignment]:
    """The uploads to start now, in priority order (see the module's table).

    `in_flight` maps file id -> link name of the uploads running; ValueError on duplicate file ids
    or link names (a shell bug, not a state to schedule around).
    """
    _check_finite("now_s", now_s)
    queue = _unique_candidates(candidates)
    views = _unique_links(links)
    ledger = _Ledger(views, queue, in_flight)
    ready = (c for c in queue if _is_ready(c, now_s) and c.file_id not in in_flight)
    assignments: list[Assignment] = []
    for candidate in sorted(ready, key=_priority):
        view = _pick_link(candidate, views, ledger, policy)
        if view is not None:
            ledger.commit(view, candidate)
            assignments.append(Assignment(candidate.file_id, view.name, choose_transport(view)))
    return assignments


def choose_transport(link: LinkView) -> TransportName:
    """HTTP/3 only on a link configured to prefer it, while UDP is allowed and not found
    blocked; HTTPS otherwise.

    Decided by bench/uplink.py (docs/benchmarks.md): on the WiFi-like, cellular and bad emulated
    links HTTPS over the kernel's TCP reached 0.83-0.93 of the link rate, HTTP/3 over aioquic
    0.14-0.89 (its loss recovery collapses at 0.1-1 % loss) at 15-60x the CPU per GB. HTTP/3
    kept an upload alive through a NAT rebinding, so a link whose carrier proxies or throttles
    TCP may still prefer it.
    """
    if link.config.prefer_h3 and link.config.udp_allowed and not link.udp_blocked:
        return H3
    return HTTPS


def explain_waiting(
    candidate: UploadCandidate,
    links: Iterable[LinkView],
    policy: SchedulerPolicy,
    now_s: float,
) -> str:
    """A short reason, in English for `mvb uploads`, why `candidate` (not in flight) is not
    uploading. It names the link closest to taking the file; a file that some link could take
    is waiting for a free slot (files ahead of it took them)."""
    if candidate.blocked_reason is not None:
        return f"blocked: {candidate.blocked_reason}"
    if candidate.not_before_s > now_s:
        retry = f"retry in {math.ceil(candidate.not_before_s - now_s)} s"
        return retry if candidate.wait_reason is None else f"{candidate.wait_reason}; {retry}"
    return waiting_verdict(candidate, links, policy).text()


def waiting_code(
    candidate: UploadCandidate,
    links: Iterable[LinkView],
    policy: SchedulerPolicy,
    now_s: float,
) -> WaitReason:
    """The same reason as `explain_waiting`, as the code the officer's page translates."""
    if candidate.blocked_reason is not None:
        return WaitReason(WaitCode.BLOCKED)
    if candidate.not_before_s > now_s:
        return WaitReason(WaitCode.RETRYING)
    return waiting_verdict(candidate, links, policy)


def waiting_verdict(
    candidate: UploadCandidate, links: Iterable[LinkView], policy: SchedulerPolicy
) -> WaitReason:
    """Why a file that may upload now does not: the verdict of the link closest to taking it."""
    views = _unique_links(links)
    ledger = _Ledger(views, (), {})
    best = _closest_link(candidate, views, ledger, policy)
    if best is None:
        return _no_link_reason(candidate.upload_class)
    verdict, view = best
    return _reason(verdict, view, candidate.upload_class)


def _closest_link(
    candidate: UploadCandidate,
    views: tuple[LinkView, ...],
    ledger: _Ledger,
    policy: SchedulerPolicy,
) -> tuple[_Verdict, LinkView] | None:
    """The usable link nearest to taking the file (lowest verdict, then preference)."""

    def closeness(view: LinkView) -> tuple[_Verdict, tuple[bool, int, str]]:
        verdict = _verdict(candidate, view, views, ledger, policy)
        return verdict, _link_preference(view, ledger, policy)

    usable = [view for view in views if view.usable]
    if not usable:
        return None
    closest = min(usable, key=closeness)
    return closeness(closest)[0], closest


def _reason(verdict: _Verdict, view: LinkView, upload_class: UploadClass) -> WaitReason:
    if verdict is _Verdict.OK:
        # A link would take it now: the file was sealed after this round's queue was read.
        return WaitReason(WaitCode.STARTING_SHORTLY)
    if verdict in (_Verdict.NO_SLOT, _Verdict.HELD_FOR_WIFI):
        return WaitReason(WaitCode.WAITING_FOR_SLOT)
    if verdict is _Verdict.BUDGET:
        then_wifi = view.is_cellular and upload_class is not UploadClass.P0
        code = WaitCode.BUDGET_USED_UP_THEN_WIFI if then_wifi else WaitCode.BUDGET_USED_UP
        return WaitReason(code, view.name)
    if verdict is _Verdict.TOO_LARGE:
        return WaitReason(WaitCode.TOO_LARGE_FOR_LINK, view.name)
    return WaitReason(WaitCode.WAITING_FOR_WIFI)


def _no_link_reason(upload_class: UploadClass) -> WaitReason:
    if upload_class is UploadClass.P2:
        return WaitReason(WaitCode.WAITING_FOR_WIFI)
    return WaitReason(WaitCode.WAITING_FOR_UPLINK)


def _pick_link(
    candidate: UploadCandidate,
    views: tuple[LinkView, ...],
    ledger: _Ledger,
    policy: SchedulerPolicy,
) -> LinkView | None:
    takers = [v for v in views if _verdict(candidate, v, views, ledger, policy) is _Verdict.OK]
    if not takers:
        return None
    return min(takers, key=lambda view: _link_preference(view, ledger, policy))


def _verdict(
    candidate: UploadCandidate,
    view: LinkView,
    views: tuple[LinkView, ...],
    ledger: _Ledger,
    policy: SchedulerPolicy,
) -> _Verdict:
    """Can `view` take `candidate` now? The class rules, checked from the hardest limit down."""
    rule = CLASS_RULES[candidate.upload_class]
    if not view.usable:
        return _Verdict.NOT_USABLE
    if view.is_cellular and not rule.cellular_allowed:
        return _Verdict.WIFI_ONLY
    too_large = candidate.remaining_bytes > policy.cellular_max_file_bytes
    if view.is_cellular and rule.cellular_size_limited and too_large:
        return _Verdict.TOO_LARGE
    if not ledger.budget_covers(view, candidate):
        return _Verdict.BUDGET
    holds = view.is_cellular and rule.holds_for_wifi and policy.prefer_wifi
    if holds and _wifi_could_take(candidate, views, ledger):
        return _Verdict.HELD_FOR_WIFI
    if ledger.slots_used[view.name] >= policy.max_parallel_per_link + rule.extra_slots:
        return _Verdict.NO_SLOT
    return _Verdict.OK


def _wifi_could_take(
    candidate: UploadCandidate, views: tuple[LinkView, ...], ledger: _Ledger
) -> bool:
    """A usable WiFi link whose budget covers the file: it only waits for a slot there."""
    return any(v.usable and not v.is_cellular and ledger.budget_covers(v, candidate) for v in views)


def _link_preference(
    view: LinkView, ledger: _Ledger, policy: SchedulerPolicy
) -> tuple[bool, int, str]:
    """Among links that can take a file: WiFi first (prefer_wifi), then the least loaded."""
    return (policy.prefer_wifi and view.is_cellular, ledger.slots_used[view.name], view.name)


def _is_ready(candidate: UploadCandidate, now_s: float) -> bool:
    return candidate.blocked_reason is None and candidate.not_before_s <= now_s


def _priority(candidate: UploadCandidate) -> tuple[int, int, str]:
    return (_CLASS_ORDER[candidate.upload_class], candidate.created_at_ms, candidate.file_id)


def _unique_candidates(candidates: Iterable[UploadCandidate]) -> tuple[UploadCandidate, ...]:
    queue = tuple(candidates)
    file_ids = [c.file_id for c in queue]
    if len(set(file_ids)) != len(file_ids):
        raise ValueError("a file id appears more than once among the candidates")
    return queue


def _unique_links(links: Iterable[LinkView]) -> tuple[LinkView, ...]:
    views = tuple(sorted(links, key=lambda view: view.name))
    names = [view.name for view in views]
    if len(set(names)) != len(names):
        raise ValueError(f"link names must be unique, got {names}")
    return views


def _check_int(name: str, value: object, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, not {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")


def _check_finite(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
