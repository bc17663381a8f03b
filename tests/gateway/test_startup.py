"""The start-up checks of `mvb run`: the card (present, mounted, writable, only the box's own
files) and the clock against GPS."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.startup import (
    CardUnusable,
    check_card,
    classify,
    clock_offset_alarm,
    is_own_file,
)
from storage.card_health import CardCondition
from storage.card_probe import PROBE_NAME
from storage.evidence_format import MAGIC
from tests.evidence_helpers import mounted_tmpfs

RID = "0" * 32
FID = "1" * 32


@pytest.mark.parametrize(
    ("relative", "header"),
    [
        (f"evidence/{RID}/{FID}.mvbe", MAGIC),
        (f"evidence/{RID}/{FID}.mvbe.part", MAGIC),
        (f"evidence/{RID}/{FID}.mvbe.part", b""),  # header never durable: recovery discards it
        (f"evidence/{RID}/{FID}.mvbe.part", MAGIC[:3]),  # cut inside the header
        (f"evidence/{RID}/{FID}.json", b"{"),
        (f"evidence/{RID}/{FID}.json.tmp", b"{"),
        ("catalog/cache.db", b"SQLite format 3"),
        ("holds/holds.json", b"{"),
        ("holds/holds.json.broken-1790000000000", b"{"),
        (PROBE_NAME, b"probe"),
    ],
)
def test_the_box_s_own_files_are_recognised(relative: str, header: bytes) -> None:
    assert is_own_file(Path(relative), header)


@pytest.mark.parametrize(
    ("relative", "header"),
    [
        ("DCIM/clip.mp4", b"\x00\x00\x00\x18ftyp"),  # a stray plaintext video
        (f"evidence/{RID}/{FID}.mvbe", b"\x47\x40\x00\x10"),  # MPEG-TS where evidence should be
        (f"evidence/{RID}/{FID}.mvbe.part", b"\x47"),
        (f"evidence/{RID}/notes.txt", b"hello"),
        (f"evidence/{FID}.mvbe", MAGIC),  # not inside a recording folder
        ("evidence", MAGIC),
        ("holds/notes.txt", b"hello"),
        ("holds.json", b"{"),
    ],
)
def test_anything_else_is_foreign(relative: str, header: bytes) -> None:
    assert not is_own_file(Path(relative), header)


def test_classify_lists_foreign_files_sorted() -> None:
    report = classify(
        [
            (Path("z.mp4"), b""),
            (Path(f"evidence/{RID}/{FID}.mvbe"), MAGIC),
            (Path("a.txt"), b""),
        ]
    )
    assert report.foreign_files == ("a.txt", "z.mp4")


def test_a_card_with_a_stray_file_is_usable_and_reports_it(tmp_path: Path) -> None:
    card = tmp_path / "card"
    (card / "evidence" / RID).mkdir(parents=True)
    (card / "evidence" / RID / f"{FID}.mvbe").write_bytes(MAGIC + b"rest")
    (card / "holiday.mp4").write_bytes(b"plaintext")
    report = check_card(card, require_mount=False)
    assert report.foreign_files == ("holiday.mp4",)
    assert (card / "holiday.mp4").exists(), "never deleted: it may be someone's evidence"
    assert not (card / PROBE_NAME).exists()


def test_a_missing_card_folder_is_made_on_a_development_machine(tmp_path: Path) -> None:
    assert check_card(tmp_path / "new" / "card", require_mount=False).foreign_files == ()
    assert (tmp_path / "new" / "card").is_dir()


def test_a_card_folder_that_cannot_be_made_is_unusable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CardUnusable, match="cannot be made"):
        check_card(tmp_path / "file" / "card", require_mount=False)


def test_without_a_mounted_card_nothing_is_recorded_onto_internal_flash(tmp_path: Path) -> None:
    (tmp_path / "card").mkdir()
    with pytest.raises(CardUnusable, match="no card is mounted") as refused:
        check_card(tmp_path / "card", require_mount=True)
    assert list((tmp_path / "card").iterdir()) == [], "nothing written to the bare folder"
    assert refused.value.condition is CardCondition.MISSING


@pytest.mark.root
def test_a_mounted_card_is_accepted_and_a_read_only_one_refused(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "card", "1m") as card:
        assert check_card(card, require_mount=True).foreign_files == ()
        subprocess.run(["mount", "-o", "remount,ro", str(card)], check=True)
        with pytest.raises(CardUnusable, match="not writable") as refused:
            check_card(card, require_mount=True)
        assert refused.value.condition is CardCondition.READ_ONLY  # the alarm degraded mode shows


@pytest.mark.parametrize(
    ("offset_ms", "alarmed"),
    [(None, False), (0.0, False), (1999.0, False), (-1999.0, False), (2000.0, True), (-9e6, True)],
)
def test_the_clock_alarm_starts_at_two_seconds_off_gps(
    offset_ms: float | None, alarmed: bool
) -> None:
    alarm = clock_offset_alarm(offset_ms)
    assert (alarm is not None) == alarmed
    if alarm is not None:
        assert "off GPS time" in alarm
