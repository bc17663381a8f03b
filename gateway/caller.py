"""Who asks the box for something, and how the box says no: the vocabulary of the port
(gateway/port.py) shared by the services behind it and the faces in front of it.

- `Identity`: the caller of a command, as a face established it (the web channel from a
  session, the loopback channel for processes on the box). Services decide on `role`,
  `officer_id` and `channel`; they never see how the caller proved who they are.
- `Refused`: a command the box will not carry out, with a machine `code` the faces translate
  (the page shows the officer's language), a plain English `message` for logs and the CLI, and
  a `kind` that says what sort of no it is. Faces map the kind to their own terms (HTTP status
  on the web); services never name HTTP.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from common.faults import MisuseFault

Channel = Literal["web", "local"]


@dataclass(frozen=True, slots=True)
class Identity:
    """`user` is the login name (never written into evidence or logs); `officer_id` is the
    officer's service number from the account, the one recordings carry (RULES R5); empty for
    the local channel and for accounts without one."""

    channel: Channel
    user: str
    role: str
    officer_id: str


def account_tag(name: str) -> str:
    """What the audit log says instead of a login name: a 12-hex SHA-256 prefix (48 bits) that
    tells one account's events apart without naming the officer."""
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def audit_name(caller: Identity) -> str:
    """Who did it, as the audit log and the holds book may say: "local" for the loopback
    channel (a process on the box), else the account's tag; never a login name."""
    return "local" if caller.channel == "local" else account_tag(caller.user)


LOCAL_IDENTITY = Identity(channel="local", user="local", role="admin", officer_id="")
"""Every caller on the loopback channel: a process on the box itself (docs/webui.md 1)."""


class RefusalKind(enum.Enum):
    CONFLICT = "conflict"  # the box's state does not allow it now (not recording, busy, ...)
    FORBIDDEN = "forbidden"  # this caller may not do it
    NOT_FOUND = "not_found"  # the thing named does not exist
    INVALID = "invalid"  # what was asked is malformed or out of bounds
    FAILED = "failed"  # the box tried and could not (a file could not be saved)


class Refused(MisuseFault):
    """A refusal the caller can act on. `extra` carries members a face may pass on (e.g. the
    ids of the recordings still missing a report)."""

    def __init__(self, kind: RefusalKind, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message
        self.extra = extra
