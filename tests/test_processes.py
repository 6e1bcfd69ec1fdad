"""``ocr-server --processes N``: N real server processes on one port, each on its own CPUs,
stopped together by one signal, and stopped together when one of them dies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ocr_client import AsyncOcrClient, OcrClient
from ocr_server.app import processes_hint
from ocr_server.config import parse_config
from ocr_server.supervisor import child_command, cpu_shares
from tests.conftest import REPO_ROOT, free_port, png, render_line, run_server_to_exit

USABLE = sorted(os.sched_getaffinity(0))


def test_cpus_are_split_into_contiguous_shares() -> None:
    assert cpu_shares(list(range(16)), 4) == [list(range(i, i + 4)) for i in (0, 4, 8, 12)]
    assert cpu_shares([0, 1, 2, 5, 6], 2) == [[0, 1, 2], [5, 6]]
    assert cpu_shares([3], 1) == [[3]]
    with pytest.raises(ValueError, match="--processes 3 needs at least 3 CPUs"):
        cpu_shares([0, 1], 3)


def test_a_child_gets_the_same_flags_one_process_the_shared_port_and_its_metrics_port() -> None:
    argv = ["--port", "50051", "--processes", "4", "--metrics-port", "9100"]
    config = parse_config(argv, env={})
    command = child_command(argv, config, 2)
    assert command[:3] == [sys.executable, "-m", "ocr_server.main"]
    child = parse_config(command[3:], env={"OCR_PROCESSES": "4"})
    settings = (child.processes, child.reuse_port, child.port, child.metrics_port)
    assert settings == (1, True, 50051, 9102)
    no_metrics = child_command(["--processes", "2"], parse_config(["--processes", "2"], env={}), 1)
    assert "--metrics-port" not in no_metrics


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--processes", "0"], "--processes must be at least 1"),
        (["--processes", "2", "--port", "0"], "--processes needs a fixed --port"),
        (["--processes", "3", "--metrics-port", "65534"], "each process serves metrics"),
    ],
)
def test_bad_process_settings_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit):
        parse_config(argv, env={})
    result = run_server_to_exit(*argv)
    assert result.returncode == 2
    assert message in result.stderr


def test_more_processes_than_cpus_is_refused_with_the_count() -> None:
    result = run_server_to_exit("--processes", str(len(USABLE) + 1), "--port", str(free_port()))
    assert result.returncode == 1
    assert f"needs at least {len(USABLE) + 1} CPUs" in result.stderr
    assert "Traceback" not in result.stderr


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(x) for x in text.split()]


def _cpus_of(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no Cpus_allowed_list")


def _start(port: int, log_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "ocr_server.main", "--host", "127.0.0.1"),
                *("--port", str(port), "--processes", "2", *extra),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )


def _wait_serving(log_path: Path, count: int) -> None:
    deadline = time.monotonic() + 120
    while log_path.read_text(errors="replace").count("serving ocr.v1.OcrService") < count:
        assert time.monotonic() < deadline, log_path.read_text(errors="replace")
        time.sleep(0.2)


def _two_free_ports() -> int:
    """A port P with P + 1 free too (child i serves metrics on P + i)."""
    for _ in range(50):
        port = free_port()
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", port + 1))
            return port
    raise RuntimeError("no two consecutive free ports")


def _lines_recognized(metrics_port: int) -> float:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "ocr_lines_recognized_total"
    )


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.integration
@pytest.mark.skipif(len(USABLE) < 2, reason="needs 2 usable CPUs")
def test_two_processes_serve_on_their_own_cpus_and_stop_on_one_sigterm(tmp_path: Path) -> None:
    port = free_port()
    metrics = _two_free_ports()
    log = tmp_path / "server.log"
    supervisor = _start(port, log, "--metrics-port", str(metrics))
    try:
        _wait_serving(log, 2)
        children = _children(supervisor.pid)
        assert len(children) == 2
        assert [_cpus_of(pid) for pid in children] == [str(USABLE[0]), str(USABLE[1])]
        line = png(render_line("two processes"))
        seen = []
        for _ in range(24):  # fresh connections: the kernel picks a process for each
            with OcrClient(f"127.0.0.1:{port}", timeout=60) as client:
                assert client.recognize_line(line).text == "two processes"
                seen.append(client.get_stats().batchers[0].lines_enqueued)
        # Each process counts its own lines from the same start, so two processes that both
        # answered show the same count twice; one process alone would count 24 distinct.
        assert len(set(seen)) < len(seen), seen

        # Child i serves its own metrics on the metrics port + i. One connection reaches one
        # process; a client with 16 connections reaches both (all 16 on one: 2 in 65536).
        def counts() -> list[float]:
            return [_lines_recognized(metrics + i) for i in range(2)]

        before = counts()
        with OcrClient(f"127.0.0.1:{port}", timeout=60) as client:
            for _ in range(8):
                assert client.recognize_line(line).text == "two processes"
        grew = [b - a for a, b in zip(before, counts(), strict=True)]
        assert sorted(grew) == [0, 8], grew
        before = counts()
        with OcrClient(f"127.0.0.1:{port}", timeout=60, connections=16) as client:
            client.wait_ready()
            for _ in range(32):
                assert client.recognize_line(line).text == "two processes"
        grew = [b - a for a, b in zip(before, counts(), strict=True)]
        assert sum(grew) == 32 and min(grew) > 0, grew

        # The CLI as a user runs it: 32 line files over 16 connections reach both processes.
        files = []
        for i in range(32):
            files.append(tmp_path / f"line{i}.png")
            files[-1].write_bytes(line)
        before = counts()
        cli = subprocess.run(
            [
                *(sys.executable, "-m", "ocr_client.cli", "lines", *map(str, files)),
                "--address",
                f"127.0.0.1:{port}",
                "--connections",
                "16",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.splitlines() == [f"{f}\ttwo processes" for f in files]
        grew = [b - a for a, b in zip(before, counts(), strict=True)]
        assert sum(grew) == 32 and min(grew) > 0, grew

        async def pooled() -> list[str]:
            async with AsyncOcrClient(f"127.0.0.1:{port}", timeout=60, connections=4) as client:
                await client.wait_ready()
                results = await asyncio.gather(*(client.recognize_line(line) for _ in range(8)))
                return [r.text for r in results]

        assert asyncio.run(pooled()) == ["two processes"] * 8
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(60) == 0, log.read_text()
        assert all(_gone(pid) for pid in children)
        assert log.read_text().count("stopped") >= 2
    finally:
        if supervisor.poll() is None:
            supervisor.kill()


@pytest.mark.integration
@pytest.mark.skipif(len(USABLE) < 2, reason="needs 2 usable CPUs")
def test_a_process_that_dies_stops_the_others_and_the_supervisor_fails(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    supervisor = _start(free_port(), log)
    try:
        _wait_serving(log, 2)
        first, second = _children(supervisor.pid)
        os.kill(first, signal.SIGKILL)
        assert supervisor.wait(60) == 1
        text = log.read_text()
        assert f"(pid {first}) exited with status -9; stopping the others" in text
        assert _gone(second)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()


def test_a_process_with_more_inference_threads_than_its_gil_feeds_suggests_processes() -> None:
    assert processes_hint(8, 16) is None
    assert processes_hint(12, 2) is None  # many threads on few CPUs: more processes cannot help
    hint = processes_hint(16, 16)
    assert hint is not None
    assert "--processes 4" in hint and "several" in hint


def test_a_client_refuses_fewer_than_one_connection() -> None:
    with pytest.raises(ValueError, match="connections must be at least 1"):
        OcrClient("127.0.0.1:1", connections=0)
    with pytest.raises(ValueError, match="connections must be at least 1"):
        AsyncOcrClient("127.0.0.1:1", connections=0)


@pytest.mark.integration
@pytest.mark.skipif(len(USABLE) < 2, reason="needs 2 usable CPUs")
def test_children_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    """SIGKILL to the supervisor (the OOM killer, systemd's KillMode=process) left both
    children serving as orphans on the shared port."""
    log = tmp_path / "server.log"
    supervisor = _start(free_port(), log)
    children: list[int] = []
    try:
        _wait_serving(log, 2)
        children = _children(supervisor.pid)
        supervisor.kill()
        supervisor.wait(30)
        deadline = time.monotonic() + 60
        while not all(_gone(pid) for pid in children):
            assert time.monotonic() < deadline, f"orphans still running: {children}"
            time.sleep(0.2)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        for pid in children:  # orphans, when this fails
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.integration
@pytest.mark.skipif(len(USABLE) < 2, reason="needs 2 usable CPUs")
def test_a_stop_right_after_the_start_is_a_clean_exit(tmp_path: Path) -> None:
    """SIGTERM before the children's servers set their handlers killed them with -15,
    which the supervisor reported as failures and exited 1."""
    log = tmp_path / "server.log"
    supervisor = _start(free_port(), log)
    try:
        deadline = time.monotonic() + 30
        while len(_children(supervisor.pid)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(60) == 0, log.read_text()
        assert "exited with status" not in log.read_text()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
