"""Reading order: group a page's lines into blocks and order them as a person reads.

Recursive XY-cut over the lines' boxes (``line_boxes``, upright page): a set of lines is
split at horizontal gaps (whitespace running across the whole set) taller than a paragraph
break, else at vertical gaps (column gutters) wider than a few character widths, and the
parts are read top to bottom / left to right. A set that cannot be split is a block; its
lines are read row by row, and lines side by side on one row left to right.

Vertical gaps are only cut when both sides look like running text (columns), not when the
lines on either side sit on shared rows: a receipt's item names and prices, or a table's
cells, are read across the row, not one column after the other.

Where no gap is wide enough, a gutter between two columns of running text is still cut when
few lines cross it (``_gutter``): magazine columns stand a few pixels apart, and a title or
a caption spanning both bridges the gutter; such lines are read in their place (a title
above the columns first) or, with the columns running on beside them, after the columns.

The boxes come from ``line_boxes``: on a page tilted by a few degrees, or a photo of a bent
sheet, the axis-aligned box around a line's outline is much taller than the line and
overlaps the lines above and below, which would merge a paragraph into one "row" read left
to right. So the page's tilt is measured from its lines and taken out, and each line is
represented by its centre line's height on the page plus or minus half its own thickness;
rows follow the centre lines (``rows``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """A line's box on the upright page: its extent, and where its centre line runs.

    ``centre`` holds the centre line's heights at evenly spaced x from ``x0`` to ``x1`` for a
    line that need not be straight (a bowed line on a photo of a bent sheet); without it the
    centre runs straight at mid-height.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    centre: tuple[float, ...] = ()

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    def centre_at(self, x: float) -> float:
        """The centre line's height at ``x`` (its end's height beyond the line's ends)."""
        if len(self.centre) < 2 or self.x1 <= self.x0:
            return (self.y0 + self.y1) / 2
        step = (self.x1 - self.x0) / (len(self.centre) - 1)
        position = min(max((x - self.x0) / step, 0.0), len(self.centre) - 1.0)
        k = min(int(position), len(self.centre) - 2)
        return self.centre[k] + (self.centre[k + 1] - self.centre[k]) * (position - k)


#: A horizontal gap taller than this many line heights separates blocks (paragraph breaks).
BLOCK_GAP_LINES = 0.8
#: A vertical gap wider than this many line heights can be a column gutter.
COLUMN_GAP_LINES = 1.0
#: Lines on two sides of a gap that share rows this often are a table, not columns.
TABLE_ROW_SHARE = 0.5
#: Columns of running text have lines at least this many line heights long (median).
COLUMN_LINE_LENGTH = 6.0
#: A gutter narrower than ``COLUMN_GAP_LINES``, or one that a title or a caption crosses, is
#: still cut between two columns of running text with at least this many lines each...
GUTTER_MIN_LINES = 5
#: ...when fewer lines than this share of the smaller column's cross it (``_gutter``).
GUTTER_CROSSING_SHARE = 0.25
#: A line reaching less than this many line heights past a gutter does not cross it.
GUTTER_REACH_LINES = 0.5
#: Lines running within this many degrees of horizontal (on the upright page) measure the
#: page's tilt; steeper ones are vertical text or noise. The page classifier has already
#: turned the page by quarter turns, so what remains is a scan's or a photo's skew.
MAX_SKEW_DEGREES = 20.0
#: Points kept of a line's centre line (``Box.centre``): enough to follow a page's bend.
CENTRE_SAMPLES = 9
#: Points of each edge that ``line_boxes`` looks at (evenly spaced, both ends included).
EDGE_POINTS = 33
#: A line may join any of the last this many rows, not only the last one (see ``rows``).
ROWS_BACK = 3


def line_boxes(edges: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Box]:
    """Layout boxes of lines given by their top and bottom edge points on the upright page.

    The points are turned by the page's tilt (``page_skew``) so that rows and gaps line up
    with the axes again. A horizontal line's box is then its centre line's mean height plus
    or minus half the line's median thickness, not the box around its outline: a long line
    tilted by 3° or bowed on a bent photo spans several line heights vertically, and boxes
    that tall would overlap their neighbours. The centre line itself is kept as well
    (``Box.centre``), so that rows can be followed along a bend. Vertical lines keep the box
    around their points.
    """
    skew = page_skew(edges)
    cos, sin = math.cos(skew), math.sin(skew)
    # rotating by -skew: x' = x cos + y sin, y' = -x sin + y cos
    turn = np.array([[cos, -sin], [sin, cos]], dtype=np.float64)
    boxes = []
    for top, bottom in edges:
        # the edges have a point per crop column; a few dozen describe the line as well
        keep = np.linspace(0, len(top) - 1, min(len(top), EDGE_POINTS)).round().astype(int)
        top_r = np.asarray(top, np.float64)[keep] @ turn
        bottom_r = np.asarray(bottom, np.float64)[keep] @ turn
        points = np.concatenate([top_r, bottom_r])
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        if abs(_direction(top, bottom) - skew) > math.radians(MAX_SKEW_DEGREES):
            boxes.append(Box(float(x0), float(y0), float(x1), float(y1)))
            continue
        centre = (top_r + bottom_r) / 2
        centre = centre[np.argsort(centre[:, 0], kind="stable")]
        heights = np.interp(np.linspace(x0, x1, CENTRE_SAMPLES), centre[:, 0], centre[:, 1])
        middle = float(centre[:, 1].mean())
        half = float(np.median(np.linalg.norm(bottom_r - top_r, axis=1))) / 2
        boxes.append(
            Box(
                float(x0),
                middle - half,
                float(x1),
                middle + half,
                tuple(float(h) for h in heights),
            )
        )
    return boxes


def page_skew(edges: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """The page's tilt in radians (positive: lines run down to the right in image axes).

    The length-weighted median direction of the lines near horizontal: long lines measure
    it best, and the median ignores a few odd ones (a slanted stamp, a vertical caption).
    """
    limit = math.radians(MAX_SKEW_DEGREES)
    measured = []
    for top, bottom in edges:
        angle = _direction(top, bottom)
        if abs(angle) <= limit:
            length = float(np.linalg.norm((top[-1] + bottom[-1] - top[0] - bottom[0]) / 2))
            measured.append((angle, length))
    if not measured:
        return 0.0
    measured.sort()
    half = sum(length for _, length in measured) / 2
    reach = 0.0
    for angle, length in measured:
        reach += length
        if reach >= half:
            return angle
    return measured[-1][0]


def _direction(top: np.ndarray, bottom: np.ndarray) -> float:
    """The direction of a line's centre line in (-90°, 90°], in radians.

    Upside-down lines have their edges reversed (reading order); the direction on the page
    is the same either way.
    """
    dx, dy = ((top[-1] + bottom[-1]) - (top[0] + bottom[0])) / 2
    if dx < 0 or (dx == 0 and dy < 0):
        dx, dy = -dx, -dy
    return math.atan2(float(dy), float(dx))


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
    """Group lines into rows, each read left to right.

    Lines are taken top to bottom (by mean height); a line joins a row when it is on one row
    (``_same_row``) with the row's line nearest to it across the page. Not with the span of
    the whole row: that span grows with every line that joins, and on a slightly uneven page
    it would swallow the next line, then the one after, until a paragraph became one row.
    The last few rows are tried, not only the last: on a bent page, the two pieces of one
    bowed row can have a line of the next row between them in mean height.
    """
    ordered = sorted(indexes, key=lambda i: (boxes[i].y0 + boxes[i].y1) / 2)
    result: list[list[int]] = []
    for i in ordered:
        b = boxes[i]
        for row in reversed(result[-ROWS_BACK:]):
            nearest = min(row, key=lambda j: _x_gap(boxes[j], b))
            if _same_row(boxes[nearest], b):
                row.append(i)
                break
        else:
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
        if len(parts) == 1:
            parts = _gutter(indexes, boxes, unit)
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


def _gutter(indexes: list[int], boxes: Sequence[Box], unit: float) -> list[list[int]]:
    """Parts, in reading order, of a set split at a gutter that the gap rules miss.

    The gap rules need whitespace at least ``COLUMN_GAP_LINES`` wide across the whole set.
    Magazine columns can miss it twice over: their line boxes reach into a narrow gutter
    (7 px apart on a real scan, or even overlapping by a few pixels once the page is turned
    and deskewed), and a title or a figure caption spanning both columns bridges any gap.
    So this looks for the x that the fewest lines cross, the widest gap among equals, where:

    - each side holds running text (``_running_text``: at least ``GUTTER_MIN_LINES`` lines,
      long ones), so a table's or a receipt's cells, read across their rows, never qualify;
    - fewer than ``GUTTER_CROSSING_SHARE`` of the smaller side's lines cross it (a title, a
      caption), where a line reaching less than ``GUTTER_REACH_LINES`` past it is no crosser
      but on the side holding its middle (a box's padding poking into the gutter).

    A crossing line with nothing beside it (a title above, between or below the columns) is
    read in its place: the set is cut above and below it, and the parts are cut again.
    Crossing lines with columns beside them (a caption set into the gutter) are read after
    both columns, so they do not interrupt the text. ``[indexes]`` where there is no gutter.
    """
    x0 = np.array([boxes[i].x0 for i in indexes])
    x1 = np.array([boxes[i].x1 for i in indexes])
    at = np.unique(np.concatenate([x0, x1]))[:, None]  # candidate gutters, one per row
    reach = GUTTER_REACH_LINES * unit
    crosses = (x0 < at - reach) & (x1 > at + reach)
    on_left = ~crosses & ((x0 + x1) / 2 < at)
    on_right = ~crosses & ~on_left
    n_cross = crosses.sum(axis=1)
    smaller = np.minimum(on_left.sum(axis=1), on_right.sum(axis=1))
    gap = np.where(on_right, x0, np.inf).min(axis=1) - np.where(on_left, x1, -np.inf).max(axis=1)
    fit = (smaller >= GUTTER_MIN_LINES) & (n_cross < GUTTER_CROSSING_SHARE * smaller)
    for k in sorted(np.flatnonzero(fit), key=lambda k: (n_cross[k], -gap[k])):
        left = [i for i, on in zip(indexes, on_left[k], strict=True) if on]
        right = [i for i, on in zip(indexes, on_right[k], strict=True) if on]
        if _running_text(left, boxes, unit) and _running_text(right, boxes, unit):
            crossing = [i for i, on in zip(indexes, crosses[k], strict=True) if on]
            return _around_crossing(indexes, left + right, crossing, boxes) or [
                p for p in (left, right, crossing) if p
            ]
    return [indexes]


def _around_crossing(
    indexes: list[int], sides: list[int], crossing: list[int], boxes: Sequence[Box]
) -> list[list[int]] | None:
    """The set cut above and below the topmost crossing line that has no line beside it
    (no line of either side has its middle within the crossing line's height), or None."""

    def middle(i: int) -> float:
        return (boxes[i].y0 + boxes[i].y1) / 2

    for c in sorted(crossing, key=lambda i: boxes[i].y0):
        if not any(boxes[c].y0 <= middle(i) <= boxes[c].y1 for i in sides):
            above = [i for i in indexes if i != c and middle(i) < middle(c)]
            below = [i for i in indexes if i != c and middle(i) >= middle(c)]
            return [p for p in (above, [c], below) if p]
    return None


def _running_text(side: list[int], boxes: Sequence[Box], unit: float) -> bool:
    """Whether lines look like a column of running text: enough of them, and long."""
    if len(side) < GUTTER_MIN_LINES:
        return False
    widths = sorted(boxes[i].width for i in side)
    return widths[len(widths) // 2] >= COLUMN_LINE_LENGTH * unit


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
    """Whether two lines share at least half the smaller height where they meet.

    They are compared at their centre lines' heights where they overlap across the page, or
    at the ends that face each other where they do not: two pieces of one bowed line meet
    end to end, though their mean heights differ.
    """
    if a.x1 < b.x0:
        at_a, at_b = a.x1, b.x0
    elif b.x1 < a.x0:
        at_a, at_b = a.x0, b.x1
    else:
        at_a = at_b = (max(a.x0, b.x0) + min(a.x1, b.x1)) / 2
    ca, cb = a.centre_at(at_a), b.centre_at(at_b)
    overlap = min(ca + a.height / 2, cb + b.height / 2) - max(ca - a.height / 2, cb - b.height / 2)
    return overlap >= 0.5 * min(a.height, b.height) > 0


def _x_gap(a: Box, b: Box) -> float:
    """The horizontal gap between two boxes (negative where they overlap)."""
    return max(a.x0 - b.x1, b.x0 - a.x1)
