"""Conversions between ``ocr.v1`` messages and ``ocr_core`` values (no logic beyond mapping)."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from ocr_client.proto.ocr.v1 import ocr_pb2
from ocr_core.batching import BatcherStats
from ocr_core.ctc import LineText
from ocr_core.detection import DetectionOptions
from ocr_core.engine import ImageSource
from ocr_core.errors import InvalidInput, about_image
from ocr_core.geometry import bounds
from ocr_core.images import RawPixels
from ocr_core.pages import PageOptions, PageText

T = TypeVar("T")

#: The ColorOrder values this server knows (a set: checked for every raw image).
_COLOR_ORDERS = frozenset(ocr_pb2.ColorOrder.values())


def image_source(image: ocr_pb2.Image) -> ImageSource:
    """The core's view of an ``Image``: encoded bytes or a raw pixel buffer."""
    kind = image.WhichOneof("source")
    if kind == "data":
        return image.data
    if kind == "raw":
        raw = image.raw
        if raw.color_order not in _COLOR_ORDERS:  # proto3 enums are open
            raise InvalidInput(
                f"raw image has color_order={raw.color_order}; use COLOR_ORDER_RGB (1) or "
                "COLOR_ORDER_BGR (2), or leave it unset for RGB"
            )
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
            raise about_image(exc, index, len(images)) from exc
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
        idle_batches=s.idle_batches,
    )


def page_options(
    options: ocr_pb2.PageOptions | None, defaults: PageOptions | None = None
) -> PageOptions:
    """The core's page options: every unset field takes the server's default."""
    defaults = defaults or PageOptions()
    if options is None:
        return defaults
    det = defaults.detection

    def pick(name: str, default: T) -> T:
        return getattr(options, name) if options.HasField(name) else default

    return PageOptions(
        detection=DetectionOptions(
            max_side=pick("max_side", det.max_side),
            pixel_threshold=pick("pixel_threshold", det.pixel_threshold),
            box_threshold=pick("box_threshold", det.box_threshold),
            unclip_ratio=pick("unclip_ratio", det.unclip_ratio),
            min_line_height=pick("min_line_height", det.min_line_height),
            max_candidates=det.max_candidates,
        ),
        correct_page_rotation=pick("correct_page_rotation", defaults.correct_page_rotation),
        correct_line_rotation=pick("correct_line_rotation", defaults.correct_line_rotation),
        min_confidence=pick("min_confidence", defaults.min_confidence),
    )


def _quad(points: np.ndarray) -> ocr_pb2.Quad:
    return ocr_pb2.Quad(
        points=[ocr_pb2.Point(x=round(float(x)), y=round(float(y))) for x, y in points]
    )


def _rect(x: int, y: int, width: int, height: int) -> ocr_pb2.Rect:
    return ocr_pb2.Rect(x=x, y=y, width=width, height=height)


def page_result(page: PageText, model: str) -> ocr_pb2.PageResult:
    def bounds_of(points: np.ndarray) -> ocr_pb2.Rect:
        return _rect(*bounds(points, page.width, page.height))

    return ocr_pb2.PageResult(
        page_index=page.page_index,
        width=page.width,
        height=page.height,
        rotation=page.rotation,
        lines=[
            ocr_pb2.PageLine(
                text=line.text,
                confidence=line.confidence,
                box=_quad(line.quad),
                bounds=bounds_of(line.quad),
                words=[
                    ocr_pb2.PageWord(
                        text=w.text,
                        confidence=w.confidence,
                        box=_quad(w.quad),
                        bounds=bounds_of(w.quad),
                    )
                    for w in line.words
                ],
                block=line.block,
                upside_down=line.upside_down,
            )
            for line in page.lines
        ],
        blocks=[ocr_pb2.TextBlock(bounds=_rect(*b.bounds), lines=b.lines) for b in page.blocks],
        text=page.text,
        model=model,
        lines_left_out=page.lines_left_out,
    )
