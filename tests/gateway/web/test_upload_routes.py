"""GET /api/uploads and POST /api/uploads/retry: admin only on the web channel, open on the
loopback channel, bodies checked against docs/api.yaml. The box behind is the in-memory FakeBox:
these tests are about the face; the real release is tested end to end in
tests/gateway/test_uploads_release.py."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.caller import Refused
from gateway.web.jsonbody import ApiError
from gateway.web.upload_routes import parse_retry
from tests.gateway.web.conftest import WebRig, login
from tests.gateway.web.test_api_spec import assert_fits, response_validator, validator

BLOCKED = "b" * 32
WAITING = "a" * 32


async def test_only_an_admin_sees_and_releases_uploads_on_the_web(web_rig: WebRig) -> None:
    web_rig.box.uploads = {BLOCKED: "blocked", WAITING: "waiting"}
    async with web_rig.client() as alice, web_rig.client() as bob:
        _, officer = await login(alice, "alice")
        _, admin = await login(bob, "bob")

        refused = await alice.get("/api/uploads")
        assert (refused.status, (await refused.json())["error"]) == (403, "forbidden")
        not_released = await alice.post(
            "/api/uploads/retry",
            json={"all_blocked": True},
            headers={"X-CSRF-Token": str(officer["csrf_token"])},
        )
        assert not_released.status == 403
        assert web_rig.box.uploads[BLOCKED] == "blocked"

        listed = await bob.get("/api/uploads")
        assert listed.status == 200
        queue = await listed.json()
        assert_fits(response_validator("/api/uploads", "get", 200), queue)
        assert {row["file_id"]: row["state"] for row in queue["files"]} == {
            BLOCKED: "blocked",
            WAITING: "waiting",
        }
        released = await bob.post(
            "/api/uploads/retry",
            json={"all_blocked": True},
            headers={"X-CSRF-Token": str(admin["csrf_token"])},
        )
        answer = await released.json()
        assert_fits(response_validator("/api/uploads/retry", "post", 200), answer)
    assert answer == {"released": [{"file_id": BLOCKED, "was_blocked": True}]}
    assert web_rig.box.uploads[BLOCKED] == "waiting"
    assert ("uplink.upload_released", {"file_id": BLOCKED, "by": "web"}) in (
        web_rig.box.audit_entries
    )


async def test_a_release_of_a_file_not_waiting_is_a_clear_404(web_rig: WebRig) -> None:
    web_rig.box.uploads = {WAITING: "waiting"}
    async with web_rig.client() as bob:
        _, admin = await login(bob, "bob")
        reply = await bob.post(
            "/api/uploads/retry",
            json={"file_ids": ["c" * 32]},
            headers={"X-CSRF-Token": str(admin["csrf_token"])},
        )
        error = await reply.json()
    assert (reply.status, error["error"]) == (404, "unknown_upload")
    assert_fits(validator("Error"), error)


RETRY_BODIES: list[dict[str, Any]] = [
    {"all_blocked": True},
    {"file_ids": [BLOCKED]},
    {"file_ids": [BLOCKED, WAITING], "all_blocked": False},
    {"file_ids": [BLOCKED], "all_blocked": True},
    {"all_blocked": False},
    {},
    {"file_ids": []},
    {"file_ids": ["B" * 32]},
    {"file_ids": ["b" * 31]},
    {"file_ids": [BLOCKED] * 1001},
    {"file_ids": BLOCKED},
    {"all_blocked": 1},
    {"all_blocked": True, "other": 1},
]


@pytest.mark.parametrize("body", RETRY_BODIES)
def test_the_retry_schema_and_the_handler_agree(body: dict[str, Any]) -> None:
    try:
        parse_retry(body)
        accepted = True
    except (ApiError, Refused):
        accepted = False
    assert validator("UploadRetry").is_valid(body) is accepted
