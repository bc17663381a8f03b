"""A dying card on the officer's page (issue 14): the status says the card's state, the alert
is the card's code, and a start is refused with `card_unusable` (409), which the page
translates (gateway/web/static/messages.js); over real HTTPS in front of the fake box."""

from __future__ import annotations

import pytest

from tests.gateway.web.conftest import WebRig, login


@pytest.mark.parametrize(
    ("alarm", "card"),
    [("card_missing", "missing"), ("card_read_only", "read_only"), ("card_write_failed", "failed")],
)
async def test_a_dying_card_is_an_alert_and_a_refused_start(
    web_rig: WebRig, alarm: str, card: str
) -> None:
    web_rig.box.alarms[alarm] = "the memory card ...: replace it"
    web_rig.box.card_unusable = True
    async with web_rig.client() as tablet:
        status, body = await login(tablet, "alice")
        assert status == 200
        async with tablet.get("/api/status") as reply:
            document = await reply.json()
        assert document["storage"]["card"] == card
        alerts = [a for a in document["alerts"] if a["code"].startswith("card_")]
        assert [(a["code"], a["severity"]) for a in alerts] == [(alarm, "critical")]
        async with tablet.post(
            "/api/record/start", headers={"X-CSRF-Token": str(body["csrf_token"])}
        ) as reply:
            refused = await reply.json()
            assert reply.status == 409
        assert refused["error"] == "card_unusable"
    assert web_rig.box.triggers == [], "nothing was recorded"


async def test_a_good_card_shows_ok_and_no_card_alert(web_rig: WebRig) -> None:
    async with web_rig.client() as tablet:
        await login(tablet, "alice")
        async with tablet.get("/api/status") as reply:
            document = await reply.json()
    assert document["storage"]["card"] == "ok"
    assert not [a for a in document["alerts"] if a["code"].startswith("card_")]
