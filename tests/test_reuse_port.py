"""One port, several server processes (SO_REUSEPORT): both serve, and one can leave."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from ocr_client import OcrClient
from tests.conftest import (
    REPO_ROOT,
    free_port,
    health_status,
    png,
    render_line,
    run_server_to_exit,
)

pytestmark = pytest.mark.integration


def _start(port: int, log_path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "ocr_server.main", "--host", "127.0.0.1"),
                *("--port", str(port), "--reuse-port", "--workers", "1"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )


def _wait_logged(log_path, text: str) -> None:
    deadline = time.monotonic() + 120
    while text not in log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, log_path.read_text(errors="replace")
        time.sleep(0.2)


def test_two_processes_share_a_port_and_one_can_leave(tmp_path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    processes = [_start(port, logs[0]), _start(port, logs[1])]
    try:
        for log in logs:  # both bound the same port and reached SERVING
            _wait_logged(log, "serving ocr.v1.OcrService")
        line = png(render_line("shared port"))
        for _ in range(8):  # fresh connections: the kernel picks a process for each
            with OcrClient(address, timeout=60) as client:
                assert client.recognize_line(line).text == "shared port"
        processes[0].send_signal(signal.SIGTERM)
        assert processes[0].wait(60) == 0
        assert health_status(address) == health_pb2.HealthCheckResponse.SERVING
        with OcrClient(address, timeout=60) as client:
            assert client.recognize_line(line).text == "shared port"
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(60)


def test_without_reuse_port_a_second_process_cannot_bind(tmp_path) -> None:
    port = free_port()
    first = _start(port, tmp_path / "a.log")
    try:
        _wait_logged(tmp_path / "a.log", "serving ocr.v1.OcrService")
        second = run_server_to_exit("--host", "127.0.0.1", "--port", str(port))
        assert second.returncode == 1
        assert "--reuse-port" in second.stderr and "Traceback" not in second.stderr
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
