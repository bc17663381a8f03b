"""docs/api.yaml against the code and the contract: every route of docs/webui.md section 2 is
described, every route the apps register is described and vice versa, every schema is valid
JSON Schema 2020-12, and the answers of a real running box (both channels) fit their schemas;
request schemas accept and refuse what the handlers accept and refuse."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from aiohttp import web

from config.local import load_config
from gateway.caller import Refused
from gateway.hold_desk import parse_hold_body
from gateway.officer.reports_form import parse_report, parse_warning
from gateway.port import BundleResult
from gateway.web.app import api_application
from gateway.web.display_routes import add_display_routes
from gateway.web.session_routes import add_session_routes
from gateway.web.status_source import StatusSource
from tests.gateway.web.conftest import WebRig, login
from tests.gateway.web.fake_box import FakeBox, fake_local
from tests.gateway.web.feature_rig import LocalBox, feature_box_config, record_once, running_box

REPO = Path(__file__).resolve().parents[3]
SPEC_PATH = REPO / "docs" / "api.yaml"
CONTRACT_PATH = REPO / "docs" / "webui.md"
METHODS = ("get", "post", "put", "delete", "patch")
PAGE_ROUTES = {("GET", "/"), ("GET", "/static/{path}")}  # gateway/web/server.py serves them


def load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return spec


SPEC = load_spec()


def validator(schema_name: str) -> jsonschema_rs.Validator:
    """A JSON Schema 2020-12 validator for one component, with the spec's refs resolvable."""
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": SPEC["components"],
        "$ref": f"#/components/schemas/{schema_name}",
    }
    return jsonschema_rs.Draft202012Validator(root)


def response_validator(path: str, method: str, status: int) -> jsonschema_rs.Validator:
    responses = SPEC["paths"][path][method]["responses"]
    response = responses[str(status)]
    if "$ref" in response:
        response = SPEC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": SPEC["components"],
        **schema,
    }
    return jsonschema_rs.Draft202012Validator(root)


def assert_fits(checker: jsonschema_rs.Validator, instance: Any) -> None:
    errors = [f"{e.instance_path}: {e.message}" for e in checker.iter_errors(instance)]
    assert errors == [], json.dumps(instance)[:2000]


def documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in SPEC["paths"].items()
        for method in item
        if method in METHODS
    }


def contract_routes() -> set[tuple[str, str]]:
    """The routes of the table in docs/webui.md section 2."""
    text = CONTRACT_PATH.read_text()
    section = text.split("## 2. Routes", 1)[1].split("\n## ", 1)[0]
    routes = set()
    for first_column in re.findall(r"^\| (`[^|]+)\|", section, flags=re.MULTILINE):
        method = ""
        for span in re.findall(r"`([^`]+)`", first_column):  # `GET /`, `/static/*` share a row
            if " " in span:
                method, _, span = span.partition(" ")
            path = span.split(" {")[0]
            routes.add((method, "/static/{path}" if path == "/static/*" else path))
    return routes


def registered(app: web.Application) -> set[tuple[str, str]]:
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def test_the_spec_describes_exactly_the_contract_routes() -> None:
    assert SPEC["openapi"].startswith("3.1")
    assert contract_routes() == documented()


def test_every_schema_is_valid_json_schema() -> None:
    for name in SPEC["components"]["schemas"]:
        validator(name)  # compiles, refs resolve
    for schema in SPEC["components"]["schemas"].values():
        assert jsonschema_rs.meta.is_valid(
            {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        )
    schemes = SPEC["components"]["securitySchemes"]
    assert (schemes["session"]["in"], schemes["session"]["name"]) == ("cookie", "mvb_session")
    assert (schemes["csrf"]["in"], schemes["csrf"]["name"]) == ("header", "X-CSRF-Token")


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[LocalBox]:
    async with running_box(feature_box_config(tmp_path)) as running:
        yield running


async def test_the_apps_register_what_the_spec_describes(tmp_path: Path) -> None:
    fake = FakeBox(load_config(feature_box_config(tmp_path)))
    api = registered(api_application(fake, StatusSource(fake), []))
    sessions = web.Application()
    add_session_routes(sessions)
    add_display_routes(sessions)
    served = api | registered(sessions) | PAGE_ROUTES
    assert served == documented()


async def test_answers_of_a_running_box_fit_the_spec(box: LocalBox) -> None:
    status_schema = validator("StatusDocument")
    async with box.client() as client:
        assert_fits(status_schema, await (await client.get("/api/status")).json())
        started = await client.post(
            "/api/shift/start", json={"officer_id": "BOA-5", "bodycam_serials": ["BC-1"]}
        )
        assert_fits(response_validator("/api/shift/start", "post", 200), await started.json())
        recording_id = await record_once(box, client)
        await client.post("/api/record/start")
        recording = await (await client.get("/api/status")).json()
        assert recording["state"] == "recording"
        assert_fits(status_schema, recording)
        assert_fits(validator("Shift"), await (await client.get("/api/shift")).json())
        reports = await (await client.get("/api/reports")).json()
        assert_fits(response_validator("/api/reports", "get", 200), reports)
        bad = await client.put(f"/api/reports/{recording_id}", json={"what": ""})
        assert bad.status == 422
        assert_fits(validator("Error"), await bad.json())
        filed = await client.put(
            f"/api/reports/{recording_id}",
            json={"what": "x", "warned_beforehand": True, "premises": "public"},
        )
        assert_fits(
            response_validator("/api/reports/{recording_id}", "put", 200), await filed.json()
        )
        correction = {
            "correction_reason": "typo",
            "what": "y",
            "warned_beforehand": True,
            "premises": "home",
            "premises_ground": "warrant",
        }
        assert validator("Correction").is_valid(correction)
        corrected = await client.post(f"/api/reports/{recording_id}/corrections", json=correction)
        assert_fits(
            response_validator("/api/reports/{recording_id}/corrections", "post", 200),
            await corrected.json(),
        )
        warning = {"what": "z", "premises": "public"}
        assert validator("Warning").is_valid(warning)
        warned = await client.post("/api/warnings", json=warning)
        assert_fits(response_validator("/api/warnings", "post", 200), await warned.json())
        unplaced = await client.post("/api/warnings", json={"what": "z"})
        assert unplaced.status == 422
        assert_fits(validator("Error"), await unplaced.json())
        holds = f"/api/holds/{recording_id}"
        held = await client.put(holds, json={"reason": "police demand 17"})
        assert_fits(response_validator("/api/holds/{recording_id}", "put", 200), await held.json())
        assert_fits(
            response_validator("/api/holds", "get", 200),
            await (await client.get("/api/holds")).json(),
        )
        reports = await (await client.get("/api/reports")).json()
        assert_fits(response_validator("/api/reports", "get", 200), reports)
        assert_fits(status_schema, await (await client.get("/api/status")).json())
        released = await client.delete(holds)
        assert_fits(
            response_validator("/api/holds/{recording_id}", "delete", 200), await released.json()
        )
        not_held = await client.delete(holds)
        assert not_held.status == 409
        assert_fits(validator("Error"), await not_held.json())
        missing = await client.post("/api/shift/end", json={})
        assert missing.status == 409
        assert_fits(validator("Error"), await missing.json())
        ended = await client.post("/api/shift/end", json={"acknowledge_missing_reports": True})
        assert_fits(response_validator("/api/shift/end", "post", 200), await ended.json())


async def test_the_web_channel_answers_fit_the_spec(web_rig: WebRig) -> None:
    async with web_rig.client() as client:
        code, session = await login(client, "alice")
        assert code == 200
        assert_fits(validator("Session"), session)
        document = await (await client.get("/api/status")).json()
        assert document["web"]["state"] == "listening"
        assert_fits(validator("StatusDocument"), document)


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (BundleResult(True, None, 4, "ab" * 32), 200),
        (
            BundleResult(False, "deferred: camera(s) not delivering: dashcam", 4, "ab" * 32, True),
            202,
        ),
        (BundleResult(False, "rolled back: camera(s) not delivering: dashcam", 4, "ab" * 32), 422),
        (BundleResult(False, "refused: WrongBox: no document for box MVB-1"), 422),
    ],
)
async def test_each_bundle_outcome_has_its_status_and_fits_the_spec(
    tmp_path: Path, result: BundleResult, status: int
) -> None:
    async with fake_local(load_config(feature_box_config(tmp_path))) as local:
        local.box.paired = True
        local.box.bundle_result = result
        async with local.client() as client, client.post("/api/config/bundle", data=b"x") as answer:
            assert answer.status == status
            body = await answer.json()
    assert_fits(response_validator("/api/config/bundle", "post", status), body)
    assert body.get("deferred", False) is result.deferred


PLACED = {"premises": "public"}
NOT_WARNED = {
    "what": "x",
    "warned_beforehand": False,
    "not_warned_reason": "r",
    "informed_afterwards": False,
    "premises": "public",
}
REPORT_BODIES: list[dict[str, Any]] = [
    NOT_WARNED,
    {**NOT_WARNED, "informed_afterwards": None},
    {**NOT_WARNED, "informed_afterwards": True},
    {**NOT_WARNED, "informed_afterwards": True, "informed_at_ms": 1_780_000_000_000},
    {**NOT_WARNED, "informed_afterwards": True, "informed_at_ms": 1_500_000_000_000},
    {**NOT_WARNED, "informed_afterwards": True, "informed_at_ms": 4_102_444_800_000},
    {**NOT_WARNED, "informed_afterwards": True, "informed_at_ms": 4_102_444_799_999},
    {**NOT_WARNED, "informed_afterwards": True, "informed_at_ms": "soon"},
    {**NOT_WARNED, "informed_afterwards": False, "informed_at_ms": 1_780_000_000_000},
    {**NOT_WARNED, "informed_afterwards": "yes"},
    {**NOT_WARNED, "premises": None},
    {**NOT_WARNED, "premises": "home"},
    {**NOT_WARNED, "premises": "home", "premises_ground": "consent"},
    {**NOT_WARNED, "premises": "private_premises", "premises_ground": "none"},
    {**NOT_WARNED, "premises": "private_premises", "premises_ground": "maybe"},
    {**NOT_WARNED, "premises": "public", "premises_ground": "warrant"},
    {**NOT_WARNED, "premises": "garden"},
    {"what": "x", "warned_beforehand": True, "premises": "public", "informed_afterwards": True},
    {"what": "x", "warned_beforehand": True, "premises": "public", "informed_afterwards": None},
    {"what": "x", "warned_beforehand": True, "premises": "public", "informed_at_ms": 1},
    {"what": "x", "warned_beforehand": True, **PLACED},
    {"what": "x", "warned_beforehand": True, "not_warned_reason": None, **PLACED},
    {"what": "x", "warned_beforehand": True, "not_warned_reason": "r", **PLACED},
    {"what": "x", "warned_beforehand": False, "not_warned_reason": "r", **PLACED},
    {"what": "x", "warned_beforehand": False, **PLACED},
    {"what": "x", "warned_beforehand": False, "not_warned_reason": None, **PLACED},
    {"what": "x", "warned_beforehand": False, "not_warned_reason": " \t", **PLACED},
    {"what": "", "warned_beforehand": True, **PLACED},
    {"what": "\n\n", "warned_beforehand": True, **PLACED},
    {"what": "line\nline\ttab", "warned_beforehand": True, **PLACED},
    {"what": "nul\x00", "warned_beforehand": True, **PLACED},
    {"what": "del\x7f", "warned_beforehand": True, **PLACED},
    {"what": "\x1c x", "warned_beforehand": True, **PLACED},
    {"what": "\x85", "warned_beforehand": True, **PLACED},
    {"what": "\ufeff\u3000", "warned_beforehand": True, **PLACED},
    {"what": "\x1f", "warned_beforehand": True, **PLACED},
    {"what": "\xa0 x \u2028", "warned_beforehand": True, **PLACED},
    {"what": "  x  ", "warned_beforehand": True, **PLACED},
    {"what": "x" * 4000, "warned_beforehand": True, **PLACED},
    {"what": "x" * 4001, "warned_beforehand": True, **PLACED},
    {"what": "x", "warned_beforehand": 1, **PLACED},
    {"what": "x", "warned_beforehand": True, "other": 1, **PLACED},
    {"warned_beforehand": True, **PLACED},
    {"what": "x", "warned_beforehand": True},
]


WARNING_BODIES: list[dict[str, Any]] = [
    {"what": "x", "premises": "public"},
    {"what": "x"},
    {"what": "", "premises": "public"},
    {"what": "x", "premises": "home"},
    {"what": "x", "premises": "home", "premises_ground": "warrant"},
    {"what": "x", "premises": "public", "premises_ground": None},
    {"what": "x", "premises": "public", "warned_beforehand": True},
]


@pytest.mark.parametrize("body", WARNING_BODIES)
def test_the_warning_schema_and_the_handler_agree(body: dict[str, Any]) -> None:
    try:
        parse_warning(body)
        accepted = True
    except Refused:
        accepted = False
    assert validator("Warning").is_valid(body) is accepted


@pytest.mark.parametrize("body", REPORT_BODIES)
def test_the_report_schema_and_the_handler_agree(body: dict[str, Any]) -> None:
    try:
        parse_report(body)
        accepted = True
    except Refused:
        accepted = False
    assert validator("Report").is_valid(body) is accepted


HOLD_BODIES: list[dict[str, Any]] = [
    {"reason": "x"},
    {"reason": ""},
    {"reason": " \t\n"},
    {"reason": "line\nline\ttab"},
    {"reason": "nul\x00"},
    {"reason": "\x1c x"},
    {"reason": "x" * 1000},
    {"reason": "x" * 1001},
    {"reason": 7},
    {"reason": "x", "other": 1},
    {},
]


@pytest.mark.parametrize("body", HOLD_BODIES)
def test_the_hold_schema_and_the_handler_agree(body: dict[str, Any]) -> None:
    try:
        parse_hold_body(body)
        accepted = True
    except Refused:
        accepted = False
    assert validator("HoldRequest").is_valid(body) is accepted
