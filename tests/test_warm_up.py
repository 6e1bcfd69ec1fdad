"""Warming up: a model that loads but cannot run stops the start with one line naming it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from ocr_core.batching import BatchLimits
from ocr_core.ctc import LineText
from ocr_core.engine import OcrEngine, RequestLimits
from ocr_core.errors import ModelLoadError
from ocr_core.preprocess import PreparedLine
from tests.conftest import FakeRecognizer


class BrokenRecognizer(FakeRecognizer):
    """Loads, then fails every run the way ONNX Runtime does for a graph that cannot run."""

    def infer(self, worker: int, lines: Sequence[PreparedLine]) -> list[LineText]:
        raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Reshape failed")


async def test_a_model_that_cannot_run_a_line_fails_the_warm_up_naming_it() -> None:
    engine = OcrEngine(
        {"good": FakeRecognizer(), "mine": BrokenRecognizer()},  # type: ignore[dict-item]
        "good",
        BatchLimits(),
        RequestLimits(),
        preprocess_threads=1,
    )
    engine.start()
    try:
        with pytest.raises(ModelLoadError) as raised:
            await engine.warm_up()
    finally:
        await engine.aclose()
    message = str(raised.value)
    assert message.startswith("model 'mine' loaded but failed its warm-up run on a blank 48x")
    assert message.endswith(": [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Reshape failed")
