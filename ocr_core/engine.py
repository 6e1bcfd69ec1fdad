"""The OCR engine: served models, their batchers, and the decode/resize step in front of them.

The server's RPCs (unary and streaming alike) call ``OcrEngine.recognize_lines``; all image
decoding and resizing runs in the engine's preprocessing thread pool and all inference in the
batchers' worker pools, so nothing heavy runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ocr_core.batching import BatchLimits, MicroBatcher
from ocr_core.ctc import LineText
from ocr_core.errors import InvalidInput, ModelNotFound, OcrError, TooLarge
from ocr_core.images import RawPixels, decode_image, raw_to_bgr
from ocr_core.preprocess import PreparedLine, WidthBuckets, prepare_line
from ocr_core.recognizer import LineRecognizer

log = logging.getLogger(__name__)

ImageSource = bytes | RawPixels


@dataclass(frozen=True)
class RequestLimits:
    """Per-request limits; each violation is a clear error naming the limit."""

    max_lines_per_request: int = 256
    max_image_pixels: int = 16_000_000
    max_line_width: int = 4096


@dataclass
class ServedModel:
    """A model as served: its recognizer and its batcher."""

    recognizer: LineRecognizer
    batcher: MicroBatcher
    buckets: WidthBuckets


class OcrEngine:
    """Owns the served models and the preprocessing pool; ``start``/``aclose`` bracket its life."""

    def __init__(
        self,
        recognizers: Mapping[str, LineRecognizer],
        default_model: str,
        batch_limits: BatchLimits,
        request_limits: RequestLimits,
        preprocess_threads: int = 2,
    ) -> None:
        if default_model not in recognizers:
            raise ValueError(f"default model {default_model!r} is not among {list(recognizers)}")
        self.default_model = default_model
        self.batch_limits = batch_limits
        self.request_limits = request_limits
        buckets = WidthBuckets(max_width=request_limits.max_line_width)
        self._models = {
            name: ServedModel(
                rec,
                MicroBatcher(name, rec.infer, rec.workers, rec.input_height, batch_limits),
                buckets,
            )
            for name, rec in recognizers.items()
        }
        self._preprocess_threads = preprocess_threads
        self._pool: ThreadPoolExecutor | None = None

    @property
    def models(self) -> Mapping[str, ServedModel]:
        return self._models

    def start(self) -> None:
        """Start the batchers and the preprocessing pool on the running loop."""
        self._pool = ThreadPoolExecutor(self._preprocess_threads, thread_name_prefix="preprocess")
        for served in self._models.values():
            served.batcher.start()

    async def warm_up(self) -> None:
        """Run one line through every session of every model so the first request is not slow."""
        line_image = np.full((48, 320, 3), 255, dtype=np.uint8)
        for served in self._models.values():
            rec = served.recognizer
            line = prepare_line(line_image, rec.input_height, served.buckets)
            loop = asyncio.get_running_loop()
            await asyncio.gather(
                *(
                    loop.run_in_executor(self._pool, rec.infer, w, [line])
                    for w in range(rec.workers)
                )
            )

    async def aclose(self) -> None:
        """Close every batcher (queued lines fail with ShuttingDown) and the pool."""
        await asyncio.gather(*(s.batcher.aclose() for s in self._models.values()))
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def resolve(self, model: str) -> ServedModel:
        """The served model named ``model`` ("" = the default), or ``ModelNotFound``."""
        name = model or self.default_model
        served = self._models.get(name)
        if served is None:
            raise ModelNotFound(
                f"model {name!r} is not served here; served models: {sorted(self._models)} "
                "(see ListModels)"
            )
        return served

    async def recognize_lines(
        self, images: Sequence[ImageSource], model: str = "", timeout_s: float | None = None
    ) -> tuple[str, list[LineText]]:
        """Recognise line images with one model; returns (model name, results in order).

        ``timeout_s`` is the caller's remaining time; lines still queued when it runs out are
        dropped and the call fails with ``DeadlineExpired``.
        """
        served = self.resolve(model)
        limit = self.request_limits.max_lines_per_request
        if not images:
            raise InvalidInput("no images in the request; send at least one line image")
        if len(images) > limit:
            raise TooLarge(
                f"{len(images)} images in one request, over the limit of {limit}; "
                "split them across several requests or use StreamRecognize"
            )
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        lines = await loop.run_in_executor(self._pool, self._prepare_all, served, images)
        results = await served.batcher.recognize(lines, deadline)
        return served.recognizer.name, results

    def _prepare_all(
        self, served: ServedModel, images: Sequence[ImageSource]
    ) -> list[PreparedLine]:
        height = served.recognizer.input_height
        limits = self.request_limits
        prepared = []
        for index, image in enumerate(images):
            try:
                if isinstance(image, RawPixels):
                    bgr = raw_to_bgr(image, limits.max_image_pixels)
                else:
                    bgr = decode_image(image, limits.max_image_pixels)
                prepared.append(prepare_line(bgr, height, served.buckets))
            except OcrError as exc:
                if len(images) > 1:
                    raise type(exc)(f"image {index}: {exc}") from exc
                raise
        return prepared
