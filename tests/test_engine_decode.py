"""Where a line image is decoded: on the event loop when it is small, else on the pool."""

from __future__ import annotations

import asyncio
import struct
import threading
import zlib
from collections.abc import Sequence

import cv2
import numpy as np
import pytest

import ocr_core.engine as engine_module
from ocr_core.batching import BatchLimits
from ocr_core.ctc import LineText
from ocr_core.engine import OcrEngine, RequestLimits
from ocr_core.errors import InvalidInput
from ocr_core.images import RawPixels
from ocr_core.preprocess import PreparedLine
from tests.conftest import FakeRecognizer, png


class IdleFakeRecognizer(FakeRecognizer):
    """The fake with an idle session: a one-image call on an idle batcher takes one hop."""

    has_idle_session = True

    def infer_idle(self, lines: Sequence[PreparedLine]) -> list[LineText]:
        return self.infer(0, lines)


def _engine(
    loop_decode_max_pixels: int,
    recognizer: FakeRecognizer | None = None,
    idle_max_pixels: int | None = 48 * 2048,
) -> OcrEngine:
    return OcrEngine(
        {"fake": recognizer or FakeRecognizer()},  # type: ignore[dict-item]
        "fake",
        BatchLimits(max_delay_s=0.0, idle_max_pixels=idle_max_pixels),
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
    assert engine._within(small, 64 * 300)
    assert not engine._within(large, 64 * 300)
    assert not engine._within(b"not an image", 64 * 300)  # no header: the pool says why


def test_a_small_header_on_a_long_file_is_not_decoded_on_the_loop() -> None:
    """A file may declare a few pixels and carry megabytes of metadata that the decoder
    still reads: more than 4 bytes per pixel of the bound goes to the pool."""
    data = _line(100)
    assert OcrEngine._within(data, 64 * 100)
    padded = data[:33] + _png_chunk(b"tEXt", b"k\x00" + b"x" * (4 * 64 * 100)) + data[33:]
    assert cv2.imdecode(np.frombuffer(padded, np.uint8), cv2.IMREAD_UNCHANGED) is not None
    assert not OcrEngine._within(padded, 64 * 100)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


@pytest.mark.parametrize(("width", "thread"), [(300, "infer-fake-idle"), (2000, "preprocess")])
def test_only_a_line_within_the_idle_bound_is_decoded_on_the_idle_thread(
    decode_threads: list[str], width: int, thread: str
) -> None:
    """The batcher counts as busy while a lone call decodes on its idle thread, so a large
    image (here over 4 x 48 x 300 pixels) is decoded on the pool, with the batcher free."""
    engine = _engine(0, IdleFakeRecognizer(), idle_max_pixels=48 * 300)
    assert asyncio.run(_recognize(engine, [_line(width)])) == [str(width)]
    assert len(decode_threads) == 1
    assert decode_threads[0].startswith(thread)


def test_a_broken_small_image_on_the_loop_gets_the_same_error_as_on_the_pool() -> None:
    data = _line(200)
    broken = data[:60] + bytes(len(data) - 60)  # header intact, pixel data zeroed
    messages = []
    for bound in (64 * 300, 0):
        with pytest.raises(InvalidInput) as info:
            asyncio.run(_recognize(_engine(bound), [broken]))
        messages.append(str(info.value))
    assert messages[0] == messages[1]
