"""A camera's RTSP credentials file (gateway/capture/credentials.py): refused when others may read
or change it, one line user:password, the password never in a repr or an error message."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.capture.credentials import CredentialsError, load_credentials

PASSWORD = "pa:ss/w@rd"  # noqa: S105 (a test camera's)


def secret(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "bodycam.secret"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640])
def test_the_owner_and_the_boxs_group_may_read_it(tmp_path: Path, mode: int) -> None:
    credentials = load_credentials(secret(tmp_path, f"bc1:{PASSWORD}\n", mode))
    assert (credentials.user, credentials.password) == ("bc1", PASSWORD)
    assert PASSWORD not in repr(credentials)
    assert credentials.userinfo() == "bc1:pa%3Ass%2Fw%40rd@"


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o606])
def test_a_file_others_may_read_or_change_is_refused_before_reading(
    tmp_path: Path, mode: int
) -> None:
    with pytest.raises(CredentialsError, match=f"mode {mode:04o}") as refused:
        load_credentials(secret(tmp_path, f"bc1:{PASSWORD}\n", mode))
    assert PASSWORD not in str(refused.value)


@pytest.mark.parametrize(
    "text", ["", "bc1\n", f":{PASSWORD}\n", "bc1:\n", f"bc1:{PASSWORD}\nbc2:other\n"]
)
def test_anything_but_one_line_user_password_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(CredentialsError, match="one line user:password") as refused:
        load_credentials(secret(tmp_path, text))
    assert PASSWORD not in str(refused.value)


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=r"cannot read .*missing"):
        load_credentials(tmp_path / "missing")
