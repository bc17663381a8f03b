"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest

from storage.envelope import RecipientPrivateKey


@pytest.fixture(scope="session")
def recipient() -> RecipientPrivateKey:
    """The back office's recording key (one per test session: X25519 keygen is cheap anyway)."""
    return RecipientPrivateKey.generate()


@pytest.fixture(scope="session")
def second_recipient() -> RecipientPrivateKey:
    return RecipientPrivateKey.generate()
