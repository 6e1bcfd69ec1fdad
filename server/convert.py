"""Conversions between ``ocr.v1`` messages and ``ocr_core`` values (no logic beyond mapping)."""

from __future__ import annotations

from ocr_client.proto.ocr.v1 import ocr_pb2
from ocr_core.batching import BatcherStats
from ocr_core.ctc import LineText
from ocr_core.engine import ImageSource
from ocr_core.errors import InvalidInput
from ocr_core.images import RawPixels


def image_source(image: ocr_pb2.Image) -> ImageSource:
    """The core's view of an ``Image``: encoded bytes or a raw pixel buffer."""
    kind = image.WhichOneof("source")
    if kind == "data":
        return image.data
    if kind == "raw":
        raw = image.raw
        return RawPixels(
            width=raw.width,
            height=raw.height,
            channels=raw.channels,
            pixels=raw.pixels,
            bgr=raw.color_order == ocr_pb2.COLOR_ORDER_BGR,
        )
    raise InvalidInput("image is empty: set `data` (an encoded file) or `raw` (pixels)")


def image_sources(images: list[ocr_pb2.Image]) -> list[ImageSource]:
    """``image_source`` for each image, naming the index of an empty one."""
    sources = []
    for index, image in enumerate(images):
        try:
            sources.append(image_source(image))
        except InvalidInput as exc:
            raise InvalidInput(f"image {index}: {exc}") from exc
    return sources


def line_result(line: LineText) -> ocr_pb2.LineResult:
    return ocr_pb2.LineResult(
        text=line.text,
        confidence=line.confidence,
        words=[
            ocr_pb2.Word(text=w.text, confidence=w.confidence, x_start=w.x_start, x_end=w.x_end)
            for w in line.words
        ],
    )


def batcher_stats(model: str, s: BatcherStats, depth: int, capacity: int) -> ocr_pb2.BatcherStats:
    return ocr_pb2.BatcherStats(
        model=model,
        lines_enqueued=s.lines_enqueued,
        lines_inferred=s.lines_inferred,
        batches=s.batches,
        batch_size_counts=dict(s.batch_sizes),
        queue_depth=depth,
        queue_capacity=capacity,
        queue_wait_ms_total=s.queue_wait_s_total * 1e3,
        queue_wait_ms_max=s.queue_wait_s_max * 1e3,
        inference_ms_total=s.inference_s_total * 1e3,
        content_pixels=s.content_pixels,
        padded_pixels=s.padded_pixels,
        dropped_cancelled=s.dropped_cancelled,
        dropped_expired=s.dropped_expired,
        rejected_queue_full=s.rejected_queue_full,
        failed_batches=s.failed_batches,
    )
