"""Log lines are one event each, key=value, with journald priorities under systemd."""

from __future__ import annotations

import logging
import sys

from gateway.logfmt import LogfmtFormatter, quote


def record(level: int, message: str, *, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("gateway.run", level, __file__, 1, message, (), exc_info)


def test_a_line_is_logfmt() -> None:
    line = LogfmtFormatter(journal=False).format(record(logging.WARNING, 'uplink "x" not started'))
    assert line == 'level=warning logger=gateway.run msg="uplink \\"x\\" not started"'


def test_a_traceback_stays_on_the_line() -> None:
    line = LogfmtFormatter(journal=False).format(record(logging.ERROR, "failed", exc=True))
    assert "\n" not in line
    assert line.startswith('level=error logger=gateway.run msg=failed exc="Traceback')
    assert "ValueError: bad\\nthing" in line


def test_journald_gets_the_syslog_priority() -> None:
    formatter = LogfmtFormatter(journal=True)
    assert formatter.format(record(logging.ERROR, "x")).startswith("<3>level=error ")
    assert formatter.format(record(logging.INFO, "x")).startswith("<6>level=info ")


def test_a_value_cannot_start_a_new_line_or_key() -> None:
    assert quote("a\nlevel=error b") == '"a\\nlevel=error b"'
    assert quote("") == '""'
    assert quote("wifi") == "wifi"
