"""Camera authentication at the sources, with real peers on loopback: ffmpeg pushing MPEG-TS over
TLS (with or without a client certificate) and RTSP with digest, the gst-rtsp-server camera
serving RTSPS and/or digest. Refused senders deliver no packet and are audited (the real signed
audit log) and alarmed (the box's real Alarms); the genuine camera is admitted and delivers.

The whole box doing the same, recording and decrypting, is tests/gateway/test_ingest_proof.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import pytest

from common.alarms import Alarms
from config.cameras import CameraSection
from demo.synthetic import generate_clip
from gateway.capture.camera_tls import client_context, server_context
from gateway.capture.camera_trust import CameraTrust, ca_trust, pinned_trust
from gateway.capture.credentials import Credentials
from gateway.capture.ingest_report import IngestReport
from gateway.capture.packet import CapturedPacket
from gateway.capture.pull_sources import RtspsPullSource
from gateway.capture.push_sources import PushSource, TlsAdmission, TsPushSource
from gateway.capture.rtsp_push import RtspPushSource, connect_when_listening
from gateway.capture.source import PyavSource, QueueItem, SourceSpec, ThreadedSource
from gateway.capture.sources import IngestWiring, make_source
from storage.audit_io import AuditLog
from storage.devicekey import DeviceKey
from tests.cameras import CertPair, ffmpeg_push_rtsp, ffmpeg_push_ts, free_port, rtsp_camera
from tests.cameras.camera_pki import CameraPki
from tests.capture_helpers import wait_for

PASSWORD = "geh:eim/42"  # noqa: S105 (a test camera's)
PASSWORD_IN_URL = "geh%3Aeim%2F42"  # noqa: S105 (the same, percent-encoded)
USER = "cam.user"  # a "." cannot occur in the audit log's hex and base64 by chance


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "clip.ts"
    return generate_clip(path, seconds=3, fps=25, keyframe_interval_frames=25)


@pytest.fixture(scope="module")
def cams(tmp_path_factory: pytest.TempPathFactory) -> CameraPki:
    return CameraPki(tmp_path_factory.mktemp("camera-pki"))


@dataclass
class Watched:
    """A running source with the real audit log and alarms its refusals go to."""

    source: ThreadedSource
    queue: asyncio.Queue[QueueItem]
    audit_path: Path
    alarms: Alarms

    @property
    def port(self) -> int:
        assert isinstance(self.source, PushSource)
        return self.source.listener.port

    def events(self, event: str) -> list[dict[str, Any]]:
        """The fields of every `event` in the audit log file (also after the source stopped
        and flushed what it had folded)."""
        return audit_events(self.audit_path, event)

    def packets_now(self) -> int:
        """Packets delivered and not yet taken (taken here)."""
        count = 0
        while not self.queue.empty():
            count += isinstance(self.queue.get_nowait(), CapturedPacket)  # not a LinkEvent
        return count

    async def packets(self, at_least: int, timeout_s: float = 20) -> int:
        got = 0
        deadline = time.monotonic() + timeout_s
        while got < at_least:
            assert time.monotonic() < deadline, f"only {got} packets"
            with contextlib.suppress(TimeoutError):
                got += isinstance(await asyncio.wait_for(self.queue.get(), 0.5), CapturedPacket)
        return got

    async def refusals(self, count: int) -> None:
        await wait_for(lambda: self.source.health.refused >= count, f"{count} refusal(s)")


def report(tmp_path: Path, camera: str) -> tuple[IngestReport, AuditLog, Alarms]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    audit = AuditLog.open(tmp_path / "audit.jsonl", DeviceKey.generate())
    alarms = Alarms(audit=audit.append)
    return IngestReport(camera, alarms=alarms, audit=audit.append), audit, alarms


@contextlib.asynccontextmanager
async def watching(
    tmp_path: Path, make: Callable[[IngestReport], ThreadedSource]
) -> AsyncIterator[Watched]:
    ingest, audit, alarms = report(tmp_path, "bodycam")
    source = make(ingest)
    queue = source.start(asyncio.get_running_loop())
    watched = Watched(source, queue, tmp_path / "audit.jsonl", alarms)
    try:
        if isinstance(source, PushSource):
            await wait_for(lambda: source.listener._sock is not None, "the listener")
        yield watched
    finally:
        await source.stop()
        alarms.close()
        audit.close()


def push_spec(kind: str, auth: str) -> SourceSpec:
    return SourceSpec(
        name="bodycam",
        kind=kind,
        listen_address="127.0.0.1",
        auth=auth,
        serial="BC-1",
        backoff_min_s=0.05,
        backoff_max_s=0.2,
    )


def tls_push(cams: CameraPki, trust: CameraTrust) -> Callable[[IngestReport], ThreadedSource]:
    admission = TlsAdmission(server_context(cams.box.cert, cams.box.key, trust), trust)
    return lambda ingest: TsPushSource(push_spec("ts_listen", trust.method), admission, ingest)


@contextlib.contextmanager
def pushed(
    w: Watched, clip: Path, cert: CertPair | None, *, tls: bool = True, box_ca: Path | None = None
) -> Iterator[None]:
    url = f"{'tls' if tls else 'tcp'}://127.0.0.1:{w.port}"
    with ffmpeg_push_ts(url, clip, client_cert=cert, box_ca=box_ca):
        yield


async def test_tls_push_refuses_every_sender_that_is_not_the_camera_then_admits_it(
    tmp_path: Path, clip: Path, cams: CameraPki
) -> None:
    trust = ca_trust("BC-1", cams.ca.read_bytes())
    async with watching(tmp_path, tls_push(cams, trust)) as w:
        senders: list[tuple[CertPair | None, bool, str]] = [
            (None, False, "not_tls"),  # plain MPEG-TS at the TLS port
            (None, True, "no_certificate"),
            (cams.stranger("BC-1"), True, "untrusted_certificate"),  # right name, wrong CA
            (cams.camera("BC-2"), True, "foreign_camera"),  # right CA, another camera
        ]
        for index, (cert, tls, _) in enumerate(senders, start=1):
            with pushed(w, clip, cert, tls=tls):
                await w.refusals(index)
        assert w.packets_now() == 0, "no byte of a refused sender became a packet"
        assert w.source.health.packets == 0
        reasons = [e["reason"] for e in w.events("camera.refused")]
        assert reasons == [reason for _, _, reason in senders]
        assert all(
            e["camera"] == "bodycam" and e["peer"] == "127.0.0.1"
            for e in w.events("camera.refused")
        )
        assert "camera_refused_bodycam" in w.alarms.snapshot()

        with pushed(w, clip, cams.camera("BC-1"), box_ca=cams.box_ca):
            assert await w.packets(50) == 50
        assert w.events("camera.admitted") == [
            {"camera": "bodycam", "method": "tls-ca", "peer": "127.0.0.1", "count": 1}
        ]
        assert w.source.health.refused == len(senders)


async def test_a_pinned_camera_is_admitted_however_old_its_certificate_and_only_it(
    tmp_path: Path, clip: Path, cams: CameraPki
) -> None:
    """The box has no real-time clock: a certificate's dates never refuse its own camera."""
    own = cams.self_signed("BC-1", stem="pinned-expired-BC-1", expired=True)
    trust = pinned_trust("BC-1", own.cert.read_bytes())
    async with watching(tmp_path, tls_push(cams, trust)) as w:
        with pushed(w, clip, cams.self_signed("BC-1", stem="other-BC-1")):
            await w.refusals(1)
        with pushed(w, clip, cams.camera("BC-1")):  # even one of the camera CA: not the pin
            await w.refusals(2)
        with pushed(w, clip, own):
            assert await w.packets(25) == 25
    assert refusal_counts(w) == {"untrusted_certificate": 2}, "one folded, written at the stop"
    assert w.events("camera.admitted")[0]["method"] == "tls-pinned"


async def test_rtsp_push_is_admitted_only_with_the_password(tmp_path: Path, clip: Path) -> None:
    credentials = Credentials(USER, PASSWORD)

    def make(ingest: IngestReport) -> ThreadedSource:
        return RtspPushSource(push_spec("rtsp_listen", "digest"), credentials, ingest)

    async with watching(tmp_path, make) as w:
        wrong = ["", f"{USER}:wrong@", f"cam.other:{PASSWORD_IN_URL}@"]
        for index, userinfo in enumerate(wrong, start=1):
            with ffmpeg_push_rtsp(f"rtsp://{userinfo}127.0.0.1:{w.port}/bodycam", clip) as push:
                await w.refusals(index)
                assert push.wait(10) != 0
                assert "401 Unauthorized" in push.stderr
        assert w.packets_now() == 0
        url = f"rtsp://{USER}:{PASSWORD_IN_URL}@127.0.0.1:{w.port}/bodycam"
        with ffmpeg_push_rtsp(url, clip):
            assert await w.packets(25) == 25
    assert refusal_counts(w) == {"no_credentials": 1, "bad_credentials": 2}
    assert w.events("camera.admitted")[0]["method"] == "digest"
    log_text = (tmp_path / "audit.jsonl").read_text()
    assert PASSWORD not in log_text
    assert USER not in log_text, "not even the user name is audited"


async def test_a_process_that_takes_pyavs_loopback_listener_first_records_nothing(
    tmp_path: Path, clip: Path
) -> None:
    """Another local process races the relay to PyAV's internal RTSP listener and wins: PyAV
    never answers the relay, so not one of the squatter's packets is delivered."""
    credentials = Credentials("bc1", PASSWORD)
    squatted = asyncio.Event()
    loop = asyncio.get_running_loop()
    internal = {"port": 0}
    squatter: list[contextlib.ExitStack] = []

    def pick_port() -> int:
        port = free_port()
        internal["port"] = port
        stack = contextlib.ExitStack()
        stack.enter_context(ffmpeg_push_rtsp(f"rtsp://127.0.0.1:{port}/bodycam", clip))
        squatter.append(stack)
        return port

    def connect_after_the_squatter(port: int, timeout_s: float) -> socket.socket:
        deadline = time.monotonic() + timeout_s
        while not established_on(port):
            assert time.monotonic() < deadline, "the squatter never connected"
            time.sleep(0.01)
        loop.call_soon_threadsafe(squatted.set)
        return connect_when_listening(port, 1.0)

    def make(ingest: IngestReport) -> ThreadedSource:
        return RtspPushSource(
            push_spec("rtsp_listen", "digest"),
            credentials,
            ingest,
            loopback_port=pick_port,
            connect_loopback=connect_after_the_squatter,
        )

    try:
        async with watching(tmp_path, make) as w:
            url = f"rtsp://bc1:{PASSWORD_IN_URL}@127.0.0.1:{w.port}/bodycam"
            with ffmpeg_push_rtsp(url, clip):
                await asyncio.wait_for(squatted.wait(), 20)
                await w.refusals(1)
            assert w.packets_now() == 0
            assert w.source.health.packets == 0
            assert [e["reason"] for e in w.events("camera.refused")] == ["loopback_taken"]
    finally:
        for stack in squatter:
            stack.close()


# --- pull ----------------------------------------------------------------------------------


def pull(
    url: str, trust: CameraTrust, credentials: Credentials | None = None
) -> Callable[[IngestReport], ThreadedSource]:
    spec = SourceSpec(
        name="bodycam",
        kind="rtsp_pull",
        url=url,
        auth=trust.method,
        serial="BC-1",
        backoff_min_s=0.05,
        backoff_max_s=0.2,
    )
    context = client_context(trust)
    return lambda ingest: RtspsPullSource(spec, context, trust, credentials, ingest)


@pytest.mark.parametrize(
    ("served", "reason"),
    [("stranger", "untrusted_certificate"), ("BC-2", "foreign_camera")],
)
async def test_rtsps_pull_refuses_a_peer_at_the_cameras_address_that_is_not_the_camera(
    tmp_path: Path, cams: CameraPki, served: str, reason: str
) -> None:
    trust = ca_trust("BC-1", cams.ca.read_bytes())
    impostor = cams.stranger("BC-1") if served == "stranger" else cams.camera("BC-2")
    with rtsp_camera(tls=impostor) as url:
        async with watching(tmp_path, pull(url, trust)) as w:
            await w.refusals(2)  # and it keeps refusing, with backoff
            assert w.packets_now() == 0
            assert w.source.health.packets == 0
            assert {e["reason"] for e in w.events("camera.refused")} == {reason}
            assert "camera_refused_bodycam" in w.alarms.snapshot()


async def test_rtsps_pull_records_the_camera_it_checked_logging_in_by_digest(
    tmp_path: Path, cams: CameraPki
) -> None:
    camera = cams.camera("BC-1")
    password_file = tmp_path / "camera-password"
    password_file.write_text(PASSWORD)
    trust = pinned_trust("BC-1", camera.cert.read_bytes())
    with rtsp_camera(tls=camera, digest=("viewer", password_file)) as url:
        assert url.startswith("rtsps://")
        async with watching(tmp_path, pull(url, trust, Credentials("viewer", PASSWORD))) as w:
            assert await w.packets(50) == 50
            assert w.source.health.refused == 0
        async with watching(tmp_path / "wrong", pull(url, trust, Credentials("viewer", "x"))) as w:
            await wait_for(lambda: w.source.health.errors >= 2, "the camera to refuse the box")
            assert "401" in str(w.source.health.last_error)
            assert PASSWORD not in str(w.source.health.last_error)
            assert w.source.health.packets == 0
            assert w.source.health.refused == 0, "the camera refused the box, not the reverse"


async def test_plain_rtsp_pull_logs_in_by_digest_from_memory(tmp_path: Path) -> None:
    password_file = tmp_path / "camera-password"
    password_file.write_text(PASSWORD)
    with rtsp_camera(digest=("viewer", password_file)) as url:
        spec = SourceSpec(name="dashcam", kind="rtsp_pull", url=url, auth="digest")
        with_login = url.replace("rtsp://", f"rtsp://viewer:{PASSWORD_IN_URL}@")
        source = PyavSource(spec, url=with_login)
        queue = source.start(asyncio.get_running_loop())
        try:
            await wait_for(lambda: source.health.packets >= 25, "the camera's packets")
        finally:
            await source.stop()
        assert queue.qsize() >= 25
        assert source.health.auth == "digest"


# --- helpers -------------------------------------------------------------------------------


def refusal_counts(w: Watched) -> dict[str, int]:
    """Refusals by reason, folded entries counted in (read once the source has stopped)."""
    counts: Counter[str] = Counter()
    for entry in w.events("camera.refused"):
        counts[entry["reason"]] += entry["count"]
    return dict(counts)


def audit_events(path: Path, event: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    return [dict(e["fields"]) for e in entries if e["event"] == event]


def established_on(port: int) -> bool:
    """An ESTABLISHED TCP connection to 127.0.0.1:`port` exists (Linux /proc/net/tcp)."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "01":
            return True
    return False


async def test_the_fleet_admins_pki_tools_make_a_camera_ca_the_box_admits_by(
    tmp_path: Path, clip: Path
) -> None:
    """docs/capture.md: `mvb-admin pki init` for the camera CA and the box's certificate,
    `mvb-admin pki issue-client` for a camera's; configured as written there."""
    admin = Path(sys.executable).with_name("mvb-admin")
    cameras_dir = tmp_path / "cameras"
    for argv in (
        ["pki", "init", "--dir", str(cameras_dir), "--host", "127.0.0.1"],
        ["pki", "issue-client", "--dir", str(cameras_dir), "--serial", "BC-1"],
    ):
        done = subprocess.run([str(admin), *argv], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    camera = CameraSection(
        name="bodycam",
        kind="ts_listen",
        serial="BC-1",
        listen_address="127.0.0.1",
        listen_port=free_port(),
        tls_cert_file="cameras/server.crt",
        tls_key_file="cameras/server.key",
        camera_ca_file="cameras/ca.crt",
    )
    wiring = IngestWiring(resolve=lambda name: tmp_path / name)
    async with watching(tmp_path / "run", lambda ingest: make_source(camera, wiring)) as w:
        issued = CertPair(
            cameras_dir / "clients" / "BC-1.crt", cameras_dir / "clients" / "BC-1.key"
        )
        with pushed(w, clip, issued, box_ca=cameras_dir / "ca.crt"):
            assert await w.packets(25) == 25
    assert w.source.spec.auth == "tls-ca"


async def test_a_tls_push_delivers_every_frame_up_to_the_cameras_last(
    tmp_path: Path, clip: Path, cams: CameraPki
) -> None:
    """A camera that ends its push (here: as fast as it can, then closes) loses nothing: the box
    sends it no session ticket it would leave unread, so its close is no reset that would make
    the box's kernel drop the stream's last unread bytes."""
    with av.open(str(clip)) as container:
        frames = sum(1 for packet in container.demux(video=0) if packet.size)
    trust = ca_trust("BC-1", cams.ca.read_bytes())
    async with watching(tmp_path, tls_push(cams, trust)) as w:
        url = f"tls://127.0.0.1:{w.port}"
        with ffmpeg_push_ts(url, clip, realtime=False, client_cert=cams.camera("BC-1")) as push:
            await wait_for(lambda: w.source.health.last_error == "stream ended", "the end")
            assert push.wait(10) == 0
        assert w.source.health.packets == frames
