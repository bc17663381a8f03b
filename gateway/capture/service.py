"""The capture service: cameras -> pre-record rings -> recorder -> evidence store.

The asyncio shell around the pure parts (ring, recorder, segmenter). Per camera: a source thread,
a coroutine that moves packets into the ring (and, while recording, to the camera's muxer), and
during a recording a worker thread of its own for muxing and card I/O. The event loop never
touches the card.

Hops per packet (issue 18): the source thread hands packets over in batches (at every keyframe,
at most BATCH_MAX_S or BATCH_MAX_ITEMS apart: gateway/capture/source.py), the camera's loop puts
a batch into the ring and gives it to the worker as one job (muxed in one call, its bytes to the
store in one write: gateway/capture/muxer.py `feed_many`), and the loop is not woken when the
job is done (it waits for the worker only over the backlog bound, for metadata and at the end).
So one wake-up of the loop and one of the worker per batch, not a round trip per packet.

Ordering without locks: a camera's work reaches its worker through a one-thread executor, which
runs jobs in submission order. A recording's start submits the ring snapshot *synchronously*
when it attaches to the camera, so every later packet queues after it: no packet is lost or
doubled between pre-record and live. A recording's end first flushes each recorded camera's
bridge and waits (at most FLUSH_WAIT_MAX_S) until its loop took what arrived before the end.

A camera's connection lost and back (`LinkEvent`, in order with its packets) is audited
(`gateway.camera_lost`, `gateway.camera_back` with the gap) and, while the camera is recorded, an
event in its part's metadata; a recorded camera is retried about every second
(`ThreadedSource.set_recording`). Audio is kept when `record_audio` is on (a municipality's
policy, RecordingSection.record_audio): the ring buffers it and the recording muxes it; when off,
neither holds a byte of it.

While recording, every tick also writes what changed around the recording into its metadata:
the GPS lost and back, alarms raised and cleared (gateway/capture/recording_events.py). The
`recording_listeners` hear when recording starts and ends (gpsd is retried faster meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.capture.camera import NS_PER_S, Camera, CameraRecording
from gateway.capture.muxer import GpsWindow
from gateway.capture.observing import (
    RecordingObserver,
    audio_state,
    no_gps,
    observe,
    origin_of,
    scalars,
    wall_ms,
)
from gateway.capture.packet import CapturedPacket
from gateway.capture.recording_events import GPS_FIX, alarm_events, gps_event
from gateway.capture.source import Flush, LinkEvent, QueueItem
from gateway.recorder import (
    Action,
    Event,
    EventKind,
    FinishRecording,
    NoteStop,
    NoteTrigger,
    Recorder,
    RecorderPolicy,
    RefuseStop,
    StartRecording,
    WarnMaxContinuous,
)
from storage.errors import RecordingRefused
from storage.store import EvidenceStore, Recording

log = logging.getLogger(__name__)


FLUSH_WAIT_MAX_S = 0.5
"""How long a recording's end waits for the camera loops to take the packets that arrived before
it (microseconds normally; a loop waits longer only while its card is over the backlog bound or
a link event's metadata waits for a stalled card, and then the end does not wait for it)."""

RECORD_BACKLOG_MAX_BYTES = 32 * 1024 * 1024
"""Packets a camera may have queued for its card worker before its loop waits for the card:
about a minute of a 4 Mbit/s camera. Below it a card that stalls (an fsync of seconds) never
holds up the camera's loop, so its ring and its source queue go on as if nothing happened."""


class CaptureService:
    def __init__(
        self,
        store: EvidenceStore,
        cameras: list[Camera],
        policy: RecorderPolicy,
        facts: dict[str, Any],
        *,
        gps_window: GpsWindow = no_gps,
        tick_s: float = 0.25,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        upload_class_of: Callable[[str], str] = lambda _source: "P1",
        record_audio: bool = True,
        gps_status: Callable[[int], str] = lambda _now_ns: GPS_FIX,
    ) -> None:
        self.store = store
        self.gps_status = gps_status  # monotonic ns -> gateway/gps.py GpsStatus value
        self.recording_listeners: list[Callable[[bool], None]] = []
        self._seen_gps = GPS_FIX
        self._seen_alarms: dict[str, str] = {}
        self.record_audio = record_audio
        self.upload_class_of = upload_class_of
        self.cameras = {c.name: c for c in cameras}
        self.recorder = Recorder(policy)
        self.facts = dict(facts)
        self.gps_window = gps_window
        self.tick_s = tick_s
        self.clock_ns = clock_ns
        self.recording: Recording | None = None
        self.recording_started_ns = 0
        self.alarms = store.alarms  # the box's one Alarms (common/alarms.py)
        self.observers: list[RecordingObserver] = []
        # False from ignition off (SIGTERM) on: a trigger then would start a recording that the
        # shutdown grace period cannot finish (docs: service lifecycle).
        self.accepting_triggers = True
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._loops_run = False  # the camera loops take their queues (a flush is answered)
        # Cameras whose part failed with the card, waiting for it: since when their ring holds
        # what the card did not take (resume_on_card).
        self._awaiting_card: dict[str, int] = {}
        # Recordings ended and still sealing (`_finish`): the card's syncs run here, off the lock.
        self._sealing: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for camera in self.cameras.values():
            queue = camera.source.start(loop)
            self._tasks.append(asyncio.create_task(self._camera_loop(camera, queue)))
        self._tasks.append(asyncio.create_task(self._tick_loop()))
        self._loops_run = True

    async def stop(self) -> None:
        """Ignition off: stop the sources, seal whatever is being recorded."""
        for camera in self.cameras.values():
            await camera.source.stop()
        # what the sources held when they stopped reaches the parts before the loops end
        await self._take_held_packets()
        self._loops_run = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._lock:
            if self.recording is not None:
                await self._finish()
        await self.sealed()

    @property
    def sealing(self) -> bool:
        """A recording ended and its files still seal (the card's syncs)."""
        return bool(self._sealing)

    async def sealed(self) -> None:
        """Until every recording ended so far is sealed: its parts closed (the card's syncs)
        and the recording closed."""
        while self._sealing:
            await asyncio.wait(set(self._sealing))

    # -- commands -------------------------------------------------------------------------------

    async def trigger(self, source: str, **facts: Any) -> list[Action]:
        return await self.submit(Event(EventKind.TRIGGER, self.clock_ns(), source, facts))

    async def stop_recording(
        self, source: str = "officer", *, sealed: bool = True, **facts: Any
    ) -> list[Action]:
        """`facts` name who stopped it (`channel`, `account`: gateway/recorder.py ORIGIN_KEYS).
        `sealed=False` returns once the stop is decided and audited (`gateway.stop`, fsynced in
        the state directory), while the card still seals: the officer's Stop (gateway/box_port.py)
        must not wait for a card that stalls."""
        event = Event(EventKind.STOP, self.clock_ns(), source, facts)
        return await self.submit(event, sealed=sealed)

    async def submit(self, event: Event, *, sealed: bool = True) -> list[Action]:
        """Run one event through the recorder and carry out its actions. IllegalTransition
        (e.g. a stop while standing by) propagates to the caller, which tells the officer.
        A recording the event ended seals after the lock is released; with `sealed` (the
        default) this waits for it, without it returns at once. An event that ended none (a
        trigger) never waits for an earlier recording's seal."""
        if event.kind is EventKind.TRIGGER and not self.accepting_triggers:
            await self._audit(
                "gateway.trigger_refused",
                source=event.source,
                reason="shutdown",
                **origin_of(event.facts),
            )
            return []
        async with self._lock:
            actions = self.recorder.handle(event)
            for action in actions:
                await self._execute(action, event)
        if sealed and any(isinstance(action, FinishRecording) for action in actions):
            await self.sealed()
        return actions

    # -- loops ----------------------------------------------------------------------------------

    async def _camera_loop(self, camera: Camera, queue: asyncio.Queue[QueueItem]) -> None:
        """Ring first, then the card's worker: what arrived together goes to the worker together;
        the loop waits for the card only when its backlog is over RECORD_BACKLOG_MAX_BYTES (a
        card that stalls for seconds stays below it)."""
        while True:
            batch = [await queue.get()]
            while not queue.empty():  # what arrived together goes to the worker together
                batch.append(queue.get_nowait())
            packets: list[CapturedPacket] = []
            for item in batch:
                if isinstance(item, Flush):
                    await self._submit(camera, packets)
                    packets = []
                    if not item.taken.done():
                        item.taken.set_result(None)
                elif isinstance(item, LinkEvent):
                    await self._submit(camera, packets)
                    packets = []
                    await self._link_event(camera, item)
                elif not item.is_audio or self.record_audio:
                    # no sound is buffered either under a policy without it
                    camera.ring.push(item)
                    packets.append(item)
            await self._submit(camera, packets)

    async def _submit(self, camera: Camera, packets: list[CapturedPacket]) -> None:
        part = camera.recording
        if packets and part is not None and not part.failed:
            fed = part.submit_packets(packets)
            if part.backlog_bytes > RECORD_BACKLOG_MAX_BYTES:
                await asyncio.wrap_future(fed)

    async def _link_event(self, camera: Camera, event: LinkEvent) -> None:
        """A camera lost or back: audited always, in the recording's metadata while recorded.
        `back` carries the hole: from the lost connection's last packet to this first one."""
        gap_s = None
        if event.kind == "back" and camera.lost_at_mono_ns is not None:
            gap_s = round((event.at_mono_ns - camera.lost_at_mono_ns) / NS_PER_S, 3)
        camera.lost_at_mono_ns = event.at_mono_ns if event.kind == "lost" else None
        facts: dict[str, str | int | float | bool | None] = {
            "camera": camera.name,
            "at_ms": event.at_wall_ms,
            "connection": event.generation,
        }
        if event.kind == "lost":
            facts["reason"] = event.reason
        else:
            facts["gap_s"] = gap_s
        if camera.recording is not None:
            await camera.recording.submit_metadata(
                {"type": "event", "name": f"camera_{event.kind}", **facts}
            )
        await self._audit(f"gateway.camera_{event.kind}", **facts)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            await self.submit(Event(EventKind.TICK, self.clock_ns()), sealed=False)
            async with self._lock:
                if self.recording is not None:
                    await self._note_surroundings()

    async def _note_surroundings(self) -> None:
        """The GPS and the alarms, as events in the recording when they changed."""
        at_ms = wall_ms()
        gps = self.gps_status(self.clock_ns())
        alarms = self.alarms.snapshot()
        events = alarm_events(self._seen_alarms, alarms, at_ms)
        gps_changed = gps_event(self._seen_gps, gps, at_ms)
        if gps_changed is not None:
            events.insert(0, gps_changed)
        self._seen_gps, self._seen_alarms = gps, alarms
        for event in events:
            await self._broadcast(event)

    # -- actions --------------------------------------------------------------------------------

    async def _execute(self, action: Action, event: Event) -> None:
        if isinstance(action, StartRecording):
            await self._start(action)
        elif isinstance(action, NoteTrigger):
            await self._audit_trigger(action.source, action.facts, started=False)
            await self._escalate(action.source)
            self._attach_cameras(action.cameras, event.now_ns)
            await self._broadcast(
                {
                    "type": "event",
                    "name": "trigger",
                    "source": action.source,
                    "at_ms": wall_ms(),
                    **scalars(action.facts),
                }
            )
        elif isinstance(action, NoteStop):
            origin = origin_of(event.facts)
            postrecord_s = max(0.0, (action.postrecord_until_ns - event.now_ns) / NS_PER_S)
            await self._audit(
                "gateway.stop", source=action.source, postrecord_s=postrecord_s, **origin
            )
            await self._broadcast(
                {
                    "type": "event",
                    "name": "stop",
                    "source": action.source,
                    "at_ms": wall_ms(),
                    "postrecord_s": postrecord_s,
                    **origin,
                }
            )
        elif isinstance(action, RefuseStop):
            await self._audit(
                "gateway.stop_refused", source=action.source, **origin_of(event.facts)
            )
        elif isinstance(action, WarnMaxContinuous):
            minutes = action.recording_for_s / 60
            message = f"recording for {minutes:.0f} min: stop when the threat is over"
            self.alarms.raise_("max_continuous", message)
            await self._audit(
                "gateway.max_continuous_warning", recording_for_s=round(action.recording_for_s)
            )
        elif isinstance(action, FinishRecording):
            await self._finish()

    async def _start(self, action: StartRecording) -> None:
        await self._audit_trigger(action.source, action.facts, started=True)
        trigger = {"source": action.source, "at_ms": wall_ms(), **scalars(action.facts)}
        try:
            facts = {**self.facts, **self._observed_facts(), "trigger": trigger}
            facts["upload_class"] = self.upload_class_of(action.source)
            facts["record_audio"] = self.record_audio  # the policy this recording keeps
            self.recording = await asyncio.to_thread(self.store.start_recording, facts)
        except RecordingRefused as exc:
            self.alarms.raise_("card_full", str(exc))
            self.recorder.handle(Event(EventKind.ABORT, self.clock_ns(), action.source))
            return
        except (OSError, sqlite3.Error) as exc:  # the card is failing: its alarm says which way
            if self.store.note_card_fault(exc) is None:
                raise
            self.recorder.handle(Event(EventKind.ABORT, self.clock_ns(), action.source))
            return
        self.recording_started_ns = self.clock_ns()
        self._seen_gps, self._seen_alarms = GPS_FIX, {}  # the baseline: see recording_events
        self._attach_cameras(action.cameras, action.prerecord_from_ns)
        self._tell_listeners(recording=True)
        for observer in self.observers:
            await observe(observer.recording_started(self.recording.recording_id, facts))

    def _observed_facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        for observer in self.observers:
            try:
                facts.update(observer.recording_facts())
            except Exception:
                log.exception("recording observer failed to give facts; recording without them")
        return facts

    def _observed_camera_facts(self, camera_serial: str) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        for observer in self.observers:
            try:
                facts.update(observer.camera_facts(camera_serial))
            except Exception:
                log.exception("recording observer failed to give camera facts; going without")
        return facts

    async def _escalate(self, source: str) -> None:
        """A P0 trigger (a crash) during a running recording makes the whole recording P0."""
        if self.recording is not None and self.upload_class_of(source) == "P0":
            try:
                await asyncio.to_thread(self.store.flag_incident, self.recording.recording_id)
            except (OSError, sqlite3.Error) as exc:  # kept in RAM: the card's files get it later
                if self.store.note_card_fault(exc) is None:
                    raise

    def _attach_cameras(self, names: frozenset[str] | None, since_ns: int) -> None:
        """Give each selected camera not yet recording its part, fed from its ring first.
        Synchronous on purpose: see the module docstring on ordering."""
        assert self.recording is not None
        for camera in self.cameras.values():
            if camera.recording is not None or (names is not None and camera.name not in names):
                continue
            if camera.name in self._awaiting_card:
                continue  # its part failed with the card: resume_on_card gives it a new one
            camera.recording = self._part(camera, since_ns)
            camera.recording.submit_packets(camera.ring.snapshot(since_ns))
            camera.source.set_recording(True)

    def _part(self, camera: Camera, since_ns: int, *, resume: bool = False) -> CameraRecording:
        assert self.recording is not None
        return CameraRecording(
            self.recording,
            camera,
            self.gps_window,
            self._observed_camera_facts(camera.serial),
            record_audio=self.record_audio,
            since_ns=since_ns,
            on_fault=self.store.note_card_fault,
            resume=resume,
        )

    async def resume_on_card(self, reopen: Callable[[], object]) -> list[str]:
        """The card is back: close the parts that failed, run `reopen` (the store opens the
        card again and recovers their files: EvidenceStore.reopen_card), and give each of those
        cameras a new part of the running recording, fed from its ring since the last packet
        that reached the card (from the keyframe before it: a GOP may appear twice, in the
        interrupted file and the new one; nothing is missing that the ring still held).
        Returns the cameras resumed. `reopen`'s error propagates (the card failed again): the
        cameras stay waiting for the next call."""
        async with self._lock:
            await self.sealed()  # no part of an ended recording writes while the card reopens
            for camera in self.cameras.values():
                part = camera.recording
                if part is not None and part.failed:
                    camera.recording = None
                    await part.close()
                    since_ns = part.since_ns if part.last_fed_ns is None else part.last_fed_ns
                    self._awaiting_card[camera.name] = since_ns
            await asyncio.to_thread(reopen)
            if self.recording is None:
                self._awaiting_card.clear()
                return []
            resumed = sorted(self._awaiting_card)
            for name, since_ns in self._awaiting_card.items():
                camera = self.cameras[name]
                camera.recording = self._part(camera, since_ns, resume=True)
                camera.recording.submit_packets(camera.ring.snapshot(since_ns))
            self._awaiting_card.clear()
        await self._audit("gateway.recording_resumed", cameras=len(resumed))
        return resumed

    def record_backlog(self) -> dict[str, dict[str, int]]:
        """Per camera recording now: bytes waiting for the card, and the most this part had."""
        return {
            name: {
                "backlog_bytes": part.backlog_bytes,
                "backlog_max_bytes": part.backlog_max_bytes,
                "backlog_max_packets": part.backlog_max_packets,
            }
            for name, camera in self.cameras.items()
            if (part := camera.recording) is not None
        }

    async def _broadcast(self, obj: dict[str, Any]) -> None:
        """Queue `obj` on every part's worker, in order with its packets; not waited for: a
        worker may sit in a card's fsync, and this runs under the lock (a part's failure to
        write it is the part's own: CameraRecording._note)."""
        for camera in self.cameras.values():
            if camera.recording is not None:
                camera.recording.submit_metadata(obj)

    async def _finish(self) -> None:
        """End the recording now; its sealing (the card's syncs) follows in a task of its own,
        off the lock (`sealed` waits for it). The parts are detached first: the camera loops
        then stop submitting at once, and each part's close runs after the packets already
        queued on its worker."""
        await self._take_held_packets()
        parts = []
        for camera in self.cameras.values():
            if camera.recording is not None:
                parts.append((camera.name, camera.recording))
                camera.recording = None
                camera.source.set_recording(False)
        self._awaiting_card.clear()  # nothing to resume: the recording ends
        recording, self.recording = self.recording, None
        duration_s = (self.clock_ns() - self.recording_started_ns) / NS_PER_S
        self.alarms.clear("max_continuous")
        self._tell_listeners(recording=False)
        task = asyncio.create_task(self._seal(parts, recording, duration_s), name="seal")
        self._sealing.add(task)
        task.add_done_callback(self._sealing.discard)

    async def _seal(
        self,
        parts: list[tuple[str, CameraRecording]],
        recording: Recording | None,
        duration_s: float,
    ) -> None:
        try:
            await self._seal_parts(parts, recording, duration_s)
        except Exception:  # a bug: logged, never lost in a task nobody awaits
            log.exception("sealing a recording failed")

    async def _seal_parts(
        self,
        parts: list[tuple[str, CameraRecording]],
        recording: Recording | None,
        duration_s: float,
    ) -> None:
        for name, part in parts:
            await part.close()
            if part.failed and part.card_fault is None:  # a card fault has its own alarm
                self.alarms.raise_(f"camera_{name}", part.failed)
        if recording is not None:
            try:
                await asyncio.to_thread(recording.close)
            except Exception as exc:  # a failing card must not stop the recorder's loop
                if self.store.note_card_fault(exc) is None:
                    log.exception("recording %s did not close cleanly", recording.recording_id)
            for observer in self.observers:
                await observe(observer.recording_finished(recording.recording_id, duration_s))

    async def _take_held_packets(self) -> None:
        """What the recorded cameras' sources hold or have queued reaches their parts before
        the end (the batching must not cut the last fraction of a second off a recording)."""
        if not self._loops_run:
            return  # the loops are stopped (ignition off): nobody would take a flush
        taken = [
            camera.source.bridge.flush()
            for camera in self.cameras.values()
            if camera.recording is not None and camera.source.bridge is not None
        ]
        if taken:
            await asyncio.wait(taken, timeout=FLUSH_WAIT_MAX_S)

    def _tell_listeners(self, *, recording: bool) -> None:
        for listener in self.recording_listeners:
            try:
                listener(recording)
            except Exception:
                log.exception("recording listener failed")

    async def _audit_trigger(
        self, source: str, facts: Mapping[str, object], *, started: bool
    ) -> None:
        # RULES R3: every start is registered, with its source, and who asked on which channel.
        await self._audit(
            "gateway.trigger", source=source, started_recording=started, **origin_of(facts)
        )

    async def _audit(self, event: str, **fields: str | int | float | bool | None) -> None:
        """Audit appends fsync: off the event loop."""
        await asyncio.to_thread(self.store.audit.append, event, **fields)

    # -- status ---------------------------------------------------------------------------------

    def apply_policy(
        self,
        policy: RecorderPolicy,
        ring_max_bytes: int,
        upload_class_of: Callable[[str], str] | None = None,
        record_audio: bool | None = None,
    ) -> None:
        """A new recording policy (signed fleet configuration) on running cameras.

        A recording in progress keeps the facts it started with; the next trigger uses the new
        policy. A longer pre-record fills as the cameras deliver: the ring keeps more from now
        on (it cannot recall what it already dropped), and `prerecord_filled_s` shows it.
        """
        self.recorder.policy = policy
        if record_audio is not None:
            self.record_audio = record_audio
        if upload_class_of is not None:
            self.upload_class_of = upload_class_of
        for camera in self.cameras.values():
            camera.prerecord_s = policy.prerecord_s
            camera.ring.window_ns = int(policy.prerecord_s * NS_PER_S)
            camera.ring.max_bytes = ring_max_bytes

    def status(self) -> dict[str, Any]:
        now = self.clock_ns()
        cameras = {}
        for camera in self.cameras.values():
            cameras[camera.name] = {
                **camera.source.health.snapshot(now),
                "prerecord_s": camera.prerecord_s,
                "prerecord_filled_s": round(camera.ring.span_ns() / NS_PER_S, 1),
                "prerecord_bytes": camera.ring.bytes,
                "recording": camera.recording is not None,
                # recorded: the camera sends sound and the policy keeps it; off: the policy
                # keeps none; none: the camera sends no sound
                "audio": audio_state(self.record_audio, camera.source.health.audio_codec),
            }
        recording_for_s = (now - self.recording_started_ns) / NS_PER_S if self.recording else 0.0
        return {
            "state": self.recorder.state.value,
            "record_audio": self.record_audio,
            "recording_for_s": round(recording_for_s, 1),
            "cameras": cameras,
            "alarms": self.alarms.snapshot(),
        }
