"""Fixtures and collection hooks shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.envelope import RecipientPrivateKey
from tests.release_fixtures import ReleaseBundles
from tests.tls_helpers import TestPki, make_test_pki


@pytest.fixture(scope="session")
def recipient() -> RecipientPrivateKey:
    """The back office's recording key (one per test session: X25519 keygen is cheap anyway)."""
    return RecipientPrivateKey.generate()


@pytest.fixture(scope="session")
def second_recipient() -> RecipientPrivateKey:
    return RecipientPrivateKey.generate()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """One throwaway back office PKI per test session (see tests/tls_helpers.py)."""
    return make_test_pki(tmp_path_factory.mktemp("pki"))


NEXT_RELEASE = "1.0.1"


@pytest.fixture(scope="session")
def next_release_bundle(release_bundles: ReleaseBundles) -> Path:
    """The real release bundle of this tree as version NEXT_RELEASE for this machine's platform
    (`mvb-admin release build --version`: built once per session, shared)."""
    bundle, _ = release_bundles.get(NEXT_RELEASE)
    return bundle


@pytest.fixture(scope="session")
def release_bundles(tmp_path_factory: pytest.TempPathFactory) -> ReleaseBundles:
    """This checkout's release bundles, each built once per session (tests/release_fixtures.py)."""
    return ReleaseBundles(tmp_path_factory.mktemp("release-bundles"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each schemathesis item its own node id. schemathesis (with pytest 9) names an operation's
    item `test[GET /api/status]` but gives every operation of a test the test's one node id;
    pytest-xdist's file scheduling (`make test`: --dist loadfile) keys a file's work by node id
    and would run only one operation of each such test. The id is made what the name says."""
    for item in items:
        if getattr(item, "operation_label", None) is not None and item.parent is not None:
            item._id = item.parent.id.child(item.name)  # what pytest makes of a plain item
