"""A third-party tus client (tuspy, on `requests`) against `mvb-admin serve` in a subprocess.

The server runs as an operator runs it: the installed `mvb-admin serve` on 127.0.0.1, port 0,
with the test PKI; tuspy presents the box's client certificate and trusts only the test CA. The
stored file must be byte for byte the source, attested by `Mvb-Stored-Sha256`, in one go and
when a tuspy upload is resumed against a restarted server. Last, a back office set up from
scratch with `mvb-admin pki init` / `pki issue-client` takes an upload from the box it issued.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import pytest
from tusclient.client import TusClient
from tusclient.request import TusRequest
from tusclient.uploader.uploader import Uploader

from tests.tls_helpers import TestPki
from transport.pinning import pin_of_pem_file

MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
CHUNK_BYTES = 1024 * 1024
FILE_BYTES = 6 * CHUNK_BYTES + 12_345  # several MB, not a multiple of the chunk
SERVING = re.compile(r"serving (?P<url>https://127\.0\.0\.1:\d+/files/) from .+")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def trust_for_tuspy(monkeypatch: pytest.MonkeyPatch, ca_cert: Path) -> None:
    """tuspy passes `verify` as a bool on PATCH, so the CA reaches `requests` via its
    environment variable; proxies are kept out of a loopback test."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_cert))
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def tuspy_trusts_the_test_ca(pki: TestPki, monkeypatch: pytest.MonkeyPatch) -> None:
    trust_for_tuspy(monkeypatch, pki.ca_cert)


@pytest.fixture
def source_file(tmp_path: Path) -> Path:
    path = tmp_path / "evidence.mvbe"
    block = hashlib.sha256(b"tuspy interop").digest()
    path.write_bytes((block * (FILE_BYTES // len(block) + 1))[:FILE_BYTES])
    return path


@pytest.fixture
def source_stream(source_file: Path) -> Iterator[BinaryIO]:
    """The source, opened here: tuspy leaves files it opens from a path unclosed."""
    with source_file.open("rb") as stream:
        yield stream


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    """The server's first stdout line, or "" if it exits or stays silent past `timeout_s`."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return ""
    return process.stdout.readline()


@dataclass(frozen=True)
class ServerFiles:
    cert: Path
    key: Path
    client_ca: Path


def files_of(pki: TestPki) -> ServerFiles:
    return ServerFiles(pki.server_cert, pki.server_key, pki.ca_cert)


@contextlib.contextmanager
def mvb_admin_serve(files: ServerFiles, store: Path, log_path: Path) -> Iterator[str]:
    """Run `mvb-admin serve` until the block ends (SIGTERM, must exit 0); yield its URL."""
    command = [
        str(MVB_ADMIN),
        "serve",
        "--dir", str(store),
        "--cert", str(files.cert),
        "--key", str(files.key),
        "--client-ca", str(files.client_ca),
        "--host", "127.0.0.1",
        "--port", "0",
        "--max-chunk-bytes", str(CHUNK_BYTES),
        "--reserve-bytes", "0",
    ]  # fmt: skip
    with (
        log_path.open("a") as log,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True) as process,
    ):
        try:
            line = read_line(process, START_TIMEOUT_S)
            match = SERVING.fullmatch(line.strip())
            assert match is not None, f"no serving line: {line!r}; log: {log_path.read_text()}"
            yield match["url"]
        except BaseException:
            process.kill()  # Popen's exit then reaps it
            raise
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(STOP_TIMEOUT_S) == 0, log_path.read_text()
        finally:
            if process.poll() is None:
                process.kill()


def client(pki: TestPki, url: str) -> TusClient:
    return TusClient(url, client_cert=(str(pki.client_cert), str(pki.client_key)))


def mvb_admin(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [str(MVB_ADMIN), *(str(arg) for arg in args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def upload_id(uploader: Uploader) -> str:
    # tuspy's attributes start as None and are inferred as such; they are set once it uploads.
    url = cast(str | None, uploader.url)
    assert url is not None
    return url.rsplit("/", 1)[1]


def attestation(uploader: Uploader) -> str:
    """Mvb-Stored-Sha256 of the last PATCH's answer."""
    request = cast(TusRequest | None, uploader.request)
    assert request is not None
    value = request.response_headers["mvb-stored-sha256"]
    assert isinstance(value, str)
    return value


def metadata_for(path: Path, file_id: str) -> dict[str, str]:
    return {"file_id": file_id, "sha256": sha256_file(path), "camera": "bodycam"}


@pytest.mark.usefixtures("tuspy_trusts_the_test_ca")
def test_tuspy_uploads_a_multi_megabyte_file_in_checksummed_chunks(
    pki: TestPki, tmp_path: Path, source_file: Path, source_stream: BinaryIO
) -> None:
    store, log_path = tmp_path / "store", tmp_path / "serve.log"
    with mvb_admin_serve(files_of(pki), store, log_path) as url:
        uploader = client(pki, url).uploader(
            file_stream=source_stream,
            chunk_size=CHUNK_BYTES,
            metadata=metadata_for(source_file, "tuspy-0001"),
            upload_checksum=True,  # tuspy sends sha1 Upload-Checksum on every PATCH
        )
        uploader.upload()
        assert uploader.offset == FILE_BYTES
        attested = attestation(uploader)
        assert uploader.get_offset() == FILE_BYTES
    stored = store / "complete" / "tuspy-0001.mvbe"
    assert sha256_file(stored) == sha256_file(source_file) == attested
    log = log_path.read_text()
    assert f"upload complete upload_id={upload_id(uploader)}" in log
    assert f"sha256={attested}" in log
    assert "client_id=MVB-TEST-0001" in log


@pytest.mark.usefixtures("tuspy_trusts_the_test_ca")
def test_a_tuspy_upload_resumes_on_a_restarted_server(
    pki: TestPki, tmp_path: Path, source_file: Path, source_stream: BinaryIO
) -> None:
    store, log_path = tmp_path / "store", tmp_path / "serve.log"
    stop_at_bytes = 3 * CHUNK_BYTES
    with mvb_admin_serve(files_of(pki), store, log_path) as url:
        first = client(pki, url).uploader(
            file_stream=source_stream,
            chunk_size=CHUNK_BYTES,
            metadata=metadata_for(source_file, "tuspy-0002"),
        )
        first.upload(stop_at=stop_at_bytes)
        assert first.offset == stop_at_bytes
        upload_path = "/files/" + upload_id(first)
    assert not (store / "complete" / "tuspy-0002.mvbe").exists()
    with mvb_admin_serve(files_of(pki), store, log_path) as url:
        # The new server listens on another port; the upload's path is what carries over.
        resumed = client(pki, url).uploader(
            file_stream=source_stream,
            url=url.removesuffix("/files/") + upload_path,
            chunk_size=CHUNK_BYTES,
        )
        assert resumed.offset == stop_at_bytes  # asked the restarted server (HEAD)
        resumed.upload()
        attested = attestation(resumed)
    stored = store / "complete" / "tuspy-0002.mvbe"
    assert sha256_file(stored) == sha256_file(source_file) == attested


def test_mvb_admin_pki_makes_a_back_office_a_box_can_upload_to(
    tmp_path: Path, source_file: Path, source_stream: BinaryIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "pki"
    init = mvb_admin("pki", "init", "--dir", keys, "--host", "127.0.0.1", "localhost")
    assert init.returncode == 0, init.stderr
    pins = re.findall(r"sha256/[A-Za-z0-9+/]{43}=", init.stdout)
    assert pins == [
        pin_of_pem_file((keys / "server.crt").read_bytes()),
        pin_of_pem_file((keys / "backup.crt").read_bytes()),
    ]
    assert (keys / "ca.key").stat().st_mode & 0o077 == 0
    again = mvb_admin("pki", "init", "--dir", keys, "--host", "127.0.0.1")
    assert again.returncode == 2
    assert "refusing to replace the CA" in again.stderr
    issued = mvb_admin("pki", "issue-client", "--dir", keys, "--serial", "MVB-PKI-0001")
    assert issued.returncode == 0, issued.stderr
    assert (
        mvb_admin("pki", "issue-client", "--dir", keys, "--serial", "MVB-PKI-0001").returncode == 2
    )
    assert mvb_admin("pki", "issue-client", "--dir", keys, "--serial", "../x").returncode == 2

    trust_for_tuspy(monkeypatch, keys / "ca.crt")
    store, log_path = tmp_path / "store", tmp_path / "serve.log"
    files = ServerFiles(keys / "server.crt", keys / "server.key", keys / "ca.crt")
    box_cert = (
        str(keys / "clients" / "MVB-PKI-0001.crt"),
        str(keys / "clients" / "MVB-PKI-0001.key"),
    )
    with mvb_admin_serve(files, store, log_path) as url:
        uploader = TusClient(url, client_cert=box_cert).uploader(
            file_stream=source_stream,
            chunk_size=CHUNK_BYTES,
            metadata=metadata_for(source_file, "pki-0001"),
        )
        uploader.upload()
    assert sha256_file(store / "complete" / "pki-0001.mvbe") == sha256_file(source_file)
    assert "client_id=MVB-PKI-0001" in log_path.read_text()
