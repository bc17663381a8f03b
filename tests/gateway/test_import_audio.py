"""Issue 15 item 1: `mvb import` keeps a clip's sound (its bytes are stored whole); the import
event names the codec. The clip is made by the ffmpeg CLI (H.264 + AAC, as a bodycam writes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av

from gateway.importer import import_clip
from storage.envelope import RecipientPrivateKey
from tests.capture_helpers import decrypt_all, store_on


def test_an_imported_clip_keeps_its_sound(tmp_path: Path, recipient: RecipientPrivateKey) -> None:
    clip = tmp_path / "bodycam.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "5",
         "-c:v", "libx264", "-g", "25", "-c:a", "aac", str(clip)],
        check=True,
    )  # fmt: skip
    with store_on(tmp_path, recipient) as store:
        import_clip(store, clip, camera="bodycam", facts={"device_serial": "MVB-I"})
        [(report, media)] = decrypt_all(store, recipient)
    assert media == clip.read_bytes()
    [event] = [m for m in report.metadata if m.get("name") == "import"]
    assert event["audio_codec"] == "aac"
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(media)
    with av.open(str(copy)) as container:
        assert sorted(s.type for s in container.streams) == ["audio", "video"]
