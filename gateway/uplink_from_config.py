"""Build the uplink from the box's configuration ([uplink] and [[links]] of config/local.py) and
what pairing gave it (docs/pairing.md 3.2 and 5.5).

`uplink_from_pairing` is the one place where the local file and the pairing files meet. It is
pure: the shell (gateway/run.py) reads `state_dir/pairing` into a PairedUplink and hands it in.

Invariants:
- A value set in the local file wins over pairing; the credentials (CA, certificate, key, pins)
  come whole from one side, never mixed (config/local.py checks the local side is whole).
- An enabled uplink that cannot be resolved (an unpaired box without local credentials) is not
  an error: the box records without it, and UplinkNotStarted says why (safety first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from config.local import LocalConfig
from config.local_sections import LinkSection
from protocol.pairing_code import split_address
from protocol.pairing_messages import ServiceEndpoint
from storage.store import EvidenceStore
from transport.binding import LinkBinding
from transport.connect import BackOffice, BackOfficeConnector, carrier_up
from transport.credentials import Credentials
from transport.ledger import LEDGER_DIR, UplinkLedger
from transport.links import CostClass, LinkConfig
from transport.pinning import PinSet
from transport.scheduler import SchedulerPolicy
from transport.tls import ClientTlsSettings
from transport.uplink import UplinkService, UplinkSettings
from transport.upload import RetryPolicy

NOT_PAIRED: Final = "not paired"
NO_SERVICE_ENDPOINT: Final = "no service endpoint"
PAIRING_UNREADABLE: Final = "pairing unreadable"


@dataclass(frozen=True, slots=True)
class PairedUplink:
    """What pairing gave the box for its uplink (gateway/pairing_client.py reads it from
    `state_dir/pairing`): its credential files, the pin set, and the service endpoint, which is
    None for a pairing made before grants carried it."""

    ca_file: Path
    client_cert_file: Path
    client_key_file: Path
    pins: tuple[str, ...]
    service: ServiceEndpoint | None


@dataclass(frozen=True, slots=True)
class UplinkNotStarted:
    """An enabled uplink that does not run, and why: stands in for the UplinkService in the
    running box, so the status page says so (`state` is NOT_PAIRED, NO_SERVICE_ENDPOINT or
    PAIRING_UNREADABLE)."""

    state: str
    reason: str

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason}

    def any_link_usable(self) -> bool:
        return False  # there is no link: nothing is uploaded until the uplink starts


def link_config(section: LinkSection) -> LinkConfig:
    """A [[links]] table as the link manager's LinkConfig (0 caps mean none)."""
    return LinkConfig(
        name=section.name,
        cost_class=CostClass(section.cost_class),
        binding=LinkBinding(section.interface or None, section.source_address or None),
        monthly_cap_bytes=section.monthly_cap_bytes or None,
        billing_day=section.billing_day,
        rate_cap_bytes_per_s=section.rate_cap_bytes_per_s or None,
        headroom_fraction=section.headroom_fraction,
        p0_reserve_bytes=section.p0_reserve_bytes,
        udp_allowed=section.udp_allowed,
        prefer_h3=section.prefer_h3,
    )


def uplink_from_pairing(
    config: LocalConfig, paired: PairedUplink | None
) -> BackOffice | UplinkNotStarted:
    """Where and how the enabled uplink connects: each value from the local file when it is set
    there, else from pairing (`paired` is None for an unpaired box).

    `host` brings `port` and `h3_port` with it; `server_name` is taken on its own; the credential
    paths and pins go together. ConfigError (from config/local.py) when the local file sets only
    some of the credentials. UplinkNotStarted when neither side has a value the uplink needs.
    """
    uplink = config.uplink
    explicit = uplink.explicit_credentials(config.source)
    service = None if paired is None else paired.service
    needed = (
        ("the credentials", explicit or paired is not None),
        ("uplink.host", bool(uplink.host) or service is not None),
        ("uplink.server_name", bool(uplink.server_name) or service is not None),
    )
    missing = [what for what, known in needed if not known]
    if missing:
        return _not_started(paired, missing)
    if uplink.host:
        host, https_port, h3_port = uplink.host, uplink.port, uplink.h3_port
    else:
        assert service is not None  # `needed` has it
        host, https_port = split_address(service.address)
        h3_port = service.h3_port
    server_name = uplink.server_name or (service.server_name if service is not None else "")
    return BackOffice(
        host=host,
        https_port=https_port,
        h3_port=h3_port,
        tls=_tls(config, explicit, paired, server_name),
        connect_timeout_s=uplink.connect_timeout_s,
        request_timeout_s=uplink.request_timeout_s,
        read_timeout_s=uplink.read_timeout_s,
        stall_timeout_s=uplink.stall_timeout_s,
    )


def _not_started(paired: PairedUplink | None, missing: list[str]) -> UplinkNotStarted:
    unknown = ", ".join(missing)
    if paired is None:
        return UplinkNotStarted(
            NOT_PAIRED,
            f"the box is not paired and the local file does not give {unknown}: pair it "
            "(`mvb pair CODE`); the uplink starts at the next start of `mvb run`",
        )
    return UplinkNotStarted(
        NO_SERVICE_ENDPOINT,
        f"the pairing does not give {unknown} (paired before grants carried the service "
        "endpoint): re-pair the box, or set them in the local file",
    )


def _tls(
    config: LocalConfig, explicit: bool, paired: PairedUplink | None, server_name: str
) -> ClientTlsSettings:
    """The credentials of the local file when it names them, else those of pairing."""
    uplink = config.uplink
    if explicit:
        return ClientTlsSettings(
            ca_file=config.resolve(uplink.ca_file),
            client_cert_file=config.resolve(uplink.client_cert_file),
            client_key_file=config.resolve(uplink.client_key_file),
            pins=PinSet.from_strings(uplink.pins),
            server_name=server_name,
        )
    assert paired is not None  # uplink_from_pairing checked that one side has them
    return ClientTlsSettings(
        ca_file=paired.ca_file,
        client_cert_file=paired.client_cert_file,
        client_key_file=paired.client_key_file,
        pins=PinSet.from_strings(paired.pins),
        server_name=server_name,
    )


def back_office(
    config: LocalConfig, paired: PairedUplink | None = None
) -> BackOffice | UplinkNotStarted | None:
    """The resolved back office of `config`; None when [uplink] is not enabled."""
    if not config.uplink.enabled:
        return None
    return uplink_from_pairing(config, paired)


def uplink_service(
    config: LocalConfig,
    store: EvidenceStore,
    office: BackOffice,
    credentials_for: Callable[[BackOfficeConnector], Credentials] | None = None,
) -> UplinkService:
    """The uplink service of `config`'s [uplink] and [[links]], connecting to `office`;
    `credentials_for(connector)` watches for new credentials (gateway/uplink_credentials.py)."""
    uplink = config.uplink
    settings = UplinkSettings(
        links=tuple(link_config(section) for section in config.links),
        endpoint_path=uplink.endpoint_path,
        chunk_bytes=uplink.chunk_bytes,
        chunk_min_bytes=uplink.chunk_min_bytes,
        chunk_target_s=uplink.chunk_target_s,
        policy=SchedulerPolicy(
            max_parallel_per_link=uplink.max_parallel_per_link,
            cellular_max_file_bytes=uplink.cellular_max_file_bytes,
        ),
        retry=RetryPolicy(
            initial_s=uplink.retry_initial_s,
            max_s=uplink.retry_max_s,
            attempts=uplink.attempts_per_assignment,
        ),
        device_serial=config.box.device_serial,
        h3_available=office.h3_port != 0,
    )
    ledger = UplinkLedger(Path(store.layout.root) / LEDGER_DIR)
    connector = BackOfficeConnector(office)
    credentials = None if credentials_for is None else credentials_for(connector)
    return UplinkService(
        store, ledger, settings, connector, carrier_up=carrier_up, credentials=credentials
    )


def build_uplink(
    config: LocalConfig, store: EvidenceStore, paired: PairedUplink | None = None
) -> UplinkService | None:
    """The uplink service for `config`, or None when [uplink] is not enabled or cannot start
    yet (`back_office` says why)."""
    office = back_office(config, paired)
    if not isinstance(office, BackOffice):
        return None
    return uplink_service(config, store, office)
