"""Asking the card how it is: the thin shell of storage/card_health.py.

`probe_card` writes a few bytes to a probe file at the card's root, fsyncs them and removes the
file again (durably): the smallest thing that proves the card takes evidence now. It answers
with the card's condition (read-only, missing, failed) or None when the card works. The file's
name is the box's own (gateway/startup.py knows it), so a probe a power cut interrupted is
never taken for a stranger's file.

Wear: one probe is a create, a 5-byte write, two fsyncs and an unlink; the box probes only while
a card alarm is raised (gateway/card_watch.py) and once at every start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from common.durable import durable_unlink
from storage.card_health import CardCondition, condition_of

PROBE_NAME: Final = ".mvb-write-probe"


def write_probe(card_dir: Path) -> None:
    """Create, write, fsync and durably remove the probe file; OSError when the card refuses."""
    probe = card_dir / PROBE_NAME
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"probe")
        os.fsync(fd)
    finally:
        os.close(fd)
    durable_unlink(probe, missing_ok=False)


def probe_card(card_dir: Path) -> CardCondition | None:
    """None when the card at `card_dir` takes a durable write now; otherwise its condition (a
    folder that is not there is a missing card)."""
    try:
        if not card_dir.is_dir():
            return CardCondition.MISSING
        os.statvfs(card_dir)
        write_probe(card_dir)
    except OSError as exc:
        return condition_of(exc) or CardCondition.FAILED  # ENOSPC: no probe fits: not usable
    return None
