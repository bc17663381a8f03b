"""labdisk's pure fault plan and accounting, driven directly."""

from __future__ import annotations

import errno
import random

import pytest

from labdisk.faults import (
    ALL_OPS,
    SPACE_OPS,
    Accounting,
    Delay,
    FaultPlan,
    check_ops,
    errno_from_name,
)


def test_a_rule_fails_its_ops_on_its_paths_after_and_times() -> None:
    plan = FaultPlan()
    plan.add_error("EIO", ops=["write"], path="evidence/*", after=1, times=2)
    assert plan.check("write", ["evidence/a.mvb"], writes=True) is None  # `after`
    assert plan.check("write", ["catalog/cache.db"], writes=True) is None  # other path
    assert plan.check("fsync", ["evidence/a.mvb"], writes=True) is None  # other op
    assert plan.check("write", ["evidence/a.mvb"], writes=True) == errno.EIO
    assert plan.check("write", ["evidence/b.mvb"], writes=True) == errno.EIO
    assert plan.check("write", ["evidence/a.mvb"], writes=True) is None  # `times` used up


def test_a_rename_matches_either_path() -> None:
    plan = FaultPlan()
    plan.add_error(errno.ENOSPC, ops=["rename"], path="state/*")
    assert plan.check("rename", ["tmp/x", "state/x"], writes=True) == errno.ENOSPC


def test_the_card_state_comes_before_the_rules() -> None:
    plan = FaultPlan()
    plan.add_error("EIO", ops=["*"])
    plan.read_only = True
    assert plan.check("write", ["a"], writes=True) == errno.EROFS
    assert plan.check("read", ["a"], writes=False) == errno.EIO
    plan.pulled = errno.ENODEV
    assert plan.check("getattr", [""], writes=False) == errno.ENODEV
    plan.clear()
    plan.pulled = None
    assert plan.check("read", ["a"], writes=False) is None
    assert plan.read_only  # clear drops rules, not the card's state


def test_clear_drops_one_rule_or_all() -> None:
    plan = FaultPlan()
    first = plan.add_error("EIO", ops=["read"])
    plan.add_error("EIO", ops=["write"])
    plan.clear(first)
    assert [rule.ops for rule in plan.rules] == [frozenset({"write"})]
    plan.clear()
    assert plan.rules == []


def test_stalls_are_drawn_from_the_seeded_generator() -> None:
    def draws(seed: int) -> list[float]:
        plan = FaultPlan(seed)
        plan.add_stall(Delay.uniform(0.05, 2.0), ops=["fsync"])
        plan.add_stall(Delay.choice([0.1, 0.5]), ops=["fsync"], path="evidence/*", times=1)
        return [plan.stall_s("fsync", ["evidence/a"]) for _ in range(5)]

    first = draws(3)
    assert first == draws(3)
    assert first != draws(4)
    assert all(0.05 <= value <= 2.5 for value in first)
    plan = FaultPlan()
    plan.add_stall(Delay.fixed(0.2), ops=["write"], path="x")
    assert plan.stall_s("write", ["x"]) == 0.2
    assert plan.stall_s("write", ["y"]) == 0.0


def test_delays_refuse_nonsense() -> None:
    for kind, values in (("fixed", (1.0, 2.0)), ("uniform", (2.0, 1.0)), ("choice", ())):
        with pytest.raises(ValueError, match="delay"):
            Delay(kind, values)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bad fixed delay"):
        Delay.fixed(-1)
    delay = Delay.choice([0.1, 1.0])
    assert Delay.from_json(delay.to_json()) == delay
    assert delay.draw(random.Random(1)) in (0.1, 1.0)


def test_ops_and_errnos_by_name() -> None:
    assert check_ops(["*"]) == ALL_OPS
    assert SPACE_OPS <= ALL_OPS
    with pytest.raises(ValueError, match="unknown operations"):
        check_ops(["scribble"])
    assert errno_from_name("enospc") == errno.ENOSPC
    assert errno_from_name(errno.EIO) == errno.EIO
    with pytest.raises(ValueError, match="unknown errno"):
        errno_from_name("errorcode")


def test_accounting_counts_by_the_first_matching_class() -> None:
    accounting = Accounting()
    accounting.set_classes([("evidence", "*.mvb*"), ("catalog", "catalog/*")])
    accounting.wrote("evidence/rec/a.mvb", 1000)
    accounting.wrote("evidence/rec/.a.mvb.0123456789abcdef.tmp", 24)
    accounting.fsynced("evidence/rec/a.mvb")
    accounting.wrote("catalog/cache.db-wal", 4096)
    accounting.dir_fsynced("catalog")  # the directory itself: not "catalog/*"
    accounting.metadata("catalog/cache.db")
    shown = accounting.snapshot()
    assert shown["evidence"] == {
        "bytes_written": 1024,
        "writes": 2,
        "fsyncs": 1,
        "dir_fsyncs": 0,
        "metadata_ops": 0,
    }
    assert shown["catalog"]["bytes_written"] == 4096
    assert shown["catalog"]["metadata_ops"] == 1
    assert shown["other"]["dir_fsyncs"] == 1
    assert shown["total"]["bytes_written"] == 5120
    accounting.reset()
    assert accounting.snapshot()["total"]["bytes_written"] == 0
    with pytest.raises(ValueError, match="not a class name"):
        accounting.set_classes([("total", "*")])
