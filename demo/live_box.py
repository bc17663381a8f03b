"""The live box: the simulated gpsd and the real box service on a loop of their own.

`LiveBox` runs `gateway.run.start_box` (what `mvb run` runs) in this process, on an event loop in
a thread of its own, so that the demo's main thread stays synchronous (commands, checks, Ctrl-C)
while the box records, uploads and serves the officer's page. Its phases: start, ready, the
incident (the emergency lights as a simulated vehicle input, the officer's stop through the
local API, post-record), the uploads' tail; every phase prints progress lines (demo/status.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from config.local import load_config
from demo.gps_sim import ROUTE_LENGTH_M, SPEED_MPS, GpsdSimulator
from demo.narration import DemoFailure, check, clock_text, echo, say
from demo.simulated_inputs import SimulatedInputs
from demo.status import (
    Done,
    WebPage,
    card_counts,
    describe_status,
    is_ready,
    progress_line,
    web_page,
)
from gateway.inputs import InputRule
from gateway.run import RunningBox, start_box, stop_box
from storage.models import FileRecord

LIGHTS = "lights"
NS_PER_S = 1_000_000_000
READY_TIMEOUT_S = 45.0
READY_PROGRESS_EVERY_S = 2.0  # while the rings fill: little changes
PROGRESS_EVERY_S = 1.0  # while recording and uploading
UPLOAD_TIMEOUT_S = 60.0
SNAPSHOT_EVERY_S = 0.25  # status and catalog are read this often, printed every *_EVERY_S
POLL_S = 0.1

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LivePlan:
    """What the live part runs: the box's configuration and the incident's timing."""

    config_path: Path
    gps_port: int
    prerecord_s: float
    incident_s: float  # from the lights going on to the officer's stop
    postrecord_s: float


@dataclass(slots=True)
class Incident:
    """What the live part learned, for the checks on the decrypted evidence."""

    recording_id: str = ""
    route_start_wall_ms: int = 0
    trigger_mono_ns: int = 0
    stop_mono_ns: int = 0
    ready_after_s: float = 0.0
    uploaded_counts: list[int] = field(default_factory=list)  # `uploaded N` of each progress line
    uploaded_while_recording: int = 0  # files uploaded by the time the recording ended


class LiveBox:
    """The simulated gpsd and the real box service on an event loop in a thread of their own,
    as `mvb run` would be a process of its own.

    The demo's main thread stays synchronous (commands, checks, Ctrl-C) and hands each phase to
    that loop with `call`. Invariants: the box's parts only ever run on that loop; `close` cancels
    a phase still running, then stops the box (sealing whatever it recorded), the API session and
    the gpsd, whatever failed or was interrupted, and may be called again.
    """

    def __init__(self, plan: LivePlan) -> None:
        self.plan = plan
        self.incident = Incident()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="demo-box", daemon=True)
        self._stack = contextlib.AsyncExitStack()
        self._phase: asyncio.Task[Any] | None = None
        self._running: RunningBox | None = None
        self._api: aiohttp.ClientSession | None = None
        self._started_mono_s = 0.0

    def __enter__(self) -> LiveBox:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def call(self, phase: Callable[[], Awaitable[T]]) -> T:
        """Run `phase()` on the box's loop; wait for its result (Ctrl-C interrupts the wait)."""

        async def tracked() -> T:
            self._phase = asyncio.current_task()
            return await phase()

        return asyncio.run_coroutine_threadsafe(tracked(), self.loop).result()

    def close(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
        if not self.loop.is_running():
            self.loop.close()

    async def _shutdown(self) -> None:
        phase = self._phase
        if phase is not None and not phase.done():
            phase.cancel()
            await asyncio.wait([phase])
        await self._stack.aclose()

    @property
    def running(self) -> RunningBox:
        if self._running is None:
            raise DemoFailure("the box is not running")
        return self._running

    @property
    def api(self) -> aiohttp.ClientSession:
        if self._api is None:
            raise DemoFailure("the box's local API is not open")
        return self._api

    # -- the phases (each runs on the box's loop) --

    async def start(self) -> WebPage:
        """The simulated gpsd, then the box service; returns what its web channel reports."""
        gpsd = await self._stack.enter_async_context(GpsdSimulator(port=self.plan.gps_port))
        self.incident.route_start_wall_ms = gpsd.started_wall_ms
        say(
            f"simulated gpsd on 127.0.0.1:{gpsd.port} (demo/gps_sim.py): a "
            f"{ROUTE_LENGTH_M / 1000:.1f} km loop through Hattem at {SPEED_MPS:g} m/s"
        )
        config = load_config(self.plan.config_path)
        self._started_mono_s = time.monotonic()
        self._running = await start_box(config)
        self._stack.push_async_callback(self._stop_box, self._running)
        say("start_box(box.toml): the service `mvb run` runs, in this process, paired")
        base = f"http://{config.api.host}:{config.api.port}"
        self._api = await self._stack.enter_async_context(aiohttp.ClientSession(base))
        return web_page(await api_call(self.api, "GET", "/api/status"))

    async def wait_ready(self) -> None:
        """Until every pre-record ring holds `prerecord_s` and GPS has a fix; progress shown."""
        prerecord_s = self.plan.prerecord_s
        say(f"waiting until both pre-record rings hold {prerecord_s:g} s and GPS has a fix:")
        status = await self._report_until(
            lambda status, _counts: is_ready(status, prerecord_s),
            READY_TIMEOUT_S,
            "the cameras' rings and GPS were not ready",
            READY_PROGRESS_EVERY_S,
        )
        self.incident.ready_after_s = time.monotonic() - self._started_mono_s
        say(f"ready {self.incident.ready_after_s:.1f} s after the start; GET /api/status:")
        echo("\n".join(describe_status(status)))

    async def play_incident(self, copy_card: Callable[[], str]) -> None:
        """Lights on -> recording; `incident_s` later the officer's stop, and a thief copies the
        card (`copy_card`, off the loop); post-record to the end. Uploads run all along."""
        running, plan = self.running, self.plan
        inputs = SimulatedInputs(running.events, [InputRule.level(LIGHTS)])
        poller = asyncio.create_task(inputs.run())
        try:
            await lights_on(running, inputs, self.incident)
            until = time.monotonic() + plan.incident_s
            await self._report_until(
                lambda _status, _counts: time.monotonic() >= until,
                plan.incident_s + READY_TIMEOUT_S,
                "the incident did not run its course",
                PROGRESS_EVERY_S,
            )
            await officer_stops(running, self.api, self.incident)
            say(f"{clock_text()} a thief pulls the card now: {await asyncio.to_thread(copy_card)}")
            say(f"post-record: the cameras keep recording for {plan.postrecord_s:g} s ...")
            await self._report_until(
                lambda _status, _counts: (
                    running.service.recording is None and not running.service.sealing
                ),
                plan.postrecord_s + READY_TIMEOUT_S,
                "the recording did not finish after its post-record",
                PROGRESS_EVERY_S,
            )
            self.incident.uploaded_while_recording = self.incident.uploaded_counts[-1]
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    async def wait_uploaded(self) -> None:
        """Until every file the box catalogued is attested and deleted from the card."""
        say("the recording is sealed; the uplink sends what is left:")
        await self._report_until(
            lambda _status, counts: counts.all_deleted,
            UPLOAD_TIMEOUT_S,
            "the uplink did not deliver, and the box did not delete, every file",
            PROGRESS_EVERY_S,
            first_line_now=False,  # the incident's last line was printed a moment ago
        )

    async def records(self) -> list[FileRecord]:
        """The running box's catalog (read off the loop: it is sqlite underneath)."""
        return await asyncio.to_thread(self.running.box.store.catalog.all)

    async def _stop_box(self, running: RunningBox) -> None:
        await stop_box(running)
        say("stop_box: ignition off; cameras stopped, the box closed")

    async def _report_until(
        self,
        done: Done,
        timeout_s: float,
        failure: str,
        every_s: float,
        *,
        first_line_now: bool = True,
    ) -> dict[str, Any]:
        """Poll the status and the catalog until `done`; a progress line every `every_s` and
        one at the end. Returns the last status document; DemoFailure after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        next_line_at = 0.0 if first_line_now else time.monotonic() + every_s
        while True:
            status = await api_call(self.api, "GET", "/api/status")
            counts = card_counts(await self.records())
            finished = done(status, counts)
            if finished or time.monotonic() >= next_line_at:
                say(progress_line(status, counts))
                self._note_uploaded(status)
                next_line_at = time.monotonic() + every_s
            if finished:
                return status
            check(time.monotonic() < deadline, f"{failure} within {timeout_s:g} s")
            await asyncio.sleep(SNAPSHOT_EVERY_S)

    def _note_uploaded(self, status: dict[str, Any]) -> None:
        uploaded = (status.get("uplink") or {}).get("uploaded_files")
        if isinstance(uploaded, int):
            self.incident.uploaded_counts.append(uploaded)


async def api_call(api: aiohttp.ClientSession, method: str, path: str) -> dict[str, Any]:
    """One call to the box's local API; returns the JSON document (any status)."""
    async with api.request(method, path) as response:
        document = await response.json()
    check(isinstance(document, dict), f"{method} {path}: not a JSON object")
    assert isinstance(document, dict)
    return document


async def wait_until(condition: Callable[[], bool], timeout_s: float, failure: str) -> None:
    """Poll `condition` until it holds; DemoFailure(`failure`) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        check(time.monotonic() < deadline, failure)
        await asyncio.sleep(POLL_S)


async def lights_on(running: RunningBox, inputs: SimulatedInputs, incident: Incident) -> None:
    """The lights' input goes on; its debounced rising edge reaches the recorder as a trigger."""
    inputs.set(LIGHTS, True)
    debounce_ms = inputs.levels[LIGHTS].rule.debounce_ms
    say(f"{clock_text()} emergency lights ON (input {LIGHTS!r}, debounced {debounce_ms:g} ms)")
    await wait_until(
        lambda: running.service.recording is not None, 5.0, "the lights started no recording"
    )
    recording = running.service.recording
    changed_ns = inputs.levels[LIGHTS].changed_ns
    assert recording is not None
    assert changed_ns is not None
    incident.recording_id = recording.recording_id
    incident.trigger_mono_ns = changed_ns
    state = running.service.recorder.state.value
    say(f"{clock_text()} recorder: {state}, recording {recording.recording_id}")


async def officer_stops(
    running: RunningBox, api: aiohttp.ClientSession, incident: Incident
) -> None:
    """The officer presses stop: POST /api/record/stop."""
    say(f"{clock_text()} the officer presses stop: POST /api/record/stop")
    answer = await api_call(api, "POST", "/api/record/stop")
    # the answer also carries the status document built after the stop (docs/webui.md 2); the
    # narration shows the recorder's answer only
    echo(json.dumps({name: value for name, value in answer.items() if name != "status"}))
    check(answer.get("state") == "postrecord", f"the stop was not accepted: {answer}")
    recorder = running.service.recorder
    postrecord_ns = int(recorder.policy.officer_stop_postrecord_s * NS_PER_S)
    incident.stop_mono_ns = recorder.postrecord_until_ns - postrecord_ns
