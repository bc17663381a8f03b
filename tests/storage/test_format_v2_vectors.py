"""Version 2 files written by the version 2 writer (tests/data/evidence_v2, how: its
make_vectors.py) stay readable: a change that breaks them broke the format boxes write."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from storage.envelope import RecipientPrivateKey
from storage.errors import TooFewShares
from storage.reader import read_evidence

VECTORS = Path(__file__).resolve().parents[1] / "data" / "evidence_v2"
EXPECTED: dict[str, dict[str, Any]] = json.loads((VECTORS / "vectors.json").read_text())
HOLDERS = ("holder-a", "holder-b", "holder-c")


def keys(*names: str) -> list[RecipientPrivateKey]:
    return [RecipientPrivateKey.load(VECTORS / f"{name}.key") for name in names]


def media_of(name: str, *holders: str) -> bytes:
    media = io.BytesIO()
    report = read_evidence(
        io.BytesIO((VECTORS / name).read_bytes()), keys(*holders), media_out=media
    )
    assert (report.format_version, report.key_committed) == (2, True)
    assert report.header.threshold == EXPECTED[name]["threshold"]
    return media.getvalue()


@pytest.mark.parametrize("pair", list(itertools.combinations(HOLDERS, 2)))
def test_any_two_of_the_three_holders_read_the_four_eyes_vector(pair: tuple[str, str]) -> None:
    media = media_of("two-of-three.mvbe", *pair)
    assert hashlib.sha256(media).hexdigest() == EXPECTED["two-of-three.mvbe"]["media_sha256"]


@pytest.mark.parametrize("holder", HOLDERS)
def test_one_holder_of_the_four_eyes_vector_is_refused(holder: str) -> None:
    with pytest.raises(TooFewShares):
        media_of("two-of-three.mvbe", holder)


def test_the_one_key_vector_reads_with_its_key() -> None:
    media = media_of("one-key.mvbe", "holder-a")
    assert hashlib.sha256(media).hexdigest() == EXPECTED["one-key.mvbe"]["media_sha256"]
