"""Shared fixtures: a real ``ocr-server`` process on a free loopback port, real data paths.

The server runs as a separate process exactly as a user starts it (``python -m
ocr_server.main``), with the real default model (fetched into the model cache on first use),
so integration tests exercise the same path as production.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ocr_core.ctc import LineText
from ocr_core.preprocess import PreparedLine, assemble_batch

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("OCR_EVAL_DIR", REPO_ROOT.parent / "shared" / "eval" / "real"))
STARTUP_TIMEOUT_S = 300.0  # includes fetching the model wheel on a fresh machine


class FakeRecognizer:
    """Stands in for the ONNX line recognizer in engine tests: checks the batch it is given
    and reads ``text``, or each line's original width when ``text`` is None. It has no idle
    session, so every call takes the batcher's queue (a busy server's path)."""

    name = "fake"
    input_height = 48
    workers = 1
    has_idle_session = False

    def __init__(self, text: str | None = None) -> None:
        self.text = text

    def infer(self, worker: int, lines: Sequence[PreparedLine]) -> list[LineText]:
        batch = assemble_batch(list(lines), self.input_height)
        assert batch.shape == (len(lines), 3, self.input_height, lines[0].bucket_width)
        return [LineText(self.text or str(line.orig_width), 1.0, ()) for line in lines]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A running server: its address and process, and where its log goes."""

    address: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


ChannelFactory = Callable[[str], grpc.Channel]


def health_status(
    address: str,
    service: str = "",
    timeout: float = 2.0,
    channel_factory: ChannelFactory = grpc.insecure_channel,
) -> int:
    with channel_factory(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status


def start_server(
    log_path: Path,
    *extra_args: str,
    channel_factory: ChannelFactory = grpc.insecure_channel,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """Start ``ocr-server`` on a free port and wait until health says SERVING.

    ``channel_factory`` opens the channel the health check uses (a TLS server needs a
    secure one); ``env`` is added to this process's environment for the child.
    """
    port = free_port()
    address = f"127.0.0.1:{port}"
    with log_path.open("wb") as log_file:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ocr_server.main",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *extra_args,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
        )
    server = ServerProcess(address, process, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            status = health_status(address, channel_factory=channel_factory)
            if status == health_pb2.HealthCheckResponse.SERVING:
                return server
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server not SERVING after {STARTUP_TIMEOUT_S} s:\n{server.log()}")


def run_server_to_exit(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``ocr-server`` with ``args`` and wait for it to exit (for settings that must fail)."""
    return subprocess.run(
        [sys.executable, "-m", "ocr_server.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )


def stop_server(server: ServerProcess, timeout: float = 30.0) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server with the default model and default limits for the whole session."""
    srv = start_server(tmp_path_factory.mktemp("server") / "server.log")
    yield srv
    assert stop_server(srv) == 0, srv.log()


def real_items(kind: str) -> list[dict]:
    """Manifest items of ``kind`` from shared/eval/real with their bytes, or skip if absent."""
    manifest = REAL_DATA / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip(f"real evaluation data not found at {REAL_DATA} (set OCR_EVAL_DIR)")
    items = [json.loads(x) for x in manifest.read_text(encoding="utf-8").splitlines() if x]
    chosen = [i for i in items if i["kind"] == kind]
    for item in chosen:
        item["bytes"] = (REAL_DATA / item["image"]).read_bytes()
    return chosen


@pytest.fixture(scope="session")
def real_lines() -> list[dict]:
    """The 82 real line crops."""
    return real_items("line")


@pytest.fixture(scope="session")
def real_pages() -> list[dict]:
    """The 12 real pages."""
    return real_items("page")


def render_line(text: str, height: int = 64, scale: float = 1.4) -> np.ndarray:
    """A gray text-line image drawn with OpenCV's built-in Hershey font (no font files)."""
    font = cv2.FONT_HERSHEY_DUPLEX
    (w, h), base = cv2.getTextSize(text, font, scale, 2)
    img = np.full((h + base + 20, w + 20), 255, np.uint8)
    cv2.putText(img, text, (10, h + 10), font, scale, 0, 2, cv2.LINE_AA)
    return img


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def render_page(lines: list[str], width: int = 1400, line_height: int = 90) -> np.ndarray:
    """A white gray page with ``lines`` drawn top to bottom in OpenCV's Hershey font."""
    page = np.full((line_height * (len(lines) + 2), width), 255, np.uint8)
    for i, text in enumerate(lines):
        y = line_height * (i + 1) + line_height // 2
        cv2.putText(page, text, (60, y), cv2.FONT_HERSHEY_DUPLEX, 1.6, 0, 2, cv2.LINE_AA)
    return page
