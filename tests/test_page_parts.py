"""The page pipeline's parts without models: geometry, detection post-processing, layout,
document pages, and the engine's refusal of pages on a recognizer-only model."""

from __future__ import annotations

import io
import struct
import threading

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage

from ocr_core import documents
from ocr_core.batching import BatchLimits
from ocr_core.detection import DetectionOptions, detector_input_size, fit_band, regions_to_lines
from ocr_core.documents import DocumentLimits, open_document, tiff_page_sizes
from ocr_core.engine import OcrEngine, RequestLimits
from ocr_core.errors import InvalidInput, TooLarge, Unsupported
from ocr_core.geometry import (
    crop_quad,
    order_corners,
    quad_edges,
    reading_quad,
    rotate_image,
    turn_180,
    unrotate_points,
)
from ocr_core.layout import Box, reading_order
from ocr_core.orientation import _page_tensor
from ocr_core.pages import PageOptions

# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_unrotate_points_inverts_rotate_image(rotation: int) -> None:
    rng = np.random.default_rng(rotation)
    image = rng.integers(0, 255, (7, 11), dtype=np.uint8)
    turned = rotate_image(image, rotation)
    h, w = image.shape
    for v in range(turned.shape[0]):
        for u in range(turned.shape[1]):
            # Pixel (u, v) of the turned image has its centre at (u + .5, v + .5).
            (x, y) = unrotate_points(np.array([[u + 0.5, v + 0.5]]), rotation, w, h)[0]
            assert turned[v, u] == image[int(y), int(x)]


def test_order_corners_and_reading_quad() -> None:
    shuffled = np.array([[10, 40], [100, 10], [10, 10], [100, 40]], dtype=np.float32)
    quad = order_corners(shuffled)
    assert quad.tolist() == [[10, 10], [100, 10], [100, 40], [10, 40]]
    assert np.array_equal(reading_quad(quad), quad)  # wide: read as it is
    tall = order_corners(np.array([[0, 0], [20, 0], [20, 100], [0, 100]], dtype=np.float32))
    # A tall line is read turned 90 degrees counter-clockwise: its top-right comes first.
    assert reading_quad(tall).tolist() == [[20, 0], [20, 100], [0, 100], [0, 0]]
    assert turn_180(quad).tolist() == [[100, 40], [10, 40], [10, 10], [100, 10]]


def test_crop_of_a_turned_quad_is_the_turned_region() -> None:
    image = np.zeros((50, 80), dtype=np.uint8)
    image[10:20, 10:70] = np.arange(60, dtype=np.uint8)[None, :] * 4  # a left-to-right ramp
    quad = np.array([[10, 10], [70, 10], [70, 20], [10, 20]], dtype=np.float32)
    upright = crop_quad(image, quad)
    flipped = crop_quad(image, turn_180(quad))
    assert upright.shape == flipped.shape == (10, 60)
    assert upright[5, 5] < upright[5, 50] and flipped[5, 5] > flipped[5, 50]
    top, bottom = quad_edges(quad, 60)
    assert top[0].tolist() == [10, 10] and top[60].tolist() == [70, 10]
    assert bottom[30].tolist() == [40, 20]


# ---------------------------------------------------------------- detection


def test_detector_input_size_is_bounded_and_stride_aligned() -> None:
    assert detector_input_size(2500, 1900, 1600) == (1600, 1216)
    h, w = detector_input_size(187, 300, 1600)  # a small screenshot is scaled up
    assert min(h, w) >= 704 and h % 32 == 0 and w % 32 == 0
    assert detector_input_size(10, 4000, 1600)[1] == 1600


@pytest.mark.parametrize(("h", "w"), [(1, 100_000), (100_000, 1), (20, 400_000), (600, 800)])
def test_page_classifier_input_stays_small_for_extreme_pages(
    monkeypatch: pytest.MonkeyPatch, h: int, w: int
) -> None:
    """The classifier scales the short side to 256 and keeps a 224 px centre crop.

    Scaling the whole page first made a 1 x 100000 page a 256 x 25.6M resize (20 GB: the
    server was OOM-killed by one RecognizePage). The resize is checked before it allocates.
    """
    real_resize = cv2.resize

    def bounded_resize(src: np.ndarray, dsize: tuple[int, int], *args, **kwargs):  # type: ignore[no-untyped-def]
        assert dsize[0] * dsize[1] <= 16 * 256 * 256, f"{src.shape} resized to {dsize}"
        return real_resize(src, dsize, *args, **kwargs)

    monkeypatch.setattr(cv2, "resize", bounded_resize)
    assert _page_tensor(np.zeros((h, w, 3), np.uint8)).shape == (1, 3, 224, 224)


def test_regions_become_scored_quads_in_page_pixels() -> None:
    prob = np.zeros((100, 200), dtype=np.float32)
    prob[20:30, 20:180] = 0.9  # a line
    prob[60:62, 50:60] = 0.9  # a speck, too thin
    prob[80:90, 20:100] = 0.35  # a faint region: over the pixel threshold, under the box one
    lines = regions_to_lines(prob, 400, 200, DetectionOptions())
    assert len(lines) == 1
    quad, score = lines[0].quad, lines[0].score
    # Scored on the region's outline, which the 2x2 dilation puts a pixel outside the core.
    assert 0.75 < score <= 0.9
    # Scaled x2 to the page and grown beyond the core by the unclip distance.
    assert quad[0][0] < 40 and quad[1][0] > 360 and quad[0][1] < 40 and quad[2][1] > 60
    assert lines[0].band is None


def test_a_bent_line_gets_a_band_and_a_straight_one_does_not() -> None:
    prob = np.zeros((200, 400), dtype=np.float32)
    xs = np.arange(20, 380)
    centre = 100 + 0.0015 * (xs - 200) ** 2  # bows by ~50 px over a 10 px thick line
    for x, c in zip(xs, centre, strict=True):
        prob[int(c) - 5 : int(c) + 5, x] = 0.9
    mask = (prob > 0.3).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    band = fit_band(contours[0], 1.0, 1.0, 1.6)
    assert band is not None
    # The fitted centre follows the bow: the middle is ~48 px above the ends.
    mid, end = np.polyval(band.curve, 0.0), np.polyval(band.curve, 170.0)
    assert 40 < end - mid < 56
    width, height = band.size()
    # The crop follows the line (10 px core, grown by the unclip distance on each side);
    # the bow's rectangle would be over 60 px tall.
    assert width > 360 and height < 40
    straight = np.zeros((100, 400), dtype=np.float32)
    straight[40:50, 20:380] = 0.9
    contours, _ = cv2.findContours(
        (straight > 0.3).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE
    )
    assert fit_band(contours[0], 1.0, 1.0, 1.6) is None


def test_detection_options_are_validated() -> None:
    DetectionOptions().validate()
    for bad in (
        DetectionOptions(max_side=100),
        DetectionOptions(pixel_threshold=0.0),
        DetectionOptions(unclip_ratio=9.0),
    ):
        with pytest.raises(InvalidInput, match="page option"):
            bad.validate()


# ---------------------------------------------------------------- layout


def _order(boxes: list[Box]) -> list[list[int]]:
    return reading_order(boxes)


def test_two_text_columns_are_read_one_after_the_other() -> None:
    title = Box(50, 10, 950, 50)
    left = [Box(50, 100 + 40 * i, 480, 130 + 40 * i) for i in range(5)]
    right = [Box(520, 100 + 40 * i, 950, 130 + 40 * i) for i in range(5)]
    boxes = [*right, title, *left]  # any input order
    blocks = _order(boxes)
    flat = [i for block in blocks for i in block]
    assert flat == [5, 6, 7, 8, 9, 10, 0, 1, 2, 3, 4]
    assert len(blocks) == 3


def test_a_receipt_row_is_read_across_not_down() -> None:
    names = [Box(20, 100 + 40 * i, 300, 130 + 40 * i) for i in range(4)]
    prices = [Box(600, 100 + 40 * i, 680, 130 + 40 * i) for i in range(4)]
    blocks = _order([*names, *prices])
    flat = [i for block in blocks for i in block]
    assert flat == [0, 4, 1, 5, 2, 6, 3, 7]


def test_paragraph_gap_starts_a_new_block() -> None:
    boxes = [Box(0, 0, 500, 30), Box(0, 40, 500, 70), Box(0, 150, 500, 180)]
    assert _order(boxes) == [[0, 1], [2]]
    assert _order([]) == []


# ---------------------------------------------------------------- documents


def _tiff(count: int) -> bytes:
    images = [PILImage.fromarray(np.full((40, 60), 50 * i, np.uint8)) for i in range(count)]
    out = io.BytesIO()
    images[0].save(out, format="TIFF", save_all=True, append_images=images[1:])
    return out.getvalue()


def test_tiff_pages_are_counted_and_decoded_one_by_one() -> None:
    data = _tiff(3)
    assert len(tiff_page_sizes(data)) == 3
    doc = open_document(data, DocumentLimits(), threading.Lock())
    assert doc.page_count == 3
    assert [int(doc.page(i)[0, 0, 0]) for i in range(3)] == [0, 50, 100]


def test_document_over_the_page_limit_is_refused_before_decoding() -> None:
    with pytest.raises(TooLarge, match="3 pages, over the limit of 2"):
        open_document(_tiff(3), DocumentLimits(max_pages=2), threading.Lock())


def test_broken_tiffs_are_invalid_input() -> None:
    looping = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 0) + struct.pack("<I", 8)
    for data, message in (
        (b"II*\x00\x08", "truncated"),
        (b"II*\x00" + struct.pack("<I", 4000), "truncated"),
        (looping, "loops"),
        (b"II*\x00" + struct.pack("<I", 0), "no pages"),
    ):
        with pytest.raises(InvalidInput, match=message):
            tiff_page_sizes(data)


def _declare_page_size(data: bytes, page: int, width: int, height: int) -> bytes:
    """``data`` (a little-endian TIFF) with page ``page``'s ImageWidth and ImageLength set."""
    out = bytearray(data)
    (offset,) = struct.unpack_from("<I", out, 4)
    for _ in range(page):
        (entries,) = struct.unpack_from("<H", out, offset)
        (offset,) = struct.unpack_from("<I", out, offset + 2 + 12 * entries)
    (entries,) = struct.unpack_from("<H", out, offset)
    for k in range(entries):
        entry = offset + 2 + 12 * k
        tag, kind = struct.unpack_from("<HH", out, entry)
        if tag in (256, 257):
            value = width if tag == 256 else height
            struct.pack_into("<H" if kind == 3 else "<I", out, entry + 8, value)
    return bytes(out)


def test_a_tiff_page_declaring_a_huge_size_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page's directory is read first, as a single image's header is: decoded first,
    a small file declaring 20000 x 20000 pixels cost seconds and over a gigabyte."""
    data = _declare_page_size(_tiff(3), 1, 20_000, 20_000)
    assert tiff_page_sizes(data) == [(60, 40), (20_000, 20_000), (60, 40)]
    decoded: list[tuple[int, int]] = []
    real = cv2.imdecodemulti

    def spy(buf: np.ndarray, flags: int, range: tuple[int, int]) -> object:
        decoded.append(range)
        return real(buf, flags, range=range)

    monkeypatch.setattr(documents.cv2, "imdecodemulti", spy)
    doc = open_document(data, DocumentLimits(), threading.Lock())
    assert int(doc.page(0)[0, 0, 0]) == 0
    with pytest.raises(TooLarge, match="TIFF page 2 is 20000x20000 = 400000000 pixels"):
        doc.page(1)
    assert int(doc.page(2)[0, 0, 0]) == 100
    assert decoded == [(0, 1), (2, 3)]


def test_bigtiff_is_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match=r"BigTIFF .* not supported"):
        open_document(b"II+\x00\x08\x00\x00\x00" + bytes(16), DocumentLimits(), threading.Lock())


def test_pdf_pages_render_at_the_requested_resolution() -> None:
    image = PILImage.fromarray(np.full((100, 200), 0, np.uint8)).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="PDF", save_all=True, append_images=[image], resolution=100)
    doc = open_document(out.getvalue(), DocumentLimits(), threading.Lock(), pdf_dpi=50)
    assert doc.page_count == 2
    page = doc.page(1)
    assert page.shape == (50, 100, 3)  # 2 x 1 inch at 50 dpi
    doc.close()
    with pytest.raises(InvalidInput, match="pdf_dpi"):
        open_document(out.getvalue(), DocumentLimits(), threading.Lock(), pdf_dpi=5000)


def test_empty_document_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        open_document(b"", DocumentLimits(), threading.Lock())


# ---------------------------------------------------------------- engine


class _LinesOnlyRecognizer:
    name = "lines-only"
    input_height = 48
    workers = 1
    has_idle_session = False

    def infer(self, worker: int, lines: list) -> list:  # never reached here
        raise AssertionError("no inference expected")


async def test_pages_on_a_model_without_detector_are_unsupported() -> None:
    engine = OcrEngine(
        {"lines-only": _LinesOnlyRecognizer()},  # type: ignore[dict-item]
        "lines-only",
        BatchLimits(),
        RequestLimits(),
    )
    engine.start()
    try:
        with pytest.raises(Unsupported, match="no text detector"):
            await engine.recognize_page(b"\x89PNG")
        with pytest.raises(Unsupported):
            async for _ in engine.recognize_document(b"%PDF-"):
                pass
        with pytest.raises(InvalidInput, match="min_confidence"):
            PageOptions(min_confidence=2.0).validate()
    finally:
        await engine.aclose()
