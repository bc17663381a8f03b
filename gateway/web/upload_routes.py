"""GET /api/uploads and POST /api/uploads/retry (docs/webui.md 2): the upload queue's face.

Admin only (the box decides: gateway/box_port.py refuses `forbidden` to other roles); the loopback
channel is admin (`mvb uploads`). The face parses the request; what a file waits for, and what a
release does, are the uplink's (transport/uplink_files.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from gateway.port import BoxPort
from gateway.web.identity import identity_of
from gateway.web.jsonbody import answers_refusals, invalid, read_json_object, reject_unknown

FILE_ID: Final = re.compile(r"[0-9a-f]{32}")
MAX_FILE_IDS: Final = 1000


def parse_retry(body: Mapping[str, Any]) -> tuple[list[str], bool]:
    """(file ids, all_blocked) from the body: exactly one of `file_ids` (1 to MAX_FILE_IDS file
    ids) and `all_blocked: true`; ApiError 422 naming the member otherwise."""
    reject_unknown(dict(body), frozenset({"file_ids", "all_blocked"}))
    all_blocked = body.get("all_blocked", False)
    if not isinstance(all_blocked, bool):
        raise invalid("all_blocked", "all_blocked must be true or false")
    file_ids = body.get("file_ids")
    if all_blocked:
        if file_ids is not None:
            raise invalid("file_ids", "name file_ids or set all_blocked, not both")
        return [], True
    if not isinstance(file_ids, list) or not 1 <= len(file_ids) <= MAX_FILE_IDS:
        raise invalid("file_ids", f"file_ids must list 1 to {MAX_FILE_IDS} file ids")
    if not all(isinstance(f, str) and FILE_ID.fullmatch(f) for f in file_ids):
        raise invalid("file_ids", "a file id is 32 lower-case hex digits")
    return list(file_ids), False


def routes(port: BoxPort) -> list[web.RouteDef]:
    @answers_refusals
    async def list_uploads(request: web.Request) -> web.Response:
        return web.json_response(await port.uploads_view(identity_of(request)))

    @answers_refusals
    async def retry(request: web.Request) -> web.Response:
        file_ids, all_blocked = parse_retry(await read_json_object(request))
        answer = await port.retry_uploads(identity_of(request), file_ids, all_blocked)
        return web.json_response(answer)

    return [web.get("/api/uploads", list_uploads), web.post("/api/uploads/retry", retry)]
