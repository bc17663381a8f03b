"""The soak's settings and constants (links, cameras, caps, rates, timeouts), its files'
paths, and what a run counts and reports (tests/soak/soak_rig.py is the rig).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from labdisk.durability import Mode
from tests.soak.oracle import AuditFacts, Totals

MVB = Path(sys.executable).with_name("mvb")
MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
SOAK_BOX_ID = "MVB-TEST-0001"  # the CN of the test PKI's client certificate the box uses
SERVING = re.compile(r"serving https://127\.0\.0\.1:(?P<port>\d+)/files/ from .*")

WIFI_SOURCE = "127.0.0.2"
LTE_SOURCE = "127.0.0.3"
CELLULAR_LINKS = frozenset({"lte"})
CAMERAS = ("dashcam", "bodycam-left", "bodycam-right", "rearcam")
CLASSES_BY_SOURCE = {"officer": "P1", "patrol": "P2", "crash": "P0"}
LTE_CAP_BYTES = 4_000_000
LTE_P0_RESERVE_BYTES = 3_850_000  # P1 may use 150 kB: a recording or two, then WiFi only
WIFI_RATE_BYTES_PER_S = 600_000.0
SLOW_WIFI_RATE_BYTES_PER_S = 25_000.0  # 200 kbit/s: a weak hotspot, EDGE-like
LTE_RATE_BYTES_PER_S = 150_000.0

POLL_S = 0.1
START_TIMEOUT_S = 60.0
STATE_TIMEOUT_S = 20.0
API_TIMEOUT_S = 10.0
SLOW_CARD_FACTOR = 3.0
"""On labdisk every card write goes through a FUSE daemon in Python: on this shared 2-core
machine a start or a seal (fsyncs behind the capture lock) kept `POST /api/record/stop` from
answering for over 10 s twice in long soaks. The rig waits longer there; how the box copes with
a card that stalls is issue 14 item 3's (the dying card), not this oracle's."""
UPLOAD_TRAFFIC_BYTES = 16 * 1024  # more than a TLS handshake and a probe: file bytes flow
UPLOAD_WAIT_S = 8.0  # a little over the uplink's 5 s queue refresh
IDLE_WAIT_S = 15.0
EPISODE_WAIT_S = 40.0
CYCLE_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 30.0
DRAIN_REPORT_S = 5.0
MAX_LOGGED_ERRORS = 10


@dataclass(frozen=True, slots=True)
class SoakSettings:
    seed: int
    min_kills: int = 22
    minutes: float = 0.0  # keep cycling until this much wall time has passed (the long soak)
    drain_timeout_s: float = 180.0
    power: Mode | None = None  # a labdisk cut after every SIGKILL, in this mode (None: none)


@dataclass(frozen=True, slots=True)
class SoakPaths:
    root: Path
    on_labdisk: bool = False

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def box(self) -> Path:
        return self.root / "box"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def decrypted(self) -> Path:
        return self.root / "decrypted"

    @property
    def data(self) -> Path:
        """Where the card and the state directory live: the labdisk mount, or the box's folder."""
        return self.root / "disk" if self.on_labdisk else self.box

    @property
    def disk_backing(self) -> Path:
        return self.root / "disk-backing"

    @property
    def state(self) -> Path:
        return self.data / "state"

    @property
    def card(self) -> Path:
        return self.data / "card"

    @property
    def audit(self) -> Path:
        return self.state / "audit.jsonl"

    @property
    def clock_offset(self) -> Path:
        """The box's wall-clock offset for libfaketime ("+0", "+40d", "-40d")."""
        return self.root / "clock-offset"

    @property
    def device_pub(self) -> Path:
        """The box's public device key as the back office keeps it (taken at the first start)."""
        return self.root / "device_key.pub.pem"


@dataclass
class SoakStats:
    cycles: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    disk_cuts: int = 0
    disk_bytes_lost: int = 0
    disk_files_restored: int = 0
    disk_entries_reverted: int = 0
    startup_s: list[float] = field(default_factory=list)
    back_office_restarts: int = 0
    back_office_crashes: int = 0
    wifi_flaps: int = 0
    wifi_down_cycles: int = 0
    wifi_slow_cycles: int = 0
    clock_steps: list[str] = field(default_factory=list)
    lte_budget_used_up_seen: bool = False
    lte_p0_after_budget: bool = False
    drain_s: float = 0.0
    wall_s: float = 0.0


@dataclass
class SoakReport:
    seed: int
    stats: SoakStats
    totals: Totals
    facts: AuditFacts
    problems: list[str]
    audit_verify: str
    lte_bytes: int
    wifi_bytes: int
    lte_file_bytes: int

    def summary(self) -> str:
        s, t = self.stats, self.totals
        startup = sorted(s.startup_s)
        kills = ", ".join(f"{phase} {n}" for phase, n in sorted(s.kills.items()))
        return "\n".join(
            [
                f"soak seed {self.seed}: {s.cycles} cycles in {s.wall_s:.0f} s",
                f"  power cuts (SIGKILL): {sum(s.kills.values())} ({kills})",
                f"  labdisk cuts: {s.disk_cuts}; thrown away: {s.disk_bytes_lost:,} bytes not "
                f"durable, {s.disk_files_restored} files restored, {s.disk_entries_reverted} "
                "directory entries reverted",
                f"  mvb run start-up: median {startup[len(startup) // 2]:.2f} s, "
                f"max {startup[-1]:.2f} s (spawn to API answering and gateway.started audited)",
                f"  recordings: {len(self.facts.trigger_of)}; files recorded: "
                f"{t.recorded_files} ({t.interrupted_files} recovered after a cut)",
                f"  media seconds recorded: {t.recorded_s:.1f}; arrived: "
                f"{t.arrived_s:.1f} in {t.arrived_files} files, {t.arrived_bytes:,} bytes",
                f"  through the proxy: WiFi {self.wifi_bytes:,} bytes, LTE {self.lte_bytes:,} "
                f"bytes; files completed over LTE: {self.lte_file_bytes:,} bytes (cap "
                f"{LTE_CAP_BYTES:,}, P0 reserve {LTE_P0_RESERVE_BYTES:,})",
                f"  WiFi: {s.wifi_flaps} flaps, {s.wifi_down_cycles} cycles without WiFi, "
                f"{s.wifi_slow_cycles} at 200 kbit/s; LTE "
                f"budget used up seen: {s.lte_budget_used_up_seen}, P0 over LTE after: "
                f"{s.lte_p0_after_budget}",
                f"  the box's wall clock stepped {len(s.clock_steps)} time(s): "
                f"{' '.join(s.clock_steps) or 'never'}",
                f"  back office restarts: {s.back_office_restarts} (of which SIGKILL: "
                f"{s.back_office_crashes})",
                f"  time to drain the card at the end: {s.drain_s:.1f} s",
                f"  audit: {self.facts.events} entries, {self.facts.starts} starts, "
                f"{self.facts.torn_tails_repaired} torn tails repaired; {self.audit_verify}",
                f"  problems: {len(self.problems)}",
                *(f"    - {problem}" for problem in self.problems),
            ]
        )
