"""The officer's Stop does not wait for a card that stalls (issue 14: in the labdisk soak a Stop
went unanswered for over 10 s while the capture service sealed the recording under its lock).

On a real labdisk card whose evidence fsyncs stall for STALL_S each, a Stop the way the officer's
API asks it (`stop_recording(sealed=False)`, gateway/box_port.py) is decided and audited while
the recording's files are still being sealed: it is answered before `storage.recording_sealed`
is audited and while the card's fsync still stalls (its state when the Stop is answered, not a
stopwatch; the deadline on the answer is several stalls; the time, and the same Stop on the same
card without stalls, the baseline, are printed beside it). The sealing then completes and every
file reads.

Left out: a Stop behind a start whose catalog commit stalls (the start holds the lock across the
card's commit; the officer cannot stop before the start has answered) and the state directory on
the stalled card (here, as on a box, it is the internal flash: the Stop's one fsync is its audit
entry there).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from demo.synthetic import generate_clip
from labdisk import Delay
from storage.envelope import RecipientPrivateKey
from tests.capture_helpers import wait_for
from tests.gateway.dying_card_rig import DyingCardRig, dying_card_rig, every_file_reads

pytestmark = pytest.mark.root

STALL_S = 4.0
"""Each evidence fsync waits this long while the stall rule holds: longer than any Stop here."""


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of H.264 at 25 fps, a keyframe every 0.5 s."""
    path = tmp_path_factory.mktemp("clips") / "clip.ts"
    return generate_clip(path, seconds=4, fps=25, keyframe_interval_frames=12)


async def recording(rig: DyingCardRig) -> str:
    """A recording with one file sealed already; its id."""
    sealed_before = len(rig.sealed_files())
    await rig.service.trigger("officer")
    assert rig.service.recording is not None
    await wait_for(lambda: len(rig.sealed_files()) > sealed_before, "a sealed file")
    return rig.service.recording.recording_id


@dataclass(frozen=True)
class Answer:
    seconds: float  # a figure, printed, never asserted
    stalled_ops: int  # the card's operations waiting in a stall when the Stop was answered


async def officer_stop(rig: DyingCardRig) -> Answer:
    """The officer's Stop as the API asks it; when it was answered and what the card was doing
    then (a deadline of several stalls on the answer: the proof is the card's state, not time)."""

    async def timed() -> Answer:
        began_s = time.monotonic()
        await rig.service.stop_recording(sealed=False, channel="page")
        seconds = time.monotonic() - began_s
        return Answer(seconds, rig.disk.status()["stalled"])

    stop = asyncio.create_task(timed())
    await wait_for(stop.done, "the Stop to be answered", timeout_s=6 * STALL_S)
    return await stop


async def test_the_officers_stop_is_answered_while_the_card_still_stalls(
    tmp_path: Path, clip: Path, recipient: RecipientPrivateKey
) -> None:
    async with dying_card_rig(tmp_path, clip, recipient) as rig:
        await wait_for(lambda: rig.camera.ring.span_ns() > 1_000_000_000, "the pre-record ring")
        baseline_id = await recording(rig)
        baseline = await officer_stop(rig)
        assert baseline.stalled_ops == 0
        await rig.service.sealed()
        assert rig.audited("storage.recording_sealed", recording_id=baseline_id)

        stalled_id = await recording(rig)
        rule = rig.disk.stall(Delay.fixed(STALL_S), ops=["fsync"], path="evidence/*", times=2)
        await wait_for(lambda: rig.disk.status()["stalled"] > 0, "a stalled fsync")
        stalled = await officer_stop(rig)
        # Answered, decided and audited while the card still seals the recording: its fsync
        # still stalls, and the seal is not audited yet.
        assert stalled.stalled_ops > 0, "the Stop waited for the card"
        assert rig.service.recording is None
        assert rig.service.recorder.state.value == "standby"
        assert rig.audited("gateway.stop", source="officer", channel="page")
        assert not rig.audited("storage.recording_sealed", recording_id=stalled_id)
        print(
            f"\nofficer Stop: {baseline.seconds * 1000:.0f} ms on a good card, "
            f"{stalled.seconds * 1000:.0f} ms "
            f"while its fsyncs stall {STALL_S:.0f} s each"
        )
        # The sealing follows: every file of both recordings sealed and readable.
        await wait_for(
            lambda: all(r["times"] == 0 for r in rig.disk.status()["rules"] if r["id"] == rule),
            "the stalls to pass",
            timeout_s=6 * STALL_S,
        )
        await rig.service.sealed()
        assert rig.audited("storage.recording_sealed", recording_id=stalled_id)
        ids = {r.header.recording_id.hex() for r in every_file_reads(rig, recipient)}
        assert ids == {baseline_id, stalled_id}
        assert not list(rig.store.layout.part_files())
