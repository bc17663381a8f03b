"""The recording routes' refusals (docs/webui.md 2): one error shape, and a start the card
refuses is a 409 the officer sees, never a 200 that hides that nothing records."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from backoffice.keys import create_recording_keys
from config.local import load_config
from gateway.run import start_box, stop_box
from tests.cameras import free_port
from tests.evidence_helpers import write_box_config

NO_CARD_IS_THIS_BIG = 1 << 40  # 1 TiB free needed to start: every start is refused


def box_config(root: Path, min_free_to_start_bytes: int) -> Path:
    _private, public = create_recording_keys(root / "keys")
    path = write_box_config(
        root / "box",
        public,
        storage_lines=f"""[gps]
port = {free_port()}
[api]
port = {free_port()}
""",
    )
    text = path.read_text()
    default_line = "min_free_to_start_bytes = 8388608"
    assert default_line in text
    wanted_line = f"min_free_to_start_bytes = {min_free_to_start_bytes}"
    path.write_text(text.replace(default_line, wanted_line))
    return path


async def test_a_start_the_card_refuses_is_409_card_full_and_the_box_stays_in_standby(
    tmp_path: Path,
) -> None:
    config = load_config(box_config(tmp_path, NO_CARD_IS_THIS_BIG))
    running = await start_box(config)
    try:
        base = f"http://{config.api.host}:{config.api.port}"
        async with aiohttp.ClientSession(base_url=base) as client:
            async with client.post("/api/record/start") as answer:
                body = await answer.json()
                assert answer.status == 409
            assert body["error"] == "card_full"
            assert "free" in body["message"]
            async with client.get("/api/status") as answer:
                status = await answer.json()
        assert status["state"] == "standby"
        assert running.service.recording is None
        assert "card_full" in {alert["code"] for alert in status["alerts"]}
    finally:
        await stop_box(running)


async def test_stop_and_flag_without_a_recording_are_409_not_recording(tmp_path: Path) -> None:
    config = load_config(box_config(tmp_path, 8 * 1024 * 1024))
    running = await start_box(config)
    try:
        base = f"http://{config.api.host}:{config.api.port}"
        async with aiohttp.ClientSession(base_url=base) as client:
            for path in ("/api/record/stop", "/api/record/flag"):
                async with client.post(path) as answer:
                    assert answer.status == 409
                    assert await answer.json() == {
                        "error": "not_recording",
                        "message": "the box is not recording",
                    }
            async with client.post("/api/config/bundle", data=b"x") as answer:
                assert answer.status == 409
                assert (await answer.json())["error"] == "not_paired"
            async with client.post("/api/trigger", data=b"{not json") as answer:
                assert answer.status == 400
                assert (await answer.json())["error"] == "bad_json"
    finally:
        await stop_box(running)
