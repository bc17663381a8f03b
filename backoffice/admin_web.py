"""The fleet admin page and the fleet's scrape endpoint, served by the back office over HTTPS on a
listener of their own (docs/fleet-admin.md 7.2, 7.3).

Not on the boxes' listener: that one requires a box's client certificate at the handshake, which
no admin's browser and no Prometheus has, and keeping them apart keeps the boxes' budgets (and a
firewall rule: the admin listener belongs on the office network only) separate.

Routes (JSON errors `{"error": code, "message": English}`; the page translates the code):
- `GET /`, `GET /static/<file>`: the page (backoffice/admin_static/: no build step, no inline
  script or style, no third-party code; Dutch and English).
- `POST|GET|DELETE /api/session`: log in, who am I (and the CSRF token), log out
  (backoffice/admin_access.py).
- `GET /api/fleet`: the fleet (backoffice/fleet_view.py): boxes stale first, their groups and
  alarms, versions per group, the boxes asked to check now.
- `POST /api/check-now {"box_id"}`: as `mvb-admin config check-now` (backoffice/check_now.py).
- `POST /api/pairing-codes {"box_id", "re_pair"}`: a one-time pairing code (shown once: the
  back office keeps only its digest), 409 with a code when the pairing rules refuse.
- `GET /metrics`: Prometheus text of the same fleet; `Authorization: Bearer <token>` whose
  SHA-256 equals that of the token file's (`serve --metrics-token-file`), else 401; 404 when no
  token file is configured. Never with a session: a scraper holds no admin password.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from backoffice.admin_access import ACCESS_KEY, SESSION_KEY, AdminAccess, error, tag
from backoffice.check_now import CheckNowBook, CheckNowRefused
from backoffice.connection_book import ConnectionLimits
from backoffice.fleet_repo import FleetRepository
from backoffice.fleet_status import DEFAULT_STALE_AFTER_MS
from backoffice.fleet_versions import RolloutTargets, no_rollout_targets
from backoffice.fleet_view import read_fleet
from backoffice.pair_codes import issue_pair_code
from backoffice.pairing import (
    CODE_VALIDITY_S,
    AdminInputError,
    AlreadyPaired,
    NotPaired,
    TooManyOpenCodes,
)
from backoffice.pairing_service import LedgerStore, LedgerUnavailable
from backoffice.server import RunningServer, serve_application
from common.faults import ConfigurationFault

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).with_name("admin_static")
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
}
METRICS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
MAX_BODY_BYTES: Final = 16 * 1024
ADMIN_CONNECTIONS: Final = ConnectionLimits(
    max_connections=64, max_per_address=32, new_per_address_per_s=5.0, new_burst_per_address=20
)
"""A few admins' browsers and one or two scrapers."""


@dataclass(frozen=True, slots=True)
class Pairing:
    """What the pairing button needs: the ledger, the pins a code carries and the address boxes
    reach the pairing listener at."""

    store: LedgerStore
    pins: Sequence[str]
    address: str


@dataclass(frozen=True, slots=True)
class AdminSite:
    store_dir: Path
    repository: FleetRepository | None
    pairing: Pairing | None
    metrics_token_sha256: bytes | None
    stale_after_ms: int = DEFAULT_STALE_AFTER_MS
    rollout_targets: RolloutTargets = no_rollout_targets


SITE_KEY: Final = web.AppKey("admin_site", AdminSite)


class MetricsTokenRefused(ConfigurationFault):
    """The metrics token file holds no usable token (`serve` refuses to start)."""


def token_digest(token_file: Path) -> bytes:
    """The SHA-256 of the token the file holds (surrounding whitespace ignored); only the digest
    stays in memory. MetricsTokenRefused for a short token."""
    token = token_file.read_text(encoding="utf-8").strip()
    if len(token) < 32:
        raise MetricsTokenRefused(f"{token_file}: a metrics token needs at least 32 characters")
    return hashlib.sha256(token.encode()).digest()


def admin_application(access: AdminAccess, site: AdminSite) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[access.middleware])
    app[ACCESS_KEY] = access
    app[SITE_KEY] = site
    app.router.add_get("/", _index)
    app.router.add_get("/static/{path:.+}", _static)
    app.router.add_get("/api/session", _whoami)
    app.router.add_delete("/api/session", _logout)
    app.router.add_post("/api/session", _never)  # answered by the access middleware
    app.router.add_get("/api/fleet", _fleet)
    app.router.add_post("/api/pairing-codes", _pairing_code)
    app.router.add_post("/api/check-now", _check_now)
    app.router.add_get("/metrics", _metrics)
    return app


async def _never(_request: web.Request) -> web.Response:
    raise AssertionError("POST /api/session is answered by AdminAccess")


async def _index(_request: web.Request) -> web.StreamResponse:
    return _file(STATIC_DIR / "index.html")


async def _static(request: web.Request) -> web.StreamResponse:
    relative = request.match_info["path"]
    path = (STATIC_DIR / relative).resolve()
    # Only a file of the page's own folder, by a plain name: no '..', no hidden files.
    if (
        not path.is_relative_to(STATIC_DIR.resolve())
        or any(part.startswith(".") for part in relative.split("/"))
        or path.suffix not in CONTENT_TYPES
        or not path.is_file()
    ):
        return error(404, "not_found", "There is nothing here.")
    return _file(path)


def _file(path: Path) -> web.Response:
    return web.Response(
        body=path.read_bytes(),
        headers={"Content-Type": CONTENT_TYPES[path.suffix], "Cache-Control": "no-cache"},
    )


async def _whoami(request: web.Request) -> web.Response:
    session = request[SESSION_KEY]
    return web.json_response({"user": session.user, "csrf_token": session.csrf_token})


async def _logout(request: web.Request) -> web.Response:
    access = request.app[ACCESS_KEY]
    access.sessions.delete(request[SESSION_KEY].session_id)
    response = web.json_response({"logged_out": True})
    response.del_cookie("mvb_admin_session", secure=True, httponly=True, samesite="Strict")
    return response


async def _fleet(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]

    def read() -> dict[str, object]:
        view = read_fleet(
            site.store_dir, site.repository, site.stale_after_ms, site.rollout_targets
        )
        document = view.to_json_object()
        document["check_now_waiting"] = CheckNowBook(site.store_dir).waiting()
        document["pairing"] = site.pairing is not None
        return document

    return web.json_response(await asyncio.to_thread(read))


async def _pairing_code(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    if site.pairing is None:
        return error(409, "pairing_off", "This back office serves no pairing listener.")
    try:
        body = await request.json()
    except ValueError:
        body = None
    if (
        not isinstance(body, dict)
        or set(body) != {"box_id", "re_pair"}
        or not isinstance(body["box_id"], str)
        or not isinstance(body["re_pair"], bool)
    ):
        return error(
            400, "bad_request", "Send JSON with box_id (a string) and re_pair (true/false)."
        )
    pairing = site.pairing
    try:
        code, replaces = await asyncio.to_thread(
            issue_pair_code,
            pairing.store,
            body["box_id"],
            pairing.address,
            pairing.pins,
            time.time(),
            re_pair=body["re_pair"],
        )
    except AdminInputError:
        return error(422, "invalid_box_id", "A box id is 1-64 of A-Z a-z 0-9 . _ -.")
    except AlreadyPaired:
        return error(409, "already_paired", "This box is paired: ask for a re-pair code.")
    except NotPaired:
        return error(409, "not_paired", "This box is not paired: ask for a pairing code.")
    except TooManyOpenCodes:
        return error(409, "too_many_codes", "This box has too many open codes: wait for them.")
    except LedgerUnavailable:
        return error(503, "ledger_unavailable", "The pairing ledger cannot be read now.")
    session = request[SESSION_KEY]
    log.info("admin account=%s issued a pairing code for a box", tag(session.user))
    return web.json_response(
        {
            "box_id": body["box_id"],
            "code": code.text(),
            "re_pair": replaces is not None,
            "valid_s": CODE_VALIDITY_S,
        }
    )


async def _check_now(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or set(body) != {"box_id"} or not isinstance(body["box_id"], str):
        return error(400, "bad_request", "Send JSON with box_id (a string).")
    try:
        await asyncio.to_thread(CheckNowBook(site.store_dir).request, body["box_id"])
    except CheckNowRefused:
        return error(422, "invalid_box_id", "A box id is 1-64 of A-Z a-z 0-9 . _ -.")
    log.info("admin account=%s asked a box to check now", tag(request[SESSION_KEY].user))
    return web.json_response({"box_id": body["box_id"]})


async def _metrics(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    if site.metrics_token_sha256 is None:
        return error(404, "not_found", "There is nothing here.")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    offered = hashlib.sha256(token.strip().encode()).digest()
    if scheme.lower() != "bearer" or not hmac.compare_digest(offered, site.metrics_token_sha256):
        return error(
            401, "unauthorized", "Send the metrics bearer token.", {"WWW-Authenticate": "Bearer"}
        )

    def read() -> str:
        return read_fleet(
            site.store_dir, site.repository, site.stale_after_ms, site.rollout_targets
        ).metrics_text()

    text = await asyncio.to_thread(read)
    return web.Response(body=text.encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})


def admin_ssl_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS 1.2+, no client certificate (the page has accounts; the scraper a token)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    context.set_alpn_protocols(["http/1.1"])
    return context


async def start_admin_server(
    access: AdminAccess,
    site: AdminSite,
    *,
    host: str,
    port: int,
    cert_file: Path,
    key_file: Path,
) -> RunningServer:
    return await serve_application(
        admin_application(access, site),
        admin_ssl_context(cert_file, key_file),
        host=host,
        port=port,
        what="the fleet admin page",
        idle_timeout_s=60.0,
        shutdown_timeout_s=5.0,
        connections=ADMIN_CONNECTIONS,
        handshake_timeout_s=20.0,
    )
