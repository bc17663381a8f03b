"""The box's local configuration file (TOML): a closed schema, strictest protocol defaults.

This is the seed of the full schema (issue "Pairing and signed fleet configuration"): every key is
declared here with its type and range; an unknown key or a value out of range fails with a message
naming the key and the file. Units are in the names.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULTS_DIR = Path(__file__).parent / "defaults"


class ConfigError(ValueError):
    """Bad configuration: the message says which file and which key."""


@dataclass(frozen=True, slots=True)
class BoxSection:
    device_serial: str = "MVB-UNPAIRED"
    vehicle_id: str = "unassigned"
    state_dir: str = "/var/lib/mvb"
    card_dir: str = "/media/mvb-card"
    recipient_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StorageSection:
    chunk_max_bytes: int = 256 * 1024
    file_target_s: float = 60.0
    file_target_bytes: int = 64 * 1024 * 1024
    card_reserve_bytes: int = 64 * 1024 * 1024
    min_free_to_start_bytes: int = 256 * 1024 * 1024
    retention_days: int = 28


# (section, key) -> (min, max) for numeric settings; the protocols bound retention at 28 days.
_RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("storage", "chunk_max_bytes"): (4096, 16 * 1024 * 1024),
    ("storage", "file_target_s"): (2, 600),
    ("storage", "file_target_bytes"): (1024 * 1024, 1024 * 1024 * 1024),
    # The reserve pays for sealing, the catalog and the audit log once recording stops on a full
    # card; below a few MiB sqlite itself runs out of room first.
    ("storage", "card_reserve_bytes"): (4 * 1024 * 1024, 1 << 40),
    ("storage", "min_free_to_start_bytes"): (0, 1 << 40),
    ("storage", "retention_days"): (1, 28),
}


@dataclass(frozen=True, slots=True)
class LocalConfig:
    box: BoxSection = field(default_factory=BoxSection)
    storage: StorageSection = field(default_factory=StorageSection)
    source: str = "<defaults>"

    def resolve(self, relative: str) -> Path:
        """Paths in the file are relative to the file's folder (so a demo tree is movable)."""
        path = Path(relative)
        if path.is_absolute() or self.source.startswith("<"):
            return path
        return Path(self.source).parent / path

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.box.state_dir)

    @property
    def card_dir(self) -> Path:
        return self.resolve(self.box.card_dir)

    @property
    def recipient_key_paths(self) -> tuple[Path, ...]:
        return tuple(self.resolve(p) for p in self.box.recipient_keys)


_SECTIONS: dict[str, type[BoxSection] | type[StorageSection]] = {
    "box": BoxSection,
    "storage": StorageSection,
}


def load_config(path: Path) -> LocalConfig:
    """Parse and validate `path`; raise ConfigError naming the file and key on any problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    return parse_config(raw, str(path))


def parse_config(raw: dict[str, Any], source: str) -> LocalConfig:
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section [{unknown[0]}]")
    box = _parse_section(raw.get("box", {}), "box", BoxSection, source)
    storage = _parse_section(raw.get("storage", {}), "storage", StorageSection, source)
    assert isinstance(box, BoxSection)
    assert isinstance(storage, StorageSection)
    if not 1 <= len(box.recipient_keys) <= 2:
        raise ConfigError(f"{source}: box.recipient_keys needs one or two public key files")
    if storage.min_free_to_start_bytes <= storage.card_reserve_bytes:
        raise ConfigError(
            f"{source}: storage.min_free_to_start_bytes must exceed storage.card_reserve_bytes"
        )
    return LocalConfig(box=box, storage=storage, source=source)


def _parse_section(
    values: Any, name: str, cls: type[BoxSection] | type[StorageSection], source: str
) -> BoxSection | StorageSection:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    declared = {f.name: f for f in fields(cls)}
    parsed: dict[str, Any] = {}
    for key, value in values.items():
        if key not in declared:
            raise ConfigError(f"{source}: unknown key {name}.{key}")
        default = getattr(cls(), key)
        parsed[key] = _check_value(name, key, value, default, source)
    return cls(**parsed)


def _check_value(section: str, key: str, value: Any, default: Any, source: str) -> Any:
    where = f"{source}: {section}.{key}"
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(value)
    if isinstance(default, bool) or isinstance(value, bool):
        raise ConfigError(f"{where}: booleans are not accepted here")
    if isinstance(default, float) and isinstance(value, int):
        value = float(value)
    if type(value) is not type(default):
        raise ConfigError(f"{where} must be {type(default).__name__}, not {type(value).__name__}")
    bounds = _RANGES.get((section, key))
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{where} = {value} is outside {bounds[0]:g}..{bounds[1]:g}")
    return value
