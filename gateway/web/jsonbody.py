"""JSON in and out for the feature routes: bounded bodies, one error shape (docs/webui.md 2).

Every refusal is `{"error": "<code>", "message": "<plain English>"}` (plus members a route
documents, e.g. `field` on 422 or `missing` on 409 `reports_missing`). Handlers raise ApiError,
or let the box's `Refused` become one (`api_error`: its kind decides the HTTP status);
`error_response` turns it into that answer. A body is read up to MAX_BODY_BYTES and no further,
so a hostile client cannot make the box buffer more than that.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from common.faults import MisuseFault
from gateway.caller import RefusalKind, Refused

MAX_BODY_BYTES = 64 * 1024  # the bound for every JSON body (a bundle has its own, 16 MiB)


class ApiError(MisuseFault):
    """A refusal the caller can act on: HTTP `status`, machine `code`, plain `message`."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


HTTP_STATUS_OF: dict[RefusalKind, int] = {
    RefusalKind.CONFLICT: 409,
    RefusalKind.FORBIDDEN: 403,
    RefusalKind.NOT_FOUND: 404,
    RefusalKind.INVALID: 422,
    RefusalKind.FAILED: 500,
}
"""How the web tells each kind of refusal of the box (gateway/caller.py)."""


def api_error(refused: Refused) -> ApiError:
    """The box's refusal as the API's error: the same code, message and extra members."""
    return ApiError(HTTP_STATUS_OF[refused.kind], refused.code, refused.message, **refused.extra)


def invalid(field: str, message: str) -> ApiError:
    """422 naming the member at fault (the page shows the message next to that field)."""
    return ApiError(422, "invalid", message, field=field)


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": error.code, "message": error.message, **error.extra}
    return web.json_response(body, status=error.status, headers=headers)


def answers_refusals(handler: Handler) -> Handler:
    """The handler, with its ApiError and the box's Refused answered as the error shape."""

    @functools.wraps(handler)
    async def answered(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refused as refused:
            return error_response(api_error(refused))
        except ApiError as error:
            return error_response(error)

    return answered


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object: 400 for bytes that are not JSON (NaN and Infinity included),
    422 for JSON that is not an object."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, "bad_json", "the body must be a JSON object (UTF-8)") from exc
    if not isinstance(value, dict):
        raise ApiError(422, "invalid", "the body must be a JSON object", field="")
    return value


async def read_body(request: web.Request, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The request body, at most `max_bytes`; 413 beyond (checked before reading when the
    client announced a length, and while reading when it did not)."""
    too_large = ApiError(413, "too_large", f"the body may be at most {max_bytes} bytes")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    parts: list[bytes] = []
    received_bytes = 0
    while chunk := await request.content.readany():
        received_bytes += len(chunk)
        if received_bytes > max_bytes:
            raise too_large
        parts.append(chunk)
    return b"".join(parts)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    return parse_json_object(await read_body(request))


def reject_unknown(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """Request bodies are closed: a member the route does not know is a client bug, said so."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid(unknown[0], f"unknown member {unknown[0][:64]!r}")
