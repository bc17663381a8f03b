"""`mvb-admin config lint`: a fleet document checked as a box will check it, before it is signed.

A misspelt key used to sign, publish, and be refused by every box while the admin was told
nothing. The lint runs the box's own rules (config/fleet_schema.py) on the document: every key a
fleet document may not set is named (all of them, not the first), then the values are checked
by applying the document to a box configuration (`against`: a box.toml of the fleet, or the
built-in defaults), then the reach of `[[accounts]]` (password hashes only in a document for one
box). `config sign` runs it too and signs nothing when it finds a problem; it checks values only
with `--against` (without it, a trigger naming the fleet's cameras would be refused for a box
that has none).
"""

from __future__ import annotations

from collections.abc import Sequence

from config.fleet_schema import apply_fleet_document, parse_fleet_text, unknown_fleet_keys
from config.local import ConfigError, LocalConfig, parse_config

DEFAULTS_SOURCE = "the built-in defaults"


def built_in_defaults() -> LocalConfig:
    """A box with every local default and no cameras (pass a box.toml to check triggers that
    name cameras). Its recipient key is a placeholder name: a box needs one, the lint reads none."""
    return parse_config({"box": {"recipient_keys": ["recipient.pub"]}}, DEFAULTS_SOURCE)


def lint_document(
    text: str,
    source: str,
    *,
    boxes: Sequence[str],
    groups: Sequence[str],
    against: LocalConfig | None,
) -> list[str]:
    """The problems a box would refuse the document for; [] when it would apply it. Values are
    checked only `against` a box configuration (a trigger may name a camera, a link tuning a
    link, that only the fleet's boxes have); keys, TOML and the reach of accounts always."""
    try:
        raw = parse_fleet_text(text, source)
    except ConfigError as exc:
        return [str(exc)]
    unknown = unknown_fleet_keys(raw)
    if unknown:
        return [
            f"{source}: {name} is not a fleet setting (a box's local key, or misspelt)"
            for name in unknown
        ]
    problems: list[str] = []
    if against is not None:
        try:
            apply_fleet_document(against, text, source)
        except ConfigError as exc:
            problems.append(str(exc))
    if "accounts" in raw and (len(boxes) != 1 or groups):
        problems.append(
            f"{source}: [[accounts]] carry password hashes: sign them for one box alone "
            "(--box ID, no --group)"
        )
    return problems
