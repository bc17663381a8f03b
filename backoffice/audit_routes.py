"""The audit log's routes on the mutual-TLS listener, and the heads that ride on uploads.

- `audit_route`: `POST /audit/v1/append` and `GET /audit/v1/head` (transport/audit_wire.py,
  docs/audit-custody.md) for a client that passed the TLS handshake and the gate; the box id is
  the certificate's CN the shell hands in.
- `HeadTappingTusApp`: the tus server, which first hands the signed head of every creation
  (Upload-Metadata `audit_head`) to the audit store. A head that does not extend what is held
  is refused and alarmed there; the upload itself goes on: evidence from a box whose log is in
  question is still evidence, and refusing it would only keep it on a box in doubt.
- `observe_report_head`: the same for a configuration report's `audit_head`.
Blocking store work runs off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from backoffice.audit_store import AuditStore, NotABoxId
from backoffice.body_pace import BodyPace, read_whole_body
from backoffice.tus_app import (
    IncomingRequest,
    MetadataError,
    OutgoingResponse,
    TusApp,
    parse_upload_metadata,
)
from storage.devicekey import DevicePublicKey
from transport.audit_wire import (
    APPEND_PATH,
    HEAD_HEADER,
    HEAD_PATH,
    HELD_HEADER,
    KEY_HEADER,
    MAX_APPEND_BYTES,
    METADATA_KEY,
    AppendRefused,
)

log = logging.getLogger(__name__)


def _answer(status: int, message: str, held: str | None = None) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if held is not None:
        headers[HELD_HEADER] = held
    body = None if status == 204 else f"{message}\n".encode()
    return web.Response(status=status, body=body, content_type="text/plain", headers=headers)


async def audit_route(
    request: web.Request,
    client_id: str,
    store: AuditStore,
    enrolled: DevicePublicKey | None = None,
    pace: BodyPace | None = None,
) -> web.Response:
    """Answer a request under /audit/v1/ from client `client_id`; `enrolled` is the device key
    it enrolled at pairing, if the ledger holds one (an append must carry that key). An append's
    body is read whole, under `pace` when given, before it is judged (read_whole_body: a body
    arrives in pieces)."""
    try:
        if request.path == HEAD_PATH:
            if request.method != "GET":
                return _answer(405, "GET only")
            held = await asyncio.to_thread(store.held, client_id)
            return _answer(204, "", held.render())
        if request.path != APPEND_PATH:
            return _answer(404, "not found")
        if request.method != "POST":
            return _answer(405, "POST only")
        if (request.content_length or 0) > MAX_APPEND_BYTES:
            return _answer(413, f"an append is at most {MAX_APPEND_BYTES} bytes")
        body = await read_whole_body(request.content, MAX_APPEND_BYTES, pace)
        if body is None:
            return _answer(413, f"an append is at most {MAX_APPEND_BYTES} bytes")
        head, key = request.headers.get(HEAD_HEADER), request.headers.get(KEY_HEADER)
        answer = await asyncio.to_thread(store.append, client_id, body, head, key, enrolled)
    except TimeoutError:
        response = _answer(408, "the append's body came too slowly")
        response.force_close()  # the rest of a stalled body is not worth waiting for
        return response
    except NotABoxId as exc:
        return _answer(403, str(exc))
    except AppendRefused as exc:
        # Said in the log too: a box whose appends are refused keeps sending the same batch, and
        # the reason is what the fleet admin needs (the ext4 power-loss soak met one unexplained).
        log.warning("audit append refused box=%s: %r", client_id, str(exc)[:200])
        return _answer(400, str(exc))
    return _answer(answer.status, answer.message, answer.held.render())


async def observe_head(store: AuditStore, client_id: str, head_text: str, via: str) -> None:
    """Hand a head that rode on an upload or a report to the store; never fails the carrier."""
    try:
        await asyncio.to_thread(store.observe, client_id, head_text, via)
    except NotABoxId:
        return
    except Exception:
        # The upload or report must not fail for the audit's sake; the failure is logged.
        log.exception("audit head via %s from box=%s could not be recorded", via, client_id)


class HeadTappingTusApp(TusApp):
    """TusApp that hands every creation's audit head to `audit_store` before creating."""

    def __init__(self, *args: Any, audit_store: AuditStore, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.audit_store = audit_store

    async def handle(self, request: IncomingRequest) -> OutgoingResponse:
        if request.method == "POST":
            head = _metadata_head(request.headers.get("upload-metadata"))
            if head is not None:
                await observe_head(self.audit_store, request.client_id, head, "upload")
        return await super().handle(request)


def _metadata_head(header: str | None) -> str | None:
    """The `audit_head` value of an Upload-Metadata header, if it has one that reads."""
    if header is None:
        return None
    try:
        value = parse_upload_metadata(header).get(METADATA_KEY)
    except MetadataError:
        return None  # TusApp answers 400 for it
    if value is None:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None
