"""The card-wear benchmark (bench/wear.py) computes its figures right and runs on labdisk.

The figures: a hand-made set of counters gives known ratios. The run: 30 s of footage through
the box's storage code onto a real labdisk mount (root, /dev/fuse, fuse3, as tests/labdisk),
once on a card whose databases have 4 KiB pages and once on a new card: every class the issue
names is written, the figures hold together, and the new card's sqlite files take fewer bytes
(the reduction bench/wear.py reports). The long run stays in `make bench-wear`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.wear import NEW_CARD, OLD_CARD, Workload, run
from bench.wear_figures import HIGH_ENDURANCE_128GB, TARGET_RATIO, figures_from_stats, render
from tests.labdisk.conftest import fuse_ready


def _counters(bytes_written: int, fsyncs: int = 0) -> dict[str, int]:
    return {"bytes_written": bytes_written, "fsyncs": fsyncs, "dir_fsyncs": 0, "metadata_ops": 0}


def test_figures_scale_a_short_run_to_an_hour_and_judge_the_target() -> None:
    stats = {
        "evidence": _counters(1_000_000, fsyncs=10),
        "catalog wal": _counters(50_000, fsyncs=5),
        "audit log": _counters(30_000, fsyncs=5),  # state directory: not the card
        "total": _counters(1_080_000, fsyncs=20),
    }
    figures = figures_from_stats(stats, footage_s=360, evidence_bytes=1_000_000)
    assert figures.evidence_bytes_per_h == 10_000_000  # x 10: 360 s to 3600 s
    assert figures.total.bytes_per_h == 10_800_000
    assert figures.ratio() == pytest.approx(1.08)
    assert figures.ratio(figures.card) == pytest.approx(1.05)
    assert figures.target_met
    assert figures.ratio_with_fsync_pages() == pytest.approx((10_800_000 + 200 * 4096) / 1e7)
    years = HIGH_ENDURANCE_128GB.tbw_bytes / (figures.ratio_with_fsync_pages() * 1e7) / 8766
    assert figures.endurance_years(HIGH_ENDURANCE_128GB) == pytest.approx(years)
    over = figures_from_stats(
        {**stats, "catalog wal": _counters(150_000)}, footage_s=360, evidence_bytes=1_000_000
    )
    assert over.ratio() == pytest.approx(1.18)
    assert not over.target_met
    assert "NOT met" in render(over)
    assert "NOT met" not in render(figures)


def test_figures_refuse_a_run_without_footage() -> None:
    with pytest.raises(ValueError, match="footage"):
        figures_from_stats({"total": _counters(1)}, footage_s=0, evidence_bytes=1)


def test_a_short_run_on_labdisk_counts_every_writer_and_small_pages_write_less(
    tmp_path: Path,
) -> None:
    if not fuse_ready():
        pytest.fail("the wear benchmark needs root, /dev/fuse and fusermount3 (apt fuse3)")
    workload = Workload(footage_s=30, file_s=10, recording_s=20, chunk_bytes=256 * 1024)
    old = run(workload, tmp_path / "old", card=OLD_CARD)
    new = run(workload, tmp_path / "new", card=NEW_CARD)
    for result in (old, new):
        assert result.evidence_bytes == 30 * 4_000_000 // 8
        assert result.files_sealed == 3
        assert result.files_deleted == 3
        written = {name: c["bytes_written"] for name, c in result.stats.items()}
        for name in ("evidence", "sidecar", "catalog wal", "ledger wal", "audit log"):
            assert written.get(name, 0) > 0, name
        figures = result.figures()
        assert 1.0 < figures.ratio() <= TARGET_RATIO
        assert figures.total.bytes_per_h == pytest.approx(
            result.stats["total"]["bytes_written"] * 120
        )
    old_f, new_f = old.figures(), new.figures()
    # Same footage, same evidence bytes; the sqlite files shrink (1 KiB pages, not 4 KiB).
    assert new_f.class_bytes_per_h("evidence") == old_f.class_bytes_per_h("evidence")
    assert new_f.class_bytes_per_h("catalog") < old_f.class_bytes_per_h("catalog") / 2
    assert new_f.class_bytes_per_h("ledger") < old_f.class_bytes_per_h("ledger") / 2
