"""Log lines for the journal: one event per line, `key=value` (logfmt), priority-tagged.

`level=warning logger=gateway.run msg="uplink not started: not paired"`: a line a person reads
and a log shipper parses without guessing. An exception's traceback stays on the same line
(`exc="..."`, newlines escaped), so one event is one journal entry. Under systemd (JOURNAL_STREAM
set) each line starts with the syslog priority `<N>`, which journald turns into the entry's
level (`journalctl -p warning` works).

What goes into messages is the callers' business: nothing secret or personal is logged anywhere
in the box (RULES; reviews check it). This module only keeps the shape.
"""

from __future__ import annotations

import logging
import os

_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}


def quote(value: str) -> str:
    """A logfmt value: bare when it is one simple word, else quoted with \\ " and newlines
    escaped, so a value can never start a new line or a new key."""
    if value and all(c.isalnum() or c in "._-/:@" for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    def __init__(self, *, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        fields = [
            f"level={record.levelname.lower()}",
            f"logger={quote(record.name)}",
            f"msg={quote(record.getMessage())}",
        ]
        if record.exc_info:
            fields.append(f"exc={quote(self.formatException(record.exc_info))}")
        line = " ".join(fields)
        if self.journal:
            return f"<{_PRIORITY.get(record.levelname, 6)}>{line}"
        return line


def configure_logging(level: int = logging.INFO) -> None:
    """Root logging to stderr in logfmt; journal priorities when systemd reads the stream."""
    handler = logging.StreamHandler()
    handler.setFormatter(LogfmtFormatter(journal="JOURNAL_STREAM" in os.environ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
