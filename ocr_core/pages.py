"""The page pipeline around the line batcher: orientation, detection, crops, then layout.

A page goes through two synchronous stages run in the engine's worker threads, with the
shared micro-batcher in between:

1. ``find_lines``: turn the page upright (page classifier), detect text regions, order their
   corners as the text reads, cut each line out of the full-resolution page, and turn
   upside-down lines (line classifier, which also undoes a 180° page turn that leaves the
   lines reading upside down);
2. the engine sends every crop to the recognizer's batcher, where lines of all pages and all
   ``RecognizeLines`` calls share batches;
3. ``assemble_page``: drop empty and low-confidence lines, map words back onto the page as
   sent, and group lines into blocks in reading order.

Nothing here knows about gRPC; coordinates are floats in the pixels of the page as sent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from ocr_core.ctc import LineText
from ocr_core.detection import DetectionOptions, TextDetector
from ocr_core.errors import InvalidInput
from ocr_core.geometry import (
    bounds,
    crop_quad,
    quad_edges,
    reading_quad,
    rotate_image,
    unrotate_points,
)
from ocr_core.layout import line_boxes, reading_order, rows
from ocr_core.orientation import (
    LINE_THRESHOLD,
    LineOrientation,
    PageOrientation,
    reads_upside_down,
)


@dataclass(frozen=True)
class PageOptions:
    """How a page is read (see ``PageOptions`` in the proto for each field's meaning)."""

    detection: DetectionOptions = field(default_factory=DetectionOptions)
    correct_page_rotation: bool = True
    correct_line_rotation: bool = True
    min_confidence: float = 0.5

    def validate(self) -> None:
        self.detection.validate()
        if not 0.0 <= self.min_confidence < 1.0:
            raise InvalidInput(
                f"page option min_confidence must be in [0, 1), got {self.min_confidence}"
            )


@dataclass(frozen=True)
class PageModels:
    """The models a page needs besides the recognizer; classifiers are optional."""

    detector: TextDetector
    line_orientation: LineOrientation | None = None
    page_orientation: PageOrientation | None = None


@dataclass
class FoundLines:
    """Where the lines of a page are, kept while their crops are being recognised."""

    width: int
    height: int
    rotation: int
    #: Per line, the top and bottom edge points (upright page) of crop columns 0..width.
    edges: list[tuple[np.ndarray, np.ndarray]]
    upside_down: list[bool]
    #: Lines found beyond the per-page limit and not read.
    left_out: int = 0

    def quad(self, i: int) -> np.ndarray:
        """Line ``i``'s reading-order quad on the upright page."""
        top, bottom = self.edges[i]
        return np.array([top[0], top[-1], bottom[-1], bottom[0]], dtype=np.float32)


@dataclass(frozen=True)
class PageWord:
    text: str
    confidence: float
    quad: np.ndarray  # 4x2 float32, reading order, pixels of the page as sent


@dataclass(frozen=True)
class PageLine:
    text: str
    confidence: float
    quad: np.ndarray
    words: tuple[PageWord, ...]
    block: int
    upside_down: bool


@dataclass(frozen=True)
class PageBlock:
    lines: tuple[int, ...]
    bounds: tuple[int, int, int, int]


@dataclass(frozen=True)
class PageText:
    """A recognised page: size as sent, rotation applied, lines and blocks in reading order."""

    width: int
    height: int
    rotation: int
    lines: tuple[PageLine, ...]
    blocks: tuple[PageBlock, ...]
    text: str
    page_index: int = 0
    #: Lines the detector found beyond the per-page limit, which were not read.
    lines_left_out: int = 0


class PageAbandoned(Exception):
    """The page's caller went away (cancelled, or out of time): its remaining stages are
    skipped. Raised in the worker thread for the engine, which no longer waits for a result."""


def check_abandoned(abandoned: threading.Event | None) -> None:
    if abandoned is not None and abandoned.is_set():
        raise PageAbandoned


def find_lines(
    image_bgr: np.ndarray,
    models: PageModels,
    options: PageOptions,
    abandoned: threading.Event | None = None,
) -> tuple[FoundLines, list[np.ndarray]]:
    """Stage 1: orientation, detection, crops (runs in a worker thread).

    Returns the lines' positions and their upright crops; the crops are full-resolution,
    so they are returned apart, to be dropped once resized for the recognizer rather than
    held until the page is assembled. Once ``abandoned`` is set, the next step raises
    ``PageAbandoned`` instead of running (a step already running finishes).
    """
    height, width = image_bgr.shape[:2]
    rotation = 0
    if options.correct_page_rotation and models.page_orientation is not None:
        rotation, _ = models.page_orientation.upright_rotation(image_bgr)
    check_abandoned(abandoned)
    upright = rotate_image(image_bgr, rotation)
    crops: list[np.ndarray] = []
    edges: list[tuple[np.ndarray, np.ndarray]] = []
    detected, left_out = models.detector.detect(upright, options.detection)
    check_abandoned(abandoned)
    for line in detected:
        if line.band is not None:
            crops.append(line.band.crop(upright))
            edges.append(line.band.edges())
        else:
            quad = reading_quad(line.quad)
            crops.append(crop_quad(upright, quad))
            edges.append(quad_edges(quad, crops[-1].shape[1]))
    flags = [False] * len(crops)
    classifier = models.line_orientation
    if classifier is None or not crops or not (options.correct_line_rotation or rotation == 180):
        return FoundLines(width, height, rotation, edges, flags, left_out), crops
    check_abandoned(abandoned)
    turned = classifier.turned_probability(crops)
    if rotation == 180 and reads_upside_down(turned, crops):
        # The line classifier, which sees each line at its own scale, overrules the page
        # classifier's 180° turn: the lines are the page's as sent, read the other way.
        rotation = 0
        crops = [cv2.rotate(c, cv2.ROTATE_180) for c in crops]
        edges = [
            (
                unrotate_points(bottom, 180, width, height)[::-1],
                unrotate_points(top, 180, width, height)[::-1],
            )
            for top, bottom in edges
        ]
        turned = 1.0 - turned
    if options.correct_line_rotation:
        flags = [bool(p > LINE_THRESHOLD) for p in turned]
        for i, flip in enumerate(flags):
            if flip:
                crops[i] = cv2.rotate(crops[i], cv2.ROTATE_180)
                top, bottom = edges[i]
                edges[i] = (bottom[::-1], top[::-1])
    return FoundLines(width, height, rotation, edges, flags, left_out), crops


def assemble_page(
    found: FoundLines, texts: list[LineText], options: PageOptions, page_index: int = 0
) -> PageText:
    """Stage 3: keep confident lines, map them to the page as sent, order into blocks."""
    keep = [
        i for i, t in enumerate(texts) if t.text.strip() and t.confidence >= options.min_confidence
    ]
    # deskewed centre-line boxes, not the boxes around tilted or bowed outlines (layout.py)
    upright_boxes = line_boxes([found.edges[i] for i in keep])
    blocks_order = reading_order(upright_boxes)

    def to_page(points: np.ndarray) -> np.ndarray:
        return unrotate_points(points, found.rotation, found.width, found.height)

    lines: list[PageLine] = []
    blocks: list[PageBlock] = []
    block_texts: list[str] = []
    for block_no, members in enumerate(blocks_order):
        first = len(lines)
        for k in members:
            i = keep[k]
            top, bottom = found.edges[i]
            last = len(top) - 1
            words = []
            for w in texts[i].words:
                a, b = min(w.x_start, last), min(w.x_end, last)
                word_quad = np.array([top[a], top[b], bottom[b], bottom[a]], dtype=np.float32)
                words.append(PageWord(w.text, w.confidence, to_page(word_quad)))
            lines.append(
                PageLine(
                    texts[i].text,
                    texts[i].confidence,
                    to_page(found.quad(i)),
                    tuple(words),
                    block_no,
                    found.upside_down[i],
                )
            )
        member_quads = np.concatenate([lines[j].quad for j in range(first, len(lines))])
        blocks.append(
            PageBlock(
                tuple(range(first, len(lines))),
                bounds(member_quads, found.width, found.height),
            )
        )
        block_rows = rows(list(range(len(members))), [upright_boxes[k] for k in members])
        block_texts.append(
            "\n".join(" ".join(lines[first + j].text for j in row) for row in block_rows)
        )
    return PageText(
        width=found.width,
        height=found.height,
        rotation=found.rotation,
        lines=tuple(lines),
        blocks=tuple(blocks),
        text="\n\n".join(block_texts),
        page_index=page_index,
        lines_left_out=found.left_out,
    )
