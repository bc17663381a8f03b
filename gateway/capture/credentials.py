"""A camera's RTSP user and password (`[[cameras]] credentials_file`).

How they are kept: in a file of their own, one line `user:password`, readable by the box's user
and nobody else (0600, or 0640 with the box's group as for box.toml: docs/deploy-box.md), out
of box.toml so that the configuration can be shown or copied for support without them, and out
of URLs. The box reads the file once at start and keeps the password in memory only: it is
never logged, never in the status document, never in the audit log, never in an error message
(a source's errors never carry a URL: gateway/capture/source.py), and nowhere in the state
directory.

Invariant: `load_credentials` refuses a file any other user may read or anyone but its owner
may write, naming the mode, before reading a byte of it.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from common.faults import ConfigurationFault

MAX_FILE_BYTES = 1024


class CredentialsError(ValueError, ConfigurationFault):
    """An unusable credentials file; the message says why, never what it holds."""


@dataclass(frozen=True, slots=True)
class Credentials:
    user: str
    password: str = field(repr=False)

    def userinfo(self) -> str:
        """`user:password@`, percent-encoded, for an RTSP URL held in memory only (FFmpeg
        decodes it before computing the digest response)."""
        return f"{quote(self.user, safe='')}:{quote(self.password, safe='')}@"


def load_credentials(path: Path) -> Credentials:
    """Read a credentials file, refusing one that others may read or change."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise CredentialsError(f"cannot read {path} ({exc.strerror})") from exc
    if mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise CredentialsError(
            f"{path} has mode {stat.S_IMODE(mode):04o}: others may read or change it "
            "(chmod 0600, or 0640 with the box's group)"
        )
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CredentialsError(f"cannot read {path} ({exc.strerror})") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise CredentialsError(f"{path} is longer than {MAX_FILE_BYTES} bytes")
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise CredentialsError(f"{path} is not UTF-8 text") from exc
    lines = [line for line in lines if line.strip()]
    if len(lines) != 1 or ":" not in lines[0]:
        raise CredentialsError(f"{path} must hold one line user:password")
    user, password = lines[0].split(":", 1)
    if not user or not password:
        raise CredentialsError(f"{path} must hold one line user:password, both non-empty")
    return Credentials(user, password)
