"""POST /api/pair: pair the running box with a one-time code (docs/pairing.md, docs/webui.md 2).

The face parses the request; the pairing itself is the box's (gateway/box_port.py `pair`: the
same pairing as `mvb pair CODE`). Invariants: every refusal is one plain sentence that never
repeats the code; the code is never logged nor audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.port import BoxPort
from gateway.web.jsonbody import answers_refusals, invalid, read_json_object, reject_unknown
from protocol.pairing_code import MAX_TYPED_CODE_CHARS as MAX_CODE_CHARS


def parse_pair(body: Mapping[str, Any]) -> tuple[str, bool]:
    """(typed code, re_pair) from the body, or ApiError 422 naming the member."""
    reject_unknown(dict(body), frozenset({"code", "re_pair"}))
    code = body.get("code")
    if not isinstance(code, str) or not code.strip():
        raise invalid("code", "code must be the pairing code from the admin")
    if len(code) > MAX_CODE_CHARS:
        raise invalid("code", f"code may be at most {MAX_CODE_CHARS} characters")
    re_pair = body.get("re_pair", False)
    if not isinstance(re_pair, bool):
        raise invalid("re_pair", "re_pair must be true or false")
    return code, re_pair


def routes(port: BoxPort) -> list[web.RouteDef]:
    @answers_refusals
    async def pair_box(request: web.Request) -> web.Response:
        code, re_pair = parse_pair(await read_json_object(request))
        paired = await port.pair(code, re_pair)
        return web.json_response(
            {
                "paired": True,
                "box_id": paired.box_id,
                "address": paired.address,
                "note": paired.note,
            }
        )

    return [web.post("/api/pair", pair_box)]
