"""POST /api/pair: pair the running box with a one-time code (docs/pairing.md, docs/webui.md 2).

The same pairing as `mvb pair CODE` (gateway/pairing_client.py `pair`), run in the service's
process with its configuration: box id = the configured device serial, credentials into the
state directory. The uplink reads its credentials when it starts, so it starts with the next
start of the service; the answer says so.

Invariants: one pairing at a time (a second request meanwhile gets 409 `pairing_busy`); every
refusal is one plain sentence from `officer_message` that never repeats the code; the code is
never logged nor audited.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.pairing import BoxIdInvalid, PairingFailed
from gateway.pairing_client import AlreadyPairedHere, officer_message, pair
from gateway.web.jsonbody import (
    ApiError,
    error_response,
    invalid,
    read_json_object,
    reject_unknown,
)
from protocol.pairing_code import MAX_TYPED_CODE_CHARS as MAX_CODE_CHARS

if TYPE_CHECKING:
    from gateway.run import RunningBox

log = logging.getLogger(__name__)

NEXT_START_NOTE = "The uplink starts with the next start of the service."


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


class PairingDesk:
    def __init__(self, running: RunningBox) -> None:
        self.running = running
        self._lock = asyncio.Lock()

    async def pair(self, body: Mapping[str, Any]) -> dict[str, Any]:
        code, re_pair = parse_pair(body)
        if self._lock.locked():
            raise ApiError(409, "pairing_busy", "a pairing is already in progress")
        async with self._lock:
            return await self._pair(code, re_pair)

    async def _pair(self, code: str, re_pair: bool) -> dict[str, Any]:
        config = self.running.box.config
        box_id = config.box.device_serial
        try:
            credentials = await pair(code, box_id, config.state_dir, re_pair=re_pair)
        except AlreadyPairedHere as exc:
            raise ApiError(409, "already_paired", officer_message(exc)) from exc
        except BoxIdInvalid as exc:
            raise ApiError(422, "box_id_invalid", f"box.device_serial: {exc}") from exc
        except (PairingFailed, ValueError) as exc:  # ValueError: the code is not a code
            raise ApiError(422, "pairing_failed", officer_message(exc)) from exc
        except OSError as exc:
            log.error("pairing: cannot write the credentials: %s", exc.strerror)
            raise ApiError(500, "pairing_not_saved", "the credentials could not be saved") from exc
        audit = self.running.box.audit
        await asyncio.to_thread(audit.append, "gateway.paired", box_id=box_id, re_pair=re_pair)
        return {
            "paired": True,
            "box_id": box_id,
            "address": credentials.address,
            "note": NEXT_START_NOTE,
        }


def routes(desk: PairingDesk) -> list[web.RouteDef]:
    async def pair_box(request: web.Request) -> web.Response:
        try:
            body = await read_json_object(request)
            return web.json_response(await desk.pair(body))
        except ApiError as error:
            return error_response(error)

    return [web.post("/api/pair", pair_box)]
