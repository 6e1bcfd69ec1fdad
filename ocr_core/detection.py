"""DB text detection: page image in, text-line quadrilaterals out.

The DB ("differentiable binarization") detectors of PP-OCR output, for every pixel of the
resized page, the probability that it lies inside a text line's shrunk core. Lines are the
connected regions above ``pixel_threshold``; each region's minimum-area rectangle is scored
by the mean probability inside it, then grown back ("unclipped") by area / perimeter x
``unclip_ratio`` with pyclipper's polygon offset, the same way the models were trained.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import cv2
import numpy as np
import pyclipper

from ocr_core.errors import InvalidInput
from ocr_core.geometry import Band, order_corners
from ocr_core.sessions import PooledModel, SessionConfig

log = logging.getLogger(__name__)

#: Side lengths of the detector input must be multiples of this (the network's stride).
STRIDE = 32
#: Pages whose shorter side is below this are scaled up (within ``max_side``): small
#: screenshots otherwise give regions too thin for the probability map.
MIN_SHORT_SIDE = 736
#: Detector inputs up to this many pixels (or up to the server's own default max side
#: squared, if larger: ``TextDetector.load``) keep their buffers in the session's arena for
#: the next page; a larger one (a client's max_side above the server's default) hands the
#: arena's unused memory back after its run, so that one large request does not hold its
#: peak for good. 1280 x 1280: the default 1024 and the previous default 1280 stay warm.
ARENA_KEEP_PIXELS = 1280 * 1280
#: Regions whose shorter side is below this many pixels of the probability map are noise.
MIN_REGION_SIDE = 3
#: A region filling less of its minimum-area rectangle than this is a curved line (a bent
#: page); straight lines, even tilted ones, fill 80-95 % of theirs.
CURVED_FILL = 0.65
#: Curved regions at least this long for their thickness are cut along a fitted band.
CURVED_MIN_ELONGATION = 4.0
#: ... when their centre line bows away from its chord by this fraction of their thickness.
CURVED_MIN_SAGITTA = 0.3


@dataclass(frozen=True)
class DetectionOptions:
    """Detection settings; the defaults are PP-OCR's, except ``max_side`` (see PageOptions)."""

    max_side: int = 1024
    pixel_threshold: float = 0.3
    box_threshold: float = 0.5
    unclip_ratio: float = 1.6
    min_line_height: int = 4
    #: At most this many lines are kept per page, the highest-scoring ones (a warning is
    #: logged and the page says how many were left out). It bounds the recognizer work one
    #: page can ask for: every line is a crop sent to the batcher at once, ~19 ms of CPU each.
    max_candidates: int = 1000

    def validate(self) -> None:
        """Raise ``InvalidInput`` naming the first option out of range."""
        checks = (
            (320 <= self.max_side <= 4096, f"max_side must be in 320..4096, got {self.max_side}"),
            (
                0.0 < self.pixel_threshold < 1.0,
                f"pixel_threshold must be in (0, 1), got {self.pixel_threshold}",
            ),
            (
                0.0 < self.box_threshold < 1.0,
                f"box_threshold must be in (0, 1), got {self.box_threshold}",
            ),
            (
                1.0 <= self.unclip_ratio <= 4.0,
                f"unclip_ratio must be in 1..4, got {self.unclip_ratio}",
            ),
            (
                self.min_line_height <= 1000,
                f"min_line_height must be at most 1000, got {self.min_line_height}",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise InvalidInput(f"page option {message}")


@dataclass(frozen=True)
class DetectedLine:
    """A detected text region: its quad in image axes (tl, tr, br, bl) and its mean score.

    ``band`` is set for a curved line; it is then cut along the band instead of the quad.
    """

    quad: np.ndarray
    score: float
    band: Band | None = None


def detector_input_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) the page is resized to: within ``max_side``, multiples of 32.

    Large pages are scaled down so the long side fits ``max_side``; small ones are scaled
    up until the short side reaches ``MIN_SHORT_SIDE`` or the long side ``max_side``.
    """
    long_side, short_side = max(height, width), min(height, width)
    scale = min(max_side / long_side, max(1.0, MIN_SHORT_SIDE / short_side))
    new_h = max(STRIDE, round(height * scale / STRIDE) * STRIDE)
    new_w = max(STRIDE, round(width * scale / STRIDE) * STRIDE)
    return new_h, new_w


class TextDetector(PooledModel):
    """A DB detector run from the engine's worker threads (one session per running thread)."""

    INPUT_SHAPE = "[1, 3, H, W]"
    OUTPUT_DIMS = (None, 1, None, None)
    OUTPUT_SHAPE = "[1, 1, H, W] (a text probability map)"
    # Every page size is a new input shape: no per-shape memory patterns, but an arena, so
    # that each run reuses the buffers of the one before instead of faulting in fresh pages
    # (in process on a thread, the 12 real pages at 1024 px: 1.38-1.53 s instead of
    # 1.76-1.82 s; a loaded server read 5 % more pages/s; docs/benchmarks.md, Levers).
    MEMORY_PATTERN = False
    #: Inputs up to this many pixels keep their buffers; ``load`` raises it to the server's
    #: default max side squared.
    keep_pixels: int = ARENA_KEEP_PIXELS

    @classmethod
    def load(
        cls,
        path: Path,
        config: SessionConfig,
        what: str,
        default_max_side: int = DetectionOptions.max_side,
    ) -> Self:
        """Build the sessions; inputs up to ``default_max_side`` squared stay warm.

        ``default_max_side`` is the max side the server detects pages at when a request
        does not ask for another: with a bound below it every page would give its buffers
        back and fault them in again (``--page-max-side 1600``, 4 streams, three-pass
        windows: 1.390 / 1.390 pages/s instead of 1.468 / 1.476, the same peak RSS).
        """
        detector = super().load(path, config, what)
        detector.keep_pixels = max(ARENA_KEEP_PIXELS, default_max_side * default_max_side)
        return detector

    def probability_map(self, image_bgr: np.ndarray, max_side: int) -> np.ndarray:
        """The detector's text probability for every pixel of the resized page (HxW float32)."""
        h, w = image_bgr.shape[:2]
        new_h, new_w = detector_input_size(h, w, max_side)
        resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        tensor = np.empty((1, 3, new_h, new_w), dtype=np.float32)
        # (x / 255 - 0.5) / 0.5, the PP-OCRv6 detector's normalisation, written in place.
        np.multiply(resized.transpose(2, 0, 1), 2.0 / 255.0, out=tensor[0])
        tensor -= 1.0
        large = self.MEMORY_ARENA and new_h * new_w > self.keep_pixels
        output = self.run(tensor, _shrink_arena() if large else None)
        if output.ndim != 4 or output.shape[2:] != (new_h, new_w):
            raise RuntimeError(f"detector output shape {output.shape} for input {tensor.shape}")
        return output[0, 0]

    def detect(
        self, image_bgr: np.ndarray, options: DetectionOptions
    ) -> tuple[list[DetectedLine], int]:
        """Find text lines on an HxWx3 uint8 BGR page; quads are in the page's pixels.

        Returns the lines kept (at most ``options.max_candidates``) and how many more were
        found and left out.
        """
        h, w = image_bgr.shape[:2]
        prob = self.probability_map(image_bgr, options.max_side)
        lines = regions_to_lines(prob, w, h, options)
        return keep_best(lines, options.max_candidates, (w, h))


def regions_to_lines(
    prob: np.ndarray, page_width: int, page_height: int, options: DetectionOptions
) -> list[DetectedLine]:
    """Turn a probability map into scored, unclipped line quads in page pixels.

    Every region is filtered here, all of them: ``keep_best`` caps the lines afterwards.
    PP-OCR caps the raw contours instead, but ``findContours`` lists them roughly
    bottom-up, so a dense page (a 1200-cell table) silently lost its top rows. Filtering
    them all costs ~7 us a region (a noise map of 1024 px with 8300 regions: 55 ms; the
    detector takes ~120 ms).
    """
    map_h, map_w = prob.shape
    mask = (prob > options.pixel_threshold).astype(np.uint8)
    # A 2x2 dilation joins characters that the shrunk cores split (PP-OCR's use_dilation).
    mask = cv2.dilate(mask, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    sx, sy = page_width / map_w, page_height / map_h
    lines: list[DetectedLine] = []
    for contour in contours:
        if min(cv2.boundingRect(contour)[2:]) < MIN_REGION_SIDE:
            continue  # cheaper than minAreaRect, whose sides are never longer
        rect = cv2.minAreaRect(contour)
        if min(rect[1]) < MIN_REGION_SIDE:
            continue
        box = cv2.boxPoints(rect)
        score = _mean_inside(prob, contour)
        if score < options.box_threshold:
            continue
        grown = _unclip(box, options.unclip_ratio)
        if grown is None:
            continue
        rect = cv2.minAreaRect(grown)
        if min(rect[1]) < MIN_REGION_SIDE + 2:
            continue
        quad = cv2.boxPoints(rect)
        quad[:, 0] = np.clip(quad[:, 0] * sx, 0, page_width)
        quad[:, 1] = np.clip(quad[:, 1] * sy, 0, page_height)
        quad = order_corners(quad)
        edge_w = np.linalg.norm(quad[1] - quad[0])
        edge_h = np.linalg.norm(quad[3] - quad[0])
        if min(edge_w, edge_h) < max(options.min_line_height, 4):
            continue
        band = None
        core_w, core_h = max(rect[1]), min(rect[1])
        if cv2.contourArea(contour) < CURVED_FILL * core_w * core_h and (
            core_w >= CURVED_MIN_ELONGATION * core_h
        ):
            band = fit_band(contour, sx, sy, options.unclip_ratio, (page_width, page_height))
        lines.append(DetectedLine(quad=quad, score=float(score), band=band))
    return lines


def keep_best(
    lines: list[DetectedLine], limit: int, page_size: tuple[int, int]
) -> tuple[list[DetectedLine], int]:
    """At most ``limit`` lines, the highest-scoring, in their order; and how many are left out.

    The count goes back to the caller with the page (``PageResult.lines_left_out``), so a
    page over the limit is never read short without its reader knowing.
    """
    if len(lines) <= limit:
        return lines, 0
    log.warning(
        "page of %dx%d px: %d text lines found, only the %d highest-scoring are read "
        "(the per-page line limit)",
        *page_size,
        len(lines),
        limit,
    )
    # Stable: among equal scores the contour order decides, as before the cap.
    best = sorted(range(len(lines)), key=lambda i: -lines[i].score)
    return [lines[i] for i in sorted(best[:limit])], len(lines) - limit


def fit_band(
    contour: np.ndarray,
    sx: float,
    sy: float,
    unclip_ratio: float,
    page_size: tuple[int, int] | None = None,
) -> Band | None:
    """Fit a curved band to a region of the probability map, in page pixels.

    The region's pixels are projected on its long axis; the middle of each slice across the
    axis gives the line's centre there, a quadratic through those centres gives the curve,
    and the median slice thickness, grown like ``_unclip`` grows boxes, the height. Returns
    None for regions running more vertically than horizontally (read as quads).
    ``page_size`` (width, height) keeps the band's edges, hence the line's and its words'
    boxes, on the page, as straight lines' quads are.
    """
    x0, y0, w, h = cv2.boundingRect(contour)
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.drawContours(mask, [contour - np.array([x0, y0], dtype=contour.dtype)], -1, 1, -1)
    ys, xs = np.nonzero(mask)
    if len(xs) < 8:
        return None
    px = (xs + x0 + 0.5) * sx
    py = (ys + y0 + 0.5) * sy
    page_contour = (contour.reshape(-1, 2).astype(np.float32) + 0.5) * np.float32([sx, sy])
    (cx, cy), (rw, rh), degrees = cv2.minAreaRect(page_contour)
    theta = np.radians(degrees if rw >= rh else degrees + 90.0)
    theta = float(np.arctan2(np.sin(theta), np.cos(theta)))
    if np.cos(theta) < 0:  # make the axis point rightwards, the reading direction
        theta = float(np.arctan2(-np.sin(theta), -np.cos(theta)))
    if abs(theta) > np.pi / 4:
        return None
    c, s = np.cos(theta), np.sin(theta)
    u = (px - cx) * c + (py - cy) * s
    v = -(px - cx) * s + (py - cy) * c
    u_min, u_max = float(u.min()), float(u.max())
    length = u_max - u_min
    thickness_guess = max(len(xs) * sx * sy / max(length, 1.0), 1.0)
    bins = int(np.clip(length / thickness_guess, 3, 64))
    index = np.clip(((u - u_min) / max(length, 1e-6) * bins).astype(np.int64), 0, bins - 1)
    v_lo = np.full(bins, np.inf)
    v_hi = np.full(bins, -np.inf)
    np.minimum.at(v_lo, index, v)
    np.maximum.at(v_hi, index, v)
    filled = np.isfinite(v_lo)
    if filled.sum() < 3:
        return None
    u_mid = u_min + (np.arange(bins) + 0.5) * length / bins
    centres = (v_lo + v_hi) / 2
    if filled.sum() < 4:
        return None
    curve = np.polyfit(u_mid[filled], centres[filled], 2)
    pixel = max(sx, sy)
    thickness = float(np.median(v_hi[filled] - v_lo[filled])) + pixel
    # A straight line is read better from its exact rectangle: use the band only where the
    # centre curve strays from its chord by a real fraction of the line's thickness.
    ends = np.array([u_min, u_max])
    chord = np.polyfit(ends, np.polyval(curve, ends), 1)
    span = np.linspace(u_min, u_max, 17)
    sagitta = float(np.abs(np.polyval(curve, span) - np.polyval(chord, span)).max())
    if sagitta < CURVED_MIN_SAGITTA * thickness:
        return None
    # The same growth as _unclip applies to a band of this length and thickness.
    grow = length * thickness * unclip_ratio / (2 * (length + thickness))
    return Band(
        origin=(float(cx), float(cy)),
        angle=theta,
        curve=tuple(float(k) for k in curve),
        u0=u_min - grow,
        u1=u_max + grow,
        half_height=thickness / 2 + grow,
        page_size=page_size,
    )


def _mean_inside(prob: np.ndarray, contour: np.ndarray) -> float:
    """Mean probability inside a region's contour (integer points of the map).

    Scored on the region's own contour rather than its rectangle (PP-OCR's "slow" mode): a
    curved line on a bent page fills only part of its rectangle, and the rectangle's mean
    would drop it.
    """
    x0, y0, w, h = cv2.boundingRect(contour)
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(mask, [contour.reshape(-1, 1, 2)], 1, offset=(-x0, -y0))
    return float(cv2.mean(prob[y0 : y0 + h, x0 : x0 + w], mask)[0])


def _unclip(box: np.ndarray, ratio: float) -> np.ndarray | None:
    """Grow a shrunk core back to the full line: offset by area * ratio / perimeter."""
    area = cv2.contourArea(box)
    perimeter = cv2.arcLength(box, True)
    if perimeter <= 0:
        return None
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    paths = offset.Execute(area * ratio / perimeter)
    if len(paths) != 1:  # an offset never splits a convex box; anything else is degenerate
        return None
    return np.array(paths[0], dtype=np.float32).reshape(-1, 1, 2)


@functools.cache
def _shrink_arena() -> Any:
    """Run options that give the CPU arena's unused memory back to the system after a run."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options
