"""GET /api/events over real HTTP: the status document at once and then every interval,
heartbeats, a bound on concurrent streams, and clean ends on disconnect (the loopback channel in
front of the in-memory box) and on service stop (a real running box)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from config.local import load_config
from gateway.run import start_box, stop_box
from gateway.web.events import MAX_STREAMS, EventStreams, encode_event
from tests.gateway.web.fake_box import FakeLocal, fake_local
from tests.gateway.web.feature_rig import feature_box_config, wait_for


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[FakeLocal]:
    async with fake_local(load_config(feature_box_config(tmp_path))) as local:
        yield local


async def next_frame(response: aiohttp.ClientResponse) -> list[str]:
    """The lines of the next frame (up to its blank line); [] at the end of the stream."""
    lines: list[str] = []
    while True:
        raw = await response.content.readline()
        if not raw:
            return lines
        line = raw.decode().rstrip("\n")
        if not line:
            if lines:
                return lines
            continue
        lines.append(line)


async def next_status(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """Skip retry and comment frames; the next `status` event's document."""
    while True:
        frame = await next_frame(response)
        assert frame, "the stream ended"
        if frame[0] == "event: status":
            assert len(frame) == 2, frame
            assert frame[1].startswith("data: "), frame
            document: dict[str, Any] = json.loads(frame[1].removeprefix("data: "))
            return document


async def open_streams(client: aiohttp.ClientSession) -> int:
    text = await (await client.get("/metrics")).text()
    (line,) = [line for line in text.splitlines() if line.startswith("mvb_event_streams ")]
    return int(line.split()[1])


def test_an_event_is_one_frame_whatever_the_text() -> None:
    frame = encode_event("status", {"detail": "two\nlines\r\n\ndata: forged"})
    assert frame.count(b"\n\n") == 1
    assert frame.endswith(b"\n\n")
    assert frame.startswith(b"event: status\ndata: {")


async def test_the_stream_sends_the_status_at_once_and_again(box: FakeLocal) -> None:
    async with box.client() as client, client.get("/api/events") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-store"
        assert await next_frame(response) == ["retry: 1000"]
        first = await next_status(response)
        assert first["state"] == "standby"
        assert "alerts" in first
        assert "storage" in first
        await client.post("/api/record/start")
        later = await next_status(response)
        while later["state"] != "recording":
            later = await next_status(response)
        assert later["at_ms"] >= first["at_ms"]


async def test_at_most_eight_streams_and_a_closed_one_frees_its_place(box: FakeLocal) -> None:
    async with box.client() as client:
        streams = [await client.get("/api/events") for _ in range(MAX_STREAMS)]
        for response in streams:
            assert response.status == 200
            await next_status(response)
        busy = await client.get("/api/events")
        assert busy.status == 503
        assert busy.headers["Retry-After"] == "5"
        assert (await busy.json())["error"] == "busy"
        assert await open_streams(client) == MAX_STREAMS

        streams.pop().close()  # the tablet goes away
        deadline_s = time.monotonic() + 20
        while await open_streams(client) != MAX_STREAMS - 1:
            assert time.monotonic() < deadline_s, "a closed stream was not noticed"
            await asyncio.sleep(0.05)
        again = await client.get("/api/events")
        assert again.status == 200
        await next_status(again)
        for response in [*streams, again]:
            response.close()
        assert (await client.get("/api/status")).status == 200


async def test_stopping_the_service_ends_every_stream(tmp_path: Path) -> None:
    config = load_config(feature_box_config(tmp_path))
    running = await start_box(config)
    stopped = False
    try:
        async with aiohttp.ClientSession() as client:
            url = f"http://{config.api.host}:{config.api.port}/api/events"
            async with client.get(url) as response:
                await next_status(response)
                await stop_box(running)
                stopped = True
                while await next_frame(response):
                    pass  # frames sent before the end; then the stream ends
    finally:
        if not stopped:
            await stop_box(running)


async def test_heartbeat_comments_between_events(box: FakeLocal) -> None:
    streams = EventStreams(box.status, interval_s=0.01, heartbeat_every=2)
    app = web.Application()
    app.router.add_get("/events", streams.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://127.0.0.1:{port}/events") as response,
        ):
            frames = [await next_frame(response) for _ in range(4)]
            assert frames[0] == ["retry: 1000"]
            assert frames[1][0] == frames[2][0] == "event: status"
            assert frames[3] == [": heartbeat"]
            await streams.close()
            while await next_frame(response):
                pass
    finally:
        await runner.cleanup()
    await wait_for(lambda: streams.open_streams == 0, "the stream to end")
