"""A rollout's progress and the canary's health gate from health reports
(backoffice/rollout_progress.py)."""

from __future__ import annotations

from typing import Any

from backoffice.fleet_health import BoxHealth
from backoffice.rollout import Event, Phase, Rollout, Signed
from backoffice.rollout_progress import canary_healthy, progress

NOW_MS = 10_000_000
STALE_MS = 900_000


def rollout() -> Rollout:
    planned = Rollout(
        "1.4.0-h2o", "1.4.0", "1.3.0", "h2o",
        ("MVB-0001", "MVB-0002", "MVB-0003", "MVB-0004"), ("MVB-0001", "MVB-0002"), 50,
        Phase.PLANNED, NOW_MS - 60_000,
    )  # fmt: skip
    return planned.after(
        Event.START_CANARY,
        NOW_MS - 60_000,
        (
            Signed("boxes/MVB-0001.toml", 5, ("MVB-0001",), "1.4.0"),
            Signed("boxes/MVB-0002.toml", 6, ("MVB-0002",), "1.4.0"),
        ),
    )


def report(box: str, version: str, *, age_ms: int = 1_000, **health: Any) -> BoxHealth:
    facts: dict[str, Any] = {
        "software_version": version,
        "alarms": [],
        "config_applied_serial": 5 if box == "MVB-0001" else 6,
        "config_last_outcome": "applied",
    }
    return BoxHealth(box, NOW_MS - age_ms, {**facts, **health})


def test_each_box_in_one_bucket_stale_ones_named() -> None:
    state = progress(
        rollout(),
        [
            report("MVB-0001", "1.4.0"),
            report("MVB-0002", "1.3.0", alarms=["release_rolled_back", "gps_no_fix"]),
            report("MVB-0003", "1.3.0", age_ms=STALE_MS + 1),
        ],
        NOW_MS,
        STALE_MS,
    )
    buckets = {b.box_id: (b.bucket, b.stale) for b in state.boxes}
    assert buckets == {
        "MVB-0001": ("on_version", False),
        "MVB-0002": ("failed", False),
        "MVB-0003": ("waiting", True),
        "MVB-0004": ("waiting", True),  # no report at all
    }
    assert state.stale == ("MVB-0003", "MVB-0004")
    summary = state.to_json_object()
    assert (summary["targeted"], summary["on_version"], summary["failed"]) == (4, 1, 1)
    assert summary["waiting"] == 2
    assert "release_rolled_back" in state.boxes[1].reason
    healthy, problems = canary_healthy(rollout(), state)
    assert not healthy
    assert problems == ["MVB-0002 failed: rolled back (release_rolled_back)"]


def test_a_refused_document_fails_with_its_reason_a_deferred_one_waits() -> None:
    refused = report(
        "MVB-0002", "1.3.0", config_applied_serial=4, config_last_outcome="rolled back: camera"
    )
    deferred = report(
        "MVB-0001", "1.3.0", config_applied_serial=4, config_last_outcome="deferred: no camera"
    )
    state = progress(rollout(), [refused, deferred], NOW_MS, STALE_MS)
    assert (state.boxes[1].bucket, state.boxes[1].reason) == (
        "failed",
        "refused: rolled back: camera",
    )
    assert state.boxes[0].bucket == "waiting"
    assert "serial 5" in state.boxes[0].reason


def test_the_gate_opens_only_on_fresh_reports_of_the_version_from_every_canary_box() -> None:
    r = rollout()
    healthy_reports = [report("MVB-0001", "1.4.0"), report("MVB-0002", "1.4.0")]
    assert canary_healthy(r, progress(r, healthy_reports, NOW_MS, STALE_MS)) == (True, [])

    before_start = [report("MVB-0001", "1.4.0"), report("MVB-0002", "1.4.0", age_ms=120_000)]
    healthy, problems = canary_healthy(r, progress(r, before_start, NOW_MS, STALE_MS))
    assert not healthy
    assert problems == ["MVB-0002 has not reported since the rollout started"]

    one_waits = [report("MVB-0001", "1.4.0"), report("MVB-0002", "1.3.0")]
    healthy, problems = canary_healthy(r, progress(r, one_waits, NOW_MS, STALE_MS))
    assert not healthy
    assert problems[0].startswith("MVB-0002 waits")

    stale = [report("MVB-0001", "1.4.0"), report("MVB-0002", "1.4.0", age_ms=STALE_MS + 1)]
    assert canary_healthy(r, progress(r, stale, NOW_MS, STALE_MS))[1] == ["MVB-0002 is stale"]
    assert not progress(r, healthy_reports, NOW_MS, STALE_MS).all_on_version, "two still wait"


def test_a_box_that_refused_the_pinned_release_fails() -> None:
    state = progress(
        rollout(),
        [report("MVB-0001", "1.3.0", alarms=["release_refused"]), report("MVB-0002", "1.4.0")],
        NOW_MS,
        STALE_MS,
    )
    buckets = {b.box_id: b.bucket for b in state.boxes}
    assert (buckets["MVB-0001"], buckets["MVB-0002"]) == ("failed", "on_version")
    assert "release_refused" in state.boxes[0].reason
