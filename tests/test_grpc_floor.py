"""bench.grpc_floor's floor server: it must answer as documented (the fixed line, after its
hold, on the loop or on a thread), since the report subtracts its figures from the real
server's."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from bench import grpc_floor
from bench.common import LineImage
from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from tests.conftest import png, render_line


async def _calls(hold_s: float, on_thread: bool) -> tuple[list[float], list, list]:
    """Two one-line calls and a two-item stream against an in-process floor server."""
    server = grpc.aio.server()
    ocr_pb2_grpc.add_OcrServiceServicer_to_server(
        grpc_floor.floor_servicer("m", hold_s, on_thread), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ocr_pb2_grpc.OcrServiceStub(channel)
            request = ocr_pb2.RecognizeLinesRequest(images=[ocr_pb2.Image(data=b"x")])
            took, responses = [], []
            for _ in range(2):
                start = time.perf_counter()
                responses.append(await stub.RecognizeLines(request, timeout=10))
                took.append(time.perf_counter() - start)
            items = [
                ocr_pb2.StreamRecognizeRequest(id=str(i), line=ocr_pb2.Image(data=b"x"))
                for i in range(2)
            ]
            streamed = [r async for r in stub.StreamRecognize(iter(items), timeout=10)]
    finally:
        await server.stop(None)
    return took, responses, streamed


@pytest.mark.parametrize("on_thread", [False, True])
def test_the_floor_answers_the_fixed_line_after_its_hold(on_thread: bool) -> None:
    took, responses, streamed = asyncio.run(_calls(0.05, on_thread))
    assert all(t >= 0.05 for t in took)
    for response in responses:
        assert response.model == "m"
        assert [r.text for r in response.results] == [grpc_floor.FLOOR_TEXT]
        assert len(response.results[0].words) == len(grpc_floor.FLOOR_TEXT.split())
    assert [(r.id, r.line.text) for r in streamed] == [
        (i, grpc_floor.FLOOR_TEXT) for i in ("0", "1")
    ]


def test_an_unheld_floor_answers() -> None:
    _, responses, streamed = asyncio.run(_calls(0.0, False))
    assert responses[0].results[0].text == grpc_floor.FLOOR_TEXT
    assert len(streamed) == 2


_LINE_WORK = {
    "decode_resize": 0.4,
    "assembly": 0.1,
    "output": 0.5,
    "passes": 3,
    "mean_batch": 2.0,
}


def _window(mode: str, server_ms: float, load_ms: float, cores: tuple[float, float]) -> dict:
    return {
        "mode": mode,
        "concurrency": 64,
        "lines_per_s": 150.0,
        "latency_ms": {"p50": 100.0, "mean": 100.0},
        "cpu_ms_per_line": {"server": server_ms, "load_generator": load_ms},
        "cpu_cores": {"server": cores[0], "load_generator": cores[1]},
    }


def test_the_cpu_split_gives_the_rest_and_the_ceiling() -> None:
    result = {
        "raw": {  # 200 lines/s on one core: 5.0 ms of CPU per line
            "limit_lines_per_s": 200.0,
            "limit_mode": "one",
            "modes": [{"mode": "one", "own_cpu_cores": 1.0, "lines_per_s": 200.0}],
        },
        "server": [_window("stream", 8.0, 0.5, (1.5, 0.1))],
        "floor": [{**_window("stream", 0.5, 0.2, (0.1, 0.1)), "hold_ms": 100.0}],
        "server_c1": {"raw_ms_p50": 16.0, "server_ms_p50": 19.5, "extra_ms_p50": 3.5},
        "floor_c1": {"call_ms_p50": 0.6, "empty_call_ms_p50": 0.55},
        "floor_c1_held": {"call_ms_p50": 17.4, "hold_ms": 16.0},
        "line_work": _LINE_WORK,
    }
    report = "\n".join(grpc_floor.model_report("m", result))
    # line work 0.4 + 0.1 + 0.5 = 1.0; rest 8.0 - 0.5 - 5.0 - 1.0 = 1.5; total 8.0 + 0.5;
    # ceiling 5.0 / (0.5 + 0.5 + 5.0 + 1.0) = 0.71; needed 1.6 cores / (0.8 x 200) = 10 ms
    assert "| stream | 64 | 0.50 | 0.50 | 5.00 | 1.00 | 1.50 | 8.50 | 0.71 | 10.00 / 8.89 |" in (
        report
    )
    assert "decode and resize 0.400" in report and "mean 2.00 lines" in report


def test_line_work_times_a_real_model_on_lines(tmp_path: Path) -> None:
    from ocr_core.registry import ModelRegistry

    spec = ModelRegistry.from_files().resolve("ppocr-v6-tiny")
    lines = [
        LineImage(f"l{i}", tmp_path / f"l{i}.png", png(render_line(text)))
        for i, text in enumerate(("Invoice 2041", "Total due", "Page 3 of 7"))
    ]
    args = grpc_floor.parse_args(["--models", "ppocr-v6-tiny", "--line-work-passes", "2"])
    work = grpc_floor.line_work(spec, lines, args)
    assert work["passes"] == 2
    assert 1.0 <= work["mean_batch"] <= 3.0
    for part in ("decode_resize", "assembly", "output"):
        assert 0.0 < work[part] < 100.0, (part, work)


def test_the_c1_row_splits_the_server_gap_at_the_waiting_floor() -> None:
    result = {
        "raw": {
            "limit_lines_per_s": 50.0,
            "limit_mode": "one",
            "modes": [{"mode": "one", "own_cpu_cores": 1.0, "lines_per_s": 50.0}],
        },
        "server": [],
        "floor": [],
        "server_c1": {"raw_ms_p50": 16.0, "server_ms_p50": 19.5, "extra_ms_p50": 3.5},
        "floor_c1": {"call_ms_p50": 0.6, "empty_call_ms_p50": 0.55},
        "floor_c1_held": {"call_ms_p50": 17.4, "hold_ms": 16.0},
        "line_work": _LINE_WORK,
    }
    report = "\n".join(grpc_floor.model_report("m", result))
    # waiting floor 17.4 - 16.0 = 1.40 of the server's 3.50; 2.10 is the server's own
    assert "| 16.00 | 19.50 | 3.50 | 0.60 | 1.40 | 2.10 | 0.55 |" in report
    assert "waiting 16.0 ms" in report


def test_the_floor_command_passes_where_to_hold() -> None:
    plain = grpc_floor.floor_command(5000, "m", 12.5)
    assert plain[-2:] == ["--hold-ms", "12.500"]
    assert grpc_floor.floor_command(5000, "m", 12.5, on_thread=True)[-1] == "--hold-on-thread"
    args = grpc_floor.parse_args(["--serve-floor", "5000", "--hold-ms", "3", "--hold-on-thread"])
    assert args.serve_floor == 5000 and args.hold_ms == 3.0 and args.hold_on_thread
