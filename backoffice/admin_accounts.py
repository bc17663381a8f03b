"""The fleet admin page's accounts (docs/fleet-admin.md 7.2): names and password hashes only.

`<admin state>/accounts.json`, 0600, replaced durably (common/durable.py):
`{"version": 1, "accounts": {"<name>": "pbkdf2_sha256$..."}}`. Hashes are made and checked as the
box's web accounts are (common/passwords.py: PBKDF2-SHA256, at least 600,000 iterations). The
back office never stores a password, and reads the file at each login and request, so `mvb-admin
admin add|remove` takes effect without a restart, and a changed password or a removed account
ends its sessions (backoffice/admin_access.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Final

from common.durable import atomic_write_bytes, make_dirs
from common.faults import ConfigurationFault, MisuseFault
from common.passwords import PasswordHashError, hash_password, parse_password_hash

ACCOUNTS_FILE: Final = "accounts.json"
FORMAT_VERSION: Final = 1
MIN_PASSWORD_CHARS: Final = 12
MAX_PASSWORD_CHARS: Final = 1024
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class AdminAccountRefused(MisuseFault):
    """A name or password the admin tools refuse (exit 2)."""


class AdminAccountsUnreadable(ValueError, ConfigurationFault):
    """The accounts file is not in its one format: nobody logs in until it is repaired."""


def accounts_path(state_dir: Path) -> Path:
    return state_dir / ACCOUNTS_FILE


def parse_accounts(data: bytes) -> dict[str, str]:
    """Name -> password hash; AdminAccountsUnreadable for anything but the one format."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise AdminAccountsUnreadable(f"the admin accounts file is not JSON: {exc}") from None
    if not isinstance(document, dict) or set(document) != {"version", "accounts"}:
        raise AdminAccountsUnreadable("the admin accounts file needs version and accounts")
    accounts = document["accounts"]
    if document["version"] != FORMAT_VERSION or not isinstance(accounts, dict):
        raise AdminAccountsUnreadable(f"the admin accounts file must be version {FORMAT_VERSION}")
    for name, stored in accounts.items():
        if not isinstance(stored, str) or _NAME.fullmatch(name) is None:
            raise AdminAccountsUnreadable("the admin accounts file holds a malformed account")
        try:
            parse_password_hash(stored)
        except PasswordHashError as exc:
            raise AdminAccountsUnreadable(f"account {name}: {exc}") from None
    return dict(accounts)


def load_accounts(state_dir: Path) -> dict[str, str]:
    """The accounts; none when the file does not exist yet."""
    try:
        data = accounts_path(state_dir).read_bytes()
    except FileNotFoundError:
        return {}
    return parse_accounts(data)


def _save(state_dir: Path, accounts: dict[str, str]) -> None:
    make_dirs(state_dir, mode=0o700)
    body = json.dumps({"version": FORMAT_VERSION, "accounts": dict(sorted(accounts.items()))})
    atomic_write_bytes(accounts_path(state_dir), body.encode() + b"\n", mode=0o600)


def check_name(name: str) -> None:
    if _NAME.fullmatch(name) is None:
        raise AdminAccountRefused(
            f"account name {name!r} must be 1-64 of a-z 0-9 . _ -, starting with a letter or digit"
        )


def add_account(state_dir: Path, name: str, password: str) -> bool:
    """Add the account, or set its password; True when it is new."""
    check_name(name)
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise AdminAccountRefused(
            f"a password needs {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )
    accounts = load_accounts(state_dir)
    new = name not in accounts
    accounts[name] = hash_password(password)
    _save(state_dir, accounts)
    return new


def remove_account(state_dir: Path, name: str) -> None:
    accounts = load_accounts(state_dir)
    if accounts.pop(name, None) is None:
        raise AdminAccountRefused(f"there is no admin account {name!r}")
    _save(state_dir, accounts)
