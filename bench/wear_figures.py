"""Card wear: bytes written to the card per byte of evidence (issue 14 item 5). Pure figures.

`python -m bench.wear` (`make bench-wear`) records one camera at 4 Mbit/s through the box's own
storage code (bench/wear.py: evidence store, catalog, audit log, upload ledger, trusted
time, retention) onto labdisk, the project's emulated card, whose accounting counts every byte
written and every fsync per file class. This module turns those counters into the figures:

- **ratio** = bytes written to the mount (card and state directory together: every class
  below) / bytes of evidence (the media the camera's muxer handed to the store). The issue's
  target is `TARGET_RATIO`. The card alone is shown too: on a box whose state directory lives
  on internal flash, the audit log and the state files do not wear the card.
- **per hour**: a run records `footage_s` seconds of footage (not wall time: the workload runs
  as fast as the disk allows, driven by footage time). Every write of the workload is paced
  by footage (per segment, per file, per recording, per retention pass), so counts scale
  linearly: per hour = counted x 3600 / footage_s. What the store writes once at open
  (creating the catalog) is not counted (the counters are reset after it).
- **fsync pages**: labdisk counts bytes the file system received. A real card also rewrites a
  partly written 4 KiB page at each fsync of a file, and a directory block at each directory
  fsync; `FSYNC_PAGE_BYTES` per fsync is that floor (ext4's journal commit per fsync comes on
  top and is not modelled), shown as a second ratio.
- **endurance**: years until the card's rated bytes written (`CardRating`, an assumption
  stated with its source) are used up at this rate, recording around the clock.

Invariant: every figure is derived from the counters and the workload's footage, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

TARGET_RATIO: Final = 1.10
HOUR_S: Final = 3600
FSYNC_PAGE_BYTES: Final = 4096
TOTAL: Final = "total"  # labdisk's name for the sum over classes

# (name, glob) relative to the mount root, first match wins (labdisk/faults.py Accounting).
# The mount holds `card/` and `state/`, as the box's card and state directory.
WEAR_CLASSES: Final[tuple[tuple[str, str], ...]] = (
    ("evidence", "card/evidence/*.mvbe*"),
    ("sidecar", "card/evidence/*.json*"),  # and its tmp file `.<id>.json.<hex>.tmp`
    ("evidence dirs", "card/evidence*"),  # mkdir, rmdir and fsyncs of the recording folders
    # sqlite: every commit appends its pages to -wal; a checkpoint copies them into cache.db;
    # -shm is mmapped, and what labdisk sees of it is the kernel's writeback of its pages.
    ("catalog wal", "card/catalog/*-wal"),
    ("catalog shm", "card/catalog/*-shm"),
    ("catalog db", "card/catalog*"),  # cache.db, and the folder's fsyncs
    ("ledger wal", "card/uplink/*-wal"),
    ("ledger shm", "card/uplink/*-shm"),
    ("ledger db", "card/uplink*"),
    ("holds", "card/holds*"),
    ("card other", "card*"),
    ("audit log", "state/audit.jsonl"),
    ("audit shipping", "state/*audit-shipped*"),
    ("trusted time", "state/*trusted_time*"),
    ("state other", "state*"),
)
CARD_CLASSES: Final = frozenset(name for name, glob in WEAR_CLASSES if glob.startswith("card")) | {
    "other"
}  # "other": the mount root itself (fsyncs of `card/` and `state/` entries)


@dataclass(frozen=True)
class CardRating:
    """How much a card may be written in its life: an assumption, with where it comes from."""

    name: str
    tbw_bytes: int
    source: str


# SanDisk High Endurance 128 GB: rated for up to 10,000 hours of Full HD video, counted at
# 26 Mbit/s (the maker's datasheet, as remembered: not checked from this machine, which reaches
# no vendor site): 10,000 h x 3600 s x 26e6 / 8 B = 117 TB. Samsung's PRO Endurance 128 GB
# claims 43,800 hours (steves-digicams.com, 2018): the lower of the two is the assumption.
HIGH_ENDURANCE_128GB: Final = CardRating(
    name="128 GB high-endurance microSD",
    tbw_bytes=10_000 * HOUR_S * 26_000_000 // 8,
    source=(
        "SanDisk High Endurance 128 GB, rated up to 10,000 h of Full HD video at 26 Mbit/s "
        "(datasheet as remembered, not verified here) = 117 TB; an assumption"
    ),
)


@dataclass(frozen=True)
class ClassFigures:
    """One file class's counters, scaled to one hour of footage."""

    name: str
    bytes_per_h: float
    fsyncs_per_h: float
    dir_fsyncs_per_h: float
    metadata_ops_per_h: float


@dataclass(frozen=True)
class WearFigures:
    """The benchmark's result: per class and in total, per hour of one camera's footage."""

    footage_s: float
    evidence_bytes_per_h: float  # media handed to the store: the denominator
    classes: tuple[ClassFigures, ...]

    def _sum(self, names: frozenset[str] | None) -> ClassFigures:
        chosen = [c for c in self.classes if names is None or c.name in names]
        return ClassFigures(
            name=TOTAL if names is None else "card",
            bytes_per_h=sum(c.bytes_per_h for c in chosen),
            fsyncs_per_h=sum(c.fsyncs_per_h for c in chosen),
            dir_fsyncs_per_h=sum(c.dir_fsyncs_per_h for c in chosen),
            metadata_ops_per_h=sum(c.metadata_ops_per_h for c in chosen),
        )

    @property
    def total(self) -> ClassFigures:
        return self._sum(None)

    @property
    def card(self) -> ClassFigures:
        return self._sum(CARD_CLASSES)

    def ratio(self, of: ClassFigures | None = None) -> float:
        """Bytes written per byte of evidence (all classes unless `of` is given)."""
        return (of or self.total).bytes_per_h / self.evidence_bytes_per_h

    def ratio_with_fsync_pages(self, of: ClassFigures | None = None) -> float:
        """The ratio with `FSYNC_PAGE_BYTES` added per fsync and per directory fsync."""
        chosen = of or self.total
        pages = (chosen.fsyncs_per_h + chosen.dir_fsyncs_per_h) * FSYNC_PAGE_BYTES
        return (chosen.bytes_per_h + pages) / self.evidence_bytes_per_h

    def class_bytes_per_h(self, prefix: str) -> float:
        """Bytes per hour of the classes whose name starts with `prefix` ("catalog": all 3)."""
        return sum(c.bytes_per_h for c in self.classes if c.name.startswith(prefix))

    def overhead_bytes_per_h(self) -> float:
        """What is written beyond the evidence's own media bytes, per hour."""
        return self.total.bytes_per_h - self.evidence_bytes_per_h

    @property
    def target_met(self) -> bool:
        return self.ratio() <= TARGET_RATIO

    def endurance_years(self, rating: CardRating, of: ClassFigures | None = None) -> float:
        """Years of round-the-clock recording until `rating` is written (with fsync pages)."""
        chosen = of or self.total
        per_h = self.ratio_with_fsync_pages(chosen) * self.evidence_bytes_per_h
        return rating.tbw_bytes / per_h / (24 * 365.25)


def figures_from_stats(
    stats: Mapping[str, Mapping[str, int]], footage_s: float, evidence_bytes: int
) -> WearFigures:
    """Scale labdisk's `stats()["classes"]` of a run of `footage_s` seconds to one hour."""
    if footage_s <= 0 or evidence_bytes <= 0:
        raise ValueError("a wear run needs footage and evidence bytes")
    scale = HOUR_S / footage_s
    order = [name for name, _glob in WEAR_CLASSES] + ["other"]
    classes = tuple(
        ClassFigures(
            name=name,
            bytes_per_h=stats[name].get("bytes_written", 0) * scale,
            fsyncs_per_h=stats[name].get("fsyncs", 0) * scale,
            dir_fsyncs_per_h=stats[name].get("dir_fsyncs", 0) * scale,
            metadata_ops_per_h=stats[name].get("metadata_ops", 0) * scale,
        )
        for name in sorted(
            (n for n in stats if n != TOTAL), key=lambda n: order.index(n) if n in order else 99
        )
    )
    return WearFigures(footage_s, evidence_bytes * scale, classes)


def render(
    figures: WearFigures,
    rating: CardRating = HIGH_ENDURANCE_128GB,
    *,
    evidence_label: str = "media handed to the store",
) -> str:
    """The report as Markdown: per class, totals, ratio against the target, endurance."""
    evidence = figures.evidence_bytes_per_h
    lines = [
        f"footage: {figures.footage_s:.0f} s, "
        f"scaled to one hour (x {HOUR_S / figures.footage_s:.2f})",
        f"evidence ({evidence_label}): {evidence / 1e6:.1f} MB per hour",
        "",
        "| class | MB/h | per byte of evidence | fsyncs/h | dir fsyncs/h | metadata ops/h |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in (*figures.classes, figures.card, figures.total):
        name = f"**{row.name}**" if row.name in ("card", TOTAL) else row.name
        lines.append(
            f"| {name} | {row.bytes_per_h / 1e6:.3f} | {row.bytes_per_h / evidence:.5f} | "
            f"{row.fsyncs_per_h:.0f} | {row.dir_fsyncs_per_h:.0f} | {row.metadata_ops_per_h:.0f} |"
        )
    verdict = "met" if figures.target_met else "NOT met"
    card = figures.card
    lines += [
        "",
        f"write amplification (all classes): {figures.ratio():.4f}  "
        f"target <= {TARGET_RATIO:.2f}: {verdict}",
        f"write amplification (card only, state directory elsewhere): {figures.ratio(card):.4f}",
        f"with one {FSYNC_PAGE_BYTES} B page per fsync: {figures.ratio_with_fsync_pages():.4f} "
        f"(card only {figures.ratio_with_fsync_pages(card):.4f})",
        f"card rating assumed: {rating.name}, {rating.tbw_bytes / 1e12:.0f} TB written "
        f"({rating.source})",
        f"endurance at this rate, recording 24 h a day: {figures.endurance_years(rating):.1f} "
        f"years (card only {figures.endurance_years(rating, card):.1f})",
    ]
    return "\n".join(lines)


def render_comparison(runs: Mapping[str, WearFigures], *, baseline: str) -> str:
    """One line per run of the same workload: the sqlite classes, the ratios, against `baseline`."""
    base = runs[baseline]
    lines = [
        "| card | catalog MB/h | ledger MB/h | ratio | ratio with fsync pages "
        "| non-evidence bytes vs baseline | endurance (years, 24 h/day) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, figures in runs.items():
        lines.append(
            f"| {name} | {figures.class_bytes_per_h('catalog') / 1e6:.2f} | "
            f"{figures.class_bytes_per_h('ledger') / 1e6:.2f} | {figures.ratio():.4f} | "
            f"{figures.ratio_with_fsync_pages():.4f} | "
            f"{figures.overhead_bytes_per_h() / base.overhead_bytes_per_h():.2f} | "
            f"{figures.endurance_years(HIGH_ENDURANCE_128GB):.1f} |"
        )
    return "\n".join(lines)
