"""Stand-in cameras on loopback, so the capture tests talk to real network peers.

Everything here binds or connects to 127.0.0.1 only, is bounded in time, and is torn down by its
context manager (threads joined, subprocesses terminated then killed).

Well-behaved peers:
- `rtsp_camera(...)`: a live H.264 RTSP camera (gst-rtsp-server, run by Debian's system python,
  see `rtsp_server.py`); yields `rtsp://127.0.0.1:PORT/cam`. The box pulls from it (TCP or UDP).
  `rtsp_camera(tls=..., digest=...)` serves RTSPS with a certificate and/or requires digest.
- `ffmpeg_push_ts(url, file)`: ffmpeg pushes an MPEG-TS file (stream copy) to the box listening
  on `tcp://127.0.0.1:PORT`, or on `tls://127.0.0.1:PORT` with a client certificate
  (`client_cert=`) and the box's CA checked (`box_ca=`); `ffmpeg_push_rtsp(url, file)` pushes
  it by RTSP ANNOUNCE/RECORD (interleaved TCP, with `user:password@` for digest) to the box.
  Both retry while the listener is not up yet.
- `camera_pki(directory)`: certificates for the camera-authentication tests (camera_pki.py).

Hostile peers (threads speaking raw TCP), each as a server the box pulls from
(`tcp://127.0.0.1:PORT`, format mpegts) and as a client pushing into a listening box:
- garbage: random bytes forever (`garbage_stream_server`, `push_garbage`);
- stall: a valid TS prefix, then silence with the socket open (`stalling_ts_server`,
  `push_stalling_ts`);
- drop: a valid TS prefix, then the connection closes, mid-GOP if the cut is chosen with
  `mid_gop_offset` (`mid_gop_dropper`, `push_mid_gop_drop`).
"""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import av

LOOPBACK = "127.0.0.1"
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
FFMPEG = "ffmpeg"
TS_PACKET_BYTES = 188

_POLL_S = 0.05
_JOIN_S = 5.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the usual race applies: prefer port 0
    where the helper supports it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def require_loopback(url: str) -> str:
    """`url` if its host is 127.0.0.1, else ValueError: test peers never leave the host."""
    host = urlsplit(url).hostname
    if host != LOOPBACK:
        raise ValueError(f"test peers are loopback-only: {url!r} is not on {LOOPBACK}")
    return url


# --- the RTSP camera ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CertPair:
    """A certificate and its key, as files (PEM)."""

    cert: Path
    key: Path


@contextmanager
def rtsp_camera(
    *,
    tls: CertPair | None = None,
    digest: tuple[str, Path] | None = None,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    gop: int = 25,
    kbps: int = 500,
    path: str = "/cam",
    slices: int = 1,
    audio: str = "none",
    port: int = 0,
    ready_timeout_s: float = 15.0,
    max_lifetime_s: int = 300,
) -> Iterator[str]:
    """Run the loopback RTSP camera and yield its URL, `rtsp://127.0.0.1:PORT{path}`.

    `port=0` lets the server choose (no race). `gop` is the keyframe interval in frames.
    `tls`: serve RTSPS with this certificate (the URL is then `rtsps://`); `digest`: require
    RTSP digest with (user, file holding the password).
    `slices > 1` makes every frame several H.264 slices (then FFmpeg demuxes a keyframe as
    several packets with the same pts). The camera is already encoding when this yields, like a
    real one: a client joins mid-GOP (its first packets may be P-frames; FFmpeg gives the very
    first packet no pts), any number of clients share the one encoder, and the stream cannot be
    seeked (a client's PLAY never disturbs the others). TCP and UDP (unicast) transports.
    `audio` (`aac`, `opus`, `pcma`, `pcmu`; `none` by default) adds a sound track of ticks.

    The server exits at teardown (SIGTERM, then SIGKILL), when this process dies (it watches
    its stdin), and after `max_lifetime_s` regardless.
    """
    argv = [
        SYSTEM_PYTHON,
        str(RTSP_SERVER_SCRIPT),
        f"--port={port}",
        f"--width={width}",
        f"--height={height}",
        f"--fps={fps}",
        f"--gop={gop}",
        f"--kbps={kbps}",
        f"--path={path}",
        f"--slices={slices}",
        f"--audio={audio}",
        f"--max-seconds={max_lifetime_s}",
        "--watch-stdin",
    ]
    if tls is not None:
        argv += [f"--tls-cert={tls.cert}", f"--tls-key={tls.key}"]
    if digest is not None:
        argv += [f"--user={digest[0]}", f"--password-file={digest[1]}"]
    scheme = "rtsps" if tls is not None else "rtsp"
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        try:
            bound = _await_ready(proc, ready_timeout_s, stderr)
            yield f"{scheme}://{LOOPBACK}:{bound}{path}"
        finally:
            _stop_process(proc)


def _await_ready(proc: subprocess.Popen[bytes], timeout_s: float, stderr: IO[bytes]) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    buffer = b""
    fd = proc.stdout.fileno()
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"RTSP camera not READY within {timeout_s} s: {_read_back(stderr)}")
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 1024)
            if not chunk:
                proc.wait(timeout=_JOIN_S)
                raise RuntimeError(
                    f"RTSP camera exited ({proc.returncode}) before READY: {_read_back(stderr)}"
                )
            buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode(errors="replace").split()
    if len(line) != 2 or line[0] != "READY":
        raise RuntimeError(f"RTSP camera said {line!r}, expected 'READY <port>'")
    return int(line[1])


def _read_back(stderr: IO[bytes]) -> str:
    stderr.seek(0)
    return stderr.read().decode(errors="replace")[-2000:]


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=_JOIN_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=_JOIN_S)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with suppress(OSError):
                pipe.close()


# --- ffmpeg pushers ----------------------------------------------------------------------------


class FfmpegPush:
    """A running ffmpeg push, (re)started while the listener refuses the connection.

    `attempts`: ffmpeg runs so far; `refused`: those that ended with the connection refused;
    `returncode`/`stderr`: those of the last run."""

    def __init__(self, argv: list[str], connect_timeout_s: float) -> None:
        self.argv = argv
        self.connect_timeout_s = connect_timeout_s
        self.attempts = 0
        self.refused = 0
        self.returncode: int | None = None
        self.stderr = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._done = threading.Event()

    def wait(self, timeout_s: float) -> int:
        """The final exit status of ffmpeg (0: the whole file was sent); TimeoutError if still
        running after `timeout_s`."""
        if not self._done.wait(timeout_s):
            raise TimeoutError(f"ffmpeg still pushing after {timeout_s} s")
        assert self.returncode is not None
        return self.returncode

    def run(self) -> None:
        """The supervisor loop (runs in the pusher's thread)."""
        deadline = time.monotonic() + self.connect_timeout_s
        try:
            while True:
                with self._lock:
                    if self._stop.is_set():
                        break
                    proc = self._proc = subprocess.Popen(
                        self.argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                    self.attempts += 1
                _, err = proc.communicate()
                self.returncode = proc.returncode
                self.stderr = err.decode(errors="replace")
                refused = self.returncode != 0 and "Connection refused" in self.stderr
                self.refused += refused
                if not refused or time.monotonic() >= deadline:
                    break
                self._stop.wait(0.1)
        finally:
            self._done.set()

    def stop(self) -> None:
        """Stop retrying and terminate ffmpeg (SIGTERM, then SIGKILL)."""
        with self._lock:
            self._stop.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=_JOIN_S)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def _ffmpeg_push(argv: list[str], connect_timeout_s: float) -> Iterator[FfmpegPush]:
    push = FfmpegPush(argv=argv, connect_timeout_s=connect_timeout_s)
    thread = threading.Thread(target=push.run, name="ffmpeg-push", daemon=True)
    thread.start()
    try:
        yield push
    finally:
        push.stop()
        thread.join(_JOIN_S)


def _input_args(source_file: Path, *, realtime: bool, loop: bool) -> list[str]:
    args = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error"]
    if realtime:
        args.append("-re")
    if loop:
        args += ["-stream_loop", "-1"]
    return [*args, "-i", str(source_file), "-map", "0", "-c", "copy"]


@contextmanager
def ffmpeg_push_ts(
    url: str,
    source_file: Path,
    *,
    realtime: bool = True,
    loop: bool = False,
    connect_timeout_s: float = 10.0,
    client_cert: CertPair | None = None,
    box_ca: Path | None = None,
) -> Iterator[FfmpegPush]:
    """Push `source_file` (MPEG-TS, stream copy) to a box listening on `url`
    (`tcp://127.0.0.1:PORT` or `tls://127.0.0.1:PORT`), like a bodycam streaming in. Over TLS,
    `client_cert` is the certificate ffmpeg presents (none: it presents none) and `box_ca` the
    CA it checks the box's certificate against (none: it checks nothing, as a careless sender
    would). `realtime` paces it (`-re`); `loop` repeats it until teardown. ffmpeg is restarted
    while the connection is refused, for up to `connect_timeout_s`; teardown terminates it."""
    require_loopback(url)
    scheme = urlsplit(url).scheme
    if scheme not in ("tcp", "tls"):
        raise ValueError(f"ffmpeg_push_ts pushes to tcp:// or tls://, not {url!r}")
    tls_options: list[str] = []
    if client_cert is not None:
        tls_options += ["-cert_file", str(client_cert.cert), "-key_file", str(client_cert.key)]
    if box_ca is not None:
        tls_options += ["-tls_verify", "1", "-ca_file", str(box_ca)]
    if tls_options and scheme != "tls":
        raise ValueError("certificates go with tls://")
    argv = [
        *_input_args(source_file, realtime=realtime, loop=loop),
        "-f",
        "mpegts",
        *tls_options,
        url,
    ]
    with _ffmpeg_push(argv, connect_timeout_s) as push:
        yield push


@contextmanager
def ffmpeg_push_rtsp(
    url: str,
    source_file: Path,
    *,
    realtime: bool = True,
    loop: bool = False,
    connect_timeout_s: float = 10.0,
) -> Iterator[FfmpegPush]:
    """Push `source_file` by RTSP (ANNOUNCE + RECORD, RTP interleaved on the TCP connection) to a
    box listening on `url` (`rtsp://[user:password@]127.0.0.1:PORT/path`; ffmpeg answers a
    digest challenge with the user and password of the URL). Same pacing, looping and retry as
    `ffmpeg_push_ts`."""
    require_loopback(url)
    if urlsplit(url).scheme != "rtsp":
        raise ValueError(f"ffmpeg_push_rtsp pushes to rtsp://, not {url!r}")
    argv = [
        *_input_args(source_file, realtime=realtime, loop=loop),
        "-f",
        "rtsp",
        "-rtsp_transport",
        "tcp",
        url,
    ]
    with _ffmpeg_push(argv, connect_timeout_s) as push:
        yield push


# --- hostile peers -----------------------------------------------------------------------------


class HostilePeer:
    """A misbehaving TCP peer on loopback: as a server (`url` to pull from) or as a client
    pushing into `port`. `connections`, `bytes_sent` and `closed_by_peer` (the other side hung
    up) are updated by the peer's threads."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections = 0
        self.bytes_sent = 0
        self.closed_by_peer = False
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"tcp://{LOOPBACK}:{self.port}"

    def count_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def count_sent(self, n_bytes: int) -> None:
        with self._lock:
            self.bytes_sent += n_bytes


Behaviour = Callable[[socket.socket, HostilePeer], None]


def _send(sock: socket.socket, data: bytes, peer: HostilePeer) -> bool:
    """Send all of `data` unless the peer goes away or we are stopping; True when all sent."""
    view = memoryview(data)
    while view:
        if peer.stopping.is_set():
            return False
        try:
            sent = sock.send(view)
        except TimeoutError:
            continue
        except OSError:
            peer.closed_by_peer = True
            return False
        peer.count_sent(sent)
        view = view[sent:]
    return True


def _hold_open(sock: socket.socket, peer: HostilePeer) -> None:
    """Keep the connection open, sending nothing, until the other side closes or we stop."""
    while not peer.stopping.is_set():
        try:
            if not sock.recv(65536):
                peer.closed_by_peer = True
                return
        except TimeoutError:
            continue
        except OSError:
            peer.closed_by_peer = True
            return


def _garbage(seed: int, chunk_bytes: int) -> Behaviour:
    def behave(sock: socket.socket, peer: HostilePeer) -> None:
        rng = random.Random(seed)
        while _send(sock, rng.randbytes(chunk_bytes), peer):
            pass

    return behave


def _stall(prefix: bytes) -> Behaviour:
    def behave(sock: socket.socket, peer: HostilePeer) -> None:
        if _send(sock, prefix, peer):
            _hold_open(sock, peer)

    return behave


def _drop(prefix: bytes, reset: bool) -> Behaviour:
    def behave(sock: socket.socket, peer: HostilePeer) -> None:
        _send(sock, prefix, peer)
        if reset:  # RST instead of FIN: an abrupt loss rather than an orderly end
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    return behave


def _prefix(source_file: Path, n_bytes: int) -> bytes:
    with source_file.open("rb") as f:
        data = f.read(n_bytes)
    if len(data) < n_bytes:
        raise ValueError(f"{source_file} has only {len(data)} bytes, wanted {n_bytes}")
    return data


def _handle(conn: socket.socket, peer: HostilePeer, behave: Behaviour) -> None:
    with conn:
        conn.settimeout(_POLL_S)
        peer.count_connection()
        behave(conn, peer)


@contextmanager
def _serve(port: int, behave: Behaviour) -> Iterator[HostilePeer]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LOOPBACK, port))
    listener.listen(4)
    listener.settimeout(_POLL_S)
    peer = HostilePeer(port=listener.getsockname()[1])
    handlers: list[threading.Thread] = []

    def accept_loop() -> None:
        while not peer.stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            handler = threading.Thread(target=_handle, args=(conn, peer, behave), daemon=True)
            handlers.append(handler)
            handler.start()

    acceptor = threading.Thread(target=accept_loop, name="hostile-server", daemon=True)
    acceptor.start()
    try:
        yield peer
    finally:
        peer.stopping.set()
        acceptor.join(_JOIN_S)
        listener.close()
        for handler in handlers:
            handler.join(_JOIN_S)


@contextmanager
def _push(port: int, behave: Behaviour, connect_timeout_s: float) -> Iterator[HostilePeer]:
    peer = HostilePeer(port=port)

    def connect_and_behave() -> None:
        deadline = time.monotonic() + connect_timeout_s
        while not peer.stopping.is_set() and time.monotonic() < deadline:
            try:
                conn = socket.create_connection((LOOPBACK, port), timeout=1.0)
            except (ConnectionRefusedError, TimeoutError):
                peer.stopping.wait(_POLL_S)
                continue
            _handle(conn, peer, behave)
            return

    thread = threading.Thread(target=connect_and_behave, name="hostile-push", daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        peer.stopping.set()
        thread.join(_JOIN_S)


@contextmanager
def garbage_stream_server(
    port: int = 0, *, seed: int = 0, chunk_bytes: int = 1316
) -> Iterator[HostilePeer]:
    """Serve random bytes, forever, to whoever connects to 127.0.0.1:`port` (0: any free)."""
    with _serve(port, _garbage(seed, chunk_bytes)) as peer:
        yield peer


@contextmanager
def stalling_ts_server(
    port: int, source_file: Path, stall_after_bytes: int
) -> Iterator[HostilePeer]:
    """Serve the first `stall_after_bytes` of `source_file`, then nothing, socket kept open."""
    with _serve(port, _stall(_prefix(source_file, stall_after_bytes))) as peer:
        yield peer


@contextmanager
def mid_gop_dropper(
    port: int, source_file: Path, cut_after_bytes: int, *, reset: bool = False
) -> Iterator[HostilePeer]:
    """Serve the first `cut_after_bytes` of `source_file`, then close the connection (FIN; RST
    with `reset`). Pick the cut with `mid_gop_offset` to land inside a GOP."""
    with _serve(port, _drop(_prefix(source_file, cut_after_bytes), reset)) as peer:
        yield peer


@contextmanager
def push_garbage(
    port: int, *, seed: int = 0, chunk_bytes: int = 1316, connect_timeout_s: float = 10.0
) -> Iterator[HostilePeer]:
    """Connect to a box listening on 127.0.0.1:`port` (retrying while refused) and send random
    bytes until it hangs up or teardown."""
    with _push(port, _garbage(seed, chunk_bytes), connect_timeout_s) as peer:
        yield peer


@contextmanager
def push_stalling_ts(
    port: int, source_file: Path, stall_after_bytes: int, *, connect_timeout_s: float = 10.0
) -> Iterator[HostilePeer]:
    """Connect to a listening box, send the first `stall_after_bytes` of `source_file`, then
    stall with the connection open until it hangs up or teardown."""
    with _push(port, _stall(_prefix(source_file, stall_after_bytes)), connect_timeout_s) as peer:
        yield peer


@contextmanager
def push_mid_gop_drop(
    port: int,
    source_file: Path,
    cut_after_bytes: int,
    *,
    reset: bool = False,
    connect_timeout_s: float = 10.0,
) -> Iterator[HostilePeer]:
    """Connect to a listening box, send the first `cut_after_bytes` of `source_file`, then close
    (FIN; RST with `reset`)."""
    behave = _drop(_prefix(source_file, cut_after_bytes), reset)
    with _push(port, behave, connect_timeout_s) as peer:
        yield peer


def mid_gop_offset(ts_file: Path, *, gop_index: int = 1) -> int:
    """A byte offset in `ts_file`, on a TS packet boundary, halfway between the keyframe that
    starts GOP `gop_index` (0-based) and the next keyframe: cutting there ends a stream mid-GOP."""
    keyframe_positions: list[int] = []
    with av.open(str(ts_file), format="mpegts") as container:
        for packet in container.demux(video=0):
            if packet.is_keyframe and packet.pos is not None and packet.pos >= 0:
                keyframe_positions.append(int(packet.pos))
            if len(keyframe_positions) > gop_index + 1:
                break
    if len(keyframe_positions) < gop_index + 2:
        raise ValueError(f"{ts_file} has fewer than {gop_index + 2} keyframes")
    start, end = keyframe_positions[gop_index], keyframe_positions[gop_index + 1]
    middle = (start + end) // 2
    return middle - middle % TS_PACKET_BYTES
