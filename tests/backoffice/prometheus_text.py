"""A small strict parser of the Prometheus text exposition format (0.0.4), for tests: what a
scraper would refuse, it refuses (AssertionError naming the line).

Checked: `# HELP` and `# TYPE` lines (one TYPE per family, before its samples, a known type);
sample lines `name{label="value",...} value` with valid metric and label names, label values
with only the three escapes the format has (\\\\, \\", \\n), no repeated label, a float value;
no series twice; a final newline.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> tuple[dict[str, str], list[Sample]]:
    """(family -> type, samples)."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    types: dict[str, str] = {}
    samples: list[Sample] = []
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for number, line in enumerate(text.splitlines(), 1):
        where = f"line {number}: {line!r}"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                assert _NAME.fullmatch(parts[2]), where
                if parts[1] == "TYPE":
                    assert len(parts) == 4, where
                    assert parts[3] in _TYPES, where
                    assert parts[2] not in types, f"{where}: a second TYPE"
                    types[parts[2]] = parts[3]
            continue
        assert line.strip(), f"{where}: an empty line"
        sample = _sample(line, where)
        assert sample.name in types, f"{where}: a sample before its TYPE"
        key = (sample.name, tuple(sorted(sample.labels.items())))
        assert key not in seen, f"{where}: the same series twice"
        seen.add(key)
        samples.append(sample)
    return types, samples


def _sample(line: str, where: str) -> Sample:
    match = _NAME.match(line)
    assert match, where
    name, rest = match.group(), line[match.end() :]
    labels: dict[str, str] = {}
    if rest.startswith("{"):
        rest = rest[1:]
        while not rest.startswith("}"):
            label = _LABEL_NAME.match(rest)
            assert label, where
            assert rest[label.end() : label.end() + 2] == '="', where
            rest = rest[label.end() + 2 :]
            value, rest = _label_value(rest, where)
            assert label.group() not in labels, f"{where}: label repeated"
            labels[label.group()] = value
            if rest.startswith(","):
                rest = rest[1:]
            else:
                assert rest.startswith("}"), where
        rest = rest[1:]
    assert rest.startswith(" "), where
    fields = rest[1:].split(" ")
    assert 1 <= len(fields) <= 2, where  # a value, and an optional timestamp
    number = float(fields[0])
    assert not math.isnan(number) or fields[0] == "NaN", where
    return Sample(name, labels, number)


def _label_value(rest: str, where: str) -> tuple[str, str]:
    out: list[str] = []
    index = 0
    while True:
        assert index < len(rest), f"{where}: an unterminated label value"
        char = rest[index]
        if char == '"':
            return "".join(out), rest[index + 1 :]
        if char == "\\":
            escaped = rest[index + 1 : index + 2]
            assert escaped in ("\\", '"', "n"), f"{where}: an unknown escape"
            out.append("\n" if escaped == "n" else escaped)
            index += 2
            continue
        assert char != "\n", where
        out.append(char)
        index += 1
