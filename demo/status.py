"""The box's status document as the demo reads and shows it.

GET /api/status gives the box's state, the cameras' pre-record rings, GPS, pairing, the uplink
and the officer's page; the running box's catalog gives the files by state, which the status
document does not (it counts the files waiting, not those attested and deleted). Pure: a
document without its own time (`at_ms`) is stamped with the clock, nothing else is read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from demo.narration import clock_text
from storage.models import FileRecord, FileState


@dataclass(frozen=True, slots=True)
class WebPage:
    """The officer's page as the status document's "web" member describes it."""

    state: str  # "listening" or "failed"
    url: str
    certificate_sha256: str  # upper-case hex pairs joined by colons, as browsers show it
    reason: str


def web_page(status: dict[str, Any]) -> WebPage:
    """The "web" member of a status document (absent: the web channel is disabled)."""
    web = status.get("web") or {}
    return WebPage(
        state=str(web.get("state", "disabled")),
        url=str(web.get("url", "")),
        certificate_sha256=str(web.get("certificate_sha256", "")),
        reason=str(web.get("reason", "")),
    )


@dataclass(frozen=True, slots=True)
class CardCounts:
    """The catalog's evidence files by state, and what the back office attested.

    `attested` counts files whose attested SHA-256 equals the one the box wrote (still on the
    card or already deleted); `total` counts every file the box ever catalogued."""

    total: int = 0
    recording: int = 0
    sealed: int = 0
    uploading: int = 0
    attested: int = 0
    attested_bytes: int = 0
    deleted: int = 0

    @property
    def all_deleted(self) -> bool:
        """Every file was attested and deleted: nothing of the evidence is left on the card."""
        return self.total > 0 and self.deleted == self.attested == self.total


def card_counts(records: Iterable[FileRecord]) -> CardCounts:
    """Count catalog records by state (pure)."""
    listed = list(records)
    states = Counter(record.state for record in listed)
    attested = [record for record in listed if record.is_attested]
    return CardCounts(
        total=len(listed),
        recording=states[FileState.RECORDING],
        sealed=states[FileState.SEALED],
        uploading=states[FileState.UPLOADING],
        attested=len(attested),
        attested_bytes=sum(record.size_bytes for record in attested),
        deleted=states[FileState.DELETED],
    )


def box_state(status: dict[str, Any]) -> str:
    """`standby, pre-record dashcam 4.0 s, ...; GPS fix` or `recording 4.0 s` (status document)."""
    state = status.get("state")
    if state == "standby":
        return f"standby, {prerecord_line(status)}"
    return f"{state} {float(status.get('recording_for_s') or 0.0):.1f} s"


def upload_state(status: dict[str, Any], counts: CardCounts) -> str:
    """What the card holds by state and how far the uplink got, in one line."""
    uplink = status.get("uplink") or {}
    in_flight = [
        f"{int(u['offset_bytes']) / 1e6:.1f} of {int(u['size_bytes']) / 1e6:.1f} MB"
        for u in uplink.get("uploading", [])
    ]
    card = (
        f"card: {counts.recording} recording, {counts.sealed} sealed, {counts.uploading} uploading"
        + (f" ({', '.join(in_flight)})" if in_flight else "")
    )
    if "uploaded_files" not in uplink:  # no uplink runs: the document says why
        return f"{card} | uplink {uplink.get('state')}: {uplink.get('reason')}"
    return (
        f"{card} | uploaded {uplink['uploaded_files']}, attested {counts.attested} "
        f"({counts.attested_bytes:,} bytes), deleted {counts.deleted}"
    )


def progress_line(status: dict[str, Any], counts: CardCounts) -> str:
    """One progress line, stamped with the status document's own time."""
    stamp = clock_text(int(status["at_ms"])) if "at_ms" in status else clock_text()
    return f"{stamp} {box_state(status)} | {upload_state(status, counts)}"


Done = Callable[[dict[str, Any], CardCounts], bool]


def is_ready(status: dict[str, Any], prerecord_s: float) -> bool:
    """Every camera's ring holds `prerecord_s` seconds and the GPS status is "fix"."""
    cameras = status.get("cameras", {})
    filled = [c.get("prerecord_filled_s", 0.0) >= prerecord_s for c in cameras.values()]
    return bool(filled) and all(filled) and status.get("gps", {}).get("status") == "fix"


def prerecord_line(status: dict[str, Any]) -> str:
    """`pre-record dashcam 4.0 s, bodycam 3.9 s; GPS fix` from a status document."""
    rings = ", ".join(
        f"{name} {camera.get('prerecord_filled_s', 0.0):.1f} s"
        for name, camera in status.get("cameras", {}).items()
    )
    return f"pre-record {rings}; GPS {status.get('gps', {}).get('status')}"


def describe_status(status: dict[str, Any]) -> list[str]:
    """The status document in a few readable lines (the API's JSON, condensed)."""
    lines = []
    for name, camera in status.get("cameras", {}).items():
        lines.append(
            f"{name}: {'connected' if camera.get('connected') else 'NOT connected'}, "
            f"{camera.get('fps')} fps, {camera.get('bitrate_bps', 0) / 1000:,.0f} kbit/s, "
            f"pre-record {camera.get('prerecord_filled_s')} s "
            f"({camera.get('prerecord_bytes', 0):,} bytes in RAM)"
        )
    gps = status.get("gps", {})
    speed = gps.get("speed_mps")
    lines.append(
        f"gps: {gps.get('status')} (mode {gps.get('mode')}), "
        f"speed {'-' if speed is None else f'{speed:g}'} m/s, "
        f"GPS time - system clock {gps.get('clock_offset_ms')} ms"
    )
    pairing = status.get("pairing") or {}
    uplink = status.get("uplink") or {}
    lines.append(
        f"paired: {'yes' if pairing.get('paired') else 'NO'}; uplink {uplink.get('state')}; "
        f"alarms: {', '.join(status.get('alarms') or {}) or 'none'}"
    )
    return lines
