"""Build the uplink from the box's configuration ([uplink] and [[links]] of config/local.py)."""

from __future__ import annotations

from pathlib import Path

from config.local import LinkSection, LocalConfig
from storage.store import EvidenceStore
from transport.binding import LinkBinding
from transport.connect import BackOffice, BackOfficeConnector, carrier_up
from transport.ledger import UplinkLedger
from transport.links import CostClass, LinkConfig
from transport.pinning import PinSet
from transport.scheduler import SchedulerPolicy
from transport.tls import ClientTlsSettings
from transport.uplink import UplinkService, UplinkSettings
from transport.upload import RetryPolicy

LEDGER_DIR = "uplink"


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


def back_office(config: LocalConfig) -> BackOffice:
    uplink = config.uplink
    tls = ClientTlsSettings(
        ca_file=config.resolve(uplink.ca_file),
        client_cert_file=config.resolve(uplink.client_cert_file),
        client_key_file=config.resolve(uplink.client_key_file),
        pins=PinSet.from_strings(list(uplink.pins)),
        server_name=uplink.server_name,
    )
    return BackOffice(
        host=uplink.host,
        https_port=uplink.port,
        h3_port=uplink.h3_port,
        tls=tls,
        connect_timeout_s=uplink.connect_timeout_s,
        request_timeout_s=uplink.request_timeout_s,
    )


def build_uplink(config: LocalConfig, store: EvidenceStore) -> UplinkService | None:
    """The uplink service for `config`, or None when [uplink] is not enabled."""
    uplink = config.uplink
    if not uplink.enabled:
        return None
    links = tuple(link_config(section) for section in config.links)
    settings = UplinkSettings(
        links=links,
        endpoint_path=uplink.endpoint_path,
        chunk_bytes=uplink.chunk_bytes,
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
        h3_available=uplink.h3_port != 0,
    )
    ledger = UplinkLedger(Path(store.layout.root) / LEDGER_DIR)
    connector = BackOfficeConnector(back_office(config))
    return UplinkService(store, ledger, settings, connector, carrier_up=carrier_up)
