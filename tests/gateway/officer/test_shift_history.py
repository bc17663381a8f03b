"""Who held which bodycam when (gateway/officer/shift_history.py), its file, and the import's
attribution by it: pure parts and the file, no box."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.durable import atomic_write_bytes
from gateway.importer import ClipError, attribute_clip, recorded_at_ms
from gateway.officer.shift_history import (
    KEEP_MS,
    MAX_HOLDINGS,
    Holding,
    after_change,
    bodycam_tag,
    holder_at,
    tag_key,
)
from gateway.officer.shift_history_io import HISTORY_FILE, load_history, save_history
from storage.devicekey import DeviceKey
from storage.envelope import RecipientPrivateKey
from storage.sealed import open_sealed, seal

KEY = bytes(range(32))


def sealed(officer_id: str, recipient: RecipientPrivateKey) -> str:
    return seal(officer_id.encode(), "officer_id", (recipient.public(),))


def officer_at(history: tuple[Holding, ...], tag: str, at_ms: int) -> str | None:
    holding = holder_at(history, tag, at_ms)
    return None if holding is None else holding.officer_sealed


def test_a_change_closes_every_holding_and_opens_the_new_shifts(
    recipient: RecipientPrivateKey,
) -> None:
    a, b = sealed("BOA-1", recipient), sealed("BOA-2", recipient)
    bc1, bc2 = bodycam_tag(KEY, "BC-1"), bodycam_tag(KEY, "BC-2")
    started = after_change((), [(bc1, a)], 1000)
    duo = after_change(started, [(bc1, a), (bc2, b)], 2000)
    swapped = after_change(duo, [(bc1, b), (bc2, a)], 3000)  # they swap bodycams
    ended = after_change(swapped, [], 4000)
    assert [h for h in ended if h.to_ms is None] == []
    assert holder_at(ended, bc1, 999) is None
    assert holder_at(ended, bc1, 1000) == Holding(bc1, a, 1000, 2000)
    assert officer_at(ended, bc1, 2500) == a
    assert officer_at(ended, bc1, 3000) == b
    assert officer_at(ended, bc2, 3999) == a
    assert holder_at(ended, bc2, 4000) is None, "a holding ends when the shift does"
    assert holder_at(ended, bodycam_tag(KEY, "BC-3"), 2500) is None
    wrong_clock = after_change(ended, [(bc1, b)], 1500)  # the wall clock went back
    assert officer_at(wrong_clock, bc1, 1600) == b


def test_old_holdings_are_dropped_and_the_history_is_bounded(
    recipient: RecipientPrivateKey,
) -> None:
    a = sealed("BOA-1", recipient)
    history = after_change((), [(bodycam_tag(KEY, "BC-1"), a)], 0)
    history = after_change(history, [], 10)
    assert len(after_change(history, [], 10 + KEEP_MS)) == 1
    assert after_change(history, [], 11 + KEEP_MS) == ()
    many = tuple(Holding(bodycam_tag(KEY, f"BC-{i}"), a, i, i + 1) for i in range(MAX_HOLDINGS))
    bounded = after_change(many, [(bodycam_tag(KEY, "BC-new"), a)], MAX_HOLDINGS)
    assert len(bounded) == MAX_HOLDINGS
    assert bounded[-1].tag == bodycam_tag(KEY, "BC-new"), "the newest are kept"


def test_the_tag_key_is_the_device_keys_alone() -> None:
    one, other = DeviceKey.generate(), DeviceKey.generate()
    assert tag_key(one.sign) == tag_key(one.sign), "the same key every start, no file"
    assert tag_key(one.sign) != tag_key(other.sign)
    assert bodycam_tag(tag_key(one.sign), "BC-1") != bodycam_tag(tag_key(other.sign), "BC-1")


def test_the_file_round_trips_and_a_damaged_one_names_nobody(
    tmp_path: Path, recipient: RecipientPrivateKey
) -> None:
    assert load_history(tmp_path) == ()
    history = after_change((), [(bodycam_tag(KEY, "BC-1"), sealed("BOA-1", recipient))], 5)
    save_history(tmp_path, history)
    assert load_history(tmp_path) == history
    text = (tmp_path / HISTORY_FILE).read_text()
    assert "BOA-1" not in text
    assert "BC-1" not in text
    good = json.loads(text)
    plain = {**good["holdings"][0], "officer_sealed": "BOA-1"}  # a plain id is refused
    for damaged in (
        b"{",
        b"[]",
        json.dumps({**good, "version": 9}).encode(),
        json.dumps({"version": 1, "holdings": [plain]}).encode(),
        json.dumps({"version": 1, "holdings": [{**good["holdings"][0], "tag": "BC-1"}]}).encode(),
        json.dumps({"version": 1, "holdings": [{**good["holdings"][0], "to_ms": "x"}]}).encode(),
    ):
        atomic_write_bytes(tmp_path / HISTORY_FILE, damaged)
        assert load_history(tmp_path) == (), damaged


def test_an_import_is_attributed_by_the_history(
    tmp_path: Path, recipient: RecipientPrivateKey
) -> None:
    device = DeviceKey.generate()
    key = tag_key(device.sign)
    history = after_change((), [(bodycam_tag(key, "BC-1"), sealed("BOA-1", recipient))], 1000)
    save_history(tmp_path, after_change(history, [], 5000))
    clip = tmp_path / "clip.ts"
    clip.write_bytes(b"not media: the time comes from --recorded-at or the file")
    given = attribute_clip(tmp_path, device.sign, clip, "BC-1", 2000)
    assert open_sealed(given.facts["officer_id_sealed"], recipient, "officer_id") == b"BOA-1"
    assert (given.facts["clip_time_ms"], given.facts["clip_time_source"]) == (2000, "given")
    later = attribute_clip(tmp_path, device.sign, clip, "BC-1", 6000)
    assert later.facts["officer_id_sealed"] is None
    assert "no officer held it" in later.note
    by_file = attribute_clip(tmp_path, device.sign, clip, "BC-1", None)
    assert by_file.facts["clip_time_source"] == "file_mtime"
    stranger = attribute_clip(tmp_path, DeviceKey.generate().sign, clip, "BC-1", 2000)
    assert stranger.facts["officer_id_sealed"] is None, "another box's key finds no tag"
    with pytest.raises(ClipError, match="serial must match"):
        attribute_clip(tmp_path, device.sign, clip, "../x", 2000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-06T10:00:00Z", 1_796_551_200_000),
        ("2026-12-06T11:00:00.250+01:00", 1_796_551_200_250),
    ],
)
def test_recorded_at_is_iso_8601_with_a_zone(text: str, expected: int) -> None:
    assert recorded_at_ms(text) == expected


@pytest.mark.parametrize("text", ["2026-12-06 10:00", "yesterday", ""])
def test_a_recorded_at_without_a_zone_or_not_a_time_is_refused(text: str) -> None:
    with pytest.raises(ClipError, match=r"zone|ISO 8601"):
        recorded_at_ms(text)
