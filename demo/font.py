"""A tiny built-in 5x7 bitmap font, and a renderer that stamps text into a luma (Y) plane.

Used by the synthetic camera to burn the camera name and a clock into the picture, so it needs no
font files, no PIL and no numpy. The glyphs were drawn for this project: digits, upper-case
letters and ``:-./_#+?`` plus space; lower case is drawn as upper case and any other character
as ``?``.

Rendering is pure Python but cheap: each glyph row is precomputed (per scale) as a few horizontal
runs, and a run is one slice assignment into the plane, so a line of text costs about
``7 * scale * runs`` slice writes no matter how wide the frame is. Nothing outside the glyph pixels
is touched (text is transparent; callers draw their own box behind it, see `fill_rect`).
"""

from __future__ import annotations

from functools import lru_cache

GLYPH_WIDTH = 5
GLYPH_HEIGHT = 7
ADVANCE = GLYPH_WIDTH + 1
"""Horizontal distance between the origins of neighbouring glyphs, in unscaled pixels."""

# Each glyph: 7 rows of 5 cells, top row first; "#" is ink, "." is background.
_GLYPH_ART: dict[str, str] = {
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "###.. #..#. #...# #...# #...# #..#. ###..",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....",
    "-": "..... ..... ..... ##### ..... ..... .....",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    "/": "..... ....# ...#. ..#.. .#... #.... .....",
    "_": "..... ..... ..... ..... ..... ..... #####",
    "#": ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
    " ": "..... ..... ..... ..... ..... ..... .....",
}

Runs = tuple[tuple[int, int], ...]
"""Half-open ``(start, end)`` column ranges of ink in one glyph row."""


def _parse(char: str, art: str) -> tuple[Runs, ...]:
    """Turn one glyph's art into per-row runs of ink, checking its shape."""
    rows = art.split()
    if len(rows) != GLYPH_HEIGHT or any(len(row) != GLYPH_WIDTH for row in rows):
        raise ValueError(f"glyph {char!r} is not {GLYPH_WIDTH}x{GLYPH_HEIGHT}")
    return tuple(_row_runs(row) for row in rows)


def _row_runs(row: str) -> Runs:
    """The runs of ``#`` in one row of glyph art."""
    runs: list[tuple[int, int]] = []
    start = None
    for column, cell in enumerate(row + "."):
        if cell == "#" and start is None:
            start = column
        elif cell != "#" and start is not None:
            runs.append((start, column))
            start = None
    return tuple(runs)


GLYPHS: dict[str, tuple[Runs, ...]] = {char: _parse(char, art) for char, art in _GLYPH_ART.items()}


def glyph_for(char: str) -> tuple[Runs, ...]:
    """The runs for `char`: lower case maps to upper case, anything unknown to ``?``."""
    return GLYPHS.get(char.upper(), GLYPHS["?"])


def text_size(text: str, scale: int = 1) -> tuple[int, int]:
    """Width and height in pixels of `text` rendered at `scale` (no trailing gap)."""
    if not text:
        return 0, 0
    return (len(text) * ADVANCE - 1) * scale, GLYPH_HEIGHT * scale


@lru_cache(maxsize=256)
def _line_runs(text: str, scale: int) -> tuple[Runs, ...]:
    """For each glyph row, the scaled runs of the whole line (x relative to the line's left)."""
    rows: list[list[tuple[int, int]]] = [[] for _ in range(GLYPH_HEIGHT)]
    for index, char in enumerate(text):
        left = index * ADVANCE
        for row, runs in zip(rows, glyph_for(char), strict=True):
            row.extend(((left + a) * scale, (left + b) * scale) for a, b in runs)
    return tuple(tuple(row) for row in rows)


def draw_text(
    plane: bytearray,
    stride: int,
    width: int,
    height: int,
    x: int,
    y: int,
    text: str,
    *,
    scale: int = 1,
    luma: int = 235,
) -> None:
    """Draw `text` into `plane` with its top-left corner at (`x`, `y`), in place.

    `plane` is a luma plane of `width` x `height` pixels whose rows start every `stride` bytes.
    Each font pixel becomes a `scale` x `scale` square of value `luma`; whatever falls outside
    the frame is clipped (negative or huge `x`/`y` are fine). Background pixels are not touched.
    """
    _check_plane(plane, stride, width, height)
    if scale < 1:
        raise ValueError("scale must be at least 1")
    ink = bytes([luma]) * (width + 1)
    for glyph_row, runs in enumerate(_line_runs(text, scale)):
        if not runs:
            continue
        spans = _clip_runs(runs, x, width)
        top = y + glyph_row * scale
        for row in range(max(top, 0), min(top + scale, height)):
            offset = row * stride
            for start, end in spans:
                plane[offset + start : offset + end] = ink[: end - start]


def _clip_runs(runs: Runs, x: int, width: int) -> Runs:
    """Shift `runs` right by `x` and cut them to the frame's columns ``[0, width)``."""
    clipped = ((max(a + x, 0), min(b + x, width)) for a, b in runs)
    return tuple((a, b) for a, b in clipped if a < b)


def fill_rect(
    plane: bytearray,
    stride: int,
    width: int,
    height: int,
    rect: tuple[int, int, int, int],
    luma: int,
) -> None:
    """Fill `rect` = (x, y, w, h) of `plane` with `luma`, clipped to the frame, in place."""
    _check_plane(plane, stride, width, height)
    x, y, w, h = rect
    left, right = max(x, 0), min(x + w, width)
    if left >= right:
        return
    fill = bytes([luma]) * (right - left)
    for row in range(max(y, 0), min(y + h, height)):
        offset = row * stride
        plane[offset + left : offset + right] = fill


def _check_plane(plane: bytearray, stride: int, width: int, height: int) -> None:
    """Refuse geometry that would write past the plane or wrap into the next row."""
    if width < 0 or height < 0 or stride < width:
        raise ValueError("need 0 <= width <= stride and height >= 0")
    if height and len(plane) < (height - 1) * stride + width:
        raise ValueError("plane is smaller than stride * height")
