"""Faults by kind (DESIGN principle 5): the roots every error of box and back office derives from.

An error says two things: where it came from (its family: `TransportError`, `EvidenceError`,
`PairingFailed` ...) and what kind of fault it is (its root, here). The family tells a reader which
module raised it; the root tells the caller what to do. This module is that policy:

- `RemoteFault`: a peer we do not control, or data it supplied, cannot be accepted: a hostile or
  broken peer (an impossible answer, an unpinned key, a forged or tampered file), or the peer's
  explicit refusal. Never retried blindly (the same request gets the same answer, or feeds an
  attacker); keep the local evidence, and tell a person (an alarm, the refusal's reason).
- `TransientFault`: the operation may succeed later unchanged (a link went down, a server is busy
  or failing, a slot is taken). Retry with backoff, bounded; raise an alarm only when it lasts.
- `ConfigurationFault`: the settings or files an operator gave are wrong (a key file, a pin, the
  configuration file, the environment). Refuse to start or to carry on, with a message that says
  what is wrong and where (the file, the key); retrying without a change cannot help.
- `MisuseFault`: a caller broke a precondition: an event or command the current state does not
  allow, a closed object, an unknown id. A bug in our code, or a command refused (the message is
  for the person who gave it). Nothing was changed; do not retry the same call.
- `StorageFault`: the card or disk failed, is full, or holds a file we cannot read back as we
  wrote it (our own state, damaged). Stop writing what cannot be written, never delete evidence
  to make room, raise an alarm; a person or the retention law frees space.

Invariants (checked by tests/common/test_faults.py):
- Every exception class defined in the box's and the back office's packages derives from exactly
  one root, except a family base that groups faults of different kinds and is never raised
  itself (`TransportError`: transient and remote); each class below such a base has one root.
- The roots are disjoint: none derives from another, and none from a builtin exception other than
  `Exception`. A class keeps the builtin bases its callers catch (ValueError, LookupError, ...)
  beside its root.
- Library exceptions are translated into ours at the boundary where we call the library.

This module imports nothing of ours (it is the bottom of the layers).
"""

from __future__ import annotations


class RemoteFault(Exception):
    """A hostile or misbehaving peer, data it supplied that fails our checks, or its refusal.
    Never retried blindly; local evidence is kept; a person is told."""


class TransientFault(Exception):
    """May succeed later unchanged: retry with bounded backoff; alarm only if it lasts."""


class ConfigurationFault(Exception):
    """Bad settings or files from an operator: refuse, saying what is wrong and where."""


class MisuseFault(Exception):
    """A caller broke a precondition (a bug, or a command refused in this state). Nothing
    changed; do not retry the same call."""


class StorageFault(Exception):
    """The card or disk failed, is full, or holds our own state damaged: stop writing what cannot
    be written, never delete evidence to make room, raise an alarm."""


ROOTS: tuple[type[Exception], ...] = (
    RemoteFault,
    TransientFault,
    ConfigurationFault,
    MisuseFault,
    StorageFault,
)
"""Every root, for the tests that check each error has exactly one."""


class IllegalTransition(MisuseFault, ValueError):
    """An event or state change that a state table does not list: the recorder's events
    (gateway/recorder.py: a stop while standing by) and the catalog's file states
    (storage/catalog.py `LEGAL_TRANSITIONS`). Raised before anything changed; the message names
    the state and the event (and the file, for the catalog)."""
