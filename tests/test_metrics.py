"""Prometheus metrics: a real server with --metrics-port, scraped over HTTP after real calls."""

from __future__ import annotations

import io
import socket
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from PIL import Image as PILImage
from prometheus_client.parser import text_string_to_metric_families

from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from tests.conftest import (
    ServerProcess,
    free_port,
    png,
    render_line,
    render_page,
    run_server_to_exit,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory) -> Iterator[tuple[ServerProcess, int]]:
    port = free_port()
    srv = start_server(
        tmp_path_factory.mktemp("metrics") / "server.log", "--metrics-port", str(port)
    )
    yield srv, port
    assert stop_server(srv) == 0, srv.log()


#: Scraped samples by (name, sorted labels).
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def sample_key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted(labels.items())))


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; one the server does not export fails, so a gauge that is never
    exported cannot pass for a gauge that reads 0."""
    key = sample_key(name, **labels)
    assert key in samples, f"the server exports no sample {name} {labels}"
    return samples[key]


def test_calls_lines_pages_and_batches_are_counted(metrics_server) -> None:
    server, port = metrics_server
    before = scrape(port)
    assert value(before, "ocr_serving") == 1
    assert value(before, "ocr_model_loaded", model="ppocr-v6-small") == 1
    assert value(before, "ocr_model_reads_pages", model="ppocr-v6-small") == 1
    line = ocr_pb2.Image(data=png(render_line("Hello World 2026")))
    with grpc.insecure_channel(server.address) as channel:
        stub = ocr_pb2_grpc.OcrServiceStub(channel)
        for _ in range(3):
            stub.RecognizeLines(ocr_pb2.RecognizeLinesRequest(images=[line, line]), timeout=60)
        with pytest.raises(grpc.RpcError):
            stub.RecognizeLines(
                ocr_pb2.RecognizeLinesRequest(images=[line], model="no-such-model"), timeout=60
            )
        page = ocr_pb2.Image(data=png(render_page(["First line here", "Second line there"])))
        stub.RecognizePage(ocr_pb2.RecognizePageRequest(image=page), timeout=60)
        items = [
            ocr_pb2.StreamRecognizeRequest(id="a", line=line),
            ocr_pb2.StreamRecognizeRequest(id="b", line=ocr_pb2.Image(data=b"junk")),
            ocr_pb2.StreamRecognizeRequest(id="c", page=page),
        ]
        assert len(list(stub.StreamRecognize(iter(items), timeout=60))) == 3
    after = scrape(port)

    def delta(name: str, **labels: str) -> float:
        # A labelled counter has no sample until its first count (RecognizeLines with code
        # NOT_FOUND, say), so before the calls it may be missing and counts from 0; after
        # them it must be there.
        return value(after, name, **labels) - before.get(sample_key(name, **labels), 0.0)

    assert delta("ocr_rpc_calls_total", method="RecognizeLines", code="OK") == 3
    assert delta("ocr_rpc_calls_total", method="RecognizeLines", code="NOT_FOUND") == 1
    assert delta("ocr_rpc_calls_total", method="RecognizePage", code="OK") == 1
    assert delta("ocr_rpc_calls_total", method="StreamRecognize", code="OK") == 1
    assert delta("ocr_rpc_duration_seconds_count", method="RecognizeLines") == 4
    assert delta("ocr_stream_items_total", kind="line", code="OK") == 1
    assert delta("ocr_stream_items_total", kind="line", code="INVALID_ARGUMENT") == 1
    assert delta("ocr_stream_items_total", kind="page", code="OK") == 1
    assert delta("ocr_pages_recognized_total", model="ppocr-v6-small") == 2
    # 3 calls x 2 lines + 1 stream line + 2 pages x 2 lines each
    assert delta("ocr_lines_recognized_total", model="ppocr-v6-small") == 11
    batches = delta("ocr_batch_size_count", model="ppocr-v6-small")
    assert batches >= 1
    assert delta("ocr_batch_size_sum", model="ppocr-v6-small") == 11
    assert delta("ocr_batch_inference_seconds_count", model="ppocr-v6-small") == batches
    assert delta("ocr_batch_inference_seconds_sum", model="ppocr-v6-small") > 0
    assert delta("ocr_batch_pixels_total", model="ppocr-v6-small", kind="content") > 0
    assert value(after, "ocr_queue_depth", model="ppocr-v6-small") == 0
    assert value(after, "ocr_queue_capacity", model="ppocr-v6-small") == 1024


def test_calls_that_end_early_are_counted_and_logged_by_how_they_ended(metrics_server) -> None:
    """A document the client cancels after its first page, and a call cut off at its
    deadline: each is counted (and logged) once, under CANCELLED and DEADLINE_EXCEEDED.
    Before, the document left no trace at all (its generator is closed at ``yield``, not
    cancelled) and the deadline read as a cancellation."""
    server, port = metrics_server
    before = scrape(port)
    pages = [PILImage.fromarray(render_page([f"Page {n} of six"], width=900)) for n in range(6)]
    tiff = io.BytesIO()
    pages[0].save(tiff, format="TIFF", save_all=True, append_images=pages[1:])
    wide = ocr_pb2.Image(data=png(render_line("deadline " * 12)))
    with grpc.insecure_channel(server.address) as channel:
        stub = ocr_pb2_grpc.OcrServiceStub(channel)
        call = stub.RecognizeDocument(
            ocr_pb2.RecognizeDocumentRequest(data=tiff.getvalue()), timeout=120
        )
        assert next(call).page_index == 0
        call.cancel()
        with pytest.raises(grpc.RpcError) as info:
            stub.RecognizeLines(ocr_pb2.RecognizeLinesRequest(images=[wide] * 100), timeout=0.5)
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED

    def delta(after: Samples, **labels: str) -> float:
        key = sample_key("ocr_rpc_calls_total", **labels)
        return after.get(key, 0.0) - before.get(key, 0.0)

    wanted = {
        ("RecognizeDocument", "CANCELLED"): 1.0,
        ("RecognizeLines", "DEADLINE_EXCEEDED"): 1.0,
    }
    deadline = time.monotonic() + 30
    while True:  # the server records a call when its handler has ended
        after = scrape(port)
        seen = {(m, c): delta(after, method=m, code=c) for m, c in wanted}
        if seen == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert seen == wanted
    assert delta(after, method="RecognizeLines", code="CANCELLED") == 0
    log = server.log()
    assert "RecognizeDocument cancelled by the client after" in log
    # Whichever saw the deadline first, gRPC (which cancels the handler: "ended at the
    # client's deadline") or the batcher (DeadlineExpired), it is no client's cancellation.
    assert "RecognizeLines cancelled by the client" not in log
    assert (
        "RecognizeLines ended at the client's deadline" in log
        or "RecognizeLines DEADLINE_EXCEEDED" in log
    )


def test_a_metrics_port_in_use_is_one_line_saying_so() -> None:
    """It ended in a raw traceback (and non-JSON lines under --log-format json)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_server_to_exit(
            "--host", "127.0.0.1", "--port", "0", "--metrics-port", str(port),
            "--model", "ppocr-v6-tiny", "--workers", "1",
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot start: could not serve metrics on port {port}" in result.stderr
    assert "Traceback" not in result.stderr
