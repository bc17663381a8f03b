"""Issue 13, item 1, proved on a real running box (`start_box`, its loopback API, its signed audit
log, its alarms, its encrypted card) with real senders on loopback.

A bodycam (`ts_listen`, TLS with a camera CA) records while four senders try to push a clip
painted INJECTED as that bodycam: plain MPEG-TS, TLS without a certificate, a certificate of a
CA the box does not know naming the bodycam's serial, and a certificate of the camera CA issued
to another camera. Each is refused, audited with its reason and alarmed; the status document
shows the alarm, the alert and the count. Then the genuine bodycam pushes with its certificate.
What was recorded is decrypted with the back office's key: its frames decode, carry the
bodycam's serial and how it was admitted, and every packet is one of the genuine clip's, none of
the injected clip's.

A dashcam pulled over RTSPS (the gst-rtsp-server camera), pinned: first an impostor serves at
its address with a certificate of its own, and is refused; then the genuine camera serves there
and is recorded.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import av

from demo.synthetic import generate_clip
from gateway.capture.source import ThreadedSource
from storage.reader import ReadReport, read_evidence
from tests.cameras import CertPair, ffmpeg_push_ts, free_port, rtsp_camera
from tests.cameras.camera_pki import CameraPki
from tests.gateway.web.feature_rig import LocalBox, feature_box_config, running_box, wait_for

SENDERS = ("not_tls", "no_certificate", "untrusted_certificate", "foreign_camera")


def packet_hashes(ts_bytes: bytes) -> set[str]:
    """SHA-256 of every video packet's payload: stream copy keeps a packet's bytes, so a packet
    of the clip is found in a recording by its hash."""
    with av.open(io.BytesIO(ts_bytes), mode="r", format="mpegts") as container:
        return {
            hashlib.sha256(_without_aud(bytes(packet))).hexdigest()
            for packet in container.demux(video=0)
            if packet.size
        }


def _without_aud(payload: bytes) -> bytes:
    """The payload without a leading H.264 access unit delimiter (the TS muxer may add one)."""
    for start in (b"\x00\x00\x00\x01\x09", b"\x00\x00\x01\x09"):
        if payload.startswith(start):
            return payload[len(start) + 1 :]
    return payload


def decrypted(box: LocalBox, camera: str) -> Iterator[tuple[ReadReport, bytes]]:
    """Every file of `camera` on the card, read with the back office's private key."""
    for path in sorted(box.running.box.store.layout.sealed_files()):
        media = io.BytesIO()
        with path.open("rb") as handle:
            report = read_evidence(handle, box.recipient, media_out=media)
        if report.metadata[0]["camera"] == camera:
            yield report, media.getvalue()


def refused_at_least(source: ThreadedSource, count: int) -> Callable[[], bool]:
    return lambda: source.health.refused >= count


def decodable_frames(media: bytes) -> int:
    with av.open(io.BytesIO(media), mode="r", format="mpegts") as container:
        return sum(1 for _ in container.decode(video=0))


async def test_injected_pushes_are_refused_audited_alarmed_and_never_recorded(
    tmp_path: Path,
) -> None:
    cams = CameraPki(tmp_path / "pki")
    injected = generate_clip(tmp_path / "injected.ts", seconds=2, camera="INJECTED")
    genuine = generate_clip(tmp_path / "genuine.ts", seconds=3, camera="BODYCAM BC-1")
    port = free_port()
    config = feature_box_config(
        tmp_path,
        extra=f"""
[[cameras]]
name = "bodycam"
kind = "ts_listen"
serial = "BC-1"
listen_address = "127.0.0.1"
listen_port = {port}
tls_cert_file = "{cams.box.cert}"
tls_key_file = "{cams.box.key}"
camera_ca_file = "{cams.ca}"
""",
    )
    url = f"tls://127.0.0.1:{port}"
    async with running_box(config) as box, box.client() as client:
        source = box.running.service.cameras["bodycam"].source
        assert (await client.post("/api/record/start")).status == 200

        attempts: list[tuple[str, CertPair | None]] = [
            (f"tcp://127.0.0.1:{port}", None),  # plain MPEG-TS at the TLS port
            (url, None),  # TLS, no certificate
            (url, cams.stranger("BC-1")),  # the bodycam's serial, a CA the box does not know
            (url, cams.camera("BC-2")),  # the camera CA's, issued to another camera
        ]
        for count, (target, cert) in enumerate(attempts, start=1):
            with ffmpeg_push_ts(target, injected, client_cert=cert):
                await wait_for(refused_at_least(source, count), f"refusal {count}")
        assert source.health.packets == 0

        status = await (await client.get("/api/status")).json()
        assert status["cameras"]["bodycam"]["auth"] == "tls-ca"
        assert status["cameras"]["bodycam"]["refused"] == len(SENDERS)
        assert "camera_refused_bodycam" in status["alarms"]
        assert {"code": "camera_refused", "severity": "critical", "detail": "bodycam"} in status[
            "alerts"
        ]

        with ffmpeg_push_ts(url, genuine, client_cert=cams.camera("BC-1"), box_ca=cams.box_ca):
            await wait_for(lambda: source.health.packets >= 50, "the genuine bodycam")
            assert (await client.post("/api/record/stop")).status == 200
            await wait_for(lambda: box.running.service.recording is None, "the stop")
            await box.running.service.sealed()  # the officer's Stop answers before the seal

        refused = box.audit_events("camera.refused")
        admitted = box.audit_events("camera.admitted")
    assert [f["reason"] for _, f in refused] == list(SENDERS)
    assert all(f["camera"] == "bodycam" and f["peer"] == "127.0.0.1" for _, f in refused)
    assert [f["method"] for _, f in admitted] == ["tls-ca"]
    alarm_events = [f["code"] for e, f in box.audit_events("alarm.") if e == "alarm.raised"]
    assert "camera_refused_bodycam" in alarm_events
    audit_text = (box.config.state_dir / "audit.jsonl").read_text()
    assert "BC-2" not in audit_text, "no certificate content in the audit log"

    files = list(decrypted(box, "bodycam"))
    assert files, "the genuine bodycam was recorded"
    recorded = b"".join(media for _, media in files)
    assert decodable_frames(recorded) >= 40
    for report, _ in files:
        assert report.metadata[0]["camera_serial"] == "BC-1"
        assert report.metadata[0]["camera_auth"] == "tls-ca"
    recorded_packets = packet_hashes(recorded)
    assert recorded_packets <= packet_hashes(genuine.read_bytes()), "only the genuine clip"
    assert not recorded_packets & packet_hashes(injected.read_bytes()), "nothing injected"


async def test_an_impostor_at_a_pulled_cameras_address_is_refused_then_the_camera_recorded(
    tmp_path: Path,
) -> None:
    cams = CameraPki(tmp_path / "pki")
    dashcam = cams.self_signed("DC-1", stem="dashcam")
    port = free_port()
    config = feature_box_config(
        tmp_path,
        extra=f"""
[[cameras]]
name = "dashcam"
kind = "rtsp_pull"
serial = "DC-1"
url = "rtsps://127.0.0.1:{port}/cam"
camera_cert_file = "{dashcam.cert}"
""",
    )
    async with running_box(config) as box, box.client() as client:
        source = box.running.service.cameras["dashcam"].source
        with rtsp_camera(tls=cams.self_signed("DC-1", stem="impostor"), port=port):
            await wait_for(lambda: source.health.refused >= 1, "the impostor refused")
        assert source.health.packets == 0
        status = await (await client.get("/api/status")).json()
        assert "camera_refused_dashcam" in status["alarms"]

        with rtsp_camera(tls=dashcam, port=port):
            await wait_for(lambda: source.health.packets >= 25, "the genuine dashcam", 25)
            assert (await client.post("/api/record/start")).status == 200
            packets = source.health.packets
            await wait_for(lambda: source.health.packets >= packets + 25, "a second of video")
            assert (await client.post("/api/record/stop")).status == 200
            await wait_for(lambda: box.running.service.recording is None, "the stop")
            await box.running.service.sealed()  # the officer's Stop answers before the seal
        reasons = {f["reason"] for _, f in box.audit_events("camera.refused")}
    assert reasons == {"untrusted_certificate"}
    files = list(decrypted(box, "dashcam"))
    assert decodable_frames(b"".join(media for _, media in files)) >= 25
    assert {r.metadata[0]["camera_auth"] for r, _ in files} == {"tls-pinned"}
