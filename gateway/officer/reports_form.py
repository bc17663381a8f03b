"""What the officer writes in the report book (RULES R4, R7, R8; docs/webui.md 4): the pure core
of a report, a warning and a correction, and the municipality's rules for which fields are
required.

A **report** is about one recording (H2O art. 3): what happened; whether the person was warned
beforehand; if not, why not, and whether and when they were informed afterwards (H2O art. 2.4,
DPIA 4.5); whether it happened in a home or on other private premises, and on what ground
(Borsele 3.2.2). A **warning** is registered without a recording (Borsele 3.2.1/3.2.2): what
happened and where; the box adds the time and the GPS position. A **correction** is a later
report or warning of the same entry with the reason for correcting: the first stays as it was.

Invariants of a parsed value (each checked here, refused `invalid` naming the member otherwise):
- `not_warned_reason`, `informed_afterwards` and `informed_at_ms` are given only when the person
  was not warned beforehand; `informed_at_ms` exactly when `informed_afterwards` is true;
- `premises_ground` exactly when `premises` is `home` or `private_premises`;
- a field the rules require is given (not null); a field not required may be given, and is then
  checked like a required one.
Codes (`premises`, `premises_ground`) are fixed words the page translates; no free text outside
`what`, `not_warned_reason` and `correction_reason`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from config.local import LocalConfig
from gateway.officer.reports import invalid, text_member

WHAT_MAX_CHARS = 4000
REASON_MAX_CHARS = 1000
CORRECTION_REASON_MAX_CHARS = 1000

PREMISES = ("public", "home", "private_premises")
"""Where it happened: public space, public buildings and publicly accessible places; a home; other
private premises (a business's own rooms, a yard). Borsele 3.2.2's three cases."""
PRIVATE_PREMISES = frozenset({"home", "private_premises"})
PREMISES_GROUNDS = ("consent", "warrant", "none")
"""On what ground a home or private premises were entered and recorded in (Borsele 3.2.2): the
occupant's consent beforehand, a warrant to enter (machtiging tot binnentreden), or none. `none`
exists because a report must be able to say what happened: the back office judges it."""

# A moment the officer gives (when the person was informed) is a wall-clock time of the tablet;
# the box's own clock may be weeks wrong (field conditions), so it is only bounded to plausible
# dates, never compared with the box's clock.
MOMENT_MIN_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
MOMENT_MAX_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class ReportRules:
    """Which fields the municipality requires ([reports] of the configuration)."""

    require_informed_afterwards: bool = True
    require_premises: bool = True

    def required(self) -> list[str]:
        """The members required beyond the always-required ones, for the page."""
        names = []
        if self.require_informed_afterwards:
            names.append("informed_afterwards")
        if self.require_premises:
            names.append("premises")
        return names


def report_rules(config: LocalConfig) -> ReportRules:
    """The rules of the configuration the box runs now (a fleet document may set them)."""
    section = config.reports
    return ReportRules(section.require_informed_afterwards, section.require_premises)


@dataclass(frozen=True, slots=True)
class Premises:
    """Where it happened and on what ground; both None when not said (not required)."""

    premises: str | None = None
    premises_ground: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """What the officer reports about one recording (see the module's invariants)."""

    what: str
    warned_beforehand: bool
    not_warned_reason: str | None = None
    informed_afterwards: bool | None = None
    informed_at_ms: int | None = None
    place: Premises = Premises()

    def fields(self) -> dict[str, Any]:
        """The members as the sealed file carries them (flat, as the request had them)."""
        values = asdict(self)
        del values["place"]
        return {**values, **asdict(self.place)}


@dataclass(frozen=True, slots=True)
class Warning:
    """A warning given without a recording following: what happened, and where."""

    what: str
    place: Premises = Premises()

    def fields(self) -> dict[str, Any]:
        return {"what": self.what, **asdict(self.place)}


REPORT_MEMBERS = frozenset(
    {
        "what",
        "warned_beforehand",
        "not_warned_reason",
        "informed_afterwards",
        "informed_at_ms",
        "premises",
        "premises_ground",
    }
)
WARNING_MEMBERS = frozenset({"what", "premises", "premises_ground"})
CORRECTION_MEMBER = "correction_reason"


def _refuse_unknown(body: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid(unknown[0], f"unknown member {unknown[0][:64]!r}")


def _absent(body: Mapping[str, Any], name: str, when: str) -> None:
    if body.get(name) is not None:
        raise invalid(name, f"{name} only {when}")


def _code(body: Mapping[str, Any], name: str, codes: tuple[str, ...]) -> str | None:
    value = body.get(name)
    if value is not None and value not in codes:
        raise invalid(name, f"{name} must be one of {', '.join(codes)}")
    return value


def parse_premises(body: Mapping[str, Any], rules: ReportRules) -> Premises:
    """`premises` and `premises_ground` of `body`, by the invariants above."""
    where = _code(body, "premises", PREMISES)
    if where is None:
        if rules.require_premises:
            raise invalid("premises", f"premises must be one of {', '.join(PREMISES)}")
        _absent(body, "premises_ground", "in a home or on private premises")
        return Premises()
    if where not in PRIVATE_PREMISES:
        _absent(body, "premises_ground", "in a home or on private premises")
        return Premises(where)
    ground = _code(body, "premises_ground", PREMISES_GROUNDS)
    if ground is None:
        codes = ", ".join(PREMISES_GROUNDS)
        raise invalid("premises_ground", f"premises_ground must be one of {codes}")
    return Premises(where, ground)


def _informed(body: Mapping[str, Any], rules: ReportRules) -> tuple[bool | None, int | None]:
    informed = body.get("informed_afterwards")
    if informed is None and rules.require_informed_afterwards:
        raise invalid("informed_afterwards", "informed_afterwards must be true or false")
    if informed is not None and not isinstance(informed, bool):
        raise invalid("informed_afterwards", "informed_afterwards must be true or false")
    if informed is not True:
        _absent(body, "informed_at_ms", "when informed afterwards")
        return informed, None
    at_ms = body.get("informed_at_ms")
    plausible = (
        isinstance(at_ms, int)
        and not isinstance(at_ms, bool)
        and MOMENT_MIN_MS <= at_ms < MOMENT_MAX_MS
    )
    if not plausible:
        raise invalid("informed_at_ms", "informed_at_ms must be a time (ms since 1970)")
    return True, at_ms


def parse_report(body: Mapping[str, Any], rules: ReportRules | None = None) -> Report:
    """The report in `body` (a JSON object) under `rules` (the strictest by default), or Refused
    `invalid` naming the first member at fault in `field`."""
    rules = rules or ReportRules()
    _refuse_unknown(body, REPORT_MEMBERS)
    what = text_member(body, "what", WHAT_MAX_CHARS)
    warned = body.get("warned_beforehand")
    if not isinstance(warned, bool):
        raise invalid("warned_beforehand", "warned_beforehand must be true or false")
    if warned:
        for name in ("not_warned_reason", "informed_afterwards", "informed_at_ms"):
            _absent(body, name, "when not warned")
        return Report(what, True, place=parse_premises(body, rules))
    reason = text_member(body, "not_warned_reason", REASON_MAX_CHARS)
    informed, informed_at_ms = _informed(body, rules)
    place = parse_premises(body, rules)
    return Report(what, False, reason, informed, informed_at_ms, place)


def parse_warning(body: Mapping[str, Any], rules: ReportRules | None = None) -> Warning:
    """The warning in `body`, or Refused `invalid` naming the member at fault."""
    rules = rules or ReportRules()
    _refuse_unknown(body, WARNING_MEMBERS)
    what = text_member(body, "what", WHAT_MAX_CHARS)
    return Warning(what, parse_premises(body, rules))


def parse_correction(
    body: Mapping[str, Any], kind: str, rules: ReportRules | None = None
) -> tuple[str, Report | Warning]:
    """A correction of an entry of `kind` (`recording` or `warning`): the reason for correcting
    and the whole corrected report or warning; Refused `invalid` naming the member at fault."""
    reason = text_member(body, CORRECTION_MEMBER, CORRECTION_REASON_MAX_CHARS)
    rest = {name: value for name, value in body.items() if name != CORRECTION_MEMBER}
    corrected = parse_warning(rest, rules) if kind == "warning" else parse_report(rest, rules)
    return reason, corrected
