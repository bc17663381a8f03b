"""What labdisk does to an operation besides performing it: the pure part (no I/O, no clock).

- **Card state**: `read_only` (every operation in WRITE_OPS fails EROFS, reads work) and `pulled`
  (every operation fails with the chosen errno, ENODEV or ENOTCONN, until reinserted).
- **Error rules**: an operation in `ops` on a path matching `path` fails with `errno`; `after`
  matches pass first, then `times` matches fail (None: every one from then on).
- **Stall rules**: the same matching; the operation waits a delay drawn from a `Delay` before it
  runs (fixed, uniform, or one of a list), from the plan's seeded random generator.
- **Accounting**: bytes written, writes, fsyncs, directory fsyncs and metadata operations per file
  class; a class is the first (name, glob) of the caller's list that matches the path.

Paths are relative to the mount, without a leading slash ("" is the root). A glob is matched with
`fnmatch.fnmatchcase` on the whole path, where `*` also matches `/`: `*.mvb*` is every evidence
file anywhere, `catalog/*` everything below `catalog/` (a prefix), `audit.jsonl` one file.
"""

from __future__ import annotations

import errno as errno_codes
import fnmatch
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

READ_OPS: Final = frozenset(
    {"getattr", "readdir", "readlink", "statfs", "open", "read", "flush", "access"}
)
WRITE_OPS: Final = frozenset(
    {
        "create",
        "write",
        "truncate",
        "fsync",
        "fsyncdir",
        "mkdir",
        "rmdir",
        "unlink",
        "rename",
        "link",
        "symlink",
        "mknod",
        "chmod",
        "chown",
        "utimens",
    }
)
"""What a read-only card refuses (EROFS); an open for writing counts too."""
ALL_OPS: Final = READ_OPS | WRITE_OPS
SPACE_OPS: Final = frozenset({"create", "write", "mkdir", "symlink", "link", "mknod"})
"""The operations that take space: what a full card refuses (ENOSPC)."""
METADATA_OPS: Final = frozenset(
    {"create", "mkdir", "rmdir", "unlink", "rename", "link", "symlink", "mknod", "truncate"}
)
"""Counted as metadata operations in the accounting (each one a journal write on a real card)."""
PULLED_ERRNOS: Final = frozenset({errno_codes.ENODEV, errno_codes.ENOTCONN, errno_codes.EIO})
OTHER_CLASS: Final = "other"
TOTAL: Final = "total"


def errno_from_name(name: str | int) -> int:
    """`"EIO"` -> errno.EIO (an int passes through)."""
    if isinstance(name, int):
        return name
    code = getattr(errno_codes, name.upper(), None)
    if not isinstance(code, int) or not name.upper().startswith("E"):
        raise ValueError(f"unknown errno name {name!r}")
    return code


def errno_name(code: int) -> str:
    return errno_codes.errorcode.get(code, str(code))


def check_ops(ops: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(ops)
    if "*" in chosen:
        return ALL_OPS
    unknown = chosen - ALL_OPS
    if unknown or not chosen:
        raise ValueError(f"unknown operations {sorted(unknown)}: from {sorted(ALL_OPS)}")
    return chosen


@dataclass(frozen=True)
class Delay:
    """A stall's length in seconds: `fixed` (values = (s,)), `uniform` (values = (low, high)) or
    `choice` (one of values, each as likely)."""

    kind: Literal["fixed", "uniform", "choice"]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "uniform", "choice"):
            raise ValueError(f"unknown delay kind {self.kind!r}")
        wanted = {"fixed": 1, "uniform": 2}.get(self.kind)
        if not self.values or (wanted is not None and len(self.values) != wanted):
            raise ValueError(f"a {self.kind} delay takes {wanted or 'some'} values")
        if min(self.values) < 0 or (self.kind == "uniform" and self.values[0] > self.values[1]):
            raise ValueError(f"bad {self.kind} delay values {self.values}")

    @classmethod
    def fixed(cls, seconds: float) -> Delay:
        return cls("fixed", (float(seconds),))

    @classmethod
    def uniform(cls, low_s: float, high_s: float) -> Delay:
        return cls("uniform", (float(low_s), float(high_s)))

    @classmethod
    def choice(cls, seconds: Sequence[float]) -> Delay:
        return cls("choice", tuple(float(value) for value in seconds))

    def draw(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "uniform":
            return rng.uniform(self.values[0], self.values[1])
        return rng.choice(self.values)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "values": list(self.values)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Delay:
        kind = data["kind"]
        if kind not in ("fixed", "uniform", "choice"):
            raise ValueError(f"unknown delay kind {kind!r}")
        return cls(kind, tuple(float(value) for value in data["values"]))


@dataclass
class Rule:
    """An error (errno set) or a stall (delay set) on matching operations."""

    rule_id: int
    ops: frozenset[str]
    path: str = "*"
    errno: int | None = None
    delay: Delay | None = None
    after: int = 0
    times: int | None = None

    def matches(self, op: str, paths: Sequence[str]) -> bool:
        return op in self.ops and any(fnmatch.fnmatchcase(path, self.path) for path in paths)

    def fire(self) -> bool:
        """Count a match: True when this one acts (past `after`, within `times`)."""
        if self.after > 0:
            self.after -= 1
            return False
        if self.times is None:
            return True
        if self.times <= 0:
            return False
        self.times -= 1
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.rule_id,
            "ops": sorted(self.ops),
            "path": self.path,
            "errno": None if self.errno is None else errno_name(self.errno),
            "delay": None if self.delay is None else self.delay.to_json(),
            "after": self.after,
            "times": self.times,
        }


class FaultPlan:
    """The card's state and the rules; the shell asks it before every operation. Not
    thread-safe: the shell holds a lock around `check` and `stall_s`."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.rules: list[Rule] = []
        self.read_only = False
        self.pulled: int | None = None
        self._next_id = 1

    def add_error(
        self,
        error: int | str,
        *,
        ops: Iterable[str],
        path: str = "*",
        after: int = 0,
        times: int | None = None,
    ) -> int:
        return self._add(Rule(0, check_ops(ops), path, errno_from_name(error), None, after, times))

    def add_stall(
        self,
        delay: Delay,
        *,
        ops: Iterable[str],
        path: str = "*",
        after: int = 0,
        times: int | None = None,
    ) -> int:
        return self._add(Rule(0, check_ops(ops), path, None, delay, after, times))

    def _add(self, rule: Rule) -> int:
        if rule.after < 0 or (rule.times is not None and rule.times < 0):
            raise ValueError("after and times must not be negative")
        rule.rule_id = self._next_id
        self._next_id += 1
        self.rules.append(rule)
        return rule.rule_id

    def clear(self, rule_id: int | None = None) -> None:
        """Drop one rule, or all rules (the card state stays)."""
        self.rules = [
            rule for rule in self.rules if rule_id is not None and rule.rule_id != rule_id
        ]

    def check(self, op: str, paths: Sequence[str], *, writes: bool) -> int | None:
        """The errno `op` fails with, or None. `writes`: the operation changes the card (an
        operation in WRITE_OPS, or an open for writing)."""
        if self.pulled is not None:
            return self.pulled
        if self.read_only and writes:
            return errno_codes.EROFS
        for rule in self.rules:
            if rule.errno is not None and rule.matches(op, paths) and rule.fire():
                return rule.errno
        return None

    def stall_s(self, op: str, paths: Sequence[str]) -> float:
        """How long `op` waits before it runs: the sum of the matching stall rules' draws."""
        total = 0.0
        for rule in self.rules:
            if rule.delay is not None and rule.matches(op, paths) and rule.fire():
                total += rule.delay.draw(self.rng)
        return total

    def to_json(self) -> dict[str, Any]:
        return {
            "read_only": self.read_only,
            "pulled": None if self.pulled is None else errno_name(self.pulled),
            "rules": [rule.to_json() for rule in self.rules],
        }


@dataclass
class Counters:
    bytes_written: int = 0
    writes: int = 0
    fsyncs: int = 0
    dir_fsyncs: int = 0
    metadata_ops: int = 0

    def add(self, other: Counters) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class Accounting:
    """Counters per file class (see the module docstring); "other" when no glob matches."""

    classes: list[tuple[str, str]] = field(default_factory=list)
    counters: dict[str, Counters] = field(default_factory=dict)

    def set_classes(self, classes: Iterable[tuple[str, str]]) -> None:
        self.classes = [(str(name), str(glob)) for name, glob in classes]
        if any(name == TOTAL for name, _ in self.classes):
            raise ValueError(f"{TOTAL!r} is not a class name")

    def classify(self, path: str) -> str:
        for name, glob in self.classes:
            if fnmatch.fnmatchcase(path, glob):
                return name
        return OTHER_CLASS

    def _of(self, path: str) -> Counters:
        return self.counters.setdefault(self.classify(path), Counters())

    def wrote(self, path: str, nbytes: int) -> None:
        counters = self._of(path)
        counters.bytes_written += nbytes
        counters.writes += 1

    def fsynced(self, path: str) -> None:
        self._of(path).fsyncs += 1

    def dir_fsynced(self, path: str) -> None:
        self._of(path).dir_fsyncs += 1

    def metadata(self, path: str) -> None:
        self._of(path).metadata_ops += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        """{class: counters} for every class seen, plus "total"."""
        total = Counters()
        for counters in self.counters.values():
            total.add(counters)
        shown = {name: asdict(counters) for name, counters in sorted(self.counters.items())}
        shown[TOTAL] = asdict(total)
        return shown

    def reset(self) -> None:
        self.counters.clear()
