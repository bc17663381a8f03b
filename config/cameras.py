"""The `[[cameras]]` section of the local configuration: what a camera is and how it proves it.

Pure: `ingest_problem` and `listeners_problem` return the first problem as text naming the key
and the camera (config/local.py prefixes the file and raises ConfigError), or None. Files named
here (certificates, credentials) are only read when the sources are built
(gateway/capture/sources.py), which refuses them the same way, naming the key.

Invariants (RULES L6: evidence only from cameras that proved who they are; docs/capture.md):
- No camera source listens on every address by default: a push camera (`ts_listen`,
  `rtsp_listen`) names `listen_address` and/or `listen_interface`; an address is an IP literal.
- A wildcard address (0.0.0.0, ::) without an interface is accepted only with authentication.
- `auth` left out means the strongest form the kind offers (CAMERA_AUTH); a weaker form is a
  line in the file, and the recording's metadata says which form admitted the camera.
- Each form has exactly the keys it needs and no others (a CA file beside `auth = "none"` would
  let a reader believe the camera is checked).
- Credentials never sit in a URL: a user and password belong in `credentials_file`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

CAMERA_KINDS = frozenset({"rtsp_pull", "ts_listen", "rtsp_listen", "synthetic", "replay"})
PUSH_KINDS = frozenset({"ts_listen", "rtsp_listen"})
CAMERA_AUTH: dict[str, tuple[str, ...]] = {
    "ts_listen": ("tls", "none"),
    "rtsp_listen": ("digest", "none"),
    "rtsp_pull": ("tls", "digest", "none"),
}
"""The forms of camera authentication each network kind offers, strongest first (its default).
docs/capture.md says why: a camera that can do TLS pushes MPEG-TS over TLS; RTSPS push is not
offered (no camera we know pushes RTSP with a client certificate, and no test peer here can),
nor SRT (PyAV's FFmpeg has no libsrt)."""

WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::"})  # noqa: S104 (named here to be refused)
TRUST_KEYS = ("camera_ca_file", "camera_cert_file")
BOX_CERT_KEYS = ("tls_cert_file", "tls_key_file")


@dataclass(frozen=True, slots=True)
class CameraSection:
    """One camera: `kind` is rtsp_pull, ts_listen, rtsp_listen, synthetic or replay.

    A pull camera (`rtsp_pull`) is reached at `url`. A push camera (`ts_listen`, `rtsp_listen`)
    connects to the box, which listens on `listen_port` at `listen_address` and/or on
    `listen_interface`.

    `auth` is how the camera proves who it is; empty means the kind's strongest (`auth_mode`).
    `tls`: the camera's certificate is the pinned `camera_cert_file` or is issued by
    `camera_ca_file`, and names the camera's `serial` (its subject serialNumber, else its CN);
    a push camera checks the box by the box's `tls_cert_file`/`tls_key_file`. `digest`: RTSP
    digest authentication with the `user:password` line of `credentials_file` (mode 0600).
    `none`: nothing. Paths are relative to the configuration file.
    """

    name: str = ""
    kind: str = "synthetic"
    url: str = ""
    serial: str = ""
    rtsp_transport: str = "tcp"
    width: int = 640
    height: int = 360
    fps: int = 25
    bitrate_bps: int = 1_000_000
    listen_address: str = ""
    listen_interface: str = ""
    listen_port: int = 0
    auth: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    camera_ca_file: str = ""
    camera_cert_file: str = ""
    credentials_file: str = ""

    @property
    def auth_mode(self) -> str:
        """`auth`, or the strongest form the kind offers when it is left out."""
        return self.auth or CAMERA_AUTH.get(self.kind, ("none",))[0]

    @property
    def identity(self) -> str:
        """What the camera's certificate must name: its serial (defaulting to its name)."""
        return self.serial or self.name

    def is_wildcard_bind(self) -> bool:
        """True when a push camera would accept connections on every address of the box."""
        return not self.listen_interface and self.listen_address in WILDCARD_ADDRESSES


def ingest_problem(camera: CameraSection) -> str | None:
    """The first problem with how `camera` is reached and authenticated, or None (pure)."""
    where = f"(camera {camera.name})"
    if camera.kind not in CAMERA_AUTH:
        return _non_network_problem(camera, where)
    modes = CAMERA_AUTH[camera.kind]
    if camera.auth and camera.auth not in modes:
        return f"cameras.auth {camera.auth!r} is not one of {list(modes)} for {camera.kind} {where}"
    reach = _push_problem(camera) if camera.kind in PUSH_KINDS else _pull_problem(camera)
    if reach is not None:
        return f"{reach} {where}"
    auth = _auth_problem(camera)
    return None if auth is None else f"{auth} {where}"


def listeners_problem(cameras: tuple[CameraSection, ...]) -> str | None:
    """Two push cameras on one port of one address cannot both listen (pure)."""
    seen: dict[tuple[str, str, int], str] = {}
    for camera in cameras:
        if camera.kind not in PUSH_KINDS:
            continue
        where = (camera.listen_address, camera.listen_interface, camera.listen_port)
        if where in seen:
            return (
                f"cameras.listen_port {camera.listen_port} of camera {camera.name} is already "
                f"camera {seen[where]}'s"
            )
        seen[where] = camera.name
    return None


def _non_network_problem(camera: CameraSection, where: str) -> str | None:
    """The demo's kinds (synthetic, replay) have no network and nothing to authenticate."""
    for key in ("listen_address", "listen_interface", "auth", *BOX_CERT_KEYS, *TRUST_KEYS):
        if getattr(camera, key):
            return f"cameras.{key} is for network cameras, not kind {camera.kind} {where}"
    if camera.credentials_file or camera.listen_port:
        return f"cameras.credentials_file and listen_port are for network cameras {where}"
    return None


def _push_problem(camera: CameraSection) -> str | None:
    if camera.url:
        return (
            "cameras.url is for rtsp_pull: a push camera connects to cameras.listen_address "
            "and cameras.listen_port"
        )
    if not camera.listen_address and not camera.listen_interface:
        return (
            "cameras.listen_address (or cameras.listen_interface) is required for a push "
            "camera: no camera source listens on every address by default"
        )
    if camera.listen_address:
        try:
            ipaddress.ip_address(camera.listen_address)
        except ValueError:
            return f"cameras.listen_address {camera.listen_address!r} is not an IP address"
    if not 1 <= camera.listen_port <= 65535:
        return "cameras.listen_port (1 to 65535) is required for a push camera"
    if camera.is_wildcard_bind() and camera.auth_mode == "none":
        return (
            f"cameras.listen_address = {camera.listen_address} listens on every address: "
            'that needs authentication (cameras.auth = "none" is refused there; name the '
            "address or the interface of the camera network)"
        )
    return None


def _pull_problem(camera: CameraSection) -> str | None:
    url = urlsplit(camera.url)
    if url.scheme not in ("rtsp", "rtsps") or not url.hostname:
        return f"cameras.url must be rtsp://HOST/... or rtsps://HOST/..., not {camera.url!r}"
    if url.username is not None or url.password is not None:
        return "cameras.url carries credentials: put them in cameras.credentials_file (0600)"
    for key in ("listen_address", "listen_interface", *BOX_CERT_KEYS):
        if getattr(camera, key):
            return f"cameras.{key} is for push cameras, not rtsp_pull"
    if camera.listen_port:
        return "cameras.listen_port is for push cameras, not rtsp_pull"
    if camera.rtsp_transport not in ("tcp", "udp"):
        return f"cameras.rtsp_transport must be tcp or udp, not {camera.rtsp_transport!r}"
    tls = camera.auth_mode == "tls"
    if tls and url.scheme != "rtsps":
        return (
            'cameras.auth = "tls" (the default for rtsp_pull) needs an rtsps:// cameras.url; a '
            'camera that has only rtsp:// takes cameras.auth = "digest" or "none"'
        )
    if not tls and url.scheme == "rtsps":
        return 'cameras.url rtsps:// goes with cameras.auth = "tls"'
    if tls and camera.rtsp_transport != "tcp":
        return 'cameras.rtsp_transport must be tcp with cameras.auth = "tls": UDP would bypass TLS'
    return None


def _auth_problem(camera: CameraSection) -> str | None:
    """Exactly the keys the chosen form needs."""
    mode = camera.auth_mode
    trust = [key for key in TRUST_KEYS if getattr(camera, key)]
    box_cert = [key for key in BOX_CERT_KEYS if getattr(camera, key)]
    if mode == "tls":
        if len(trust) != 1:
            return (
                'cameras.auth = "tls" needs exactly one of cameras.camera_cert_file (the '
                "camera's own certificate, pinned) and cameras.camera_ca_file (the CA that "
                "issues camera certificates)"
            )
        if camera.kind in PUSH_KINDS and len(box_cert) != len(BOX_CERT_KEYS):
            return (
                'cameras.auth = "tls" on a push camera needs cameras.tls_cert_file and '
                "cameras.tls_key_file: the box's certificate, which the camera checks"
            )
    elif trust or box_cert:
        return f'cameras.{(trust + box_cert)[0]} is only used with cameras.auth = "tls"'
    if mode == "digest" and not camera.credentials_file:
        return (
            'cameras.auth = "digest" needs cameras.credentials_file (one line user:password, '
            "mode 0600)"
        )
    if mode == "none" and camera.credentials_file:
        return 'cameras.credentials_file is not used with cameras.auth = "none"'
    return None
