"""Quadrilaterals on a page: corner order, crops, page rotations, and word positions.

A quad is a float array of shape (4, 2) holding x, y in continuous pixel coordinates (pixel
column i spans [i, i + 1)). Quads here are always in *reading order*: top-left, top-right,
bottom-right, bottom-left as the text reads, so the top edge runs along the text's
direction. Cropping a quad therefore always gives an upright line, and positions along the
line (CTC word extents) map back onto the page by interpolating along its edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: A crop at least this much taller than wide is a vertical line; it is read turned by 90°.
TALL_RATIO = 1.5

ROTATIONS = (0, 90, 180, 270)


def order_corners(points: np.ndarray) -> np.ndarray:
    """Order four corners as top-left, top-right, bottom-right, bottom-left in image axes.

    By x first, then y within each side (imutils' approach); robust for the near-rectangular
    boxes a detector produces, where summing coordinates can tie.
    """
    pts = np.asarray(points, dtype=np.float32).reshape(4, 2)
    by_x = pts[np.argsort(pts[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def quad_size(quad: np.ndarray) -> tuple[float, float]:
    """(width, height) of a quad: its longer top/bottom edge and longer left/right edge."""
    width = max(np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[2] - quad[3]))
    height = max(np.linalg.norm(quad[3] - quad[0]), np.linalg.norm(quad[2] - quad[1]))
    return float(width), float(height)


def reading_quad(quad: np.ndarray) -> np.ndarray:
    """Turn an image-axes quad into reading order: a tall quad is read rotated by 90°.

    A tall box holds a line running top to bottom, which PP-OCR reads after turning the crop
    90° counter-clockwise (its right edge becomes the top); the 0/180 classifier then fixes
    lines that run bottom to top. Rolling the corners expresses that turn without pixels.
    """
    width, height = quad_size(quad)
    if width > 0 and height / width >= TALL_RATIO:
        return np.roll(quad, -1, axis=0)
    return quad


def turn_180(quad: np.ndarray) -> np.ndarray:
    """The same quad read the other way round (an upside-down line)."""
    return np.roll(quad, -2, axis=0)


def crop_quad(image: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Warp the region of ``quad`` (reading order) into an upright rectangle.

    Cubic interpolation and replicated borders as PP-OCR's ``get_rotate_crop_image``, which
    the recognizer was trained against.
    """
    width, height = quad_size(quad)
    w = max(1, round(width))
    h = max(1, round(height))
    target = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    return cv2.warpPerspective(
        image, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )


def rotate_image(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate ``image`` clockwise by ``rotation`` degrees (0, 90, 180, 270)."""
    if rotation == 0:
        return image
    code = {
        90: cv2.ROTATE_90_CLOCKWISE,
        180: cv2.ROTATE_180,
        270: cv2.ROTATE_90_COUNTERCLOCKWISE,
    }[rotation]
    return cv2.rotate(image, code)


def unrotate_points(points: np.ndarray, rotation: int, width: int, height: int) -> np.ndarray:
    """Map points of an image rotated clockwise by ``rotation`` back to the original image.

    ``width`` and ``height`` are the original image's size. Inverse of ``rotate_image`` on
    continuous coordinates.
    """
    pts = np.asarray(points, dtype=np.float32)
    u, v = pts[..., 0], pts[..., 1]
    if rotation == 0:
        x, y = u, v
    elif rotation == 90:  # original (x, y) -> (height - y, x)
        x, y = v, height - u
    elif rotation == 180:  # original (x, y) -> (width - x, height - y)
        x, y = width - u, height - v
    elif rotation == 270:  # original (x, y) -> (y, width - x)
        x, y = width - v, u
    else:
        raise ValueError(f"rotation must be one of {ROTATIONS}, not {rotation}")
    return np.stack([x, y], axis=-1).astype(np.float32)


def bounds(points: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Axis-aligned (x, y, w, h) of ``points``, rounded outwards and clipped to the image."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    x0 = int(np.clip(np.floor(pts[:, 0].min()), 0, width))
    y0 = int(np.clip(np.floor(pts[:, 1].min()), 0, height))
    x1 = int(np.clip(np.ceil(pts[:, 0].max()), 0, width))
    y1 = int(np.clip(np.ceil(pts[:, 1].max()), 0, height))
    return x0, y0, x1 - x0, y1 - y0


def quad_edges(quad: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Top and bottom edge points of a reading-order quad at crop columns 0..width.

    Column x of a crop cut from ``quad`` lies between ``top[x]`` and ``bottom[x]``; word
    extents along the line become word boxes on the page through these edges.
    """
    t = (np.arange(width + 1, dtype=np.float32) / max(width, 1))[:, None]
    return quad[0] + (quad[1] - quad[0]) * t, quad[3] + (quad[2] - quad[3]) * t


@dataclass(frozen=True)
class Band:
    """A curved text line: a centre curve ``v = curve(u)`` along a rotated axis, and a height.

    ``u`` runs along the line from ``u0`` to ``u1`` (the axis at ``angle`` radians through
    ``origin``), ``v`` across it; the band covers ``half_height`` either side of the curve.
    Lines on a bent page or a curled photo are cut along the band, not their rectangle,
    which would hold parts of the lines above and below. The band grown around a line at
    the page's edge reaches past it; with ``page_size`` (width, height) its edges are
    clipped to the page like a straight line's quad, while the crop still samples the band
    itself (replicating the border) so that the line is not squeezed.
    """

    origin: tuple[float, float]
    angle: float
    curve: tuple[float, ...]  # polynomial coefficients, highest power first (numpy.polyval)
    u0: float
    u1: float
    half_height: float
    page_size: tuple[int, int] | None = None

    def _to_image(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.angle), math.sin(self.angle)
        x = self.origin[0] + u * c - v * s
        y = self.origin[1] + u * s + v * c
        return np.stack([x, y], axis=-1).astype(np.float32)

    def size(self) -> tuple[int, int]:
        """(width, height) of the crop: the band's length and thickness in pixels."""
        return max(1, round(self.u1 - self.u0)), max(1, round(2 * self.half_height))

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Top and bottom edge points at crop columns 0..width (see ``quad_edges``)."""
        width, _ = self.size()
        u = np.linspace(self.u0, self.u1, width + 1, dtype=np.float32)
        centre = np.polyval(self.curve, u).astype(np.float32)
        top = self._to_image(u, centre - self.half_height)
        bottom = self._to_image(u, centre + self.half_height)
        if self.page_size is not None:
            for points in (top, bottom):
                np.clip(points[:, 0], 0, self.page_size[0], out=points[:, 0])
                np.clip(points[:, 1], 0, self.page_size[1], out=points[:, 1])
        return top, bottom

    def quad(self) -> np.ndarray:
        top, bottom = self.edges()
        return np.array([top[0], top[-1], bottom[-1], bottom[0]], dtype=np.float32)

    def crop(self, image: np.ndarray) -> np.ndarray:
        """Resample the band into an upright rectangle (cubic, replicated borders)."""
        width, height = self.size()
        u = self.u0 + (np.arange(width, dtype=np.float32) + 0.5) * (self.u1 - self.u0) / width
        fraction = (np.arange(height, dtype=np.float32) + 0.5) / height
        v = np.polyval(self.curve, u)[None, :] + (fraction[:, None] - 0.5) * 2 * self.half_height
        points = self._to_image(np.broadcast_to(u[None, :], v.shape), v)
        # remap samples at pixel centres, which sit at integer coordinates.
        map_x = np.ascontiguousarray(points[..., 0] - 0.5)
        map_y = np.ascontiguousarray(points[..., 1] - 0.5)
        return cv2.remap(
            image, map_x, map_y, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
        )
