"""docs/api.yaml fuzzed against a real running box's web channel with schemathesis (issue 6):
HTTPS with the box's own certificate, on 127.0.0.1, nothing mocked.

Two runs over every operation but the event stream:
- without a session (random cookies and CSRF tokens included): no 5xx, answers as documented,
  every state change (POST, PUT, DELETE) refused 401/403, and after every request the box's
  state (recorder, shift, report book, pairing, configuration serial, sessions, audit events) is
  what it was;
- logged in as an officer (session cookie and CSRF token on every request): no 5xx anywhere, and
  every answer's status, content type, headers and body as documented. Logging out is left out
  of it (it would end the run's session); the anonymous run covers DELETE /api/session.

`GET /api/events` streams without end, so it is tested on its own (401 without a session).

`POST /api/pair` would contact the back office named in the code. A generated code can name any
host, so every case's code gets a loopback address with a closed port before it is sent
(`point_pairing_at_loopback`); and while this module runs, a guard refuses and records any name
lookup or connection to anything but loopback, in this process (box and client alike): it must
stay empty.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import requests.adapters
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis import BaseSchema, Case

from gateway.web.server import page_file
from protocol.pairing_code import NONCE_BYTES, PairingCode
from tests.cameras import free_port
from tests.gateway.web.browser_rig import (
    REPO,
    BoxThread,
    WebBox,
    account_hashes,
    password_of,
    settle,
)
from transport.pinning import PIN_PREFIX

SPEC = REPO / "docs" / "api.yaml"
FuzzCase = Case[Any]  # one generated request of any operation
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN = ("POST", "/api/session")
EXAMPLES_PER_OPERATION = 50  # both runs together stay well under a minute on two cores
# A failed login is counted (and may ban the client or the account: common/login_throttle.py).
LOGIN_AUDIT = frozenset({"web.login_failed", "web.account_locked", "web.client_locked"})
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,  # a login is PBKDF2: slow by design
    database=None,  # nothing written into the checkout
    suppress_health_check=list(HealthCheck),
)


# -- loopback only -----------------------------------------------------------------------------

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "127.0.0.1", "::1"})


def is_loopback_host(host: object) -> bool:
    if host is None:
        return True  # a listening socket's wildcard lookup
    text = host.decode() if isinstance(host, bytes) else str(host)
    if text.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


@dataclass
class LoopbackGuard:
    """Refuses (and remembers) every name lookup and connection to a non-loopback host made by
    this process while it is installed, before any packet leaves."""

    refused: list[str]


@pytest.fixture(scope="module")
def loopback_guard() -> Iterator[LoopbackGuard]:
    guard = LoopbackGuard([])
    original_lookup = socket.getaddrinfo
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_loopback_host(host):
            guard.refused.append(f"lookup {host!r}")
            raise socket.gaierror(socket.EAI_NONAME, "refused by the test's loopback guard")
        return original_lookup(host, *args, **kwargs)

    def target_allowed(sock: socket.socket, address: Any) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True  # a Unix socket stays on the machine
        allowed = is_loopback_host(address[0])
        if not allowed:
            guard.refused.append(f"connect {address!r}")
        return allowed

    def connect(sock: socket.socket, address: Any) -> None:
        if not target_allowed(sock, address):
            raise ConnectionRefusedError("refused by the test's loopback guard")
        original_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        if not target_allowed(sock, address):
            raise ConnectionRefusedError("refused by the test's loopback guard")
        return original_connect_ex(sock, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", lookup)
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        yield guard


CLOSED_PORT = free_port()  # nobody listens: a code that happened to check out meets a refusal


def loopback_code(code: str) -> str:
    """`code` with its address (everything before the last '/', as the box reads it) replaced by
    127.0.0.1 on a closed port; a text without '/' is refused before any connection anyway."""
    text = code.strip()
    if text[:8].lower() == "https://":
        text = text[8:]
    _, slash, symbols = text.rpartition("/")
    return f"127.0.0.1:{CLOSED_PORT}/{symbols}" if slash else code


# -- the box -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def box(
    tmp_path_factory: pytest.TempPathFactory, loopback_guard: LoopbackGuard
) -> Iterator[BoxThread]:
    running = BoxThread(tmp_path_factory.mktemp("fuzz-box"), account_hashes())
    with running as started:
        for schema in (ANONYMOUS, OFFICER):
            schema.config.update(base_url=started.base, tls_verify=str(started.cert_path))
        yield running
    assert loopback_guard.refused == [], "the run tried to leave loopback"


def web_box(box: BoxThread) -> WebBox:
    assert box.box is not None
    return box.box


@pytest.fixture(scope="module")
def http(box: BoxThread) -> Iterator[requests.Session]:
    """requests trusting exactly the box's certificate. Not the environment's: its CA bundle
    would replace the session's `verify`, and a proxy would take requests off loopback."""
    with requests.Session() as session:
        session.trust_env = False
        session.verify = str(web_box(box).cert_path)
        yield session


@dataclass(frozen=True)
class Login:
    cookie: str
    csrf_token: str


OFFICER_ADDRESS = "127.0.0.3"  # the officer's tablet: not the fuzzing client (127.0.0.1)


class FromAddress(requests.adapters.HTTPAdapter):
    """Connections from `source` (a loopback address of its own): the anonymous run's wrong
    logins ban the fuzzing client (common/login_throttle.py), not the officer's tablet."""

    def __init__(self, source: str) -> None:
        self._source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self._source, 0)
        super().init_poolmanager(*args, **kwargs)


@pytest.fixture(scope="module")
def login(box: BoxThread, http: requests.Session) -> Login:
    """The officer's session for the authenticated run, logged in from the officer's tablet."""
    with requests.Session() as own:
        own.trust_env = False
        own.verify = http.verify
        own.mount("https://", FromAddress(OFFICER_ADDRESS))
        answer = own.post(
            f"{web_box(box).base}/api/session",
            json={"username": "alice", "password": password_of("alice")},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return Login(own.cookies["mvb_session"], answer.json()["csrf_token"])


# Schema-valid bodies the box refuses by design, each documented for its operation: a
# well-formed pairing code can still be wrong (422 `pairing_failed`), `officer_id` is the local
# channel's (422 on the web), and a name with five wrong passwords is locked (423), whatever the
# password. Every status must still be documented (status_code_conformance).
ACCEPTED_REFUSALS = ["2XX", "401", "403", "404", "409", "422", "423"]


def load_schema(*, anonymous: bool) -> BaseSchema:
    """docs/api.yaml with bounded examples and nothing cached in the checkout. Loaded when this
    module is collected (schemathesis makes one test per operation then); the box's origin is
    set as the base URL once it runs (`box`), and every call passes it too: the spec's own
    servers (mvb.local) are never contacted.

    Without a session, authentication comes before routing (docs/webui.md 1, access.py): an
    undeclared method on /api/ is 401 like a declared one, not 405, so that check is off there.
    Without a session, schemathesis also sends made-up cookies and CSRF tokens."""
    checks: dict[str, Any] = {"positive_data_acceptance": {"expected-statuses": ACCEPTED_REFUSALS}}
    if anonymous:
        checks["unsupported_method"] = {"enabled": False}
    config = schemathesis.Config.from_dict(
        {
            "cache": {"enabled": False},
            "generation": {
                "max-examples": EXAMPLES_PER_OPERATION,
                "with-security-parameters": anonymous,
                "database": "none",
            },
            "checks": checks,
        }
    )
    schema = schemathesis.openapi.from_path(SPEC, config=config)
    return schema.exclude(path="/api/events")


ANONYMOUS = load_schema(anonymous=True)
# Logging out would end the officer's session half-way through the run.
OFFICER = load_schema(anonymous=False).exclude(method="DELETE", path="/api/session")


# -- what the box holds ------------------------------------------------------------------------


def state_of(box: BoxThread) -> dict[str, Any]:
    """Everything a request could change, read on the box's own loop."""

    def read() -> dict[str, Any]:
        running = web_box(box)
        features = running.features()
        web = running.running.web
        assert web is not None
        assert web.access is not None
        return {
            "recorder": running.recorder_state(),
            "recording": running.running.service.recording is not None,
            "shift": features.shift.view(),
            "reports": features.reports.view(),
            "paired": (running.config.state_dir / "pairing").exists(),
            "fleet": running.running.fleet is not None,
            "sessions": len(web.access.sessions),
            "audit": [k for k in running.audit_kinds() if k not in LOGIN_AUDIT],
        }

    return box.read(read)


def path_of(case: FuzzCase) -> tuple[str, str]:
    return case.method.upper(), case.operation.path


def point_pairing_at_loopback(case: FuzzCase) -> None:
    """POST /api/pair must never reach a back office: its code's address becomes loopback. Done
    on the case itself, just before the call, because schemathesis' `map_body` hook does not see
    the cases of its coverage phase (a code like "0/000..." arrived untouched)."""
    if path_of(case) == ("POST", "/api/pair") and isinstance(case.body, dict):
        code = case.body.get("code")
        if isinstance(code, str):
            case.body["code"] = loopback_code(code)


def refused_without_a_session(case: FuzzCase, status: int) -> bool:
    """On /api/ a state change without a session is 401 (or 403 for CSRF) before any routing;
    elsewhere (the page, /metrics) an undeclared method may also be 405."""
    allowed = {401, 403} if case.operation.path.startswith("/api/") else {401, 403, 405}
    return status in allowed


# -- the runs ----------------------------------------------------------------------------------


@ANONYMOUS.parametrize()
@FUZZ_SETTINGS
def test_without_a_session_nothing_changes(
    case: FuzzCase, box: BoxThread, http: requests.Session
) -> None:
    point_pairing_at_loopback(case)
    before = state_of(box)
    response = case.call_and_validate(base_url=web_box(box).base, session=http, verify=http.verify)
    if case.method.upper() in STATE_CHANGING and path_of(case) != LOGIN:
        assert refused_without_a_session(case, response.status_code), (
            path_of(case),
            response.status_code,
            response.text,
        )
    assert state_of(box) == before, path_of(case)


@OFFICER.parametrize()
@FUZZ_SETTINGS
def test_logged_in_every_answer_is_documented_and_no_5xx(
    case: FuzzCase, box: BoxThread, http: requests.Session, login: Login
) -> None:
    case.call_and_validate(
        base_url=web_box(box).base,
        session=http,
        verify=http.verify,
        cookies={"mvb_session": login.cookie},
        headers={"X-CSRF-Token": login.csrf_token},
    )


def test_the_event_stream_needs_a_session(
    box: BoxThread, http: requests.Session, login: Login
) -> None:
    url = f"{web_box(box).base}/api/events"
    refused = http.get(url, timeout=30)
    assert refused.status_code == 401
    assert refused.json()["error"] == "login_required"
    assert http.get(url, cookies={"mvb_session": "0" * 43}, timeout=30).status_code == 401
    with http.get(url, cookies={"mvb_session": login.cookie}, stream=True, timeout=30) as streaming:
        assert streaming.status_code == 200
        assert streaming.headers["Content-Type"].startswith("text/event-stream")
        lines = streaming.iter_lines(decode_unicode=True)
        assert next(line for line in lines if line.startswith("event:")) == "event: status"


def test_pairing_codes_are_pointed_at_loopback() -> None:
    assert loopback_code("backoffice.example:8443/ABCD EFGH") == (
        f"127.0.0.1:{CLOSED_PORT}/ABCD EFGH"
    )
    assert loopback_code(" https://evil.example/a/b ") == f"127.0.0.1:{CLOSED_PORT}/b"
    assert loopback_code("no slash at all") == "no slash at all"


def test_the_guard_refuses_other_hosts(loopback_guard: LoopbackGuard) -> None:
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("example.com", 443)
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("192.0.2.1", 9))
    assert loopback_guard.refused[-2:] == ["lookup 'example.com'", "connect ('192.0.2.1', 9)"]
    del loopback_guard.refused[-2:]  # provoked here: only the fuzz runs' attempts count


# -- what the fuzz found, pinned down ------------------------------------------------------------


def documented_statuses(path: str, method: str) -> set[int]:
    spec = yaml.safe_load(SPEC.read_text())
    return {int(status) for status in spec["paths"][path][method]["responses"]}


@pytest.mark.parametrize("name", ["no-such-file.js", "i18n", "i18n/xx.json"])
def test_a_page_file_that_is_not_there_is_a_documented_json_404(
    box: BoxThread, http: requests.Session, name: str
) -> None:
    """docs/webui.md 2: errors are always JSON; docs/api.yaml: /static/{path} answers 200 or
    404 `not_found`."""
    answer = http.get(f"{web_box(box).base}/static/{name}", timeout=30)
    assert answer.status_code in documented_statuses("/static/{path}", "get") - {200}
    assert answer.headers["Content-Type"].startswith("application/json"), answer.headers
    assert answer.json()["error"] == "not_found"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_a_login_with_an_unknown_member_is_refused_even_with_the_right_password(
    box: BoxThread, http: requests.Session
) -> None:
    """docs/api.yaml: request bodies are closed (LoginRequest has additionalProperties false);
    the login documents 400 `bad_request` for a body that is not the JSON it takes."""
    before = state_of(box)
    body = {"username": "bob", "password": password_of("bob"), "remember_me": True}
    answer = http.post(f"{web_box(box).base}/api/session", json=body, timeout=30)
    # (the answer's status and error code only: a 200 would carry a live CSRF token)
    error = answer.json().get("error") if answer.status_code != 200 else "logged in"
    assert answer.status_code in documented_statuses("/api/session", "post") & {400, 422}, error
    assert "mvb_session" not in answer.cookies
    assert state_of(box) == before


def test_page_files_never_lead_out_of_their_directory(tmp_path: Path) -> None:
    root = tmp_path / "static"
    (root / "i18n").mkdir(parents=True)
    (root / "app.js").write_text("")
    (root / "i18n" / "en.json").write_text("{}")
    (tmp_path / "secret").write_text("")
    (root / "out").symlink_to(tmp_path / "secret")
    (root / "loop").symlink_to(root / "loop")
    assert page_file("app.js", root) == (root / "app.js").resolve()
    assert page_file("i18n/en.json", root) == (root / "i18n" / "en.json").resolve()
    refused = ["i18n", "", "../secret", "i18n/../../secret", "/etc/hostname", "out", "loop"]
    for relative in [*refused, "app.js\x00.txt", "nothing.js"]:
        assert page_file(relative, root) is None, relative


def test_a_code_that_checks_out_is_followed_to_the_address_it_names(
    box: BoxThread, http: requests.Session, login: Login
) -> None:
    """Why the fuzz rewrites every code: POST /api/pair connects to whatever address a code names
    once its check symbols verify (1 in 1024 for random symbols). Here the named address is a
    loopback listener that hangs up: the box knocks, and the officer reads a refusal."""
    knocks: list[str] = []

    async def listen() -> asyncio.Server:
        async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            knocks.append(str(writer.get_extra_info("peername")[0]))
            writer.close()

        return await asyncio.start_server(hang_up, "127.0.0.1", 0)

    server = box.call(listen())
    try:
        port = server.sockets[0].getsockname()[1]
        pin = PIN_PREFIX + base64.b64encode(bytes(32)).decode()
        code = PairingCode.for_back_office(f"127.0.0.1:{port}", bytes(NONCE_BYTES), pin).text()
        answer = http.post(
            f"{web_box(box).base}/api/pair",
            json={"code": code},
            cookies={"mvb_session": login.cookie},
            headers={"X-CSRF-Token": login.csrf_token},
            timeout=60,
        )
    finally:
        server.close()
        box.call(server.wait_closed())
    assert (answer.status_code, answer.json()["error"]) == (422, "pairing_failed")
    assert knocks
    assert set(knocks) == {"127.0.0.1"}
    assert code.split("/")[-1] not in answer.text  # the refusal never repeats the code
    assert not (web_box(box).config.state_dir / "pairing").exists()


ERROR_CODE = re.compile(r"[a-z][a-z0-9_]*")


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/api/record/stop", "not_recording"),
        ("/api/record/flag", "not_recording"),
        ("/api/config/bundle", None),  # the contract names no code for an unpaired box
    ],
)
def test_recording_and_bundle_refusals_are_contract_errors(
    box: BoxThread, http: requests.Session, login: Login, path: str, code: str | None
) -> None:
    """docs/webui.md 2: errors are `{"error": "<code>", "message": "<plain English>"}` and the
    page translates the code; section 2 names 409 `not_recording` for stop and flag."""
    box.call(settle(web_box(box)))  # standby, whatever the fuzz left running
    answer = http.post(
        f"{web_box(box).base}{path}",
        data=b"not a bundle",
        cookies={"mvb_session": login.cookie},
        headers={"X-CSRF-Token": login.csrf_token},
        timeout=30,
    )
    body = answer.json()
    assert answer.status_code == 409
    assert ERROR_CODE.fullmatch(body["error"]), body
    assert body["error"] == (code or body["error"])
    assert isinstance(body.get("message"), str), body
    assert body["message"], body
