"""The local configuration file's sections: one frozen dataclass per table of box.toml.

Each field is a key with its type and its default (the strictest protocol default); units are in
the names. Ranges and cross-key checks live in config/local.py, which parses a file into these
classes: an instance built by hand skips them, so only config/local.py's parse functions make
sections from untrusted input. ConfigError lives here because a section may refuse a value
combination itself (UplinkSection.explicit_credentials).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.faults import ConfigurationFault
from transport.chunk_size import DEFAULT_CHUNK_TARGET_S, DEFAULT_MIN_CHUNK_BYTES
from transport.progress import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_STALL_TIMEOUT_S,
)


class ConfigError(ValueError, ConfigurationFault):
    """Bad configuration: the message says which file and which key."""


@dataclass(frozen=True, slots=True)
class BoxSection:
    device_serial: str = "MVB-UNPAIRED"
    vehicle_id: str = "unassigned"
    state_dir: str = "/var/lib/mvb"
    card_dir: str = "/media/mvb-card"
    recipient_keys: tuple[str, ...] = ()
    # How many of the recipients must act together to decrypt (docs/evidence-format.md 3.1):
    # 1, or 2 for four-eyes viewing (RULES S7, H2O art. 5), where each key is one key holder's
    # (docs/four-eyes.md). Not 2 by default: existing boxes with one recording key would refuse
    # to start; the municipality that requires four-eyes sets it with its holders' keys.
    recipient_threshold: int = 1
    fleet_groups: tuple[str, ...] = ()  # which groups/<g>.toml fleet documents apply to it
    # Ignition off (SIGTERM): how long sealing the recording and flushing may take before
    # `mvb run` exits anyway (systemd's TimeoutStopSec is this plus a margin).
    shutdown_grace_s: float = 20.0


@dataclass(frozen=True, slots=True)
class StorageSection:
    chunk_max_bytes: int = 256 * 1024
    file_target_s: float = 60.0
    file_target_bytes: int = 64 * 1024 * 1024
    card_reserve_bytes: int = 64 * 1024 * 1024
    min_free_to_start_bytes: int = 256 * 1024 * 1024
    retention_days: int = 28
    # How often retention runs on its own timer in `mvb run` (docs/retention.md), uplink or not;
    # it also runs as soon as trusted time becomes known, and after every attested upload.
    retention_check_s: float = 600.0
    # Files whose age cannot be judged (the time is unknown) raise an alarm once the boot is
    # this old: GPS or the back office usually tell the time within minutes of a boot.
    time_unknown_alarm_after_s: float = 600.0
    # The card folder must be a mount point: without the card the box would otherwise record
    # onto its internal flash. Off for development machines and tests.
    require_mount: bool = False


@dataclass(frozen=True, slots=True)
class RecordingSection:
    """RULES R1/R2: pre-record is 30 s (Borsele), 60 s (H2O) or 120 s (Westerkwartier); the
    strictest, 30 s, is the default."""

    prerecord_s: float = 30.0
    # After an automatic trigger's stop (lights off), and for every trigger whose table does not
    # name its own: the post-record the recording keeps.
    postrecord_s: float = 30.0
    # The officer's stop ends the recording at once (H2O art. 2.6: stop when the threat is
    # over) unless the municipality's policy sets a post-record for it here.
    officer_stop_postrecord_s: float = 0.0
    # A policy may refuse recordings the officer starts while no shift runs (RULES R5: a
    # recording without a name); automatic triggers record whatever the shift.
    officer_start_needs_shift: bool = False
    max_continuous_s: float = 1800.0
    segment_min_s: float = 1.0
    ring_max_bytes: int = 96 * 1024 * 1024  # per camera: 120 s at 6 Mbit/s fits
    # "beeld en geluid" (Borsele 2.1, H2O art. 1): a camera's sound is recorded with its
    # picture unless the municipality's policy says otherwise (docs/capture.md, Audio)
    record_audio: bool = True


@dataclass(frozen=True, slots=True)
class ReportsSection:
    """Which report fields a municipality requires (RULES R7, R8; docs/webui.md 4), settable by a
    fleet document. The strictest, everything required, is the default. A field not required may
    still be given; it is then checked like a required one.

    `require_informed_afterwards`: a report whose person was not warned beforehand says whether
    (and when) the person was informed afterwards (H2O art. 2.4, DPIA 4.5).
    `require_premises`: every report and warning says whether it happened in a home or on private
    premises, and on what ground (Borsele 3.2.2: consent or a warrant to enter)."""

    require_informed_afterwards: bool = True
    require_premises: bool = True


@dataclass(frozen=True, slots=True)
class GpsSection:
    host: str = "127.0.0.1"
    port: int = 2947
    stale_after_s: float = 3.0


@dataclass(frozen=True, slots=True)
class ApiSection:
    """The loopback (`local`) channel of the JSON API: no authentication, so loopback only
    (docs/webui.md 1); the officer's tablet uses the HTTPS channel of [web]."""

    host: str = "127.0.0.1"
    port: int = 8088


@dataclass(frozen=True, slots=True)
class WebSection:
    """The officer's web channel (docs/webui.md 1, 1.3): physical to the box, local file only.

    HTTPS on `https_port`; plain HTTP on `http_port` only redirects to it (0: no redirect
    listener). `tls_cert_file` and `tls_key_file` (both or neither) name a municipality's own
    certificate; without them the box makes a self-signed one for its host name, localhost,
    127.0.0.1 and the names and addresses in `san`. Paths are relative to this file.
    """

    enabled: bool = True
    host: str = "0.0.0.0"  # noqa: S104 (the vehicle network is where the officer's tablet is)
    https_port: int = 8443
    http_port: int = 8080
    tls_cert_file: str = ""
    tls_key_file: str = ""
    san: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WebuiSection:
    """Web login policy (RULES U2), settable by a fleet document: lock an account for
    `lockout_s` after `max_failed_logins` wrong passwords in a row; a session ends after
    `session_idle_s` without a request and `session_max_s` after login. `metrics_token_sha256`
    (64 hex, optional) admits a monitor to /metrics with the token whose SHA-256 it is.
    `hold_to_stop_ms`: how long the officer holds the page's Stop before it stops (a deliberate
    hold, not a tap that a bump in a moving car makes; 0: a tap stops; docs/webui.md 6)."""

    max_failed_logins: int = 5
    lockout_s: int = 900
    session_idle_s: int = 1800
    session_max_s: int = 43200
    metrics_token_sha256: str = ""
    hold_to_stop_ms: int = 1500


UPLINK_CREDENTIAL_KEYS = ("ca_file", "client_cert_file", "client_key_file", "pins")
"""[uplink] keys that come together, from the local file or from pairing, never mixed."""


@dataclass(frozen=True, slots=True)
class UplinkSection:
    """The back office the box uploads to (docs/tus-profile.md), pinned and mutually authenticated.

    `host` is where to connect (name or address); `server_name` is the name its certificate must
    carry. `h3_port` 0 means the back office offers no HTTP/3. Paths are relative to this file.

    All of these may be left out: a paired box takes them from its pairing (docs/pairing.md 3.2,
    gateway/uplink_from_config.py `uplink_from_pairing`). What is set here wins, e.g. behind NAT:
    `host` brings `port` and `h3_port` from this file too, `server_name` stands alone, and the
    credentials (UPLINK_CREDENTIAL_KEYS) are all-or-nothing, so a box never mixes its own
    certificate with another trust set.

    Chunks (docs/uplink.md "Slow links"): each link sizes them to take about `chunk_target_s`
    at its measured goodput, between `chunk_min_bytes` and `chunk_bytes` (the largest; a floor
    above it is it). Time is bounded by progress, not silence: a body may stall at most
    `stall_timeout_s`; the answer may keep silent `read_timeout_s` after the body was
    acknowledged and take `request_timeout_s` in all; a new connection gets `connect_timeout_s`.
    """

    enabled: bool = False
    host: str = ""
    port: int = 443
    h3_port: int = 0
    server_name: str = ""
    endpoint_path: str = "/files/"
    ca_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""
    pins: tuple[str, ...] = ()
    chunk_bytes: int = 4 * 1024 * 1024
    max_parallel_per_link: int = 2
    cellular_max_file_bytes: int = 64 * 1024 * 1024
    retry_initial_s: float = 2.0
    retry_max_s: float = 300.0
    attempts_per_assignment: int = 6
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S
    chunk_min_bytes: int = DEFAULT_MIN_CHUNK_BYTES
    chunk_target_s: float = DEFAULT_CHUNK_TARGET_S
    config_poll_s: float = 300.0  # how often a paired box asks for signed fleet configuration

    def explicit_credentials(self, source: str) -> bool:
        """True when this file gives the credentials, False when pairing does. ConfigError naming
        the first missing key when only some are set."""
        given = [key for key in UPLINK_CREDENTIAL_KEYS if getattr(self, key)]
        missing = [key for key in UPLINK_CREDENTIAL_KEYS if not getattr(self, key)]
        if given and missing:
            raise ConfigError(
                f"{source}: uplink.{missing[0]} is required when uplink.{given[0]} is set: the "
                "credentials come all from this file or all from pairing"
            )
        return bool(given)


@dataclass(frozen=True, slots=True)
class LinkSection:
    """One uplink ([[links]]): `cost_class` wifi or cellular; bound by `interface` and/or
    `source_address`. Caps of 0 mean none. `p0_reserve_bytes` of the monthly cap is kept for
    flagged incidents (P0)."""

    name: str = ""
    cost_class: str = "wifi"
    interface: str = ""
    source_address: str = ""
    monthly_cap_bytes: int = 0
    billing_day: int = 1
    rate_cap_bytes_per_s: int = 0
    headroom_fraction: float = 0.2
    p0_reserve_bytes: int = 0
    udp_allowed: bool = True
    prefer_h3: bool = False  # HTTPS measured better on every emulated link (docs/benchmarks.md)


@dataclass(frozen=True, slots=True)
class AccountSection:
    """A web UI account ([[accounts]]): `role` officer or admin; only a PBKDF2 hash is kept
    (common/passwords.py). Names are what the officer types, never shown in evidence."""

    name: str = ""
    role: str = "officer"
    password_hash: str = ""
    officer_id: str = ""  # the service number recordings carry (RULES R5); empty: none


@dataclass(frozen=True, slots=True)
class TriggerSection:
    """Per trigger source (officer, lights, siren, crash, speed, door): what it does. A table
    overrides only the keys it names: `postrecord_s` None means [recording].postrecord_s."""

    postrecord_s: float | None = None
    may_stop: bool = False
    cameras: tuple[str, ...] = ()  # empty: every camera of the vehicle
    threshold_mps: float = 25.0  # the speed trigger only: 90 km/h
    upload_class: str = ""  # "P0", "P1" or "P2"; empty: DEFAULT_UPLOAD_CLASSES, else P1


DEFAULT_UPLOAD_CLASSES = {"crash": "P0"}
"""A collision is an incident without anyone flagging it: upload at once over any link."""


def upload_class_for(source: str, triggers: dict[str, TriggerSection]) -> str:
    """The upload class of recordings started (or escalated) by trigger `source`."""
    configured = triggers[source].upload_class if source in triggers else ""
    return configured or DEFAULT_UPLOAD_CLASSES.get(source, "P1")


@dataclass(frozen=True, slots=True)
class InputSection:
    """A vehicle input (lights, siren, door, crash, ...): `kind` sysfs (`path` is a gpioN/value
    file), gpiochip (`path` is /dev/gpiochipN, `line` the offset on it) or iio_accel (`path` is
    an IIO accelerometer's sysfs folder; it triggers above `threshold_g` of horizontal
    acceleration: hard braking or a collision)."""

    source: str = ""
    kind: str = "sysfs"
    path: str = ""
    line: int = 0
    active_low: bool = False
    debounce_ms: int = 50
    stop_on_release: bool = False
    threshold_g: float = 0.5


INPUT_KINDS = frozenset({"sysfs", "gpiochip", "iio_accel"})
