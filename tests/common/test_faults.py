"""Faults by kind (common/faults.py): every error of the box and the back office has one root.

The modules are walked and imported, and every exception class they define is inspected, so a new
error class without a root (or with two) fails here, before a caller has to guess whether to retry.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator

import pytest

from common.faults import ROOTS, IllegalTransition, MisuseFault, TransientFault
from gateway.recorder import Event, EventKind, Recorder, RecorderPolicy
from storage.errors import RecordingRefused, StoreError
from transport.errors import RETRYABLE, TransportError

PACKAGES = ("common", "storage", "transport", "protocol", "config", "gateway", "backoffice")

FAMILY_BASES = {
    "transport.errors.TransportError": "the uplink's errors: transient and remote",
    "storage.catalog.CatalogError": "the catalog's: a damaged catalog and an unknown file id",
    "protocol.pairing_code.PairingProtocolError": "a mistyped code and a malformed message",
    "gateway.pairing.PairingFailed": "the box's pairing: refused, unreachable, misconfigured",
    "backoffice.pairing_ledger.PairingError": "the back office's pairing: refusals, admin input",
    "backoffice.upload_errors.UploadStoreError": "refusals, a busy upload, a full or damaged disk",
}
"""Bases that group errors of different kinds by where they come from, never raised themselves:
they have no root, every class below them has exactly one."""


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def modules() -> Iterator[str]:
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        yield package_name
        for info in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            yield info.name


def exception_classes() -> list[type[BaseException]]:
    """Every exception class defined (not merely imported) in a module of PACKAGES."""
    found: list[type[BaseException]] = []
    for name in modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found.append(obj)
    return found


ERRORS = exception_classes()
CHECKED = [cls for cls in ERRORS if cls not in ROOTS and qualified(cls) not in FAMILY_BASES]


def roots_of(cls: type[BaseException]) -> list[type[Exception]]:
    return [root for root in ROOTS if issubclass(cls, root)]


def test_the_walk_finds_the_errors() -> None:
    names = {qualified(cls) for cls in ERRORS}
    assert {"storage.errors.EvidenceError", "transport.errors.PinMismatch"} <= names
    assert len(CHECKED) > 80


@pytest.mark.parametrize("cls", CHECKED, ids=qualified)
def test_every_error_derives_from_exactly_one_root(cls: type[BaseException]) -> None:
    roots = [root.__name__ for root in roots_of(cls)]
    assert len(roots) == 1, f"{qualified(cls)} derives from {roots or 'no root'}"


@pytest.mark.parametrize("name", sorted(FAMILY_BASES))
def test_a_family_base_has_no_root_and_its_members_span_kinds(name: str) -> None:
    (base,) = [cls for cls in ERRORS if qualified(cls) == name]
    assert roots_of(base) == []
    members = [cls for cls in ERRORS if cls is not base and issubclass(cls, base)]
    kinds = {roots_of(cls)[0] for cls in members}
    assert len(kinds) >= 2, f"{name} is of one kind: give it that root instead"


def test_the_roots_are_disjoint_exceptions() -> None:
    for root in ROOTS:
        assert root.__bases__ == (Exception,)
        assert roots_of(root) == [root]


def test_retried_transport_errors_are_exactly_the_transient_ones() -> None:
    """tenacity retries by isinstance: a subclass of a RETRYABLE class (NoProgress, a
    TransientNetworkError) is retried too, and must be transient like it."""
    transport_errors = [cls for cls in ERRORS if issubclass(cls, TransportError)]
    transient = {cls for cls in transport_errors if issubclass(cls, TransientFault)}
    retried = {cls for cls in transport_errors if issubclass(cls, RETRYABLE)}
    assert retried == transient
    assert set(RETRYABLE) <= transient


@pytest.mark.parametrize("name", ["IllegalTransition", "StoreError", "RecordingRefused"])
def test_the_unified_classes_are_single(name: str) -> None:
    assert len([cls for cls in ERRORS if cls.__name__ == name]) == 1


def test_illegal_transition_is_one_misuse_shared_by_the_state_tables() -> None:
    """The recorder raises it here; the catalog's table is tested in tests/storage/test_catalog.py
    against the same class."""
    assert issubclass(IllegalTransition, MisuseFault)
    assert issubclass(IllegalTransition, ValueError)  # the catalog's callers may catch ValueError
    with pytest.raises(IllegalTransition, match="stop is not accepted in standby"):
        Recorder(RecorderPolicy()).handle(Event(EventKind.STOP, 0, "officer"))


def test_recording_refused_is_a_store_error_as_documented() -> None:
    assert issubclass(RecordingRefused, StoreError)
