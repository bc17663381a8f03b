"""The shift history's file (gateway/officer/shift_history.py says what it holds):
`state_dir/shift_history.json`, `{"version": 1, "holdings": [...]}`, rewritten whole through
common/durable.py (tmp, fsync, rename, fsync dir) at every change of the shift: a power cut
leaves the history before or after the change, never a mix. Read by `mvb run` at start and by
`mvb import`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from common.durable import atomic_write_bytes
from gateway.officer.shift_history import Holding

log = logging.getLogger(__name__)

HISTORY_FILE = "shift_history.json"
HISTORY_VERSION = 1


def load_history(state_dir: Path) -> tuple[Holding, ...]:
    """The holdings on file; none when there is no file. An unreadable file counts as none
    (logged without its content): imports are then attributed to nobody, never to a guess."""
    path = state_dir / HISTORY_FILE
    try:
        document = json.loads(path.read_bytes())
        if not isinstance(document, dict) or document.get("version") != HISTORY_VERSION:
            raise ValueError("not a shift history")
        holdings = document["holdings"]
        if not isinstance(holdings, list):
            raise ValueError("not a list of holdings")
        return tuple(Holding.from_json(item) for item in holdings)
    except FileNotFoundError:
        return ()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s unreadable, no shift history: %s", path, type(exc).__name__)
        return ()


def save_history(state_dir: Path, holdings: tuple[Holding, ...]) -> None:
    document = {"version": HISTORY_VERSION, "holdings": [h.to_json() for h in holdings]}
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    atomic_write_bytes(state_dir / HISTORY_FILE, data)
