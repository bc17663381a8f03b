"""Web UI accounts: PBKDF2 hashes only (RULES U2), checked where the configuration is read."""

from __future__ import annotations

import pytest

from common.passwords import (
    MIN_ITERATIONS,
    PasswordHashError,
    hash_password,
    parse_password_hash,
    verify_password,
)
from config.fleet_schema import apply_fleet_document
from config.local import ConfigError, parse_config

MINIMAL = {"box": {"recipient_keys": ["recording.pub"]}}
HASH = hash_password("correct horse battery staple")


def test_a_hash_verifies_its_password_only() -> None:
    assert verify_password(HASH, "correct horse battery staple")
    assert not verify_password(HASH, "correct horse battery stapl")
    assert parse_password_hash(HASH).iterations == MIN_ITERATIONS
    assert hash_password("same") != hash_password("same"), "every hash has its own salt"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("plaintext-password", "must look like"),
        ("md5$1$abc$def", "must look like"),
        ("pbkdf2_sha256$1000$c2FsdHNhbHQ=$" + "A" * 43 + "=", "iterations"),
        ("pbkdf2_sha256$99999999999$c2FsdHNhbHQ=$" + "A" * 43 + "=", "iterations"),
        ("pbkdf2_sha256$600000$!!$" + "A" * 43 + "=", "base64"),
        ("pbkdf2_sha256$600000$c2FsdA==$" + "A" * 43 + "=", "salt of 8"),
    ],
)
def test_weak_or_malformed_hashes_are_refused(text: str, message: str) -> None:
    with pytest.raises(PasswordHashError, match=message):
        parse_password_hash(text)
    assert not verify_password(text, "anything")


def test_accounts_in_a_local_file_and_in_a_fleet_document() -> None:
    local = parse_config(
        {**MINIMAL, "accounts": [{"name": "boa.jansen", "password_hash": HASH}]}, "box.toml"
    )
    assert [a.name for a in local.accounts] == ["boa.jansen"]
    fleet = f'[[accounts]]\nname = "admin"\nrole = "admin"\npassword_hash = "{HASH}"\n'
    effective = apply_fleet_document(local, fleet, "fleet")
    assert [(a.name, a.role) for a in effective.accounts] == [("admin", "admin")]


@pytest.mark.parametrize(
    ("accounts", "message"),
    [
        ([{"name": "x", "password_hash": HASH}], "must be unique and match"),
        ([{"name": "boa1", "password_hash": HASH}] * 2, "must be unique"),
        ([{"name": "boa1", "role": "root", "password_hash": HASH}], "officer or admin"),
        ([{"name": "boa1", "password_hash": "hunter2"}], "password_hash of boa1"),
        ([{"name": "boa1", "password": "hunter2"}], "unknown key accounts.password"),
    ],
)
def test_bad_accounts_are_refused(accounts: list[dict[str, str]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({**MINIMAL, "accounts": accounts}, "box.toml")
