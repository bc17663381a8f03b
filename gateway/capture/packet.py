"""What a camera source delivers: encoded packets, never decoded frames (stream copy).

A `StreamTemplate` freezes the codec parameters of one connection to a camera (its video stream
and, when the camera sends one, its first audio stream) into the streams of a never-written
in-memory output, so muxers can copy them after the input connection is gone. `generation`
changes on every reconnect: the recording's timeline is re-anchored when it does (muxer.py).

Audio packets travel beside the video ones, in arrival order. `is_keyframe` is a *video* fact
(a GOP starts there); an audio packet is never a keyframe, so the ring and the segments stay cut
at video keyframes and an audio packet belongs to the GOP it arrived in.
"""

from __future__ import annotations

import io
from typing import Any, NamedTuple

import av

AUDIO_CODECS_PLAYABLE_IN_TS = frozenset({"aac", "mp2", "mp3", "opus", "ac3", "eac3"})
"""Audio the MPEG-TS muxer gives a stream type players know. Anything else a camera sends (G.711:
pcm_alaw, pcm_mulaw) is still stream-copied, as a private data stream whose codec, rate and
channels the recording's metadata names (docs/evidence-format.md)."""


class StreamTemplate:
    """Codec parameters of one connection's video stream (and audio stream, if any), owned
    independently of the input container."""

    def __init__(
        self, source_stream: Any, generation: int, audio_stream: Any | None = None
    ) -> None:
        self._holder = av.open(io.BytesIO(), mode="w", format="mpegts")
        self.stream = self._holder.add_stream_from_template(source_stream)
        self.generation = generation
        self.codec = str(source_stream.codec_context.name)
        self.width = int(getattr(source_stream.codec_context, "width", 0) or 0)
        self.height = int(getattr(source_stream.codec_context, "height", 0) or 0)
        self.audio: Any | None = None
        self.audio_codec: str | None = None
        self.audio_sample_rate = 0
        self.audio_channels = 0
        if audio_stream is not None:
            self.audio = self._holder.add_stream_from_template(audio_stream)
            context = audio_stream.codec_context
            self.audio_codec = str(context.name)
            self.audio_sample_rate = int(getattr(context, "sample_rate", 0) or 0)
            self.audio_channels = int(getattr(context, "channels", 0) or 0)

    def audio_facts(self) -> dict[str, Any] | None:
        """What the recording's metadata says of this connection's audio (None: no audio)."""
        if self.audio_codec is None:
            return None
        return {
            "codec": self.audio_codec,
            "sample_rate_hz": self.audio_sample_rate,
            "channels": self.audio_channels,
            "playable_in_ts": self.audio_codec in AUDIO_CODECS_PLAYABLE_IN_TS,
        }


class CapturedPacket(NamedTuple):
    """One encoded packet with the box's own arrival times (camera clocks are not trusted).

    Immutable (the ring, the snapshot and the muxer share it). A NamedTuple rather than a frozen
    dataclass: one is made per packet on the source thread, and a frozen dataclass's `__init__`
    (`object.__setattr__` per field) cost 0.9 us where a tuple costs 0.3 (issue 18)."""

    packet: Any  # av.Packet: refcounted, so the ring holds the camera's bytes without a copy
    template: StreamTemplate
    is_keyframe: bool  # a video keyframe; never true for audio
    size_bytes: int
    at_mono_ns: int
    at_wall_ms: int
    is_audio: bool = False

    @property
    def pts(self) -> int | None:
        pts = self.packet.pts
        return None if pts is None else int(pts)
