"""The capture service end to end with replayed cameras: ring -> recorder -> muxer -> card."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

import gateway.capture.source as source_module
from common.faults import IllegalTransition
from demo.replay_source import ReplaySource
from demo.synthetic import generate_clip
from gateway.capture.camera import Camera
from gateway.capture.service import CaptureService
from gateway.capture.source import SourceSpec
from gateway.recorder import RecorderPolicy, TriggerPolicy
from storage.envelope import RecipientPrivateKey
from storage.store import EvidenceStore
from tests.capture_helpers import decrypt_all, store_on, video_packets, wait_for

S = 1_000_000_000
PRERECORD_S = 2.0
POSTRECORD_S = 1.0
FACTS = {"device_serial": "MVB-7", "vehicle_id": "veh-7", "officer_id": "boa-7"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of H.264 at 25 fps, a keyframe every second."""
    path = tmp_path_factory.mktemp("clips") / "clip.ts"
    return generate_clip(path, seconds=4, fps=25, keyframe_interval_frames=25)


@dataclass
class Rig:
    service: CaptureService
    store: EvidenceStore
    audit_path: Path


@pytest.fixture
async def rig(tmp_path: Path, clip: Path, recipient: RecipientPrivateKey) -> AsyncIterator[Rig]:
    cameras = [
        Camera(
            ReplaySource(SourceSpec(name="dashcam", kind="replay", url=str(clip), serial="DC-1")),
            prerecord_s=PRERECORD_S,
            ring_max_bytes=32 << 20,
        ),
        Camera(
            ReplaySource(
                SourceSpec(
                    name="bodycam",
                    kind="replay",
                    url=str(tmp_path / "missing.ts"),
                    serial="BC-1",
                    backoff_min_s=0.05,
                    backoff_max_s=0.2,
                )
            ),
            prerecord_s=PRERECORD_S,
            ring_max_bytes=32 << 20,
        ),
    ]
    policy = RecorderPolicy(  # a municipality that sets a post-record for the officer's stop
        prerecord_s=PRERECORD_S,
        default_trigger=TriggerPolicy(postrecord_s=POSTRECORD_S),
        officer_stop_postrecord_s=POSTRECORD_S,
    )
    with store_on(tmp_path, recipient) as store:
        service = CaptureService(
            store,
            cameras,
            policy,
            FACTS,
            tick_s=0.05,
            upload_class_of=lambda source: {"crash": "P0", "lights": "P2"}.get(source, "P1"),
        )
        await service.start()
        try:
            yield Rig(service, store, tmp_path / "state" / "audit.jsonl")
        finally:
            await service.stop()


async def test_prerecord_trigger_stop_postrecord(rig: Rig, recipient: RecipientPrivateKey) -> None:
    service = rig.service
    await wait_for(lambda: service.cameras["dashcam"].ring.span_ns() >= PRERECORD_S * S, "the ring")
    trigger_ns = time.monotonic_ns()
    await service.trigger("officer", button="web")
    await asyncio.sleep(1.0)
    stop_ns = time.monotonic_ns()
    await service.stop_recording()
    await wait_for(lambda: service.recording is None, "post-record to finish")
    await service.sealed()  # a recording the post-record ended seals after its tick

    [(report, media)] = decrypt_all(rig.store, recipient)  # the broken bodycam recorded nothing
    segments = [m for m in report.metadata if m["type"] == "segment"]
    assert segments[0]["start_mono_ns"] <= trigger_ns - PRERECORD_S * S
    assert segments[-1]["end_mono_ns"] >= stop_ns + POSTRECORD_S * S - 0.1 * S
    packets = video_packets(media)
    assert packets[0].is_keyframe
    steps = {b.pts - a.pts for a, b in itertools.pairwise(packets)}
    assert steps == {3600}, "no gap (and no repeat) in presentation timestamps"
    assert all(s["keyframe_start"] for s in segments)

    recording = report.metadata[0]
    assert recording["camera"] == "dashcam"
    assert recording["camera_serial"] == "DC-1"
    assert {k: recording[k] for k in FACTS} == FACTS
    assert recording["trigger"]["source"] == "officer"
    assert recording["trigger"]["button"] == "web"
    events = [m["name"] for m in report.metadata if m["type"] == "event"]
    assert events == ["stop"]


async def test_every_trigger_is_audited_with_its_source(rig: Rig) -> None:
    await wait_for(lambda: rig.service.cameras["dashcam"].ring.gops > 0, "a keyframe")
    await rig.service.trigger("officer")
    await rig.service.trigger("lights")
    await rig.service.stop_recording()
    await wait_for(lambda: rig.service.recording is None, "the recording to end")
    entries = [json.loads(line) for line in rig.audit_path.read_text().splitlines()]
    triggers = [e["fields"] for e in entries if e["event"] == "gateway.trigger"]
    assert triggers == [
        {"source": "officer", "started_recording": True},
        {"source": "lights", "started_recording": False},
    ]


async def test_a_crash_during_a_recording_makes_it_an_incident(rig: Rig) -> None:
    await wait_for(lambda: rig.service.cameras["dashcam"].ring.gops > 0, "a keyframe")
    await rig.service.trigger("lights")
    assert rig.service.recording is not None
    recording_id = rig.service.recording.recording_id
    await wait_for(lambda: bool(rig.store.catalog.by_recording(recording_id)), "the first file")
    assert {r.upload_class for r in rig.store.catalog.by_recording(recording_id)} == {"P2"}
    await rig.service.trigger("crash")
    await rig.service.stop_recording()
    await wait_for(lambda: rig.service.recording is None, "the recording to end")
    assert {r.upload_class for r in rig.store.catalog.by_recording(recording_id)} == {"P0"}


async def test_the_officers_stop_seals_at_once_without_a_policy_post_record(
    rig: Rig, recipient: RecipientPrivateKey
) -> None:
    """Stop means stop (issue 15, item 5): the recording is sealed by the stop itself, its last
    packet from before the stop; the audit names the post-record (none) and who stopped."""
    service = rig.service
    service.recorder.policy = replace(service.recorder.policy, officer_stop_postrecord_s=0.0)
    await wait_for(lambda: service.cameras["dashcam"].ring.span_ns() >= PRERECORD_S * S, "the ring")
    await service.trigger("lights")
    await asyncio.sleep(1.0)
    # The stop takes effect when the service detaches the parts (it tells its listeners then);
    # the packets the sources held up to that moment are the recording's last (the test above
    # and below), so that moment, not a clock read before the call, bounds the recording's end.
    ended_ns: list[int] = []
    service.recording_listeners.append(
        lambda recording: None if recording else ended_ns.append(time.monotonic_ns())
    )
    called_ns = time.monotonic_ns()
    await service.stop_recording("officer", channel="page", account="0123456789ab")
    assert service.recording is None, "sealed by the stop, not by a later tick"
    assert service.recorder.state.value == "standby"
    [stop_ns] = ended_ns
    assert stop_ns >= called_ns, "ended by this stop"
    [(report, _media)] = decrypt_all(rig.store, recipient)
    segments = [m for m in report.metadata if m["type"] == "segment"]
    assert segments[-1]["end_mono_ns"] <= stop_ns
    entries = [json.loads(line) for line in rig.audit_path.read_text().splitlines()]
    [stop] = [e["fields"] for e in entries if e["event"] == "gateway.stop"]
    assert stop == {
        "source": "officer",
        "postrecord_s": 0.0,
        "channel": "page",
        "account": "0123456789ab",
    }


def held_back(camera: Camera) -> bool:
    """The camera's source has a packet its loop (the ring) has not seen yet."""
    newest = camera.source.health.last_packet_mono_ns
    return newest is not None and camera.ring.snapshot(0)[-1].at_mono_ns < newest


async def test_a_stop_takes_the_packets_the_source_still_held(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packets reach the loop in batches (issue 18): the recording's end flushes the batch a
    camera's source still holds, so the part gets every packet that arrived before the stop.
    Batches here go only at keyframes (a second apart), so the stop falls mid-batch."""
    monkeypatch.setattr(source_module, "BATCH_MAX_S", 10.0)
    service = rig.service
    service.recorder.policy = replace(service.recorder.policy, officer_stop_postrecord_s=0.0)
    camera = service.cameras["dashcam"]
    await wait_for(lambda: camera.ring.gops > 0, "a keyframe")
    await service.trigger("officer")
    part = camera.recording
    assert part is not None

    await wait_for(lambda: held_back(camera), "a packet held by the source")
    arrived_ns = camera.source.health.last_packet_mono_ns
    assert arrived_ns is not None
    await service.stop_recording("officer")
    assert service.recording is None
    assert part.last_fed_ns is not None
    assert part.last_fed_ns >= arrived_ns


async def test_ignition_off_takes_the_packets_the_source_still_held(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's stop (ignition off) seals the recording with every packet its sources
    delivered before they stopped, also those they held in a batch."""
    monkeypatch.setattr(source_module, "BATCH_MAX_S", 10.0)
    service = rig.service
    camera = service.cameras["dashcam"]
    await wait_for(lambda: camera.ring.gops > 0, "a keyframe")
    await service.trigger("lights")
    part = camera.recording
    assert part is not None
    await wait_for(lambda: held_back(camera), "a packet held by the source")
    await service.stop()
    assert service.recording is None
    arrived_ns = camera.source.health.last_packet_mono_ns  # the source has stopped: its last
    assert arrived_ns is not None
    assert part.last_fed_ns is not None
    assert part.last_fed_ns >= arrived_ns


async def test_stop_while_standing_by_is_refused_and_nothing_breaks(rig: Rig) -> None:
    with pytest.raises(IllegalTransition):
        await rig.service.stop_recording()
    assert rig.service.recorder.state.value == "standby"


async def test_a_broken_camera_does_not_disturb_the_other(rig: Rig) -> None:
    service = rig.service
    await wait_for(lambda: service.cameras["bodycam"].source.health.reconnects >= 3, "retries")
    await wait_for(lambda: service.cameras["dashcam"].ring.span_ns() >= 2 * S, "the ring")
    status = service.status()["cameras"]
    assert status["bodycam"]["connected"] is False
    assert status["bodycam"]["errors"] >= 3
    assert "FileNotFoundError" in str(status["bodycam"]["last_error"]) or "No such" in str(
        status["bodycam"]["last_error"]
    )
    assert status["dashcam"]["connected"] is True
    assert status["dashcam"]["fps"] > 5
