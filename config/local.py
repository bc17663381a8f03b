"""The box's local configuration file (TOML): a closed schema, strictest protocol defaults.

This is the seed of the full schema (issue "Pairing and signed fleet configuration"): every key is
declared with its type (config/local_sections.py) and its range (here); an unknown key or a value
out of range fails with a message naming the key and the file. Units are in the names.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from common.passwords import PasswordHashError, parse_password_hash
from config.cameras import CAMERA_KINDS, CameraSection, ingest_problem, listeners_problem
from config.local_sections import (
    INPUT_KINDS,
    AccountSection,
    ApiSection,
    BoxSection,
    GpsSection,
    InputSection,
    LinkSection,
    RecordingSection,
    ReportsSection,
    StorageSection,
    TriggerSection,
    UplinkSection,
    WebSection,
    WebuiSection,
)
from config.local_sections import (
    ConfigError as ConfigError,  # re-exported: every config fault is taken from here
)
from transport.pinning import PinFormatError, parse_pin

DEFAULTS_DIR = Path(__file__).parent / "defaults"

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
    ("storage", "retention_check_s"): (1, 86400),
    ("storage", "time_unknown_alarm_after_s"): (0, 86400),
    ("box", "shutdown_grace_s"): (1, 120),
    ("box", "recipient_threshold"): (1, 8),
    ("recording", "prerecord_s"): (5, 120),
    ("recording", "postrecord_s"): (0, 120),
    ("recording", "officer_stop_postrecord_s"): (0, 120),
    ("recording", "max_continuous_s"): (60, 8 * 3600),
    ("recording", "segment_min_s"): (0.5, 10),
    ("recording", "ring_max_bytes"): (1024 * 1024, 1024 * 1024 * 1024),
    ("gps", "port"): (1, 65535),
    ("api", "port"): (1, 65535),
    ("web", "https_port"): (1, 65535),
    ("web", "http_port"): (0, 65535),
    ("webui", "max_failed_logins"): (3, 20),
    ("webui", "lockout_s"): (60, 86400),
    ("webui", "session_idle_s"): (60, 86400),
    ("webui", "session_max_s"): (300, 7 * 86400),
    ("webui", "hold_to_stop_ms"): (0, 10_000),
    ("gps", "stale_after_s"): (1, 60),
    ("cameras", "width"): (16, 7680),
    ("cameras", "height"): (16, 4320),
    ("cameras", "fps"): (1, 120),
    ("cameras", "bitrate_bps"): (10_000, 100_000_000),
    ("cameras", "listen_port"): (0, 65535),
    ("inputs", "line"): (0, 511),
    ("inputs", "debounce_ms"): (0, 5000),
    ("inputs", "threshold_g"): (0.1, 20),
    ("triggers", "postrecord_s"): (0, 120),
    ("triggers", "threshold_mps"): (1, 100),
    ("uplink", "port"): (1, 65535),
    ("uplink", "h3_port"): (0, 65535),
    ("uplink", "chunk_bytes"): (64 * 1024, 64 * 1024 * 1024),
    ("uplink", "max_parallel_per_link"): (1, 8),
    ("uplink", "cellular_max_file_bytes"): (0, 1 << 40),
    ("uplink", "retry_initial_s"): (0.01, 600),
    ("uplink", "retry_max_s"): (0.1, 3600),
    ("uplink", "attempts_per_assignment"): (1, 100),
    ("uplink", "connect_timeout_s"): (1, 300),
    ("uplink", "request_timeout_s"): (1, 3600),
    ("uplink", "read_timeout_s"): (1, 600),
    ("uplink", "stall_timeout_s"): (1, 600),
    ("uplink", "chunk_min_bytes"): (16 * 1024, 64 * 1024 * 1024),
    ("uplink", "chunk_target_s"): (1, 120),
    ("uplink", "config_poll_s"): (1, 86400),
    ("links", "monthly_cap_bytes"): (0, 1 << 50),
    ("links", "billing_day"): (1, 28),
    ("links", "rate_cap_bytes_per_s"): (0, 1 << 40),
    ("links", "headroom_fraction"): (0, 0.5),
    ("links", "p0_reserve_bytes"): (0, 1 << 50),
}


@dataclass(frozen=True, slots=True)
class LocalConfig:
    box: BoxSection = field(default_factory=BoxSection)
    storage: StorageSection = field(default_factory=StorageSection)
    recording: RecordingSection = field(default_factory=RecordingSection)
    gps: GpsSection = field(default_factory=GpsSection)
    api: ApiSection = field(default_factory=ApiSection)
    cameras: tuple[CameraSection, ...] = ()
    inputs: tuple[InputSection, ...] = ()
    triggers: dict[str, TriggerSection] = field(default_factory=dict)
    uplink: UplinkSection = field(default_factory=UplinkSection)
    links: tuple[LinkSection, ...] = ()
    accounts: tuple[AccountSection, ...] = ()
    web: WebSection = field(default_factory=WebSection)
    webui: WebuiSection = field(default_factory=WebuiSection)
    reports: ReportsSection = field(default_factory=ReportsSection)
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


Section = (
    BoxSection
    | StorageSection
    | RecordingSection
    | GpsSection
    | ApiSection
    | WebSection
    | WebuiSection
    | ReportsSection
    | CameraSection
    | InputSection
    | TriggerSection
    | UplinkSection
    | LinkSection
    | AccountSection
)
_SECTIONS: dict[str, type[Section]] = {
    "box": BoxSection,
    "storage": StorageSection,
    "recording": RecordingSection,
    "gps": GpsSection,
    "api": ApiSection,
    "uplink": UplinkSection,
    "web": WebSection,
    "webui": WebuiSection,
    "reports": ReportsSection,
}
_COLLECTIONS = frozenset({"cameras", "inputs", "triggers", "links", "accounts"})


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
    unknown = sorted(set(raw) - set(_SECTIONS) - _COLLECTIONS)
    if unknown:
        raise ConfigError(f"{source}: unknown section [{unknown[0]}]")
    box = parse_section(raw.get("box", {}), "box", BoxSection, source)
    storage = parse_section(raw.get("storage", {}), "storage", StorageSection, source)
    recording = parse_section(raw.get("recording", {}), "recording", RecordingSection, source)
    gps = parse_section(raw.get("gps", {}), "gps", GpsSection, source)
    api = parse_section(raw.get("api", {}), "api", ApiSection, source)
    cameras = _parse_cameras(raw.get("cameras", []), source)
    triggers = parse_triggers(raw.get("triggers", {}), {c.name for c in cameras}, source)
    inputs = _parse_inputs(raw.get("inputs", []), source)
    uplink = parse_section(raw.get("uplink", {}), "uplink", UplinkSection, source)
    links = _parse_links(raw.get("links", []), source)
    accounts = parse_accounts(raw.get("accounts", []), source)
    web = parse_section(raw.get("web", {}), "web", WebSection, source)
    webui = parse_section(raw.get("webui", {}), "webui", WebuiSection, source)
    reports = parse_section(raw.get("reports", {}), "reports", ReportsSection, source)
    config = LocalConfig(
        box,
        storage,
        recording,
        gps,
        api,
        cameras,
        inputs,
        triggers,
        uplink,
        links,
        accounts,
        web,
        webui,
        reports,
        source,
    )
    check_config(config, source)
    return config


def check_config(config: LocalConfig, source: str) -> None:
    """Rules across sections, for a local file and for a fleet document applied to one."""
    if config.api.host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(
            f"{source}: api.host must be loopback (127.0.0.1, ::1 or localhost): the local "
            "channel has no login; the officer's tablet uses [web]"
        )
    keys = config.box.recipient_keys
    if not 1 <= len(keys) <= 8:
        raise ConfigError(f"{source}: box.recipient_keys needs one to eight public key files")
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{source}: box.recipient_keys lists a key file twice")
    if config.box.recipient_threshold > len(keys):
        raise ConfigError(
            f"{source}: box.recipient_threshold = {config.box.recipient_threshold} exceeds the "
            f"{len(keys)} key(s) of box.recipient_keys"
        )
    storage = config.storage
    if storage.min_free_to_start_bytes <= storage.card_reserve_bytes:
        raise ConfigError(
            f"{source}: storage.min_free_to_start_bytes must exceed storage.card_reserve_bytes"
        )
    for link in config.links:
        if link.p0_reserve_bytes > link.monthly_cap_bytes > 0:
            raise ConfigError(f"{source}: links.p0_reserve_bytes exceeds the cap ({link.name})")
    _check_uplink(config.uplink, config.links, source)
    _check_web(config.web, source)
    _check_webui(config.webui, source)


def _parse_links(values: Any, source: str) -> tuple[LinkSection, ...]:
    if not isinstance(values, list):
        raise ConfigError(f"{source}: links must be an array of tables ([[links]])")
    links = tuple(parse_section(v, "links", LinkSection, source) for v in values)
    names = [link.name for link in links]
    for link in links:
        if not link.name or names.count(link.name) > 1:
            raise ConfigError(f"{source}: links.name must be set and unique ({link.name!r})")
        if link.cost_class not in ("wifi", "cellular"):
            raise ConfigError(f"{source}: links.cost_class must be wifi or cellular ({link.name})")
    return links


ACCOUNT_NAME = re.compile(r"[a-z][a-z0-9._-]{1,31}")
OFFICER_ID = re.compile(r"[A-Za-z0-9-]{1,32}")
"""A service number (RULES R5): it goes into every recording's metadata, so it is kept plain."""


def parse_accounts(values: Any, source: str) -> tuple[AccountSection, ...]:
    """[[accounts]]: unique names, a known role, a hash in the one accepted format (U2)."""
    if not isinstance(values, list):
        raise ConfigError(f"{source}: accounts must be an array of tables ([[accounts]])")
    accounts = tuple(parse_section(v, "accounts", AccountSection, source) for v in values)
    names = [account.name for account in accounts]
    for account in accounts:
        if not ACCOUNT_NAME.fullmatch(account.name) or names.count(account.name) > 1:
            raise ConfigError(
                f"{source}: accounts.name {account.name!r} must be unique and match "
                f"{ACCOUNT_NAME.pattern}"
            )
        if account.role not in ("officer", "admin"):
            raise ConfigError(f"{source}: accounts.role must be officer or admin ({account.name})")
        try:
            parse_password_hash(account.password_hash)
        except PasswordHashError as exc:
            raise ConfigError(f"{source}: accounts.password_hash of {account.name}: {exc}") from exc
        if account.officer_id and not OFFICER_ID.fullmatch(account.officer_id):
            raise ConfigError(
                f"{source}: accounts.officer_id of {account.name} must match {OFFICER_ID.pattern}"
            )
    return accounts


_DNS_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
SAN_DNS_NAME = re.compile(rf"(?=.{{1,253}}$){_DNS_LABEL}(\.{_DNS_LABEL})*")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_san_entry(text: str) -> bool:
    """True for an IP address or a DNS host name (what a certificate's SAN may name)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return SAN_DNS_NAME.fullmatch(text) is not None
    return True


def _check_web(web: WebSection, source: str) -> None:
    """The web channel: a configured certificate comes with its key; SANs are names or IPs."""
    if bool(web.tls_cert_file) != bool(web.tls_key_file):
        raise ConfigError(f"{source}: web.tls_cert_file and web.tls_key_file go together")
    for entry in web.san:
        if not is_san_entry(entry):
            raise ConfigError(f"{source}: web.san {entry!r} is neither a host name nor an IP")
    if web.http_port == web.https_port:
        raise ConfigError(f"{source}: web.http_port must differ from web.https_port")
    if not web.host:
        raise ConfigError(f"{source}: web.host is required (0.0.0.0 for every interface)")


def _check_webui(webui: WebuiSection, source: str) -> None:
    if webui.session_idle_s > webui.session_max_s:
        raise ConfigError(f"{source}: webui.session_idle_s exceeds webui.session_max_s")
    token = webui.metrics_token_sha256
    if token and not SHA256_HEX.fullmatch(token):
        raise ConfigError(f"{source}: webui.metrics_token_sha256 must be 64 lowercase hex digits")


def _check_uplink(uplink: UplinkSection, links: tuple[LinkSection, ...], source: str) -> None:
    """An enabled uplink is always pinned: its credentials come whole from this file (checked
    here) or whole from pairing; there is no unverified or unpinned mode (L1)."""
    if not uplink.enabled:
        return
    if uplink.explicit_credentials(source):
        if not 1 <= len(uplink.pins) <= 4:
            raise ConfigError(f"{source}: uplink.pins needs a primary and a backup pin (1 to 4)")
        for pin in uplink.pins:
            try:
                parse_pin(pin)
            except PinFormatError as exc:
                raise ConfigError(f"{source}: uplink.pins: {exc}") from exc
    if not links:
        raise ConfigError(f"{source}: the uplink is enabled but no [[links]] are configured")
    if not uplink.endpoint_path.startswith("/"):
        raise ConfigError(f"{source}: uplink.endpoint_path must start with /")


def _parse_cameras(values: Any, source: str) -> tuple[CameraSection, ...]:
    if not isinstance(values, list):
        raise ConfigError(f"{source}: cameras must be an array of tables ([[cameras]])")
    cameras = tuple(parse_section(v, "cameras", CameraSection, source) for v in values)
    names = [c.name for c in cameras]
    for camera in cameras:
        if not camera.name:
            raise ConfigError(f"{source}: cameras.name is required")
        if camera.kind not in CAMERA_KINDS:
            raise ConfigError(
                f"{source}: cameras.kind {camera.kind!r} is not one of "
                f"{sorted(CAMERA_KINDS)} (camera {camera.name})"
            )
        if names.count(camera.name) > 1:
            raise ConfigError(f"{source}: cameras.name {camera.name!r} appears twice")
        problem = ingest_problem(camera)
        if problem is not None:
            raise ConfigError(f"{source}: {problem}")
    problem = listeners_problem(cameras)
    if problem is not None:
        raise ConfigError(f"{source}: {problem}")
    return cameras


def _parse_inputs(values: Any, source: str) -> tuple[InputSection, ...]:
    if not isinstance(values, list):
        raise ConfigError(f"{source}: inputs must be an array of tables ([[inputs]])")
    inputs = tuple(parse_section(v, "inputs", InputSection, source) for v in values)
    for item in inputs:
        if not item.source or not item.path:
            raise ConfigError(f"{source}: inputs.source and inputs.path are required")
        if item.kind not in INPUT_KINDS:
            raise ConfigError(
                f"{source}: inputs.kind {item.kind!r} is not one of "
                f"{sorted(INPUT_KINDS)} (input {item.source})"
            )
    return inputs


def parse_triggers(values: Any, cameras: set[str], source: str) -> dict[str, TriggerSection]:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: [triggers] must be a table of tables")
    triggers = {}
    for name, table in values.items():
        trigger = parse_section(table, "triggers", TriggerSection, source)
        unknown = sorted(set(trigger.cameras) - cameras)
        if unknown:
            raise ConfigError(
                f"{source}: triggers.{name}.cameras names unknown camera {unknown[0]}"
            )
        if trigger.upload_class not in ("", "P0", "P1", "P2"):
            raise ConfigError(f"{source}: triggers.{name}.upload_class must be P0, P1 or P2")
        triggers[name] = trigger
    return triggers


S = TypeVar("S", bound=Section)


def parse_section(values: Any, name: str, cls: type[S], source: str) -> S:
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


_UNSET_MEANS: dict[tuple[str, str], Any] = {("triggers", "postrecord_s"): 0.0}
"""Keys whose default is None (unset: taken from another section); the value a set key's type
and range are checked like."""


def _check_value(section: str, key: str, value: Any, default: Any, source: str) -> Any:
    where = f"{source}: {section}.{key}"
    if default is None:
        default = _UNSET_MEANS[(section, key)]
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(value)
    if isinstance(default, bool) != isinstance(value, bool):
        raise ConfigError(f"{where} must be {type(default).__name__}, not {type(value).__name__}")
    if isinstance(default, bool):
        return value
    if isinstance(default, float) and isinstance(value, int):
        value = float(value)
    if type(value) is not type(default):
        raise ConfigError(f"{where} must be {type(default).__name__}, not {type(value).__name__}")
    bounds = _RANGES.get((section, key))
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{where} = {value} is outside {bounds[0]:g}..{bounds[1]:g}")
    return value
