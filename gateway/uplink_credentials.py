"""The uplink's credentials as the box resolves them: the pairing files merged with the local
file (gateway/uplink_from_config.py), watched for a re-pair.

`resolve_back_office` is the one resolution the composition root uses at start (gateway/run.py)
and the uplink uses again when the back office refuses its certificate (transport/
withdrawal.py): `PairedCredentials` implements transport's `Credentials` over it. A re-pair
(`mvb pair --re-pair` in another process, or the page's pairing) replaces `state_dir/pairing/`;
the uplink sees a new fingerprint, `reload` points its connector at the new back office and
credentials, and it resumes without a restart.

Invariants: a fingerprint is a SHA-256 over public material only (the client certificate, the CA
certificate, the pins, the address and names), never over the private key; `reload` changes
nothing unless the files resolve to a complete back office.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from config.local import LocalConfig
from gateway.pairing_client import paired_uplink
from gateway.uplink_from_config import PAIRING_UNREADABLE, UplinkNotStarted, back_office
from transport.connect import BackOffice, BackOfficeConnector


def resolve_back_office(
    local: LocalConfig, effective: LocalConfig
) -> BackOffice | UplinkNotStarted | None:
    """The back office of the effective [uplink], completed from the pairing files (blocking:
    it reads them); None when the uplink is off. Credential paths are local-file keys (a fleet
    document cannot set them): they resolve against the local file."""
    if not effective.uplink.enabled:
        return None
    try:
        paired = paired_uplink(local.state_dir)
    except (OSError, ValueError) as exc:  # a damaged pairing must not stop the recording
        return UplinkNotStarted(PAIRING_UNREADABLE, f"the pairing files are unreadable: {exc}")
    return back_office(replace(effective, source=local.source), paired)


def fingerprint(office: BackOffice) -> str:
    """SHA-256 (hex) over what identifies the credentials and where they are used (blocking:
    reads the certificate files). OSError when a file is unreadable."""
    tls = office.tls
    digest = hashlib.sha256()
    parts = [
        office.host.encode(),
        str(office.https_port).encode(),
        str(office.h3_port).encode(),
        tls.server_name.encode(),
        b",".join(sorted(tls.pins.digests)),
        tls.client_cert_file.read_bytes(),
        tls.ca_file.read_bytes(),
    ]
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class PairedCredentials:
    """transport/credentials.py `Credentials` over the box's pairing and local file."""

    def __init__(
        self, local: LocalConfig, effective: LocalConfig, connector: BackOfficeConnector
    ) -> None:
        self._local = local
        self._effective = effective
        self._connector = connector
        # Unreadable now (the uplink will say so when it connects): any readable files differ.
        self._in_use = _fingerprint_or_none(connector.back_office) or ""

    def in_use(self) -> str:
        return self._in_use

    def on_disk(self) -> str | None:
        office = resolve_back_office(self._local, self._effective)
        return _fingerprint_or_none(office) if isinstance(office, BackOffice) else None

    def reload(self) -> None:
        office = resolve_back_office(self._local, self._effective)
        if isinstance(office, BackOffice):
            # The new credentials are judged by the same clock as the old (trusted time).
            clock = self._connector.back_office.tls.validity_time
            office = replace(office, tls=replace(office.tls, validity_time=clock))
            current = _fingerprint_or_none(office)
            if current is not None:
                self._in_use = current
                self._connector.back_office = office


def _fingerprint_or_none(office: BackOffice) -> str | None:
    try:
        return fingerprint(office)
    except OSError:  # a pairing being replaced, or damaged: not credentials one can use
        return None
