"""A throwaway PKI for the uplink tests: a back office CA and server, a box client, and rogues."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backoffice.pki import create_ca, issue_client_cert, issue_server_cert
from transport.pinning import PinSet, pin_of_pem_file
from transport.tls import ClientTlsSettings

SERVER_NAME = "backoffice.test"
SERVER_HOSTS = [SERVER_NAME, "localhost", "127.0.0.1"]


@dataclass(frozen=True)
class TestPki:
    __test__ = False  # a fixture value, not a test class

    """Paths of every file, plus pins. `rogue_*` is a server certificate from another CA (a
    middlebox); `impostor_*` is signed by *our* CA but with an unpinned key (a stolen CA key)."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca_cert: Path
    rogue_server_cert: Path
    rogue_server_key: Path
    rogue_client_cert: Path
    rogue_client_key: Path
    impostor_server_cert: Path
    impostor_server_key: Path
    server_pin: str
    backup_pin: str

    def client_settings(self, pins: list[str] | None = None) -> ClientTlsSettings:
        return ClientTlsSettings(
            ca_file=self.ca_cert,
            client_cert_file=self.client_cert,
            client_key_file=self.client_key,
            pins=PinSet.from_strings(pins or [self.server_pin, self.backup_pin]),
            server_name=SERVER_NAME,
        )


def make_test_pki(directory: Path) -> TestPki:
    ca = create_ca()
    ca_cert, ca_key = ca.write(directory, "ca")
    server_cert, server_key = issue_server_cert(ca, SERVER_HOSTS).write(directory, "server")
    client_cert, client_key = issue_client_cert(ca, "MVB-TEST-0001").write(directory, "client")
    backup = issue_server_cert(ca, SERVER_HOSTS)
    backup.write(directory, "backup")
    rogue_ca = create_ca("Rogue middlebox CA")
    rogue_ca_cert, _ = rogue_ca.write(directory, "rogue-ca")
    rogue_cert, rogue_key = issue_server_cert(rogue_ca, SERVER_HOSTS).write(directory, "rogue")
    rogue_client_cert, rogue_client_key = issue_client_cert(rogue_ca, "MVB-ROGUE").write(
        directory, "rogue-client"
    )
    impostor_cert, impostor_key = issue_server_cert(ca, SERVER_HOSTS).write(directory, "impostor")
    return TestPki(
        directory=directory,
        ca_cert=ca_cert,
        ca_key=ca_key,
        server_cert=server_cert,
        server_key=server_key,
        client_cert=client_cert,
        client_key=client_key,
        rogue_ca_cert=rogue_ca_cert,
        rogue_server_cert=rogue_cert,
        rogue_server_key=rogue_key,
        rogue_client_cert=rogue_client_cert,
        rogue_client_key=rogue_client_key,
        impostor_server_cert=impostor_cert,
        impostor_server_key=impostor_key,
        server_pin=pin_of_pem_file(server_cert.read_bytes()),
        backup_pin=pin_of_pem_file(backup.cert_pem),
    )
