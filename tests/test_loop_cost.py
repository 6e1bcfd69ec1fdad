"""bench.loop_cost drives the real servicer in process: it must keep working as the servicer,
engine and batcher change (a stand-in context missing what a handler reads fails here)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bench import loop_cost
from ocr_client.proto.ocr.v1 import ocr_pb2
from tests.conftest import png


def _line_png(width: int) -> bytes:
    image = np.full((40, width), 255, np.uint8)
    image[12:28, 8 : width - 8] = 0
    return png(image)


@pytest.mark.parametrize("mode", loop_cost.MODES)
@pytest.mark.parametrize("source", loop_cost.SOURCES)
def test_a_window_counts_lines_and_loop_cpu(mode: str, source: str) -> None:
    data = [_line_png(w) for w in (120, 200, 330)]
    if source == "raw":
        images = loop_cost.raw_request_images(data)
        assert images[0].WhichOneof("source") == "raw"
    else:
        images = [ocr_pb2.Image(data=d) for d in data]
    args = loop_cost.parse_args(
        ["--concurrency", "4", "--duration", "0.3", "--warmup", "0.1", "--infer-ms", "1"]
    )
    reading = asyncio.run(loop_cost.measure(mode, source, images, args))
    assert reading.mode == mode and reading.source == source
    assert reading.lines_per_s > 0
    assert reading.loop_ms_per_line > 0


def test_the_report_gives_the_differences() -> None:
    args = loop_cost.parse_args(["--modes", "unary", "--rounds", "1"])
    readings = [
        loop_cost.Reading("unary", "files", 290.0, 0.5),
        loop_cost.Reading("unary", "raw", 290.0, 0.2),
        loop_cost.Reading("unary", "driver", 9000.0, 0.01),
    ]
    text = loop_cost.report(readings, args)
    assert "decode (files - raw) 0.300" in text
    assert "(raw - driver) 0.190" in text


def test_bad_flags_are_refused() -> None:
    with pytest.raises(SystemExit):
        loop_cost.parse_args(["--modes", "pages"])
    with pytest.raises(SystemExit):
        loop_cost.parse_args(["--concurrency", "0"])
