"""Retention and trusted time together, against a simulated world (pure parts only, no clock):
boots and power cuts, service restarts, monotonic clocks that drift, GPS fixes and back-office
Dates that tell the truth within their stated doubt, and a wall clock that says anything at
all. Whatever happens, no pass deletes an unattested file younger than the retention period in
true time, and trusted time always holds the truth.

The same decisions the shell makes (storage/store.py `apply_retention`, storage/trusted_time_io.py)
are made here through the same pure functions, in the same order."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import formatdate

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.models import FileRecord, FileState
from storage.retention import MS_PER_DAY, DeletionReason, RetentionPolicy, plan_retention
from storage.trusted_time import (
    GPS_LATENCY_MAX_MS,
    MONO_DRIFT_PPM,
    TrustedState,
    advance_floor,
    back_office_anchor,
    created_now,
    gps_anchor,
    observe,
    resolve_created,
    state_from_json,
    state_to_json,
    trusted_now,
)
from storage.trusted_time import Reading as ClockReading

START_MS = 1_800_000_000_000
HOUR_MS = 3_600_000


@dataclass
class World:
    """The truth, and the box's view of it."""

    policy: RetentionPolicy
    true_ms: int = START_MS
    boot: int = 0
    boot_start_ms: int = START_MS - HOUR_MS
    rate_ppm: int = 0
    state: TrustedState = field(default_factory=lambda: TrustedState("boot-0"))
    saved: str | None = None
    files: dict[str, FileRecord] = field(default_factory=dict)
    created_true_ms: dict[str, int] = field(default_factory=dict)
    expired: int = 0

    @property
    def boot_id(self) -> str:
        return f"boot-{self.boot}"

    def reading(self) -> ClockReading:
        elapsed_ms = self.true_ms - self.boot_start_ms
        return ClockReading(self.boot_id, elapsed_ms + elapsed_ms * self.rate_ppm // 1_000_000)

    def check_trust(self) -> None:
        now = trusted_now(self.state, self.reading())
        assert now.low_ms is not None
        assert now.low_ms <= self.true_ms, "low bound above the truth"
        assert now.high_ms is None or self.true_ms <= now.high_ms, "high bound below the truth"

    # -- events --

    def wait(self, ms: int) -> None:
        self.true_ms += ms

    def approach(self, index: int, offset_ms: int) -> None:
        """Wait until a file's true age is the retention period plus `offset_ms` (if still
        ahead): the boundaries are where a wrong rule would show."""
        if not self.files:
            return
        file_id = sorted(self.files)[index % len(self.files)]
        target_ms = self.created_true_ms[file_id] + self.policy.retention_ms + offset_ms
        self.true_ms = max(self.true_ms, target_ms)

    def power_cut(self, off_ms: int, rate_ppm: int) -> None:
        """The box is off for `off_ms`; a new boot with a new clock and nothing but the file."""
        self.true_ms += off_ms
        self.boot += 1
        self.boot_start_ms = self.true_ms
        self.rate_ppm = rate_ppm
        self.state = self._loaded().for_boot(self.boot_id)

    def restart(self) -> None:
        """The service restarts in the same boot: it has what it last saved."""
        self.state = self._loaded().for_boot(self.boot_id)

    def _loaded(self) -> TrustedState:
        return TrustedState(self.boot_id) if self.saved is None else state_from_json(self.saved)

    def save(self) -> None:
        self.saved = state_to_json(self.state)

    def gps_fix(self, latency_ms: int) -> None:
        self.state, _ = observe(self.state, gps_anchor(self.true_ms - latency_ms, self.reading()))

    def back_office(self, rtt_ms: int, server_at_ms: int) -> None:
        """A probe answered by the back office `server_at_ms` into its `rtt_ms`."""
        written_true_ms = self.true_ms - rtt_ms + min(server_at_ms, rtt_ms)
        date = formatdate(written_true_ms // 1000, usegmt=True)
        anchor = back_office_anchor(date, self.reading(), rtt_ms)
        assert anchor is not None
        self.state, _ = observe(self.state, anchor)

    def record(self, wall_ms: int) -> None:
        file_id = f"f{len(self.files):03d}"
        reading = self.reading()
        created = created_now(self.state, reading)
        self.files[file_id] = FileRecord(
            file_id=file_id,
            recording_id="r",
            file_seq=0,
            created_at_ms=wall_ms,  # the wall clock: anything
            state=FileState.SEALED,
            size_bytes=1,
            sha256_hex="a" * 64,
            boot_id=reading.boot_id,
            created_mono_ms=reading.mono_ms,
            trusted_created_low_ms=None if created is None else created.low_ms,
            trusted_created_high_ms=None if created is None else created.high_ms,
            trusted_created_by=None if created is None else created.by,
        )
        self.created_true_ms[file_id] = self.true_ms

    def retention_pass(self) -> None:
        now = trusted_now(self.state, self.reading())
        for file_id, record in self.files.items():
            if record.trusted_created_high_ms is None and record.state is not FileState.DELETED:
                created = resolve_created(record.boot_id, record.created_mono_ms, self.state, now)
                if created is not None:
                    self.files[file_id] = record.with_changes(
                        trusted_created_low_ms=created.low_ms,
                        trusted_created_high_ms=created.high_ms,
                        trusted_created_by=created.by,
                    )
        plan = plan_retention(self.files.values(), now, self.policy)
        for deletion in plan.deletions:
            assert deletion.reason is DeletionReason.EXPIRED  # nothing here is attested
            true_age_ms = self.true_ms - self.created_true_ms[deletion.file_id]
            assert true_age_ms > self.policy.retention_ms, (
                f"{deletion.file_id} deleted at a true age of {true_age_ms / MS_PER_DAY:.3f} days"
            )
            self.files[deletion.file_id] = self.files[deletion.file_id].with_changes(
                state=FileState.DELETED
            )
            self.expired += 1
        self.state = advance_floor(self.state, now)


ACTIONS = {
    "wait": "wait",
    "approach": "approach",
    "power_cut": "power_cut",
    "restart": "restart",
    "save": "save",
    "gps": "gps_fix",
    "office": "back_office",
    "record": "record",
    "pass": "retention_pass",
}
RATES = st.integers(-(MONO_DRIFT_PPM - 50), MONO_DRIFT_PPM - 50)
WAITS = st.one_of(
    st.integers(0, 60_000),
    st.integers(0, 2 * HOUR_MS),
    st.integers(0, 10 * MS_PER_DAY),
    st.integers(20, 45).map(lambda d: d * MS_PER_DAY),
)
EVENTS = st.one_of(
    st.tuples(st.just("wait"), WAITS),
    st.tuples(
        st.just("approach"),
        st.integers(0, 50),
        st.one_of(st.integers(-5_000, 5_000), st.integers(-3 * HOUR_MS, 3 * HOUR_MS)),
    ),
    st.tuples(st.just("power_cut"), st.integers(0, 30 * MS_PER_DAY), RATES),
    st.tuples(st.just("restart")),
    st.tuples(st.just("save")),
    st.tuples(st.just("gps"), st.integers(0, GPS_LATENCY_MAX_MS)),
    st.tuples(st.just("office"), st.integers(1, 3000), st.integers(0, 3000)),
    st.tuples(st.just("record"), st.integers(0, 2 * START_MS)),
    st.tuples(st.just("pass")),
)


@settings(max_examples=1000, deadline=None)
@given(st.integers(1, 28), RATES, st.lists(EVENTS, max_size=60))
def test_no_unattested_file_goes_before_its_time_whatever_the_clocks_do(
    days: int, rate_ppm: int, events: list[tuple[object, ...]]
) -> None:
    world = World(RetentionPolicy(retention_days=days), rate_ppm=rate_ppm)
    for name, *args in events:
        getattr(world, ACTIONS[str(name)])(*args)
        world.check_trust()
    world.retention_pass()


def test_with_gps_a_file_goes_soon_after_its_time() -> None:
    """Liveness: an anchored box deletes an expired unattested file within a minute of it."""
    world = World(RetentionPolicy(retention_days=28), rate_ppm=300)
    world.gps_fix(500)
    world.record(wall_ms=0)  # a wall clock in 1970: irrelevant
    world.wait(28 * MS_PER_DAY - HOUR_MS)
    world.gps_fix(500)
    world.retention_pass()
    assert world.expired == 0
    world.wait(HOUR_MS + 60_000)
    world.gps_fix(500)
    world.retention_pass()
    assert world.expired == 1


def test_a_file_recorded_before_the_time_was_known_is_dated_by_the_first_fix() -> None:
    world = World(RetentionPolicy(retention_days=28))
    world.record(wall_ms=START_MS - 40 * MS_PER_DAY)  # the clock stood 40 days behind
    world.retention_pass()
    assert world.files["f000"].trusted_created_high_ms is None  # no anchor yet: kept
    world.wait(10 * 60_000)
    world.gps_fix(200)
    world.retention_pass()
    record = world.files["f000"]
    assert record.trusted_created_by == "same_boot"
    assert record.state is FileState.SEALED
    world.wait(28 * MS_PER_DAY)
    world.gps_fix(200)
    world.retention_pass()
    assert world.expired == 1


def test_after_a_power_cut_without_an_anchor_the_age_counts_from_the_next_one() -> None:
    """A file recorded in a boot that never learnt the time, then a power cut: its age counts
    from when the next boot learns the time (the safe side; docs/retention.md)."""
    world = World(RetentionPolicy(retention_days=28))
    world.record(wall_ms=0)
    world.power_cut(off_ms=5 * MS_PER_DAY, rate_ppm=0)
    world.gps_fix(100)
    world.retention_pass()
    assert world.files["f000"].trusted_created_by == "seen"
    world.wait(28 * MS_PER_DAY)
    world.gps_fix(100)
    world.retention_pass()
    assert world.expired == 0  # 33 days old in truth, 28 since it was seen: not yet
    world.wait(60_000)
    world.gps_fix(100)
    world.retention_pass()
    assert world.expired == 1
