"""The capture benchmark's camera: a synthetic 4 Mbit/s H.264 clip, made once per run.

`make_clip` encodes it with `demo.synthetic` and cuts off the first second (where x264's rate
control ramps up), so the clip starts on a keyframe and holds its bit rate throughout. With
`audio`, the ffmpeg CLI adds a sound track as a camera sends it (AAC-LC, 48 kHz mono, 64 kbit/s:
a 440 Hz tone), video stream-copied.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

WIDTH, HEIGHT, FPS = 1280, 720, 25
BITRATE_BPS = 4_000_000
CLIP_S = 6  # kept in memory by every ReplaySource: 3 MB per camera, reported and subtracted
AUDIO_BITRATE_BPS = 64_000


@dataclass(frozen=True)
class Clip:
    path: Path
    seconds: float
    packets: int  # video
    payload_bytes: int  # video and audio
    audio_codec: str | None = None
    audio_bytes: int = 0
    audio_packets: int = 0

    @property
    def bitrate_bps(self) -> float:
        return self.payload_bytes * 8 / self.seconds

    @property
    def fps(self) -> float:
        return self.packets / self.seconds


def make_clip(workdir: Path, *, audio: bool = False) -> Clip:
    """CLIP_S seconds of 4 Mbit/s CBR video; generated one second longer, the first one cut off
    (the encoder's VBV fills during it, so it is ~10 % short), stream copied into the clip."""
    import av

    from demo.synthetic import generate_clip

    raw = generate_clip(
        workdir / "raw.ts",
        seconds=CLIP_S + 1,
        fps=FPS,
        width=WIDTH,
        height=HEIGHT,
        bitrate_bps=BITRATE_BPS,
        keyframe_interval_frames=FPS,
        camera="bench",
    )
    path = workdir / "clip.ts"
    packets = payload = 0
    with av.open(str(raw)) as src, av.open(str(path), mode="w", format="mpegts") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        cut = None
        for packet in src.demux(stream):
            if not packet.size or packet.pts is None:
                continue
            if cut is None:
                assert stream.time_base is not None
                cut = packet.pts + int(1 / stream.time_base)  # one second later, a keyframe
            if packet.pts < cut:
                continue
            if packets == 0 and not packet.is_keyframe:
                raise ValueError("the clip must start on a keyframe: is the GOP one second?")
            packets += 1
            payload += packet.size
            packet.stream = out
            dst.mux(packet)
    raw.unlink()
    clip = Clip(path, packets / FPS, packets, payload)
    return _with_audio(clip, workdir) if audio else clip


def _with_audio(clip: Clip, workdir: Path) -> Clip:
    import av

    path = workdir / "clip-audio.ts"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(clip.path),
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", f"{clip.seconds}", "-map", "0:v", "-map", "1:a", "-c:v", "copy",
         "-c:a", "aac", "-ac", "1", "-b:a", str(AUDIO_BITRATE_BPS), "-f", "mpegts", str(path)],
        check=True,
        timeout=120,
    )  # fmt: skip
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        sizes = [p.size for p in container.demux(stream) if p.size]
        audio_bytes, audio_packets = sum(sizes), len(sizes)
        codec = str(stream.codec_context.name)
    clip.path.unlink()
    return Clip(
        path,
        clip.seconds,
        clip.packets,
        clip.payload_bytes + audio_bytes,
        codec,
        audio_bytes,
        audio_packets,
    )
