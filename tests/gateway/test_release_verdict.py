"""Root's verdict on an inbox item (gateway/release_verdict.py, docs/releases.md 7.6): the strict,
bounded parse the box applies to it (every bad shape VerdictMalformed, and ignored by the box's
read), root's durable write into its own directory only, and the bound on how many it keeps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway.fleet_refusals import reason_codes
from gateway.release_update import outcome_of
from gateway.release_verdict import (
    KEEP_VERDICTS,
    MAX_VERDICT_BYTES,
    Verdict,
    VerdictDirUnsafe,
    VerdictMalformed,
    new_verdict,
    parse_verdict,
    read_verdict,
    verdict_json,
    write_verdict,
)

GOOD: dict[str, object] = {
    "format": 1,
    "version": "1.0.1",
    "outcome": "refused",
    "code": "tampered",
    "judged_at_s": 1_796_000_000,
    "judgement": "0123456789abcdef",
}


def encoded(**changes: object) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({key: value for key, value in body.items() if value is not ...}).encode()


def test_a_verdict_round_trips_and_each_judgement_is_new() -> None:
    verdict = new_verdict("1.0.1", "refused", "tampered", 1_796_000_000)
    assert parse_verdict(verdict_json(verdict), "1.0.1") == verdict
    again = new_verdict("1.0.1", "refused", "tampered", 1_796_000_000)
    assert again.judgement != verdict.judgement
    assert new_verdict("1.0.1", "installed", "ignored", 1).code == ""
    assert parse_verdict(encoded(), "1.0.1") == Verdict(
        "1.0.1", "refused", "tampered", 1_796_000_000, "0123456789abcdef"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        encoded(format=2),
        encoded(format=True),
        encoded(version="1.0.2"),  # not the file's version
        encoded(outcome="accepted"),
        encoded(outcome=1),
        encoded(code="Tampered!"),
        encoded(code=""),  # a refusal names its code
        encoded(outcome="installed"),  # installed with a code
        encoded(judged_at_s=-1),
        encoded(judged_at_s=1.5),
        encoded(judgement="0123"),
        encoded(judgement="0123456789ABCDEF"),
        encoded(judgement=...),  # a member missing
        encoded(extra=1),  # a member unknown
        b'{"format": 1, "format": 1}',  # a duplicate member
        encoded(code="a" * 49),
        b" " * (MAX_VERDICT_BYTES + 1) + encoded(),
    ],
)
def test_every_malformed_verdict_is_refused(data: bytes) -> None:
    with pytest.raises(VerdictMalformed):
        parse_verdict(data, "1.0.1")


def own_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "verdicts"
    directory.mkdir(mode=0o755)
    return directory


def test_root_writes_0644_and_keeps_only_the_newest(tmp_path: Path) -> None:
    directory = own_dir(tmp_path)
    for minor in range(KEEP_VERDICTS + 3):
        version = f"1.0.{minor}"
        write_verdict(directory, new_verdict(version, "installed", "", 1))
        os.utime(directory / f"{version}.json", ns=(minor * 10**9, minor * 10**9))
    names = sorted((path.name for path in directory.iterdir()), key=lambda n: int(n.split(".")[2]))
    assert names == [f"1.0.{minor}.json" for minor in range(3, KEEP_VERDICTS + 3)]
    assert (directory / "1.0.5.json").stat().st_mode & 0o777 == 0o644
    newest = read_verdict(directory, f"1.0.{KEEP_VERDICTS + 2}")
    assert newest is not None
    assert newest.outcome == "installed"


def test_root_writes_nothing_through_a_symlink_or_into_a_directory_not_its_own(
    tmp_path: Path,
) -> None:
    """The verdict directory swapped for a symlink to root's own files, or made writable by
    others: nothing is written, nothing pruned there."""
    precious = tmp_path / "opt-mvb"
    precious.mkdir(mode=0o755)
    (precious / "switch.json").write_text("{}")
    (tmp_path / "swapped").symlink_to(precious)
    with pytest.raises(VerdictDirUnsafe):
        write_verdict(tmp_path / "swapped", new_verdict("1.0.1", "installed", "", 1), keep=1)
    assert [path.name for path in precious.iterdir()] == ["switch.json"]
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(VerdictDirUnsafe):
        write_verdict(shared, new_verdict("1.0.1", "installed", "", 1))
    with pytest.raises(VerdictDirUnsafe):
        write_verdict(tmp_path / "absent", new_verdict("1.0.1", "installed", "", 1))
    assert list(shared.iterdir()) == []


def test_the_box_ignores_what_is_not_a_verdict(tmp_path: Path) -> None:
    """Absent, malformed, too big, a symlink, a directory: None (logged), never an error."""
    directory = own_dir(tmp_path)
    assert read_verdict(directory, "1.0.1") is None
    assert read_verdict(tmp_path / "absent", "1.0.1") is None
    (directory / "1.0.1.json").write_bytes(encoded(outcome="maybe"))
    assert read_verdict(directory, "1.0.1") is None
    (directory / "1.0.1.json").write_bytes(encoded() + b" " * MAX_VERDICT_BYTES)
    assert read_verdict(directory, "1.0.1") is None
    (directory / "1.0.1.json").unlink()
    (tmp_path / "elsewhere.json").write_bytes(encoded())
    (directory / "1.0.1.json").symlink_to(tmp_path / "elsewhere.json")
    assert read_verdict(directory, "1.0.1") is None
    (directory / "1.0.2.json").mkdir()
    assert read_verdict(directory, "1.0.2") is None
    assert read_verdict(directory, "../x") is None
    (directory / "1.0.3.json").write_bytes(encoded(version="1.0.3"))
    assert read_verdict(directory, "1.0.3") == parse_verdict(encoded(version="1.0.3"), "1.0.3")


def test_roots_verdict_as_the_boxs_outcome() -> None:
    """A code the page translates is kept; any other well-formed code is the general
    `release_refused` (the page has words for it)."""
    tampered = outcome_of(Verdict("1.0.1", "refused", "tampered", 1, "0" * 16))
    assert (tampered.outcome, tampered.code, tampered.by) == ("refused", "tampered", "root")
    unknown = outcome_of(Verdict("1.0.1", "refused", "no_such_code", 1, "0" * 16))
    assert unknown.code == "release_refused"
    assert unknown.code in reason_codes()
    assert "no_such_code" in unknown.reason
    for code in ("no_trust_anchor", "inbox_item_invalid", "release_not_previous"):
        assert code in reason_codes()
    installed = outcome_of(Verdict("1.0.1", "installed", "", 1, "0" * 16))
    assert (installed.outcome, installed.code, installed.by) == ("installed", "", "root")
    back = outcome_of(Verdict("0.9.0", "switch_back", "", 1, "0" * 16))
    assert back.outcome == "installed"
