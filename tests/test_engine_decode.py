"""Where a line image is decoded: on the event loop when it is small, else on the pool."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import ocr_core.engine as engine_module
from ocr_core.batching import BatchLimits
from ocr_core.engine import OcrEngine, RequestLimits
from ocr_core.errors import InvalidInput
from ocr_core.images import RawPixels
from tests.conftest import FakeRecognizer, png


def _engine(loop_decode_max_pixels: int) -> OcrEngine:
    return OcrEngine(
        {"fake": FakeRecognizer()},  # type: ignore[dict-item]
        "fake",
        BatchLimits(max_delay_s=0.0),
        RequestLimits(),
        preprocess_threads=1,
        loop_decode_max_pixels=loop_decode_max_pixels,
    )


@pytest.fixture
def decode_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads that decoded each image, in order."""
    seen: list[str] = []
    real = engine_module.decode_image

    def spy(data: bytes, max_pixels: int) -> np.ndarray:
        seen.append(threading.current_thread().name)
        return real(data, max_pixels)

    monkeypatch.setattr(engine_module, "decode_image", spy)
    return seen


def _line(width: int) -> bytes:
    """A PNG of about ``width`` x 64 pixels."""
    image = np.full((64, width), 255, np.uint8)
    image[20:40, 10 : width - 10] = 0
    return png(image)


async def _recognize(engine: OcrEngine, images: list[bytes | RawPixels]) -> list[str]:
    engine.start()
    try:
        _, results = await engine.recognize_lines(images)
    finally:
        await engine.aclose()
    return [r.text for r in results]


def test_small_images_decode_on_the_loop_large_ones_and_batches_on_the_pool(
    decode_threads: list[str],
) -> None:
    loop_thread = threading.current_thread().name  # asyncio.run runs the loop here
    engine = _engine(64 * 300)
    assert asyncio.run(_recognize(engine, [_line(300)])) == ["300"]
    engine = _engine(64 * 300)
    assert asyncio.run(_recognize(engine, [_line(301)])) == ["301"]
    engine = _engine(64 * 300)
    assert asyncio.run(_recognize(engine, [_line(100), _line(120)])) == ["100", "120"]
    assert decode_threads[0] == loop_thread
    assert all(name.startswith("preprocess") for name in decode_threads[1:])
    assert len(decode_threads) == 4


def test_zero_keeps_every_decode_off_the_loop(decode_threads: list[str]) -> None:
    assert asyncio.run(_recognize(_engine(0), [_line(100)])) == ["100"]
    assert decode_threads and decode_threads[0].startswith("preprocess")


def test_raw_pixels_use_the_same_bound() -> None:
    engine = _engine(64 * 300)
    small = RawPixels(width=300, height=64, channels=1, pixels=bytes(300 * 64))
    large = RawPixels(width=301, height=64, channels=1, pixels=bytes(301 * 64))
    assert engine._decodes_quickly(small)
    assert not engine._decodes_quickly(large)
    assert not engine._decodes_quickly(b"not an image")  # no header: the pool says why


def test_a_broken_small_image_on_the_loop_gets_the_same_error_as_on_the_pool() -> None:
    data = _line(200)
    broken = data[:60] + bytes(len(data) - 60)  # header intact, pixel data zeroed
    messages = []
    for bound in (64 * 300, 0):
        with pytest.raises(InvalidInput) as info:
            asyncio.run(_recognize(_engine(bound), [broken]))
        messages.append(str(info.value))
    assert messages[0] == messages[1]
