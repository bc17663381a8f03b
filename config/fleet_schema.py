"""Fleet configuration documents: the policy part of the one closed schema (config/local.py).

A fleet document (TOML, signed by the fleet admin, verified by config/fleet_client.py) carries
policy: the protocol numbers (pre-record, post-record, maximum continuous recording, retention
days), trigger rules and upload classes, link budgets and rate caps, uplink tuning, web accounts
and the web login policy ([webui]), which report fields are required ([reports]), and the fleet's
holds (`[[holds]]`: recordings retention must keep, RULES S4; `fleet_holds`). The local file keeps
what is physical to one box: device serial, folders, cameras and their addresses, vehicle inputs,
interface names, the web listener and its certificate ([web]), and (until pairing writes them) the
back office's address and credentials. Both are parsed by the same section dataclasses and value
checks, so a number means the same thing and has the same range wherever it is written.

`apply_fleet_document(local, text)` returns the effective configuration: the local one with every
policy key the document sets replaced. Invariants:
- A key outside FLEET_KEYS fails, naming the key: a fleet document can never move the card, point
  a camera elsewhere or turn the uplink's pins off.
- Links are matched by name: a document may tune a link the box has, never add an interface.
- A table changes only the keys it names: `[recording]`, `[triggers.X]` (over the box's own
  `[triggers.X]`), a link; a trigger's unset `postrecord_s` stays [recording]'s.
- The result passes the same whole-configuration checks as a local file (`check_config`).
- `[[holds]]` name a recording id (32 hex) and a ground code (storage/holds.py HOLD_GROUNDS),
  nothing else (no free text: a reason may be personal and stays in the back office); at most
  MAX_HOLDS, none twice. They are not configuration of a subsystem: the applier hands them to the
  box's holds (gateway/fleet_apply.py), the effective configuration does not carry them.
- `[release] version` pins the software release the box runs (docs/releases.md 7): checked
  here (`release_pin`), acted on by the box's release updater, not carried by the effective
  configuration either.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields, replace
from typing import Any

from config.local import (
    ConfigError,
    LocalConfig,
    check_config,
    parse_accounts,
    parse_section,
    parse_triggers,
)
from config.local_sections import (
    LinkSection,
    RecordingSection,
    ReportsSection,
    TriggerSection,
    WebuiSection,
)
from protocol.release_manifest import is_version
from storage.holds import holds_from_tables

FLEET_KEYS: dict[str, frozenset[str]] = {
    "recording": frozenset(f.name for f in fields(RecordingSection)),
    "storage": frozenset({"retention_days", "file_target_s", "file_target_bytes"}),
    "uplink": frozenset(
        {
            "chunk_bytes",
            "chunk_min_bytes",
            "chunk_target_s",
            "max_parallel_per_link",
            "cellular_max_file_bytes",
            "retry_initial_s",
            "retry_max_s",
            "attempts_per_assignment",
            "config_poll_s",
        }
    ),
    "links": frozenset(
        {
            "name",
            "cost_class",
            "monthly_cap_bytes",
            "billing_day",
            "rate_cap_bytes_per_s",
            "headroom_fraction",
            "p0_reserve_bytes",
            "udp_allowed",
            "prefer_h3",
        }
    ),
    "triggers": frozenset(f.name for f in fields(TriggerSection)),
    "accounts": frozenset({"name", "role", "password_hash", "officer_id"}),
    "webui": frozenset(f.name for f in fields(WebuiSection)),
    "reports": frozenset(f.name for f in fields(ReportsSection)),
    "fleet": frozenset({"name", "policy"}),
    "holds": frozenset({"recording_id", "ground"}),
    # the release the box runs (a PEP 440 version): written by `mvb-admin release rollout`
    # (backoffice/rollout_docs.py), acted on by the box's release fetch
    "release": frozenset({"version"}),
}
"""Every key a fleet document may set, by section; [fleet] names the document for people."""

MAX_DOCUMENT_BYTES = 256 * 1024


def parse_fleet_text(text: str, source: str) -> dict[str, Any]:
    """TOML -> table, refusing what is not TOML or too large (the signed size is bounded too)."""
    if len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"{source}: a fleet document is at most {MAX_DOCUMENT_BYTES} bytes")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from exc


def apply_fleet_document(local: LocalConfig, text: str, source: str) -> LocalConfig:
    """The effective configuration: `local` with the document's policy keys applied."""
    raw = parse_fleet_text(text, source)
    unknown = sorted(set(raw) - set(FLEET_KEYS))
    if unknown:
        raise ConfigError(f"{source}: [{unknown[0]}] cannot be set by a fleet document")
    _refuse_local_keys(raw, source)
    parse_holds(raw.get("holds", []), source)  # checked with the rest; handed out apart
    parse_release_pin(raw.get("release", {}), source)  # acted on apart (gateway/release_update.py)
    effective = replace(
        local,
        recording=_merged(local.recording, raw.get("recording", {}), "recording", source),
        storage=_merged(local.storage, raw.get("storage", {}), "storage", source),
        uplink=_merged(local.uplink, raw.get("uplink", {}), "uplink", source),
        webui=_merged(local.webui, raw.get("webui", {}), "webui", source),
        reports=_merged(local.reports, raw.get("reports", {}), "reports", source),
        links=_merged_links(local.links, raw.get("links", []), source),
        triggers=_merged_triggers(local, raw.get("triggers", {}), source),
        # accounts come as a whole list: a document that names accounts replaces the box's
        accounts=parse_accounts(raw["accounts"], source) if "accounts" in raw else local.accounts,
        source=source,
    )
    check_config(effective, source)
    return effective


def check_accounts_reach(
    text: str, boxes: tuple[str, ...], groups: tuple[str, ...], box_id: str, source: str
) -> None:
    """`[[accounts]]` carry password hashes: a box takes them only from a document signed for it
    alone (no other box, no group), the rule the repository signs by (docs/fleet-config.md 4.6);
    ConfigError otherwise."""
    if "accounts" in parse_fleet_text(text, source) and (boxes != (box_id,) or groups):
        raise ConfigError(
            f"{source}: [[accounts]] may only come in a document for this box alone "
            "(it is signed for other boxes or a group too)"
        )


def fleet_holds(text: str, source: str) -> dict[str, str]:
    """The document's holds: recording id -> ground code (empty without `[[holds]]`)."""
    return parse_holds(parse_fleet_text(text, source).get("holds", []), source)


def parse_holds(values: Any, source: str) -> dict[str, str]:
    """`[[holds]]` by the rule box and admin's tool share (storage/holds.py)."""
    try:
        return holds_from_tables(values)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def release_pin(text: str, source: str) -> str | None:
    """The release version the document pins (`[release] version`), or None."""
    return parse_release_pin(parse_fleet_text(text, source).get("release", {}), source)


def parse_release_pin(values: Any, source: str) -> str | None:
    """`[release]`: a table with at most `version`, a release version (docs/releases.md 7)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: [release] must be a table")
    version = values.get("version")
    if version is None:
        return None
    if not isinstance(version, str) or not is_version(version):
        raise ConfigError(f'{source}: release.version must be a release version like "1.2.0"')
    return version


def unknown_fleet_keys(raw: dict[str, Any]) -> list[str]:
    """Every section (`[name]`) and key (`section.key`) of `raw` that a fleet document may not
    set, sorted: what `mvb-admin config lint` names before anything is signed."""
    unknown = [f"[{section}]" for section in raw if section not in FLEET_KEYS]
    for section, allowed in FLEET_KEYS.items():
        for table in _tables(section, raw.get(section)):
            unknown += [f"{section}.{key}" for key in table if key not in allowed]
    return sorted(set(unknown))


def _tables(section: str, value: Any) -> list[dict[str, Any]]:
    """The tables of one section: itself, each of an array, or each trigger's."""
    if section == "triggers" and isinstance(value, dict):
        return [t for t in value.values() if isinstance(t, dict)]
    if isinstance(value, list):
        return [t for t in value if isinstance(t, dict)]
    return [value] if isinstance(value, dict) else []


def _refuse_local_keys(raw: dict[str, Any], source: str) -> None:
    for section, allowed in FLEET_KEYS.items():
        for table in _tables(section, raw.get(section)):
            extra = sorted(set(table) - allowed)
            if extra:
                raise ConfigError(
                    f"{source}: {section}.{extra[0]} is not a fleet setting "
                    "(it belongs to the box's local file, or does not exist)"
                )


def _merged(current: Any, values: Any, name: str, source: str) -> Any:
    """`current` with the keys of `values` replaced, each checked as in a local file."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    parsed = parse_section(values, name, type(current), source)
    return replace(current, **{key: getattr(parsed, key) for key in values})


def _merged_links(
    current: tuple[LinkSection, ...], values: Any, source: str
) -> tuple[LinkSection, ...]:
    if not isinstance(values, list):
        raise ConfigError(f"{source}: links must be an array of tables ([[links]])")
    by_name = {link.name: link for link in current}
    for table in values:
        name = table.get("name") if isinstance(table, dict) else None
        if name not in by_name:
            raise ConfigError(f"{source}: links.name {name!r} is not a link of this box")
        by_name[name] = _merged(by_name[name], table, "links", source)
    return tuple(by_name[link.name] for link in current)


def _merged_triggers(local: LocalConfig, values: Any, source: str) -> dict[str, TriggerSection]:
    """The box's triggers with the document's tables applied: a `[triggers.X]` changes only the
    keys it names of the box's own `[triggers.X]` (a new source starts from the defaults)."""
    cameras = {camera.name for camera in local.cameras}
    parsed = parse_triggers(values, cameras, source)  # every table checked as in a local file
    merged = dict(local.triggers)
    for name, trigger in parsed.items():
        named = values[name]
        base = merged.get(name, TriggerSection())
        merged[name] = replace(base, **{key: getattr(trigger, key) for key in named})
    return merged
