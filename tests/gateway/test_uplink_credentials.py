"""The uplink's view of its credentials files (gateway/uplink_credentials.py): real files, the
box's own configuration loader; a changed certificate is new credentials, a missing one none."""

from __future__ import annotations

import shutil
from pathlib import Path

from config.local import load_config
from gateway.uplink_credentials import PairedCredentials, resolve_back_office
from storage.envelope import RecipientPrivateKey
from tests.gateway.test_uploads_release import box_config
from tests.tls_helpers import TestPki
from transport.connect import BackOffice, BackOfficeConnector


def test_new_certificate_files_are_new_credentials_and_reloading_uses_them(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    own = tmp_path / "pki"
    shutil.copytree(pki.directory, own)
    config_path = box_config(tmp_path / "box", recipient, pki, 8443)
    config_path.write_text(config_path.read_text().replace(str(pki.directory), str(own)))
    config = load_config(config_path)
    office = resolve_back_office(config, config)
    assert isinstance(office, BackOffice)
    connector = BackOfficeConnector(office)
    credentials = PairedCredentials(config, config, connector)
    first = credentials.in_use()
    assert credentials.on_disk() == first  # nothing changed

    shutil.copy(pki.rogue_client_cert, own / "client.crt")  # another certificate at the path
    renewed = credentials.on_disk()
    assert renewed not in (None, first)
    credentials.reload()
    assert credentials.in_use() == renewed
    assert connector.back_office is not office  # resolved again: new connections use it

    (own / "client.crt").unlink()  # being replaced: no credentials to use, nothing reloaded
    assert credentials.on_disk() is None
    credentials.reload()
    assert credentials.in_use() == renewed
