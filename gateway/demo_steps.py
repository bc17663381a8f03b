"""Helpers of `make demo` (gateway/demo.py): narration, the live box, and the back office's look
at what was recorded.

- Narration: `heading`, `say`, `echo`, `check` (DemoFailure stops the demo with a message).
- The live box (`LiveBox`): the simulated gpsd and the real box service
  (`gateway.run.start_box`) on an event loop in a thread of their own, so that the demo's main
  thread stays synchronous (commands, checks, Ctrl-C) while the box records, uploads and serves
  the officer's page. Its phases: start, ready, the incident (the emergency lights as a simulated
  vehicle input, the officer's stop through the local API, post-record), the uploads' tail.
  Every phase prints progress lines: the box's state and the uplink from GET /api/status, the
  files by state from the running box's catalog (the status document counts the files waiting,
  not those attested and deleted).
- The evidence (`camera_report`): decrypted files grouped per camera and checked: duration from
  PTS, keyframe start, pre-record before the trigger, post-record after the stop, GPS samples on
  the simulated route, trigger and stop sources; one frame per camera saved as PNG.
- The power cut (`kill_writer`, `child_writer`): a writer process fed a clip piece by piece,
  SIGKILLed after it acknowledged a few segments.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import av

from config.local import load_config
from gateway.box import open_box
from gateway.gps_sim import ROUTE_LENGTH_M, SPEED_MPS, GpsdSimulator, route_position
from gateway.importer import probe_clip
from gateway.inputs import InputRule
from gateway.inputs_sim import SimulatedInputs
from gateway.run import RunningBox, start_box, stop_box
from gateway.synthetic import clock_text as synthetic_clock_text
from storage.models import FileRecord, FileState

STEPS = 10
NS_PER_S = 1_000_000_000
MS_PER_S = 1000
LIGHTS = "lights"
READY_TIMEOUT_S = 45.0
READY_PROGRESS_EVERY_S = 2.0  # while the rings fill: little changes
PROGRESS_EVERY_S = 1.0  # while recording and uploading
UPLOAD_TIMEOUT_S = 60.0
SNAPSHOT_EVERY_S = 0.25  # status and catalog are read this often, printed every *_EVERY_S
POLL_S = 0.1
TS_PACKET_BYTES = 188
TS_SYNC_BYTE = 0x47
TS_SYNC_RUN = 10  # packets: 10 sync bytes 188 apart happen by chance with p ~ 256**-10 per offset
ROUTE_TOLERANCE_M = 1.0
PIECES_PER_SEGMENT = 4  # the child delivers each segment in pieces, as a camera does over time
PIECE_INTERVAL_S = 0.1
ACKS_BEFORE_POWER_CUT = 2
POWER_CUT_DELAY_S = 0.25  # after the last awaited ACK: mid-way through the next segment
CHILD_TIMEOUT_S = 30.0
PRERECORD_SLACK_S = 2.0  # the snapshot starts at a keyframe up to one GOP (1 s) earlier
POSTRECORD_SLACK_S = 0.3  # the recorder ticks every 0.25 s; frames come every 40 ms

T = TypeVar("T")


class DemoFailure(Exception):
    """A check of the demo failed; the message says which and why."""


# --- narration ---------------------------------------------------------------------------------


def heading(number: int, text: str) -> None:
    """The one-line heading of a step."""
    print(f"\n[{number}/{STEPS}] {text}", flush=True)


def say(text: str) -> None:
    """A line of the demo's own narration, indented under the heading."""
    print(f"  {text}", flush=True)


def echo(output: str) -> None:
    """Show a command's real output, indented one level further."""
    for line in output.rstrip("\n").splitlines():
        print(f"    {line}", flush=True)


def check(condition: bool, message: str) -> None:
    """Raise DemoFailure with `message` unless `condition` holds."""
    if not condition:
        raise DemoFailure(message)


def clock_text(wall_ms: int | None = None) -> str:
    """`HH:MM:SS.mmm` UTC (default: now), the clock the synthetic cameras paint into the picture."""
    ms = time.time_ns() // 1_000_000 if wall_ms is None else wall_ms
    return synthetic_clock_text(ms).partition(" ")[2]


# --- the live box -------------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class WebPage:
    """The officer's page as the status document's "web" member describes it."""

    state: str  # "listening" or "failed"
    url: str
    certificate_sha256: str  # upper-case hex pairs joined by colons, as browsers show it
    reason: str


def web_page(status: dict[str, Any]) -> WebPage:
    """The "web" member of a status document (absent: the web channel is disabled)."""
    web = status.get("web") or {}
    return WebPage(
        state=str(web.get("state", "disabled")),
        url=str(web.get("url", "")),
        certificate_sha256=str(web.get("certificate_sha256", "")),
        reason=str(web.get("reason", "")),
    )


@dataclass(frozen=True, slots=True)
class CardCounts:
    """The catalog's evidence files by state, and what the back office attested.

    `attested` counts files whose attested SHA-256 equals the one the box wrote (still on the
    card or already deleted); `total` counts every file the box ever catalogued."""

    total: int = 0
    recording: int = 0
    sealed: int = 0
    uploading: int = 0
    attested: int = 0
    attested_bytes: int = 0
    deleted: int = 0

    @property
    def all_deleted(self) -> bool:
        """Every file was attested and deleted: nothing of the evidence is left on the card."""
        return self.total > 0 and self.deleted == self.attested == self.total


def card_counts(records: Iterable[FileRecord]) -> CardCounts:
    """Count catalog records by state (pure)."""
    listed = list(records)
    states = Counter(record.state for record in listed)
    attested = [record for record in listed if record.is_attested]
    return CardCounts(
        total=len(listed),
        recording=states[FileState.RECORDING],
        sealed=states[FileState.SEALED],
        uploading=states[FileState.UPLOADING],
        attested=len(attested),
        attested_bytes=sum(record.size_bytes for record in attested),
        deleted=states[FileState.DELETED],
    )


def box_state(status: dict[str, Any]) -> str:
    """`standby, pre-record dashcam 4.0 s, ...; GPS fix` or `recording 4.0 s` (status document)."""
    state = status.get("state")
    if state == "standby":
        return f"standby, {prerecord_line(status)}"
    return f"{state} {float(status.get('recording_for_s') or 0.0):.1f} s"


def upload_state(status: dict[str, Any], counts: CardCounts) -> str:
    """What the card holds by state and how far the uplink got, in one line."""
    uplink = status.get("uplink") or {}
    in_flight = [
        f"{int(u['offset_bytes']) / 1e6:.1f} of {int(u['size_bytes']) / 1e6:.1f} MB"
        for u in uplink.get("uploading", [])
    ]
    card = (
        f"card: {counts.recording} recording, {counts.sealed} sealed, {counts.uploading} uploading"
        + (f" ({', '.join(in_flight)})" if in_flight else "")
    )
    if "uploaded_files" not in uplink:  # no uplink runs: the document says why
        return f"{card} | uplink {uplink.get('state')}: {uplink.get('reason')}"
    return (
        f"{card} | uploaded {uplink['uploaded_files']}, attested {counts.attested} "
        f"({counts.attested_bytes:,} bytes), deleted {counts.deleted}"
    )


def progress_line(status: dict[str, Any], counts: CardCounts) -> str:
    """One progress line, stamped with the status document's own time."""
    stamp = clock_text(int(status["at_ms"])) if "at_ms" in status else clock_text()
    return f"{stamp} {box_state(status)} | {upload_state(status, counts)}"


Done = Callable[[dict[str, Any], CardCounts], bool]


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
            f"simulated gpsd on 127.0.0.1:{gpsd.port} (gateway/gps_sim.py): a "
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
                lambda _status, _counts: running.service.recording is None,
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


def is_ready(status: dict[str, Any], prerecord_s: float) -> bool:
    """Every camera's ring holds `prerecord_s` seconds and the GPS status is "fix"."""
    cameras = status.get("cameras", {})
    filled = [c.get("prerecord_filled_s", 0.0) >= prerecord_s for c in cameras.values()]
    return bool(filled) and all(filled) and status.get("gps", {}).get("status") == "fix"


def prerecord_line(status: dict[str, Any]) -> str:
    """`pre-record dashcam 4.0 s, bodycam 3.9 s; GPS fix` from a status document."""
    rings = ", ".join(
        f"{name} {camera.get('prerecord_filled_s', 0.0):.1f} s"
        for name, camera in status.get("cameras", {}).items()
    )
    return f"pre-record {rings}; GPS {status.get('gps', {}).get('status')}"


def describe_status(status: dict[str, Any]) -> list[str]:
    """The status document in a few readable lines (the API's JSON, condensed)."""
    lines = []
    for name, camera in status.get("cameras", {}).items():
        lines.append(
            f"{name}: {'connected' if camera.get('connected') else 'NOT connected'}, "
            f"{camera.get('fps')} fps, {camera.get('bitrate_bps', 0) / 1000:,.0f} kbit/s, "
            f"pre-record {camera.get('prerecord_filled_s')} s "
            f"({camera.get('prerecord_bytes', 0):,} bytes in RAM)"
        )
    gps = status.get("gps", {})
    speed = gps.get("speed_mps")
    lines.append(
        f"gps: {gps.get('status')} (mode {gps.get('mode')}), "
        f"speed {'-' if speed is None else f'{speed:g}'} m/s, "
        f"GPS time - system clock {gps.get('clock_offset_ms')} ms"
    )
    pairing = status.get("pairing") or {}
    uplink = status.get("uplink") or {}
    lines.append(
        f"paired: {'yes' if pairing.get('paired') else 'NO'}; uplink {uplink.get('state')}; "
        f"alarms: {', '.join(status.get('alarms') or {}) or 'none'}"
    )
    return lines


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
    echo(json.dumps(answer))
    check(answer.get("state") == "postrecord", f"the stop was not accepted: {answer}")
    recorder = running.service.recorder
    incident.stop_mono_ns = recorder.postrecord_until_ns - int(recorder.postrecord_s * NS_PER_S)


# --- the evidence, as the back office sees it --------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecryptedPart:
    """One decrypted evidence file: its metadata document (from mvb-admin decrypt) and media."""

    document: dict[str, Any]
    media: bytes

    @property
    def objects(self) -> list[dict[str, Any]]:
        objects: list[dict[str, Any]] = self.document["metadata"]
        return objects

    @property
    def camera(self) -> str:
        recording = next(o for o in self.objects if o.get("type") == "recording")
        return str(recording.get("camera", ""))


def media_of(meta_path: Path) -> bytes:
    """The decrypted media next to a decrypted file's metadata JSON."""
    media = [p for p in meta_path.parent.glob(meta_path.stem + ".*") if p.suffix != ".json"]
    check(len(media) == 1, f"expected one media file for {meta_path.name}, found {len(media)}")
    return media[0].read_bytes()


def parts_by_camera(folder: Path, recording_id: str) -> dict[str, list[DecryptedPart]]:
    """The decrypted files of one recording, per camera, in file order."""
    parts: dict[str, list[DecryptedPart]] = {}
    for meta_path in sorted(folder.glob("*.json")):
        document = json.loads(meta_path.read_text())
        if document["recording_id"] == recording_id:
            part = DecryptedPart(document, media_of(meta_path))
            parts.setdefault(part.camera, []).append(part)
    for camera_parts in parts.values():
        camera_parts.sort(key=lambda p: int(p.document["file_seq"]))
    return parts


@dataclass(frozen=True, slots=True)
class VideoFacts:
    """What demuxing and decoding the media shows."""

    codec: str
    width: int
    height: int
    frames: int
    duration_s: float  # PTS of the last frame minus PTS of the first
    starts_on_keyframe: bool


def video_facts(media: bytes) -> VideoFacts:
    """Demux the MPEG-TS media; PTS give the duration, the first packet must be a keyframe."""
    with av.open(io.BytesIO(media), mode="r", format="mpegts") as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        check(bool(packets), "the media holds no video packet")
        pts = [int(p.pts) for p in packets if p.pts is not None]
        time_base = stream_time_base(stream)
        return VideoFacts(
            codec=str(stream.codec_context.name),
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            frames=len(packets),
            duration_s=float((max(pts) - min(pts)) * time_base),
            starts_on_keyframe=bool(packets[0].is_keyframe),
        )


def stream_time_base(stream: Any) -> Fraction:
    """A stream's time base (MPEG-TS: 1/90000)."""
    time_base = stream.time_base
    check(time_base is not None, "the video stream has no time base")
    return Fraction(time_base)


def save_frame_png(media: bytes, at_s: float, path: Path) -> float:
    """Decode the first frame at least `at_s` after the first one and save it as PNG (PyAV's png
    encoder, no PIL). Returns the frame's offset in seconds."""
    with av.open(io.BytesIO(media), mode="r", format="mpegts") as container:
        stream = container.streams.video[0]
        time_base = stream_time_base(stream)
        first_pts: int | None = None
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            first_pts = frame.pts if first_pts is None else first_pts
            offset_s = float((frame.pts - first_pts) * time_base)
            if offset_s >= at_s:
                path.write_bytes(encode_png(frame))
                return offset_s
    raise DemoFailure(f"no frame {at_s:.1f} s into the recording for {path.name}")


def encode_png(frame: Any) -> bytes:
    """One decoded video frame as a PNG file's bytes."""
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = frame.width, frame.height, "rgb24"
    codec.time_base = Fraction(1, 25)
    rgb = frame.reformat(format="rgb24")
    return b"".join(bytes(p) for p in [*codec.encode(rgb), *codec.encode(None)])


def ts_sync_run(blob: bytes) -> int | None:
    """The offset of the first run of TS_SYNC_RUN bytes 0x47 spaced 188 apart (what plaintext
    MPEG-TS shows at every packet start), or None."""
    needle = bytes([TS_SYNC_BYTE]) * TS_SYNC_RUN
    found = []
    for phase in range(TS_PACKET_BYTES):
        index = blob[phase::TS_PACKET_BYTES].find(needle)
        if index >= 0:
            found.append(phase + index * TS_PACKET_BYTES)
    return min(found, default=None)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine) in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(a))


def off_route_m(sample: dict[str, Any], route_start_wall_ms: int) -> float:
    """How far a GPS sample lies from where the simulated route was at its GPS time."""
    t_s = (int(sample["gps_time_ms"]) - route_start_wall_ms) / MS_PER_S
    lat, lon, _speed, _track = route_position(t_s)
    return distance_m(float(sample["lat"]), float(sample["lon"]), lat, lon)


@dataclass(frozen=True, slots=True)
class CameraReport:
    """What the back office finds in one camera's part of the incident, checked."""

    camera: str
    serial: str
    file_ids: tuple[str, ...]
    media: bytes
    video: VideoFacts
    segments: int
    trigger_source: str
    trigger_at_ms: int
    stop_source: str
    prerecord_s: float  # metadata: trigger at_ms - first segment's start (wall clock)
    prerecord_mono_s: float  # the same on the monotonic clock, against the lights' edge
    postrecord_s: float  # metadata: last segment's end - stop at_ms (wall clock)
    postrecord_mono_s: float
    gps: tuple[dict[str, Any], ...]


def camera_report(camera: str, parts: list[DecryptedPart], incident: Incident) -> CameraReport:
    """Gather one camera's facts from its decrypted files (checks come separately)."""
    objects = [o for part in parts for o in part.objects]
    recording = next(o for o in objects if o.get("type") == "recording")
    segments = [o for o in objects if o.get("type") == "segment"]
    stops = [o for o in objects if o.get("type") == "event" and o.get("name") == "stop"]
    check(bool(segments), f"{camera}: no segment in the evidence")
    check(len(stops) == 1, f"{camera}: expected one stop event, found {len(stops)}")
    trigger, stop = recording["trigger"], stops[0]
    media = b"".join(part.media for part in parts)
    first, last = segments[0], segments[-1]
    return CameraReport(
        camera=camera,
        serial=str(recording.get("camera_serial", "")),
        file_ids=tuple(str(part.document["file_id"]) for part in parts),
        media=media,
        video=video_facts(media),
        segments=len(segments),
        trigger_source=str(trigger["source"]),
        trigger_at_ms=int(trigger["at_ms"]),
        stop_source=str(stop["source"]),
        prerecord_s=(int(trigger["at_ms"]) - int(first["start_wall_ms"])) / MS_PER_S,
        prerecord_mono_s=(incident.trigger_mono_ns - int(first["start_mono_ns"])) / NS_PER_S,
        postrecord_s=(int(last["end_wall_ms"]) - int(stop["at_ms"])) / MS_PER_S,
        postrecord_mono_s=(int(last["end_mono_ns"]) - incident.stop_mono_ns) / NS_PER_S,
        gps=tuple(o for o in objects if o.get("type") == "gps"),
    )


def check_report(report: CameraReport, plan: LivePlan, incident: Incident) -> None:
    """The protocol's promises about one camera's recording (RULES R1-R3, R5)."""
    name = report.camera
    check(report.video.starts_on_keyframe, f"{name}: the recording does not start on a keyframe")
    check(report.trigger_source == LIGHTS, f"{name}: trigger source {report.trigger_source!r}")
    check(report.stop_source == "officer", f"{name}: stop source {report.stop_source!r}")
    low, high = plan.prerecord_s - 0.05, plan.prerecord_s + PRERECORD_SLACK_S
    for label, value in (("", report.prerecord_s), (" (monotonic)", report.prerecord_mono_s)):
        check(low <= value <= high, f"{name}: pre-record{label} {value:.2f} s, not {low}..{high}")
    for label, value in (("", report.postrecord_s), (" (monotonic)", report.postrecord_mono_s)):
        floor = plan.postrecord_s - POSTRECORD_SLACK_S
        check(value >= floor, f"{name}: post-record{label} {value:.2f} s < {floor:.2f} s")
    expected_s = plan.prerecord_s + plan.incident_s + plan.postrecord_s
    check(
        report.video.duration_s >= expected_s - 1.0,
        f"{name}: {report.video.duration_s:.1f} s of video, expected about {expected_s:g} s",
    )
    check(
        len(report.gps) >= 0.75 * report.video.duration_s,
        f"{name}: only {len(report.gps)} GPS samples in {report.video.duration_s:.0f} s",
    )
    worst = max(off_route_m(s, incident.route_start_wall_ms) for s in report.gps)
    check(worst <= ROUTE_TOLERANCE_M, f"{name}: a GPS sample lies {worst:.1f} m off the route")
    check(ts_sync_run(report.media) is not None, f"{name}: decrypted media is not MPEG-TS")


def describe_report(report: CameraReport) -> list[str]:
    """What was recorded by one camera, in a few lines."""
    video, gps = report.video, report.gps
    first, last = gps[0], gps[-1]
    return [
        f"{report.camera} (serial {report.serial}): {video.duration_s:.2f} s of {video.codec} "
        f"{video.width}x{video.height} by PTS, {video.frames} frames, {report.segments} segments "
        f"in {len(report.file_ids)} file(s), {len(report.media):,} bytes",
        f"  starts on a keyframe: {'yes' if video.starts_on_keyframe else 'NO'}; trigger "
        f"{report.trigger_source!r} at {clock_text(report.trigger_at_ms)}, stop by "
        f"{report.stop_source!r}",
        f"  pre-record {report.prerecord_s:.2f} s before the trigger (monotonic "
        f"{report.prerecord_mono_s:.2f} s); post-record {report.postrecord_s:.2f} s after the "
        f"stop (monotonic {report.postrecord_mono_s:.2f} s)",
        f"  GPS: {len(gps)} samples, first {first['lat']:.5f}, {first['lon']:.5f} at "
        f"{first['speed_mps']:g} m/s, last {last['lat']:.5f}, {last['lon']:.5f}; all on the route",
    ]


# --- the power cut (step 9): a writer process and its killer ----------------------------------


@dataclass(slots=True)
class PowerCut:
    """What step 9 learned: the killed recording, its acknowledged and recovered media."""

    recording_id: str
    acked_bytes: int
    recovered_bytes: int = 0
    recovered_s: float = 0.0  # by PTS
    describe_line: str = ""


def child_writer(config_path: Path, clip: Path) -> int:
    """Record `clip` as a live dashcam would deliver it; print ACK once a segment is durable.

    Lines: `REC <recording id>`, then per segment `ACK segment=<i> clip_bytes=<n>` where n clip
    bytes are durable, then `DONE` (never reached in the demo: the parent kills this process).
    """
    probe = probe_clip(clip)
    data = clip.read_bytes()
    box = open_box(load_config(config_path))
    recording = box.store.start_recording(
        {**box.facts, "trigger": {"source": "demo", "at_ms": box.store.clock_ms()}}
    )
    print(f"REC {recording.recording_id}", flush=True)
    stream = recording.open_stream("dashcam", container=probe.container)
    bounds = [*probe.segment_offsets[1:], len(data)]
    for index, (start, end) in enumerate(zip(probe.segment_offsets, bounds, strict=True)):
        for piece in split(data[start:end], PIECES_PER_SEGMENT):
            stream.append_media(piece)
            time.sleep(PIECE_INTERVAL_S)
        stream.end_segment({"index": index, "media_offset": start, "media_bytes": end - start})
        print(f"ACK segment={index} clip_bytes={end}", flush=True)
    recording.close()
    box.close()
    print("DONE", flush=True)
    return 0


def split(data: bytes, parts: int) -> list[bytes]:
    """`data` in `parts` nearly equal pieces (the last may be shorter)."""
    size = -(-len(data) // parts)
    return [data[i : i + size] for i in range(0, len(data), size)]


def kill_writer(config: Path, clip: Path) -> PowerCut:
    """Start the child writer, SIGKILL it shortly after its ACKS_BEFORE_POWER_CUT-th ACK."""
    argv = [sys.executable, "-m", "gateway.demo", "--child-writer", str(config), str(clip)]
    say(f"$ python -m gateway.demo --child-writer box/{config.name} clips/{clip.name} &")
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as child:
        try:
            recording_id, acked = await_acks(child_lines(child, "writer"))
            time.sleep(POWER_CUT_DELAY_S)
            child.send_signal(signal.SIGKILL)
            say(f"SIGKILL to writer pid {child.pid} while it writes the next segment (power cut)")
        finally:
            child.kill()  # no-op if already dead; never leaves a writer behind
            child.wait()
    check(child.returncode == -signal.SIGKILL, f"writer ended with status {child.returncode}")
    return PowerCut(recording_id, acked)


def child_lines(child: subprocess.Popen[str], name: str) -> queue.Queue[str | None]:
    """The child's stdout lines, read by a thread into a queue (to its end, so the child never
    blocks on a full pipe); None marks the end."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=pump, name=f"demo-{name}-stdout", daemon=True).start()
    return lines


def await_acks(lines: queue.Queue[str | None]) -> tuple[str, int]:
    """Read the child's lines until enough ACKs; return (recording id, acknowledged bytes)."""
    recording_id, acks, acked = "", 0, 0
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while acks < ACKS_BEFORE_POWER_CUT:
        line = next_line(lines, deadline, "the writer")
        say(f"writer: {line}")
        word, *rest = line.split()
        if word == "REC":
            recording_id = rest[0]
        elif word == "ACK":
            acks, acked = acks + 1, int(rest[-1].partition("=")[2])
        check(word != "DONE", "the writer finished before the power cut")
    check(bool(recording_id), "the writer never reported its recording id")
    return recording_id, acked


def next_line(lines: queue.Queue[str | None], deadline: float, who: str) -> str:
    """The child's next line, or DemoFailure at the deadline or at the end of its output."""
    try:
        line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
    except queue.Empty:
        raise DemoFailure(f"{who} printed nothing in time") from None
    if line is None:
        raise DemoFailure(f"{who} stopped early (see its error above)")
    return line
