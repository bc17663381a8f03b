"""Issue a one-time pairing code through the ledger: what `mvb-admin pair-code` and the fleet
admin page's button both do (docs/pairing.md 2). The rules are backoffice/pairing.py's
`issue_code` (15 minutes, single use, at most a few open codes per box); this is its one
transaction on the ledger store.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from backoffice.pairing import NONCE_BYTES, PairingCode, issue_code
from backoffice.pairing_ledger import PairingLedger
from backoffice.pairing_service import LedgerStore


def issue_pair_code(
    store: LedgerStore,
    box_id: str,
    address: str,
    pins: Sequence[str],
    now_s: float,
    *,
    re_pair: bool = False,
) -> tuple[PairingCode, int | None]:
    """The new code, and the certificate serial it replaces (a re-pair) or None. Raises the
    pairing rules' refusals (AdminInputError, AlreadyPaired, NotPaired, TooManyOpenCodes) and
    LedgerUnavailable."""

    def issue(ledger: PairingLedger) -> tuple[PairingLedger, tuple[PairingCode, int | None]]:
        new_ledger, code = issue_code(
            ledger,
            box_id,
            address,
            pins,
            now_s,
            secrets.token_bytes(NONCE_BYTES),
            re_pair=re_pair,
        )
        record = new_ledger.code(code.code_id)
        assert record is not None  # issue_code just added it
        return new_ledger, (code, record.replaces_serial)

    return store.transact(issue)
