"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage.envelope import RecipientPrivateKey
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
def next_release_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real release bundle of this tree as version NEXT_RELEASE for this machine's platform
    (`mvb-admin release build --version`, about a minute: built once per session, shared)."""
    from backoffice.release_build import build_release

    bundle, _ = build_release(
        Path(__file__).resolve().parents[1],
        tmp_path_factory.mktemp("next-release"),
        os.uname().machine,
        version=NEXT_RELEASE,
    )
    return bundle
