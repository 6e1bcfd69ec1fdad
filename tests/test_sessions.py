"""ONNX Runtime sessions as ``create_session`` builds them, on the real recognizer.

The idle session (several intra-op threads) spins its pool threads inside a run and must
stop when the run returns: ONNX Runtime's default keeps them spinning afterwards, which
takes a core from the worker sessions that run next.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from ocr_core.registry import ModelRegistry
from ocr_core.sessions import SessionConfig, create_session

pytestmark = pytest.mark.integration


def _cpu_after_run(threads: int) -> float:
    """CPU seconds this process uses in the 0.2 s after a run on a ``threads``-thread session."""
    spec = ModelRegistry.from_files().resolve("ppocr-v6-small")
    session = create_session(
        spec.recognizer_path, SessionConfig(workers=1), "test idle session", threads=threads
    )
    name = session.get_inputs()[0].name
    batch = np.random.default_rng(0).uniform(-1, 1, (1, 3, spec.input_height, 320))
    feed = {name: batch.astype(np.float32)}
    for _ in range(3):
        session.run(None, feed)
    before = time.process_time()
    time.sleep(0.2)
    return time.process_time() - before


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs for a 2-thread session")
def test_the_idle_session_stops_spinning_when_its_run_returns() -> None:
    # Measured: ~0.028 s with ONNX Runtime's default spinning (a core spins for ~28 ms
    # after each run), ~0.0001 s with it stopped.
    assert _cpu_after_run(threads=2) < 0.01
