"""The power cut: a writer process fed a clip as a camera would, SIGKILLed mid-recording.

The writer (`python -m demo --child-writer CONFIG CLIP`, not a product command) records into the
box's store and prints an ACK once each segment is durable; the killer waits for a few ACKs and
kills it while it writes the next one. `mvb recover` then finds the file interrupted, and every
acknowledged byte must come back.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from config.local import load_config
from demo.children import CHILD_TIMEOUT_S, child_lines, next_line
from demo.narration import check, say
from gateway.box import open_box
from gateway.importer import probe_clip

PIECES_PER_SEGMENT = 4  # the child delivers each segment in pieces, as a camera does over time
PIECE_INTERVAL_S = 0.1
ACKS_BEFORE_POWER_CUT = 2
POWER_CUT_DELAY_S = 0.25  # after the last awaited ACK: mid-way through the next segment


@dataclass(slots=True)
class PowerCut:
    """What the power cut (step 3) learned: the killed recording and its acknowledged media;
    step 7 adds what came back."""

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
    argv = [sys.executable, "-m", "demo", "--child-writer", str(config), str(clip)]
    say(f"$ python -m demo --child-writer box/{config.name} clips/{clip.name} &")
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
