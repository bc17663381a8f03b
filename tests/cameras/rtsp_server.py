"""A stand-in dashcam: a gst-rtsp-server on loopback serving a live H.264 test picture.

Run by Debian's system python (`/usr/bin/python3`), which has PyGObject (`gi`) and the
GStreamer RTSP server typelib; the project venv has neither. `tests.cameras.rtsp_camera`
starts it; by hand:

    /usr/bin/python3 tests/cameras/rtsp_server.py --port 0 --fps 25 --gop 25

With `--audio aac|opus|pcma|pcmu` the camera also sends sound: `audiotestsrc` ticks (a short
tone at every second of the pipeline clock, as the picture's frames are timed on), encoded as
AAC (voaacenc, RTP mpeg4-generic), Opus, or G.711 A-law / mu-law at 8 kHz.

With `--tls-cert FILE --tls-key FILE` it serves RTSPS (RTSP over TLS) with that certificate;
with `--user U --password-file F` it requires RTSP digest authentication (the password is read
from a file, never from the command line, where other processes could see it).

Prints `READY <port>` on stdout once it accepts RTSP connections and the camera is streaming
(`--port 0` lets the kernel choose; the bound port is printed). Exits on SIGTERM or SIGINT,
after `--max-seconds`, and with `--watch-stdin` when its stdin reaches EOF (its parent died).
Listens on 127.0.0.1 only; RTP over UDP is sent from sockets bound to 127.0.0.1 (an address pool
pinned to loopback) and multicast is refused, so nothing leaves the host.

The media factory is shared: every client sees the same live encoder, as with a real camera. An
internal client (rtspsrc over TCP, into a fakesink) starts that encoder before READY and keeps it
running, so the camera encodes whether or not anyone watches (a client joins mid-GOP, like with
a real camera), and so two clients connecting at once cannot hit gst-rtsp-server 1.22's race in
`gst_rtsp_media_get_rates` ("no segment event on send_rtp_sink pad" -> assertion -> abort).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import gi  # type: ignore[import-not-found, unused-ignore]

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import (  # type: ignore[import-not-found, unused-ignore]  # noqa: E402
    Gio,
    GLib,
    Gst,
    GstRtsp,
    GstRtspServer,
)

LOOPBACK = "127.0.0.1"


def pipeline(args: argparse.Namespace) -> str:
    """The gst-launch description of the camera: live test picture, clock, x264, RTP."""
    overlay = " ! clockoverlay" if Gst.ElementFactory.find("clockoverlay") is not None else ""
    # One slice per frame gives one RTP access unit -> one demuxed packet per frame; several
    # slices (x264 sliced threads) make FFmpeg's depacketizer emit a keyframe as several packets
    # with the same pts, as many real cameras do.
    slicing = (
        f"sliced-threads=true threads={args.slices}" if args.slices > 1 else "sliced-threads=false"
    )
    return (
        "( videotestsrc is-live=true pattern=ball"
        f" ! video/x-raw,format=I420,width={args.width},height={args.height},"
        f"framerate={args.fps}/1{overlay}"
        f" ! x264enc tune=zerolatency speed-preset=ultrafast {slicing}"
        f" key-int-max={args.gop} bitrate={args.kbps}"
        " ! video/x-h264,profile=constrained-baseline"
        " ! rtph264pay name=pay0 pt=96 config-interval=-1"
        f"{audio_branch(args.audio)} )"
    )


AUDIO_BRANCHES = {
    "aac": (48000, "voaacenc bitrate=64000 ! aacparse ! rtpmp4gpay name=pay1 pt=97"),
    "opus": (48000, "opusenc ! rtpopuspay name=pay1 pt=98"),
    "pcma": (8000, "alawenc ! rtppcmapay name=pay1"),
    "pcmu": (8000, "mulawenc ! rtppcmupay name=pay1"),
}


def audio_branch(codec: str) -> str:
    """The camera's microphone: ticks at every second, encoded as a camera would send them."""
    if codec == "none":
        return ""
    rate_hz, encode = AUDIO_BRANCHES[codec]
    return (
        f" audiotestsrc is-live=true wave=ticks volume=0.8 samplesperbuffer={rate_hz // 50}"
        f" ! audio/x-raw,rate={rate_hz},channels=1 ! audioconvert ! audioresample ! {encode}"
    )


def _refuse_seeking(_pad: Any, info: Any) -> Any:
    # Answered as is: a new SEEKING query says "not seekable" (PyGObject cannot write to it).
    query = info.get_query()
    if query is not None and query.type == Gst.QueryType.SEEKING:
        return Gst.PadProbeReturn.HANDLED
    return Gst.PadProbeReturn.OK


def _make_unseekable(_factory: Any, media: Any) -> None:
    """A live camera cannot seek. Left seekable (videotestsrc can), every client's PLAY with
    `Range: npt=0-` (FFmpeg sends one) flush-seeks the shared pipeline: every connected client
    then sees a forced keyframe and its pts jump back to 0."""
    payloader = media.get_element().get_by_name("pay0")
    payloader.get_static_pad("src").add_probe(Gst.PadProbeType.QUERY_UPSTREAM, _refuse_seeking)


def _secure(server: Any, factory: Any, args: argparse.Namespace) -> tuple[str, str] | None:
    """TLS and/or digest on the server, as asked; the credentials for the internal client."""
    if not args.tls_cert and not args.user:
        return None
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "camera-user")
    credentials = None
    if args.user:
        with Path(args.password_file).open(encoding="utf-8") as handle:
            password = handle.read().strip()
        auth.add_digest(args.user, password, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        credentials = (args.user, password)
    else:
        auth.set_default_token(token)  # TLS only: anyone who completes the handshake may watch
    if args.tls_cert:
        auth.set_tls_certificate(Gio.TlsCertificate.new_from_files(args.tls_cert, args.tls_key))
    role = Gst.Structure.from_string(
        "camera-user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
    )[0]
    factory.add_role_from_structure(role)
    server.set_auth(auth)
    return credentials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Loopback RTSP test camera (H.264).")
    parser.add_argument("--port", type=int, default=8554, help="0: let the kernel choose")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--gop", type=int, default=25, help="keyframe interval, frames")
    parser.add_argument("--kbps", type=int, default=500, help="x264 bitrate, kbit/s")
    parser.add_argument("--path", default="/cam")
    parser.add_argument("--slices", type=int, default=1, help="H.264 slices per frame")
    parser.add_argument("--audio", choices=["none", *AUDIO_BRANCHES], default="none")
    parser.add_argument("--udp-port-min", type=int, default=20000, help="server RTP/RTCP ports")
    parser.add_argument("--udp-port-max", type=int, default=60000)
    parser.add_argument("--max-seconds", type=int, default=0, help="exit after; 0: never")
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin closes")
    parser.add_argument("--warmup-seconds", type=int, default=10, help="give up if not streaming")
    parser.add_argument("--tls-cert", default="", help="serve RTSPS with this certificate (PEM)")
    parser.add_argument("--tls-key", default="", help="... and this key (PEM)")
    parser.add_argument("--user", default="", help="require RTSP digest with this user")
    parser.add_argument("--password-file", default="", help="... and the password in this file")
    args = parser.parse_args(argv)
    if not args.path.startswith("/"):
        parser.error("--path must start with '/'")

    Gst.init(None)
    loop = GLib.MainLoop()

    server = GstRtspServer.RTSPServer()
    server.set_address(LOOPBACK)
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(pipeline(args))
    factory.set_shared(True)
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
    pool = GstRtspServer.RTSPAddressPool()
    # ttl 0 makes it a unicast range: RTP/RTCP sockets bind to 127.0.0.1, not 0.0.0.0.
    pool.add_range(LOOPBACK, LOOPBACK, args.udp_port_min, args.udp_port_max, 0)
    factory.set_address_pool(pool)
    factory.connect("media-configure", _make_unseekable)
    server.get_mount_points().add_factory(args.path, factory)
    credentials = _secure(server, factory, args)

    if server.attach(None) == 0:
        print(f"cannot listen on {LOOPBACK}:{args.port}", file=sys.stderr)
        return 1

    def stop(*_: Any) -> bool:
        loop.quit()
        return False  # GLib.SOURCE_REMOVE

    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, stop)
    if args.max_seconds > 0:
        GLib.timeout_add_seconds(args.max_seconds, stop)
    if args.watch_stdin:
        GLib.io_add_watch(
            sys.stdin.fileno(),
            GLib.PRIORITY_DEFAULT,
            GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
            stop,
        )

    port = server.get_bound_port()
    # The internal client: READY once its first RTP packet arrives. It accepts the camera's own
    # certificate whatever it is (tls-validation-flags=0): it only keeps the encoder running.
    scheme = "rtsps" if args.tls_cert else "rtsp"
    watcher = Gst.parse_launch(
        f"rtspsrc name=src location={scheme}://{LOOPBACK}:{port}{args.path} protocols=tcp"
        " latency=0 tls-validation-flags=0"
        " ! fakesink name=sink sync=false async=false signal-handoffs=true"
        + (" src. ! fakesink sync=false async=false" if args.audio != "none" else "")
    )
    if credentials is not None:
        source = watcher.get_by_name("src")
        source.set_property("user-id", credentials[0])
        source.set_property("user-pw", credentials[1])
    sink = watcher.get_by_name("sink")
    announced: list[bool] = []

    def announce() -> bool:
        if not announced:
            announced.append(True)
            sink.set_property("signal-handoffs", False)
            print(f"READY {port}", flush=True)
        return False  # GLib.SOURCE_REMOVE

    def on_handoff(*_: Any) -> None:  # a streaming thread: hand over to the main loop
        if not announced:
            GLib.idle_add(announce)

    def give_up() -> bool:
        if not announced:
            print(f"camera not streaming after {args.warmup_seconds} s", file=sys.stderr)
            failed.append(True)
            loop.quit()
        return False

    failed: list[bool] = []
    sink.connect("handoff", on_handoff)
    watcher.set_state(Gst.State.PLAYING)
    GLib.timeout_add_seconds(args.warmup_seconds, give_up)
    loop.run()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
