"""What the capture service shares with the world outside capture, kept apart so the service
reads as its state and its steps (gateway/capture/service.py): the observers that add facts to a
recording and follow its life, who asked for a trigger or a stop (`origin_of`), and the small
conversions of facts into the encrypted metadata. PURE but for `observe`'s logging and
`wall_ms`'s clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

from gateway.recorder import ORIGIN_KEYS

log = logging.getLogger(__name__)


def no_gps(_start_ns: int, _end_ns: int) -> list[dict[str, Any]]:
    return []


class RecordingObserver(Protocol):
    """Something outside capture that adds facts to new recordings and follows their life (the
    officer's shift and report book, gateway/web/). Capture never imports it: it is handed in.

    Called on the event loop, under the service's lock but `recording_finished`: each call must
    be quick. A failing
    observer is logged and skipped; it never stops or spoils a recording (evidence first).
    """

    def recording_facts(self) -> Mapping[str, Any]:
        """Facts for the encrypted `recording` metadata of the recording starting now (R5)."""
        ...

    def camera_facts(self, camera_serial: str) -> Mapping[str, Any]:
        """Facts of one camera's part, as it joins the recording (R5: whose footage it is)."""
        ...

    async def recording_started(self, recording_id: str, facts: Mapping[str, Any]) -> None:
        """A recording started with `facts` (the trigger's source and wall-clock `at_ms`)."""
        ...

    async def recording_finished(self, recording_id: str, duration_s: float) -> None:
        """The recording was sealed; it ended `duration_s` after its trigger (post-record
        included). Called after the sealing, off the service's lock (CaptureService._finish)."""
        ...


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def observe(call: Awaitable[None]) -> None:
    """Run one observer call; its failure is logged, never the recording's problem."""
    try:
        await call
    except Exception:
        log.exception("recording observer failed")


def origin_of(facts: Mapping[str, object]) -> dict[str, str | None]:
    """Who asked for a trigger or a stop, as the audit log names them: the `channel` (page,
    cli, button, input) and the `account` (an account tag, "local"; None for a device)."""
    return {
        key: value
        for key in ORIGIN_KEYS
        if key in facts and (isinstance(value := facts[key], str) or value is None)
    }


def scalars(facts: dict[str, object]) -> dict[str, object]:
    """Trigger facts travel into encrypted metadata; keep them JSON scalars."""
    return {k: v for k, v in facts.items() if isinstance(v, str | int | float | bool) or v is None}


def audio_state(record_audio: bool, codec: str | None) -> str:
    if not record_audio:
        return "off"
    return "none" if codec is None else "recorded"
