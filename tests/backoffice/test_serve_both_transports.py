"""`mvb-admin serve --h3-port`: one back office, two transports; our box session on each.

The installed command runs as an operator runs it; the box's tus session uploads one file over
HTTPS and one over HTTP/3, and each comes back attested with the SHA-256 the server computed.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.tls_helpers import TestPki
from transport.h3_io import H3Transport
from transport.http import Transport
from transport.https import HttpsTransport
from transport.tus_messages import UploadSpec
from transport.tus_session import TusSession
from transport.upload import SliceReader, drive

MVB_ADMIN = Path(sys.executable).parent / "mvb-admin"
SERVING = re.compile(r"serving (?P<scheme>https|h3)://127\.0\.0\.1:(?P<port>\d+)/files/ from .*")


def read_lines(process: subprocess.Popen[str], count: int, timeout_s: float) -> list[str]:
    """`count` stdout lines, read by a thread: a select() on the pipe would miss lines that the
    first readline() already pulled into the text buffer."""
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        lines.extend(process.stdout.readline() for _ in range(count))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    assert not reader.is_alive(), f"only {len(lines)} of {count} lines in {timeout_s} s"
    return lines


async def upload(transport: Transport, path: Path, file_id: str) -> tuple[str | None, str]:
    data = path.read_bytes()
    sha256_hex = hashlib.sha256(data).hexdigest()
    session = TusSession(UploadSpec(file_id, len(data), sha256_hex), chunk_bytes=256 * 1024)
    reader = SliceReader(path)
    try:
        outcome = await drive(session, transport, reader)
    finally:
        reader.close()
        await transport.aclose()
    return outcome.attested_sha256_hex, sha256_hex


async def test_one_back_office_serves_https_and_http3(tmp_path: Path, pki: TestPki) -> None:
    command = [
        str(MVB_ADMIN), "serve",
        "--dir", str(tmp_path / "store"),
        "--cert", str(pki.server_cert), "--key", str(pki.server_key),
        "--client-ca", str(pki.ca_cert),
        "--port", "0", "--h3-port", "0", "--reserve-bytes", "0",
    ]  # fmt: skip
    source = tmp_path / "evidence.bin"
    source.write_bytes(os.urandom(700_000))
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            ports = {}
            for line in read_lines(p, 2, timeout_s=20):
                match = SERVING.fullmatch(line.strip())
                assert match is not None, line
                ports[match["scheme"]] = int(match["port"])
            settings = pki.client_settings()
            https = await HttpsTransport.connect("127.0.0.1", ports["https"], settings)
            h3 = await H3Transport.connect("127.0.0.1", ports["h3"], settings)
            attested_https, expected = await upload(https, source, "a" * 32)
            attested_h3, _ = await upload(h3, source, "b" * 32)
        finally:
            p.send_signal(signal.SIGTERM)
            exit_code = p.wait(20)
    assert attested_https == attested_h3 == expected
    assert exit_code == 0
    completed = sorted(path.name for path in (tmp_path / "store" / "complete").iterdir())
    assert completed == ["a" * 32 + ".mvbe", "b" * 32 + ".mvbe"]
