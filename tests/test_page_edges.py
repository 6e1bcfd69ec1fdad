"""Edge cases of the page pipeline: dense pages, single-line strips read as pages, and
curved lines at the page's edge.

The detection and orientation tests run without models (probability maps and stand-in
classifiers); the strips test reads the real line images of ../shared/eval/real through a
real server and is skipped where that folder is absent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

import cv2
import grpc
import numpy as np
import pytest

from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from ocr_core.batching import BatchLimits
from ocr_core.detection import DetectedLine, DetectionOptions, keep_best, regions_to_lines
from ocr_core.engine import OcrEngine, RequestLimits
from ocr_core.pages import PageModels, PageOptions, find_lines
from tests.conftest import FakeRecognizer, ServerProcess

# ---------------------------------------------------------------- dense pages


def _grid_map(rows: int, cols: int, score: float | None = None) -> np.ndarray:
    """A probability map with a ``rows`` x ``cols`` table of 6x24 px word cores.

    Without ``score`` a cell's probability rises with its column (0.7 to 0.95), the same on
    every row, so ranking by score prefers no row.
    """
    prob = np.zeros((rows * 20 + 20, cols * 40 + 20), dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            value = score if score is not None else 0.7 + 0.25 * c / max(cols - 1, 1)
            prob[10 + r * 20 : 16 + r * 20, 10 + c * 40 : 34 + c * 40] = value
    return prob


def _rows_found(lines: Sequence[DetectedLine]) -> set[int]:
    return {int((line.quad[:, 1].mean() - 13) // 20 + 0.5) for line in lines}


def test_noise_regions_do_not_use_up_the_line_budget(caplog: pytest.LogCaptureFixture) -> None:
    """Regions are filtered before the per-page line cap, not after.

    Capping the raw contours (PP-OCR's way) let specks under the table, which findContours
    lists first, take the budget: the top rows of a dense page were lost without a word.
    """
    prob = _grid_map(10, 10, score=0.9)
    specks = np.zeros((40, prob.shape[1]), dtype=np.float32)
    specks[10:12, 5 : prob.shape[1] - 5 : 8] = 0.9  # 2 px tall: too thin to be text
    prob = np.vstack([prob, specks])
    h, w = prob.shape
    with caplog.at_level(logging.WARNING, logger="ocr_core.detection"):
        lines, left_out = keep_best(regions_to_lines(prob, w, h, DetectionOptions()), 100, (w, h))
    assert len(lines) == 100 and left_out == 0
    assert _rows_found(lines) == set(range(10))
    assert not caplog.records


def test_lines_over_the_cap_keep_the_best_anywhere_and_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prob = _grid_map(10, 10)
    h, w = prob.shape
    everything = regions_to_lines(prob, w, h, DetectionOptions())
    assert len(everything) == 100
    with caplog.at_level(logging.WARNING, logger="ocr_core.detection"):
        kept, left_out = keep_best(everything, 50, (w, h))
    assert len(kept) == 50 and left_out == 50
    # The best-scoring half is the right half of every row, the top rows included.
    assert _rows_found(kept) == set(range(10))
    scores = sorted((line.score for line in everything), reverse=True)
    assert sorted((line.score for line in kept), reverse=True) == scores[:50]
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "100 text lines found, only the 50 highest-scoring" in caplog.records[0].message


# ---------------------------------------------------------------- curved lines at the edge


def test_a_bent_line_at_the_page_corner_stays_on_the_page() -> None:
    """A band grown around a line touching the page's edge is clipped like a quad is.

    On the real bend_in photo line and word boxes reached up to 6 px past the page.
    """
    prob = np.zeros((320, 640), dtype=np.float32)
    for x in range(640):
        centre = 22 - 10 * ((x - 320) / 320) ** 2  # bows up, touching x = 0 and x = 640
        prob[int(centre) - 6 : int(centre) + 6, x] = 0.9
    lines = regions_to_lines(prob, 1280, 640, DetectionOptions())
    assert len(lines) == 1 and lines[0].band is not None
    band = lines[0].band
    top, bottom = band.edges()
    points = np.concatenate([top, bottom, band.quad()])
    assert points[:, 0].min() >= 0 and points[:, 0].max() <= 1280
    assert points[:, 1].min() >= 0 and points[:, 1].max() <= 640
    # The crop still follows the whole band (replicated border), not a squeezed one.
    width, height = band.size()
    assert band.crop(np.zeros((640, 1280, 3), np.uint8)).shape == (height, width, 3)
    assert width > 1280


# ---------------------------------------------------------------- a 180° page turn checked


class _FakeDetector:
    """Finds the one dark rectangle of the (possibly turned) page it is given."""

    def detect(
        self, image: np.ndarray, options: DetectionOptions
    ) -> tuple[list[DetectedLine], int]:
        ys, xs = np.nonzero(image[:, :, 0] < 128)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)
        return [DetectedLine(quad=quad, score=0.9)], 0


class _FakePageClassifier:
    def upright_rotation(self, image: np.ndarray) -> tuple[int, float]:
        return 180, 0.7  # what the real one says of some single-line strips


class _FakeLineClassifier:
    """Says every line is upside down with probability ``turned``."""

    def __init__(self, turned: float) -> None:
        self.turned = turned

    def turned_probability(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return np.full(len(crops), self.turned)


def _strip() -> np.ndarray:
    """A 60x400 strip with a dark 'line' whose left end is darkest (its reading start)."""
    image = np.full((60, 400, 3), 255, np.uint8)
    image[20:40, 30:330] = np.linspace(0, 100, 300, dtype=np.uint8)[None, :, None]
    return image


def _models(turned: float) -> PageModels:
    return PageModels(
        detector=_FakeDetector(),  # type: ignore[arg-type]
        line_orientation=_FakeLineClassifier(turned),  # type: ignore[arg-type]
        page_orientation=_FakePageClassifier(),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("correct_line_rotation", [True, False])
def test_a_180_turn_whose_lines_read_upside_down_is_undone(correct_line_rotation: bool) -> None:
    """The line classifier overrules the page classifier's 180° turn of a strip.

    The page classifier sees only the strip's middle 224 px square; on 8 of the 82 upright
    real line images it said 180 (0.62-0.88) and the lines were misread.
    """
    image = _strip()
    options = PageOptions(correct_line_rotation=correct_line_rotation)
    found, crops = find_lines(image, _models(turned=0.99), options)
    assert found.rotation == 0 and found.upside_down == [False]
    # The line is where it is on the strip as sent, in reading order.
    assert np.allclose(found.quad(0), [[30, 20], [330, 20], [330, 40], [30, 40]], atol=1)
    assert crops[0].shape[:2] == (20, 300)
    assert crops[0][10, 5, 0] < 10 and crops[0][10, -5, 0] > 90  # read from its dark end


def test_a_180_turn_whose_lines_read_upright_is_kept() -> None:
    image = np.ascontiguousarray(_strip()[::-1, ::-1])  # sent upside down
    found, crops = find_lines(image, _models(turned=0.01), PageOptions())
    assert found.rotation == 180 and found.upside_down == [False]
    assert crops[0][10, 5, 0] < 10 and crops[0][10, -5, 0] > 90


# ---------------------------------------------------------------- real line strips


@pytest.mark.integration
@pytest.mark.real_data
def test_real_line_strips_sent_as_pages_are_not_turned(
    server: ServerProcess, real_lines: list[dict]
) -> None:
    """The 82 upright real line images, each sent as a page, come back unturned."""
    with grpc.insecure_channel(server.address) as channel:
        stub = ocr_pb2_grpc.OcrServiceStub(channel)
        turned = []
        for item in real_lines:
            request = ocr_pb2.RecognizePageRequest(image=ocr_pb2.Image(data=item["bytes"]))
            page = stub.RecognizePage(request, timeout=120)
            if page.rotation:
                turned.append((item["id"], page.rotation, page.text))
    assert not turned


# ---------------------------------------------------------------- a page whose caller goes away


class _HeldDetector:
    """Blocks in ``detect`` until released, so a test can cancel the page meanwhile."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def detect(
        self, image: np.ndarray, options: DetectionOptions
    ) -> tuple[list[DetectedLine], int]:
        self.started.set()
        assert self.release.wait(30)
        h, w = image.shape[:2]
        quad = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
        return [DetectedLine(quad=quad, score=0.9)], 0


class _CountingLineClassifier(_FakeLineClassifier):
    def __init__(self) -> None:
        super().__init__(turned=0.0)
        self.calls = 0

    def turned_probability(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        self.calls += 1
        return super().turned_probability(crops)


def test_a_cancelled_page_keeps_its_slot_until_its_thread_stops_and_skips_the_rest() -> None:
    """A page call cancelled while its page is being detected (the client gone, its
    deadline passed) holds its page slot until the worker thread is done with the page, and
    the thread skips the stages after the one it is in.

    Before, the cancelled call released its slot at once: the next page started while the
    first was still in a worker thread (more pages in memory than ``max_pages_in_flight``),
    and the first went on to classify its lines for no one.
    """
    detector, classifier = _HeldDetector(), _CountingLineClassifier()
    engine = OcrEngine(
        {"fake": FakeRecognizer(text="x")},  # type: ignore[dict-item]
        "fake",
        BatchLimits(max_delay_s=0.0),
        RequestLimits(max_pages_in_flight=1),
        preprocess_threads=2,
        page_models={
            "fake": PageModels(detector=detector, line_orientation=classifier)  # type: ignore[arg-type]
        },
    )
    page = cv2.imencode(".png", np.full((64, 256, 3), 255, np.uint8))[1].tobytes()

    async def scenario() -> None:
        engine.start()
        try:
            first = asyncio.create_task(engine.recognize_page(page))
            assert await asyncio.to_thread(detector.started.wait, 30)
            first.cancel()
            second = asyncio.create_task(engine.recognize_page(page))
            await asyncio.sleep(0.3)
            # The first page is still in its thread: it holds the only slot.
            assert not first.done() and engine._page_slots.locked()
            detector.started.clear()
            detector.release.set()
            with pytest.raises(asyncio.CancelledError):
                await first
            _, text = await asyncio.wait_for(second, 30)
            assert [line.text for line in text.lines] == ["x"]
            assert classifier.calls == 1  # the second page's; the first stopped after detection
        finally:
            await engine.aclose()

    asyncio.run(scenario())
