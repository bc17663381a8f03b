"""The fleet admin page's parts without a browser: its accounts file, the groups and versions it
shows, the check-now book, its static files and its words (every code the server can answer has
a Dutch and an English text)."""

from __future__ import annotations

import ast
import asyncio
import json
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from backoffice import cli as admin_cli
from backoffice.admin_access import MAX_WAITING_LOGINS, AdminAccess
from backoffice.admin_accounts import (
    AdminAccountRefused,
    AdminAccountsUnreadable,
    add_account,
    load_accounts,
    parse_accounts,
    remove_account,
)
from backoffice.admin_web import AdminSite, admin_application
from backoffice.check_now import CheckNowBook, CheckNowRefused
from backoffice.fleet_health import BoxHealth
from backoffice.fleet_status import rows
from backoffice.fleet_versions import NO_GROUP, groups_by_box, versions_by_group
from common.passwords import verify_password
from config.fleet_targets import FleetCustom
from tests.protocol.test_health_report import health

ROOT = Path(__file__).parents[2]
STATIC = ROOT / "backoffice" / "admin_static"


def test_an_account_is_kept_as_its_hash_only(tmp_path: Path) -> None:
    assert add_account(tmp_path, "alice", "a long enough password")
    assert not add_account(tmp_path, "alice", "another long password")
    stored = (tmp_path / "accounts.json").read_text()
    assert "password" not in stored
    assert (tmp_path / "accounts.json").stat().st_mode & 0o777 == 0o600
    assert verify_password(load_accounts(tmp_path)["alice"], "another long password")
    remove_account(tmp_path, "alice")
    assert load_accounts(tmp_path) == {}
    with pytest.raises(AdminAccountRefused):
        remove_account(tmp_path, "alice")


@pytest.mark.parametrize(
    ("name", "password"),
    [("Alice", "a long enough password"), ("../x", "a long enough password"), ("bob", "short")],
)
def test_bad_names_and_short_passwords_are_refused(
    tmp_path: Path, name: str, password: str
) -> None:
    with pytest.raises(AdminAccountRefused):
        add_account(tmp_path, name, password)
    assert not (tmp_path / "accounts.json").exists()


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"version": 2, "accounts": {}}',
        b'{"version": 1, "accounts": {"alice": "plain text"}}',
        b'{"version": 1, "accounts": {"../x": "pbkdf2_sha256$600000$AAAAAAAAAAA=$'
        + b"A" * 44
        + b'"}}',
        b'{"version": 1, "accounts": {}, "extra": 1}',
    ],
)
def test_a_damaged_accounts_file_lets_nobody_in(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(AdminAccountsUnreadable):
        parse_accounts(data)
    (tmp_path / "accounts.json").write_bytes(data)
    assert AdminAccess(tmp_path).accounts() == {}


def test_groups_come_from_the_group_documents_that_name_the_box() -> None:
    documents = [
        FleetCustom(boxes=("MVB-1", "MVB-2"), groups=("h2o",), config_serial=1),
        FleetCustom(boxes=("MVB-2",), groups=("borsele",), config_serial=2),
        FleetCustom(boxes=("MVB-3",), groups=(), config_serial=3),  # a box's own document
    ]
    groups = groups_by_box(documents)
    assert groups == {"MVB-1": ("h2o",), "MVB-2": ("borsele", "h2o")}
    fleet = rows(
        [
            BoxHealth("MVB-1", 0, health(software_version="1.0.0").to_json_object()),
            BoxHealth("MVB-2", 0, health(software_version="1.1.0").to_json_object()),
            BoxHealth("MVB-3", 0, health(software_version="1.0.0").to_json_object()),
        ],
        now_ms=0,
        stale_after_ms=1,
    )
    assert versions_by_group(fleet, groups) == {
        NO_GROUP: {"1.0.0": 1},
        "borsele": {"1.1.0": 1},
        "h2o": {"1.0.0": 1, "1.1.0": 1},
    }


def test_check_now_is_kept_until_the_box_fetched_its_timestamp(tmp_path: Path) -> None:
    book = CheckNowBook(tmp_path)
    assert not book.pending("MVB-1")
    book.request("MVB-1")
    assert book.pending("MVB-1")
    assert book.waiting() == ["MVB-1"]
    book.done("MVB-2")
    assert book.pending("MVB-1")
    book.done("MVB-1")
    assert book.waiting() == []
    for bad in ("../x", "", ".hidden", "a/b"):
        with pytest.raises(CheckNowRefused):
            book.request(bad)
        assert not book.pending(bad)


async def test_the_page_serves_its_own_files_only(tmp_path: Path) -> None:
    app = admin_application(AdminAccess(tmp_path), AdminSite(tmp_path, None, None, None))
    async with TestClient(TestServer(app)) as client:
        for path in ("/", "/static/admin.js", "/static/i18n/nl.json"):
            answer = await client.get(path)
            assert answer.status == 200, path
            assert "Content-Security-Policy" in answer.headers
        for path in ("/static/../admin_web.py", "/static/%2e%2e/admin_web.py", "/static/.x.js"):
            answer = await client.get(path)
            assert answer.status == 404, path
        answer = await client.get("/metrics")
        assert answer.status == 404  # no token file: no scrape endpoint
        answer = await client.get("/nothing-here")
        assert answer.status == 404
        assert (await answer.json())["error"] == "not_found"
        assert "Content-Security-Policy" in answer.headers
        answer = await client.post("/api/pairing-codes", json={})
        assert answer.status == 401  # no session, before anything else


def test_the_page_holds_no_inline_script_or_style() -> None:
    html = (STATIC / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert "<style" not in html
    assert " style=" not in html
    assert re.findall(r"<[^>]*\son[a-z]+\s*=", html) == []  # no event handler attributes


def _codes_answered() -> set[str]:
    """Every literal code of `error(status, "code", ...)` in the admin page's modules."""
    codes = set()
    for module in ("admin_access.py", "admin_web.py"):
        tree = ast.parse((ROOT / "backoffice" / module).read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "error"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                codes.add(str(node.args[1].value))
    return codes


def test_every_word_and_every_code_is_in_dutch_and_english() -> None:
    nl = json.loads((STATIC / "i18n" / "nl.json").read_text())
    en = json.loads((STATIC / "i18n" / "en.json").read_text())
    assert set(nl) == set(en)
    codes = _codes_answered()
    assert {"wrong_credentials", "locked", "csrf", "already_paired"} <= codes
    missing = sorted(code for code in codes if f"error.{code}" not in nl)
    assert missing == []
    html = (STATIC / "index.html").read_text()
    script = (STATIC / "admin.js").read_text()
    used = set(re.findall(r'data-i18n="([^"]+)"', html))
    used |= set(re.findall(r'\bt\("([a-z_.0-9]+)"', script))
    assert sorted(used - set(nl)) == []
    assert all(nl[key] and en[key] for key in nl)


def test_mvb_admin_admin_add_reads_the_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("a long enough password\n")
    state = tmp_path / "admin"
    argv = [
        "admin",
        "add",
        "--state",
        str(state),
        "--name",
        "alice",
        "--password-file",
        str(secret),
    ]
    assert admin_cli.main(argv) == 0
    assert verify_password(load_accounts(state)["alice"], "a long enough password")
    secret.write_text("short\n")
    assert admin_cli.main(argv) == 2
    token = tmp_path / "metrics.token"
    assert admin_cli.main(["admin", "metrics-token", "--out", str(token)]) == 0
    assert len(token.read_text().strip()) >= 32
    assert token.stat().st_mode & 0o777 == 0o600


def test_serve_refuses_an_admin_port_without_accounts(tmp_path: Path) -> None:
    argv = [
        "serve", "--dir", str(tmp_path), "--cert", "c", "--key", "k", "--client-ca", "ca",
        "--admin-port", "0",
    ]  # fmt: skip
    assert admin_cli.main(argv) == 2


async def test_a_login_flood_is_answered_busy_not_queued(tmp_path: Path) -> None:
    app = admin_application(AdminAccess(tmp_path), AdminSite(tmp_path, None, None, None))
    async with TestClient(TestServer(app)) as client:

        async def guess(number: int) -> int:
            body = {"username": f"nobody-{number}", "password": "a wrong guess"}
            answer = await client.post("/api/session", json=body)
            if answer.status == 503:
                assert (await answer.json())["error"] == "busy"
                assert answer.headers["Retry-After"] == "1"
            return answer.status

        statuses = await asyncio.gather(*(guess(number) for number in range(24)))
    assert statuses.count(503) >= 24 - MAX_WAITING_LOGINS
    assert set(statuses) <= {401, 423, 503}
