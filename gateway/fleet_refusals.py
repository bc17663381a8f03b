"""Why the box did not apply a fleet configuration, as a code the officer's page translates
(`bundle.reason.<code>`, docs/fleet-config.md 6), beside the English the audit log keeps. Pure.

A document refused before it was applied is judged by its fault's class (the most specific
entry of REFUSAL_BY_CLASS that the exception is an instance of: python-tuf's and ours); one that
was verified and then not applied has an APPLY_CODES code.

Invariant: `refusal_code` returns only codes of `reason_codes()`, and both languages of the page
have each (tests/gateway/web/test_refusal_codes.py).
"""

from __future__ import annotations

from typing import Final

from tuf.api.exceptions import (
    BadVersionNumberError,
    EqualVersionNumberError,
    ExpiredMetadataError,
    LengthOrHashMismatchError,
    RepositoryError,
    UnsignedMetadataError,
)

from config.fleet_client import BadBundle
from config.fleet_targets import ConfigRejected, DocumentTooLarge, SerialRollback, WrongBox
from config.release_targets import (
    ReleaseDowngrade,
    ReleaseFailedHealth,
    ReleaseMismatch,
    ReleaseMissing,
    ReleaseNotDelegated,
    ReleaseRefused,
)
from storage.errors import NoMatchingRecipient, WrongKey
from storage.release_seal import ReleaseSealError

REFUSAL_BY_CLASS: Final[tuple[tuple[type[Exception], str], ...]] = (
    # a release (docs/releases.md 7): before the configuration's, some are RepositoryErrors
    (ReleaseDowngrade, ReleaseDowngrade.code),  # lower than the running version
    (ReleaseFailedHealth, ReleaseFailedHealth.code),  # rolled back here by its health check
    (ReleaseNotDelegated, ReleaseNotDelegated.code),  # not signed by the releases role
    (ReleaseMismatch, ReleaseMismatch.code),  # not the bundle its signed fields describe
    (ReleaseMissing, ReleaseMissing.code),  # no release of the pinned version signed
    (ReleaseRefused, ReleaseRefused.code),
    (ReleaseSealError, "release_tampered"),  # the sealed bytes do not open intact
    (NoMatchingRecipient, "release_wrong_seal_key"),  # sealed to another fleet's key
    (WrongKey, "release_wrong_seal_key"),
    (BadBundle, "bad_bundle"),  # not a readable bundle (tar, members, size)
    (SerialRollback, "serial_rollback"),  # older than what the box applied
    (WrongBox, "wrong_box"),  # for another box or group
    (DocumentTooLarge, "document_too_large"),
    (ConfigRejected, "not_for_this_box"),
    (UnsignedMetadataError, "not_signed"),  # signatures missing or by the wrong keys
    (ExpiredMetadataError, "expired"),
    (BadVersionNumberError, "version_rollback"),
    (EqualVersionNumberError, "version_rollback"),
    (LengthOrHashMismatchError, "tampered"),
    (RepositoryError, "untrusted"),  # any other fault of the signed repository
)
ALREADY_APPLIED: Final = "already_applied"
INVALID_DOCUMENT: Final = "invalid_document"  # signed, but not a configuration this box takes
ROLLED_BACK: Final = "rolled_back"  # applied, a health check failed, the old one is back
DEFERRED: Final = "deferred"  # kept: applied once the box's state allows
RELEASE_NO_KEY: Final = "release_no_key"  # paired before releases were sealed: re-pair
RELEASE_INSTALL_FAILED: Final = "release_install_failed"  # the opened bundle did not install
# root's installer refused the box's inbox item (docs/releases.md 7.6), as its verdict says:
NO_TRUST_ANCHOR: Final = "no_trust_anchor"  # root has no fleet anchor pinned yet
RELEASE_NOT_PREVIOUS: Final = "release_not_previous"  # a switch back to another release
INBOX_ITEM_INVALID: Final = "inbox_item_invalid"  # the item is not one (altered on the box)
APPLY_CODES: Final = (
    ALREADY_APPLIED,
    INVALID_DOCUMENT,
    ROLLED_BACK,
    DEFERRED,
    RELEASE_NO_KEY,
    RELEASE_INSTALL_FAILED,
    NO_TRUST_ANCHOR,
    RELEASE_NOT_PREVIOUS,
    INBOX_ITEM_INVALID,
)


def refusal_code(error: Exception) -> str:
    for kind, code in REFUSAL_BY_CLASS:
        if isinstance(error, kind):
            return code
    return "untrusted"


def reason_codes() -> frozenset[str]:
    return frozenset(code for _, code in REFUSAL_BY_CLASS) | frozenset(APPLY_CODES)
