"""The audit routes of the HTTPS back office (backoffice/audit_routes.py, server.py) over real
mutual TLS: the box id is the certificate's, bodies are bounded, and the heads that ride on a
tus creation and a configuration report are judged without ever failing them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from backoffice.audit_routes import HeadTappingTusApp
from backoffice.audit_store import AuditStore
from backoffice.client_gate import EnrolledKeys
from backoffice.fleet_reports import ReportLog
from backoffice.server import RunningServer, start_https_server
from backoffice.upload_store import UploadStore
from protocol.fleet_report import signed_message
from storage.audit_io import AuditLog
from storage.devicekey import DeviceKey, DevicePublicKey
from tests.backoffice.test_server_https import (
    STEP_TIMEOUT_S,
    box_context,
    read_until_closed,
    request_head,
)
from tests.tls_helpers import SERVER_NAME, TestPki
from transport.audit_wire import render_key

BOX = "MVB-TEST-0001"  # the test client certificate's CN
TUS = {"Tus-Resumable": "1.0.0"}
PIECE_PAUSE_S = 0.5  # a pause between two pieces of one body (not an assertion)


@dataclass
class Office:
    server: RunningServer
    audit: AuditStore
    store: UploadStore

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.server.port}{path}"


@pytest.fixture
def key() -> DeviceKey:
    return DeviceKey.generate()


@pytest.fixture
async def office(pki: TestPki, tmp_path: Path, key: DeviceKey) -> AsyncIterator[Office]:
    store = UploadStore.open(tmp_path / "store", reserve_bytes=0)
    audit = AuditStore(tmp_path / "store")
    app = HeadTappingTusApp(
        store, max_upload_bytes=1 << 20, max_chunk_bytes=1 << 20, audit_store=audit
    )
    server = await start_https_server(
        app,
        host="127.0.0.1",
        port=0,
        cert_file=pki.server_cert,
        key_file=pki.server_key,
        client_ca_file=pki.ca_cert,
        fleet_reports=ReportLog(tmp_path / "store" / "fleet-reports.jsonl"),
        audit_store=audit,
        enrolled_keys=enrolled(BOX, key.public_key()),
    )
    try:
        yield Office(server, audit, store)
    finally:
        await server.close()
        store.close()


@pytest.fixture
async def session(pki: TestPki) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=box_context(pki)),
        timeout=aiohttp.ClientTimeout(total=STEP_TIMEOUT_S),
    ) as client:
        yield client


def enrolled(box_id: str, public: DevicePublicKey) -> EnrolledKeys:
    """The pairing ledger's enrolled device keys, for one box."""

    async def lookup(client_id: str) -> DevicePublicKey | None:
        return public if client_id == box_id else None

    return lookup


@pytest.fixture
def box_log(tmp_path: Path, key: DeviceKey) -> Iterator[AuditLog]:
    ticks = itertools.count(1_700_000_000_000, 1000)
    log = AuditLog.open(tmp_path / "audit.jsonl", key, clock_ms=lambda: next(ticks))
    for number in range(3):
        log.append("gateway.trigger", number=number)
    yield log
    log.close()


def append_headers(log: AuditLog) -> dict[str, str]:
    return {
        "Mvb-Audit-Head": log.signed_head().render(),
        "Mvb-Device-Key": render_key(log.public_key()),
        "Content-Type": "application/jsonl",
    }


async def test_append_and_head_hold_the_log_under_the_certificates_box_id(
    office: Office, session: aiohttp.ClientSession, box_log: AuditLog
) -> None:
    async with session.get(office.url("/audit/v1/head")) as reply:
        assert (reply.status, reply.headers["Mvb-Audit-Held"]) == (204, f"-1:{'0' * 64}")
    body = box_log.path.read_bytes()
    async with session.post(
        office.url("/audit/v1/append"), data=body, headers=append_headers(box_log)
    ) as reply:
        assert reply.status == 204, await reply.text()
        assert reply.headers["Mvb-Audit-Held"] == box_log.durable_end()[0].render()
    assert office.audit.box(BOX).log_bytes() == body
    async with session.get(office.url("/audit/v1/head")) as reply:
        assert reply.headers["Mvb-Audit-Held"] == box_log.durable_end()[0].render()


async def test_an_append_whose_body_arrives_in_pieces_is_read_whole(
    office: Office, session: aiohttp.ClientSession, box_log: AuditLog
) -> None:
    """The ext4 soak's refusal (docs/soak.md): a body longer than one TLS record reaches the
    back office in pieces, and a single read judged the first piece alone ("whole lines", 400).
    Here the second half is held back until the first has long arrived: the server waits for
    it. (Would the server be slower than the pause, the pieces would merge and the test could
    not see the old fault; it can never fail a right server.)"""
    for number in range(40):
        box_log.append("gateway.trigger", number=number, note="x" * 400)
    body = box_log.path.read_bytes()
    assert len(body) > 16 * 1024  # longer than one TLS record
    cut = len(body) // 2 + 7  # mid-line

    async def in_two_pieces() -> AsyncIterator[bytes]:
        yield body[:cut]
        await asyncio.sleep(PIECE_PAUSE_S)
        yield body[cut:]

    async with session.post(
        office.url("/audit/v1/append"), data=in_two_pieces(), headers=append_headers(box_log)
    ) as reply:
        assert reply.status == 204, await reply.text()
    assert office.audit.box(BOX).log_bytes() == body


async def test_an_append_whose_body_stalls_is_answered_408_and_nothing_is_held(
    pki: TestPki, tmp_path: Path, box_log: AuditLog, key: DeviceKey
) -> None:
    """Reading a body whole must not let a client hold a request open: the append's body is
    read under the body pace (here 0.5 s windows), so one that stops mid-way is cut."""
    audit = AuditStore(tmp_path / "store")
    store = UploadStore.open(tmp_path / "store", reserve_bytes=0)
    server = await start_https_server(
        HeadTappingTusApp(
            store, max_upload_bytes=1 << 20, max_chunk_bytes=1 << 20, audit_store=audit
        ),
        host="127.0.0.1",
        port=0,
        cert_file=pki.server_cert,
        key_file=pki.server_key,
        client_ca_file=pki.ca_cert,
        audit_store=audit,
        enrolled_keys=enrolled(BOX, key.public_key()),
        pace_window_s=0.5,
    )
    try:
        body = box_log.path.read_bytes()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=box_context(pki), server_hostname=SERVER_NAME
        )
        headers = {**append_headers(box_log), "Content-Length": str(len(body))}
        writer.write(request_head("POST", "/audit/v1/append", headers) + body[:10])
        async with asyncio.timeout(STEP_TIMEOUT_S):
            answer = await read_until_closed(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert audit.box(BOX).log_bytes() == b""
    finally:
        await server.close()
        store.close()


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/audit/v1/append", b"", 405),
        ("POST", "/audit/v1/head", b"", 405),
        ("POST", "/audit/v1/other", b"", 404),
        ("POST", "/audit/v1/append", b"x" * (64 * 1024 + 1), 413),
        ("POST", "/audit/v1/append", b"not json\n", 400),
    ],
)
async def test_wrong_requests_get_clear_answers(
    office: Office,
    session: aiohttp.ClientSession,
    box_log: AuditLog,
    method: str,
    path: str,
    body: bytes,
    status: int,
) -> None:
    async with session.request(
        method, office.url(path), data=body, headers=append_headers(box_log)
    ) as reply:
        assert reply.status == status, await reply.text()
    assert office.audit.box(BOX).log_bytes() == b""


async def test_an_append_under_another_device_key_than_the_enrolled_one_is_refused(
    office: Office, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A thief with the box's certificate but not its device key (or root re-keying the box):
    the log it signs with a key of its own is not this box's log."""
    thief = AuditLog.open(tmp_path / "thief.jsonl", DeviceKey.generate())
    thief.append("gateway.trigger", number=1)
    try:
        async with session.post(
            office.url("/audit/v1/append"),
            data=thief.path.read_bytes(),
            headers=append_headers(thief),
        ) as reply:
            assert reply.status == 400
            assert "enrolled" in await reply.text()
    finally:
        thief.close()
    assert office.audit.box(BOX).log_bytes() == b""


async def test_heads_on_a_creation_and_a_report_are_judged_and_never_fail_them(
    office: Office, session: aiohttp.ClientSession, box_log: AuditLog, key: DeviceKey
) -> None:
    async with session.post(
        office.url("/audit/v1/append"),
        data=box_log.path.read_bytes(),
        headers=append_headers(box_log),
    ) as reply:
        assert reply.status == 204
    # Someone else's log with the same device key: its head names another entry 2.
    forged_key = box_log._device_key
    forged = AuditLog.open(box_log.path.with_name("forged.jsonl"), forged_key)
    for number in range(3):
        forged.append("gateway.stop", number=number)
    head = forged.signed_head().render()
    forged.close()
    data = b"evidence"
    meta = ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}"
        for k, v in {
            "file_id": "f" * 32,
            "sha256": hashlib.sha256(data).hexdigest(),
            "audit_head": head,
        }.items()
    )
    headers = {**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": meta}
    async with session.post(office.url("/files/"), headers=headers) as reply:
        assert reply.status == 201  # the upload goes on
    message = signed_message(BOX, 3, "ab" * 32, f"boxes/{BOX}.toml", 1, "applied", "")
    report = {
        "config_serial": 3,
        "sha256": "ab" * 32,
        "target_path": f"boxes/{BOX}.toml",
        "at_ms": 1,
        "outcome": "applied",
        "reason": "",
        "device_public_key": key.public_pem().decode(),
        "signature": base64.b64encode(key.sign(message)).decode(),
        "audit_head": head,
    }
    async with session.post(office.url("/fleet/report"), data=json.dumps(report)) as reply:
        assert reply.status == 204, await reply.text()  # the report is kept
    kinds = [(a["kind"], a["via"]) for a in office.audit.box(BOX).alarms()]
    assert kinds == [("fork", "upload"), ("fork", "report")]
