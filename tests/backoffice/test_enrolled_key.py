"""Pairing enrolls the box's device key; the back office verifies reports against it.

The pure core (backoffice/pairing.py `redeem`) with the session's test CA, the ledger document,
and the gate that hands the enrolled key to the report check. The real server refusing a report
with a foreign key is in test_serve_attack.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from backoffice.pairing import BackOfficeTrust, ProofInvalid, redeem
from backoffice.pairing_ledger import PairingLedger
from backoffice.pairing_service import LedgerGate, LedgerStore
from backoffice.pki import Issued, load_issued
from storage.devicekey import DeviceKey
from tests.backoffice.test_pairing_codes import (
    BOX,
    DEVICE_KEY,
    SERVICE,
    T0_S,
    TUF_ROOT,
    attempt_for,
    issue,
)
from tests.tls_helpers import TestPki


@pytest.fixture(scope="module")
def ca(pki: TestPki) -> Issued:
    return load_issued(pki.ca_cert, pki.ca_key)


@pytest.fixture(scope="module")
def trust(pki: TestPki) -> BackOfficeTrust:
    return BackOfficeTrust((pki.server_pin, pki.backup_pin), TUF_ROOT, SERVICE)


def paired_ledger(ca: Issued, trust: BackOfficeTrust) -> PairingLedger:
    ledger, code = issue(trust, PairingLedger(), 1)
    ledger, _ = redeem(ledger, attempt_for(code).request_json(), T0_S + 60, ca, trust)
    return ledger


def test_a_grant_enrolls_the_device_key_of_the_request_and_the_ledger_keeps_it(
    ca: Issued, trust: BackOfficeTrust
) -> None:
    ledger = paired_ledger(ca, trust)
    pairing = ledger.pairing_of(BOX)
    assert pairing is not None
    assert pairing.device_key == DEVICE_KEY
    again = PairingLedger.from_json(ledger.to_json())
    assert again == ledger


def test_a_ledger_from_before_enrollment_reads_as_no_key(
    ca: Issued, trust: BackOfficeTrust
) -> None:
    document = json.loads(paired_ledger(ca, trust).to_json())
    for box in document["paired"]:
        del box["device_key"]
    old = PairingLedger.from_json(json.dumps(document).encode())
    pairing = old.pairing_of(BOX)
    assert pairing is not None
    assert pairing.device_key is None


def test_the_proof_covers_the_device_key(ca: Issued, trust: BackOfficeTrust) -> None:
    """Someone on the path (were TLS broken) cannot enroll a key of their own."""
    ledger, code = issue(trust, PairingLedger(), 1)
    genuine = attempt_for(code).request()
    swapped = replace(genuine, device_key=DeviceKey.generate().public_key().raw())
    with pytest.raises(ProofInvalid):
        redeem(ledger, swapped.to_json(), T0_S + 60, ca, trust)


async def test_the_gate_gives_the_enrolled_key_and_none_for_others(
    ca: Issued, trust: BackOfficeTrust, tmp_path: Path
) -> None:
    store = LedgerStore(tmp_path / "pairing")
    ledger = paired_ledger(ca, trust)
    store.transact(lambda _old: (ledger, None))
    gate = LedgerGate(store)
    enrolled = await gate.enrolled_device_key(BOX)
    assert enrolled is not None
    assert enrolled.raw() == DEVICE_KEY
    assert await gate.enrolled_device_key("MVB-NEVER-PAIRED") is None
