"""Which source runs a configured camera: the camera source factory, by the camera's kind.

The product's kinds (`rtsp_pull`, `ts_listen`, `rtsp_listen`) are sources of this package, built
with what their authentication needs (docs/capture.md, "Camera authentication"): the camera's
trust (its pinned certificate or its CA) and the box's certificate for TLS, the user and
password for RTSP digest, and the box's alarms and audit log to report refused senders to. The
files are read here, at start; one that cannot be used stops `mvb run` with a configuration
error naming the camera and the key (config/cameras.py checked the keys themselves).

Any other kind is a plug-in: a callable `(CameraSection) -> ThreadedSource` registered under the
entry-point group ENTRY_POINT_GROUP, named by the kind. The demo's and the benchmarks' cameras
(`synthetic`, `replay`, in demo/sources.py) come this way, so the product never imports demo/,
and the group is read only when a camera of a plug-in kind is configured: a box with real
cameras looks nothing up. A kind that is configured but not installed is a configuration error
naming the camera and the kind.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from config.cameras import CameraSection
from config.local import ConfigError
from gateway.capture.camera_tls import client_context, server_context
from gateway.capture.camera_trust import CameraTrust, TrustError, ca_trust, pinned_trust
from gateway.capture.credentials import Credentials, CredentialsError, load_credentials
from gateway.capture.ingest_report import AlarmPanel, AuditAppend, IngestReport
from gateway.capture.pull_sources import RtspsPullSource
from gateway.capture.push_sources import TlsAdmission, TsPushSource
from gateway.capture.rtsp_push import RtspPushSource
from gateway.capture.source import PyavSource, SourceSpec, ThreadedSource

ENTRY_POINT_GROUP = "mvb.camera_sources"
PRODUCT_KINDS = frozenset({"rtsp_pull", "ts_listen", "rtsp_listen"})

SourceFactory = Callable[[CameraSection], ThreadedSource]


class CameraSourceMissing(ConfigError):
    """A camera's kind is neither the product's nor an installed plug-in's."""


class CameraFileUnusable(ConfigError):
    """A camera's certificate, key, CA or credentials file cannot be used."""


@dataclass(frozen=True, slots=True)
class IngestWiring:
    """What the product's sources get from the composition root (gateway/run.py): how to
    resolve a configured path, and where refusals go. The defaults suit tests and tools."""

    resolve: Callable[[str], Path] = Path
    alarms: AlarmPanel | None = None
    audit: AuditAppend | None = None

    def report(self, camera: CameraSection) -> IngestReport:
        return IngestReport(camera.name, alarms=self.alarms, audit=self.audit)


def source_spec(camera: CameraSection, auth: str | None = None) -> SourceSpec:
    """How to reach `camera` (pure): its serial defaults to its name; `auth` is the method
    that admits it (tls-pinned, tls-ca, digest or none), known once its trust is loaded."""
    return SourceSpec(
        name=camera.name,
        kind=camera.kind,
        url=camera.url,
        rtsp_transport=camera.rtsp_transport,
        serial=camera.identity,
        listen_address=camera.listen_address,
        listen_interface=camera.listen_interface,
        listen_port=camera.listen_port,
        auth=auth or camera.auth_mode,
    )


def make_source(camera: CameraSection, wiring: IngestWiring | None = None) -> ThreadedSource:
    """The source for `camera`; CameraSourceMissing when its kind has no installed plug-in,
    CameraFileUnusable when a file its authentication needs cannot be used."""
    if camera.kind not in PRODUCT_KINDS:
        return plugin_factory(camera)(camera)
    wiring = wiring or IngestWiring()
    report = wiring.report(camera)
    mode = camera.auth_mode
    trust = _trust(camera, wiring.resolve) if mode == "tls" else None
    spec = source_spec(camera, trust.method if trust is not None else mode)
    credentials = _credentials(camera, wiring.resolve)
    if camera.kind == "ts_listen":
        admission = None if trust is None else TlsAdmission(_server(camera, wiring, trust), trust)
        return TsPushSource(spec, admission, report)
    if camera.kind == "rtsp_listen":
        return RtspPushSource(spec, credentials, report)
    if trust is not None:
        return RtspsPullSource(spec, _client(camera, trust), trust, credentials, report)
    return PyavSource(spec, url=_with_credentials(camera.url, credentials))


def _trust(camera: CameraSection, resolve: Callable[[str], Path]) -> CameraTrust:
    key = "camera_cert_file" if camera.camera_cert_file else "camera_ca_file"
    path = resolve(getattr(camera, key))
    try:
        pem = path.read_bytes()
        if key == "camera_cert_file":
            return pinned_trust(camera.identity, pem)
        return ca_trust(camera.identity, pem)
    except OSError as exc:
        raise _unusable(camera, key, f"cannot read {path} ({exc.strerror})") from exc
    except TrustError as exc:
        raise _unusable(camera, key, f"{path}: {exc}") from exc


def _server(camera: CameraSection, wiring: IngestWiring, trust: CameraTrust) -> ssl.SSLContext:
    cert, key = wiring.resolve(camera.tls_cert_file), wiring.resolve(camera.tls_key_file)
    try:
        return server_context(cert, key, trust)
    except (OSError, ssl.SSLError) as exc:
        raise _unusable(
            camera, "tls_cert_file", f"{cert} with {key} cannot be loaded ({exc})"
        ) from exc


def _client(camera: CameraSection, trust: CameraTrust) -> ssl.SSLContext:
    try:
        return client_context(trust)
    except ssl.SSLError as exc:
        raise _unusable(camera, "camera_ca_file", f"cannot be loaded ({exc})") from exc


def _credentials(camera: CameraSection, resolve: Callable[[str], Path]) -> Credentials | None:
    if not camera.credentials_file:
        return None
    try:
        return load_credentials(resolve(camera.credentials_file))
    except CredentialsError as exc:
        raise _unusable(camera, "credentials_file", str(exc)) from exc


def _unusable(camera: CameraSection, key: str, why: str) -> CameraFileUnusable:
    return CameraFileUnusable(f"cameras.{key} of camera {camera.name!r}: {why}")


def _with_credentials(url: str, credentials: Credentials | None) -> str:
    """The pull URL with the user and password in it, for PyAV only (in memory)."""
    if credentials is None:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=credentials.userinfo() + parts.netloc))


def plugin_factory(camera: CameraSection) -> SourceFactory:
    """The installed plug-in for `camera.kind`, loaded (its module imported) now."""
    found = plugin_entry_points(camera.kind)
    if not found:
        raise CameraSourceMissing(
            f"camera {camera.name!r}: no source of kind {camera.kind!r} is installed "
            f"(the product has {', '.join(sorted(PRODUCT_KINDS))}; other kinds are plug-ins "
            f"of the entry-point group {ENTRY_POINT_GROUP!r})"
        )
    if len(found) > 1:
        targets = ", ".join(sorted(ep.value for ep in found))
        raise CameraSourceMissing(
            f"camera {camera.name!r}: kind {camera.kind!r} is installed more than once ({targets})"
        )
    try:
        factory: SourceFactory = found[0].load()
    except ImportError as exc:
        raise CameraSourceMissing(
            f"camera {camera.name!r}: the source of kind {camera.kind!r} ({found[0].value}) "
            f"is registered but cannot be imported: {exc}"
        ) from exc
    return factory


def plugin_entry_points(kind: str) -> list[EntryPoint]:
    """The entry points registered for `kind`, one per distinct target."""
    unique = {ep.value: ep for ep in entry_points(group=ENTRY_POINT_GROUP, name=kind)}
    return list(unique.values())
