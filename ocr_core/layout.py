"""Reading order: group a page's lines into blocks and order them as a person reads.

Recursive XY-cut over the lines' bounding boxes (on the upright page): a set of lines is
split at horizontal gaps (whitespace running across the whole set) taller than a paragraph
break, else at vertical gaps (column gutters) wider than a few character widths, and the
parts are read top to bottom / left to right. A set that cannot be split is a block; its
lines are read row by row, and lines side by side on one row left to right.

Vertical gaps are only cut when both sides look like running text (columns), not when the
lines on either side sit on shared rows: a receipt's item names and prices, or a table's
cells, are read across the row, not one column after the other.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Box:
    """An axis-aligned line box on the upright page."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def width(self) -> float:
        return self.x1 - self.x0


#: A horizontal gap taller than this many line heights separates blocks (paragraph breaks).
BLOCK_GAP_LINES = 0.8
#: A vertical gap wider than this many line heights can be a column gutter.
COLUMN_GAP_LINES = 1.0
#: Lines on two sides of a gap that share rows this often are a table, not columns.
TABLE_ROW_SHARE = 0.5
#: Columns of running text have lines at least this many line heights long (median).
COLUMN_LINE_LENGTH = 6.0


def reading_order(boxes: Sequence[Box]) -> list[list[int]]:
    """Blocks of line indexes, blocks and lines within each in reading order."""
    if not boxes:
        return []
    heights = sorted(b.height for b in boxes)
    unit = max(heights[len(heights) // 2], 1.0)
    blocks: list[list[int]] = []
    _cut(list(range(len(boxes))), boxes, unit, blocks)
    return blocks


def rows(indexes: Sequence[int], boxes: Sequence[Box]) -> list[list[int]]:
    """Group lines into rows (vertical overlap of at least half the smaller height)."""
    ordered = sorted(indexes, key=lambda i: (boxes[i].y0 + boxes[i].y1) / 2)
    result: list[list[int]] = []
    for i in ordered:
        b = boxes[i]
        if result:
            last = result[-1]
            top = min(boxes[j].y0 for j in last)
            bottom = max(boxes[j].y1 for j in last)
            overlap = min(bottom, b.y1) - max(top, b.y0)
            smaller = min(b.height, bottom - top)
            if smaller > 0 and overlap >= 0.5 * smaller:
                last.append(i)
                continue
        result.append([i])
    return [sorted(row, key=lambda i: boxes[i].x0) for row in result]


def _cut(indexes: list[int], boxes: Sequence[Box], unit: float, out: list[list[int]]) -> None:
    if len(indexes) > 1:
        parts = _split(indexes, boxes, axis=1, min_gap=BLOCK_GAP_LINES * unit)
        if len(parts) == 1:
            parts = [
                p for p in _split(indexes, boxes, axis=0, min_gap=COLUMN_GAP_LINES * unit) if p
            ]
            if len(parts) > 1 and not _are_columns(parts, boxes, unit):
                parts = [indexes]
        if len(parts) > 1:
            for part in parts:
                _cut(part, boxes, unit, out)
            return
    out.append([i for row in rows(indexes, boxes) for i in row])


def _split(indexes: list[int], boxes: Sequence[Box], axis: int, min_gap: float) -> list[list[int]]:
    """Split where the projection on ``axis`` (0 = x, 1 = y) has a gap of at least min_gap."""

    def span(i: int) -> tuple[float, float]:
        b = boxes[i]
        return (b.x0, b.x1) if axis == 0 else (b.y0, b.y1)

    ordered = sorted(indexes, key=lambda i: span(i)[0])
    parts: list[list[int]] = [[ordered[0]]]
    reach = span(ordered[0])[1]
    for i in ordered[1:]:
        start, end = span(i)
        if start - reach >= min_gap:
            parts.append([i])
        else:
            parts[-1].append(i)
        reach = max(reach, end)
    return parts


def _are_columns(parts: list[list[int]], boxes: Sequence[Box], unit: float) -> bool:
    """Whether side-by-side parts are text columns (read one after another), not a table."""
    for left, right in itertools.pairwise(parts):
        shared = sum(1 for i in right if any(_same_row(boxes[i], boxes[j]) for j in left))
        if shared >= TABLE_ROW_SHARE * min(len(left), len(right)):
            for side in (left, right):
                widths = sorted(boxes[i].width for i in side)
                if widths[len(widths) // 2] < COLUMN_LINE_LENGTH * unit:
                    return False
    return True


def _same_row(a: Box, b: Box) -> bool:
    overlap = min(a.y1, b.y1) - max(a.y0, b.y0)
    return overlap >= 0.5 * min(a.height, b.height) > 0
