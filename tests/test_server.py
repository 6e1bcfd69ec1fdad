"""Integration tests: a real ``ocr-server`` process, the real default model, real clients.

Text images are rendered here with OpenCV's built-in font, so these tests need no data files.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from ocr_client import (
    AsyncOcrClient,
    InvalidRequest,
    ModelNotFound,
    OcrClient,
    Page,
)
from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from ocr_core.cpus import usable_cpus
from tests.conftest import (
    REPO_ROOT,
    ServerProcess,
    health_status,
    png,
    render_line,
    render_page,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.integration

TEXTS = ["Hello World 2026", "The quick brown fox", "invoice total 42.50"]


@pytest.fixture(scope="module")
def stub(server: ServerProcess):
    with grpc.insecure_channel(server.address) as channel:
        yield ocr_pb2_grpc.OcrServiceStub(channel)


def recognize(stub, *images: ocr_pb2.Image, model: str = "", timeout: float = 60):
    return stub.RecognizeLines(
        ocr_pb2.RecognizeLinesRequest(images=list(images), model=model), timeout=timeout
    )


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_health_is_serving_for_server_and_service(server: ServerProcess) -> None:
    assert health_status(server.address) == health_pb2.HealthCheckResponse.SERVING
    assert health_status(server.address, "ocr.v1.OcrService") == (
        health_pb2.HealthCheckResponse.SERVING
    )


def test_reflection_lists_and_describes_the_service(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {"ocr.v1.OcrService", "grpc.health.v1.Health"} <= services
        file = db.FindFileContainingSymbol("ocr.v1.OcrService")
        assert file.name == "ocr/v1/ocr.proto"  # the repository's path, as buf and grpcurl use
        methods = {m.name for m in file.service[0].method}
        assert {"RecognizeLines", "StreamRecognize", "ListModels", "GetStats"} <= methods


def test_recognizes_rendered_lines_in_order_with_words(stub) -> None:
    images = [ocr_pb2.Image(data=png(render_line(t))) for t in TEXTS]
    response = recognize(stub, *images)
    assert response.model == "ppocr-v6-small"
    assert [r.text for r in response.results] == TEXTS
    first = response.results[0]
    assert 0.5 < first.confidence <= 1.0
    assert [w.text for w in first.words] == ["Hello", "World", "2026"]
    width = render_line(TEXTS[0]).shape[1]
    xs = [(w.x_start, w.x_end) for w in first.words]
    assert all(0 <= a < b <= width for a, b in xs)
    assert xs == sorted(xs) and xs[0][1] <= xs[1][0]  # left to right, not overlapping


def test_request_id_is_echoed_on_success_errors_and_streams(stub, server: ServerProcess) -> None:
    """Unary calls echo ``x-request-id`` in trailing metadata (also on errors), streams up
    front; a stream's end is logged under its request id, with its item errors counted."""
    image = ocr_pb2.Image(data=png(render_line("echo")))
    request = ocr_pb2.RecognizeLinesRequest(images=[image])
    _, call = stub.RecognizeLines.with_call(
        request, metadata=(("x-request-id", "rid-ok"),), timeout=60
    )
    assert ("x-request-id", "rid-ok") in call.trailing_metadata()

    with pytest.raises(grpc.RpcError) as info:
        stub.RecognizeLines(
            ocr_pb2.RecognizeLinesRequest(images=[image], model="no-such-model"),
            metadata=(("x-request-id", "rid-bad"),),
            timeout=60,
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert ("x-request-id", "rid-bad") in info.value.trailing_metadata()

    junk = ocr_pb2.Image(data=b"junk")
    stream = stub.StreamRecognize(
        iter(
            [ocr_pb2.StreamRecognizeRequest(id=str(i), line=x) for i, x in enumerate([image, junk])]
        ),
        metadata=(("x-request-id", "rid-stream"),),
        timeout=60,
    )
    assert ("x-request-id", "rid-stream") in stream.initial_metadata()
    answers = list(stream)
    assert [r.line.text for r in answers if r.HasField("line")] == ["echo"]
    assert [r.id for r in answers if r.HasField("error")] == ["1"]
    ends = [row for row in server.log().splitlines() if "[rid-stream]" in row]
    assert len(ends) == 1 and " INFO " in ends[0], ends
    assert "StreamRecognize OK, 2 answers (1 item errors) in " in ends[0]


#: README's grpcurl RecognizeLines example: the shell-quoted JSON after ``-d "..."``.
README_GRPCURL_LINES = re.compile(
    r'grpcurl -plaintext -d "((?:[^"\\]|\\.)*)" \\\n\s*\S+ ocr\.v1\.OcrService/RecognizeLines'
)


def test_grpcurl_style_json_request_gets_text_and_confidence(stub) -> None:
    """README's grpcurl RecognizeLines example, its JSON parsed as grpcurl would send it,
    works: a renamed field or a changed shape in the README fails here."""
    match = README_GRPCURL_LINES.search((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    assert match, 'README has no grpcurl RecognizeLines example with -d "..."'
    # Inside shell double quotes a backslash escapes ", $, ` and itself.
    body = re.sub(r'\\([$`"\\])', r"\1", match.group(1))
    data = base64.b64encode(png(render_line(TEXTS[1]))).decode()
    body, substitutions = re.subn(r"\$\(base64 [^)]*\)", data, body)
    assert substitutions == 1, body
    request = json_format.Parse(body, ocr_pb2.RecognizeLinesRequest())
    answer = json.loads(json_format.MessageToJson(stub.RecognizeLines(request, timeout=60)))
    assert answer["results"][0]["text"] == TEXTS[1]
    assert 0 < answer["results"][0]["confidence"] <= 1


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_raw_pixels_give_the_same_text_as_png(stub, channels: int) -> None:
    gray = render_line(TEXTS[2])
    h, w = gray.shape
    pixels = gray if channels == 1 else np.dstack([gray] * 3)
    if channels == 4:
        pixels = np.dstack([pixels, np.full((h, w), 255, np.uint8)])
    raw = ocr_pb2.RawImage(width=w, height=h, channels=channels, pixels=pixels.tobytes())
    assert recognize(stub, ocr_pb2.Image(raw=raw)).results[0].text == TEXTS[2]


def test_blank_line_gives_empty_text_not_an_error(stub) -> None:
    blank = np.full((40, 300), 255, np.uint8)
    result = recognize(stub, ocr_pb2.Image(data=png(blank))).results[0]
    assert result.text == "" and result.confidence == 0.0 and not result.words


def test_list_models_reports_default_model_and_limits(stub) -> None:
    response = stub.ListModels(ocr_pb2.ListModelsRequest(), timeout=10)
    (model,) = response.models
    assert (model.name, model.is_default, model.charset_size, model.input_height) == (
        "ppocr-v6-small",
        True,
        18708,
        48,
    )
    assert "rapidocr==3.10.0" in model.source
    assert response.limits.max_lines_per_request == 256


BAD_REQUESTS = [
    ("no images", [], grpc.StatusCode.INVALID_ARGUMENT, "no images"),
    ("empty bytes", [ocr_pb2.Image(data=b"")], grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ("unset image", [ocr_pb2.Image()], grpc.StatusCode.INVALID_ARGUMENT, "set `data`"),
    (
        "garbage second image",
        [ocr_pb2.Image(data=png(render_line("ok"))), ocr_pb2.Image(data=b"not an image")],
        grpc.StatusCode.INVALID_ARGUMENT,
        "image 1: image data",
    ),
    (
        "truncated png",
        [ocr_pb2.Image(data=png(render_line("truncated"))[:60])],
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a decodable",
    ),
    (
        "raw size mismatch",
        [ocr_pb2.Image(raw=ocr_pb2.RawImage(width=10, height=10, channels=3, pixels=b"x" * 10))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "300",
    ),
    (
        "raw channels 2",
        [ocr_pb2.Image(raw=ocr_pb2.RawImage(width=1, height=1, channels=2, pixels=b"xx"))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "channels=2",
    ),
    (
        "1 x 100000 line",
        [ocr_pb2.Image(data=png(np.zeros((1, 100000), np.uint8)))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "split the line",
    ),
    (
        "too many lines",
        [ocr_pb2.Image(data=b"x")] * 257,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "over the limit of 256",
    ),
]


@pytest.mark.parametrize(
    ("images", "code", "fragment"),
    [pytest.param(i, c, f, id=n) for n, i, c, f in BAD_REQUESTS],
)
def test_bad_input_gets_a_clear_status_and_the_server_keeps_serving(
    stub, images, code, fragment
) -> None:
    got_code, details = code_of(lambda: recognize(stub, *images))
    assert got_code == code
    assert fragment in details
    assert "Traceback" not in details
    assert (
        recognize(stub, ocr_pb2.Image(data=png(render_line(TEXTS[0])))).results[0].text
        == (TEXTS[0])
    )


def test_unknown_model_is_not_found_and_names_the_served_models(stub) -> None:
    code, details = code_of(
        lambda: recognize(stub, ocr_pb2.Image(data=png(render_line("x"))), model="nope")
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert "'nope'" in details and "ppocr-v6-small" in details


def stats(stub) -> ocr_pb2.BatcherStats:
    return stub.GetStats(ocr_pb2.GetStatsRequest(), timeout=10).batchers[0]


def wait_enqueued(stub, before: ocr_pb2.BatcherStats, lines: int) -> None:
    """Poll GetStats until ``lines`` more lines were queued (bounded, then fail)."""
    deadline = time.monotonic() + 60
    while stats(stub).lines_enqueued - before.lines_enqueued < lines:
        assert time.monotonic() < deadline, "the server never queued the lines"
        time.sleep(0.01)


def settled(stub, before: ocr_pb2.BatcherStats, lines: int) -> tuple[int, int]:
    """Wait until each of ``lines`` new lines was either inferred or dropped; (inferred, dropped).

    A batch of the abandoned call may still be running on another worker when the call ends,
    so poll the counters until every line is accounted for (bounded, then fail).
    """
    deadline = time.monotonic() + 60
    while True:
        now = stats(stub)
        inferred = now.lines_inferred - before.lines_inferred
        dropped = (now.dropped_expired + now.dropped_cancelled) - (
            before.dropped_expired + before.dropped_cancelled
        )
        if inferred + dropped >= lines or time.monotonic() > deadline:
            return inferred, dropped
        time.sleep(0.05)


def test_expired_deadline_drops_queued_lines_without_computing_them(stub) -> None:
    image = ocr_pb2.Image(data=png(render_line("deadline " * 12)))  # a wide line, slow to run
    before = stats(stub)
    code, _ = code_of(lambda: recognize(stub, *[image] * 100, timeout=0.5))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server finishes at most the batches already running, then drops the rest. gRPC
    # cancels the handler at the deadline, before the batcher's own check: those lines still
    # count as expired (as docs/reliability.md says), not as cancelled by the client.
    inferred, dropped = settled(stub, before, 100)
    assert inferred + dropped == 100
    after = stats(stub)
    assert after.dropped_expired - before.dropped_expired == dropped > 0
    assert after.dropped_cancelled == before.dropped_cancelled
    assert dropped > 0
    assert stats(stub).queue_depth == 0


def test_cancelled_call_drops_its_queued_lines(stub) -> None:
    image = ocr_pb2.Image(data=png(render_line("cancel " * 14)))
    before = stats(stub)
    future = stub.RecognizeLines.future(
        ocr_pb2.RecognizeLinesRequest(images=[image] * 100), timeout=60
    )
    wait_enqueued(stub, before, 100)  # cancel once the server has queued the lines
    future.cancel()
    assert future.cancelled()
    inferred, dropped = settled(stub, before, 100)
    assert inferred + dropped == 100
    assert stats(stub).dropped_cancelled - before.dropped_cancelled == dropped > 0


def test_stream_answers_each_item_and_survives_a_corrupt_one(server: ServerProcess) -> None:
    items = [
        ("a", png(render_line(TEXTS[0]))),
        ("bad", b"\x89PNG corrupt"),
        ("b", png(render_line(TEXTS[1]))),
    ]
    with OcrClient(server.address) as client:
        results = {r.id: r for r in client.stream_recognize(items)}
    assert set(results) == {"a", "bad", "b"}
    assert results["a"].line.text == TEXTS[0]
    assert results["b"].line.text == TEXTS[1]
    assert isinstance(results["bad"].error, InvalidRequest)
    assert "not a decodable" in results["bad"].error.details


def test_ordered_stream_returns_input_order(server: ServerProcess) -> None:
    """``ordered=True`` holds back answers that finish early until those before them are sent.

    Item 0 is a page: text detection runs on the preprocessing pool before any of its lines
    reach the batcher, so the lines after it, each one recognition on the idle session,
    finish first. The unordered run checks that this setup does reorder; otherwise the
    ordered run would pass with the ordered flag ignored.
    """
    lines = ["quick", "brown fox", "total", "in a word"]
    items: list[tuple[str, bytes | Page]] = [("0", Page(png(render_page(TEXTS))))]
    items += [(str(i), png(render_line(t))) for i, t in enumerate(lines, start=1)]
    input_order = [item_id for item_id, _ in items]
    with OcrClient(server.address, timeout=60) as client:
        unordered = [r.id for r in client.stream_recognize(items)]
        answers = list(client.stream_recognize(items, ordered=True))
    assert sorted(unordered) == input_order
    assert unordered != input_order, "the page did not finish after the lines: no reordering"
    assert [r.id for r in answers] == input_order
    page = answers[0].page
    assert page is not None and [line.text for line in page.lines] == TEXTS
    assert [r.line.text for r in answers[1:] if r.line is not None] == lines


def test_stream_options_on_a_later_message_fail_only_that_item(stub) -> None:
    image = ocr_pb2.Image(data=png(render_line("fine")))
    requests = [
        ocr_pb2.StreamRecognizeRequest(id="1", line=image),
        ocr_pb2.StreamRecognizeRequest(
            id="2", line=image, options=ocr_pb2.StreamOptions(ordered=True)
        ),
        ocr_pb2.StreamRecognizeRequest(id="3"),
        ocr_pb2.StreamRecognizeRequest(id="4", line=image),
    ]
    responses = {r.id: r for r in stub.StreamRecognize(iter(requests), timeout=60)}
    assert responses["1"].line.text == "fine" and responses["4"].line.text == "fine"
    assert responses["2"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "first message" in responses["2"].error.message
    assert responses["3"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_stream_options_after_an_options_only_first_message_fail_only_that_item(stub) -> None:
    """A first message may carry options alone; options on the next one are still late
    (they once replaced the first message's, model included, or failed the whole call)."""
    image = ocr_pb2.Image(data=png(render_line("fine")))
    requests = [
        ocr_pb2.StreamRecognizeRequest(options=ocr_pb2.StreamOptions(ordered=True)),
        ocr_pb2.StreamRecognizeRequest(
            id="a", line=image, options=ocr_pb2.StreamOptions(model="nope")
        ),
        ocr_pb2.StreamRecognizeRequest(id="b", line=image),
    ]
    responses = list(stub.StreamRecognize(iter(requests), timeout=60))
    assert [r.id for r in responses] == ["a", "b"]
    assert responses[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "first message" in responses[0].error.message
    assert responses[1].line.text == "fine"


def test_stream_with_unknown_model_fails_the_call(server: ServerProcess) -> None:
    with OcrClient(server.address) as client, pytest.raises(ModelNotFound):
        list(client.stream_recognize([png(render_line("x"))], model="nope"))


def lines_in_shared_batches(before: ocr_pb2.BatcherStats, after: ocr_pb2.BatcherStats) -> int:
    """Lines that ran in batches of more than one line between two GetStats snapshots."""
    counts = {
        size: count - before.batch_size_counts.get(size, 0)
        for size, count in after.batch_size_counts.items()
    }
    return sum(size * count for size, count in counts.items() if size > 1)


async def test_async_client_and_concurrent_calls_share_the_batcher(server: ServerProcess) -> None:
    """24 one-line calls at once: the first runs alone, the others queue behind it and are
    batched together; with batching off every batch would hold one line."""
    async with AsyncOcrClient(server.address) as client:
        before = (await client.get_stats()).batchers[0]
        images = [png(render_line(t)) for t in TEXTS] * 8
        results = await asyncio.gather(*(client.recognize_line(i) for i in images))
        after = (await client.get_stats()).batchers[0]
    assert [r.text for r in results] == TEXTS * 8
    assert lines_in_shared_batches(before, after) > 0, after.batch_size_counts


def test_cli_prints_text_and_json(server: ServerProcess, tmp_path) -> None:
    path = tmp_path / "line.png"
    path.write_bytes(png(render_line(TEXTS[0])))
    cmd = [sys.executable, "-m", "ocr_client.cli", "lines", "--address", server.address]
    out = subprocess.run([*cmd, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == TEXTS[0]
    out = subprocess.run([*cmd, "--json", str(path)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["results"][0]["text"] == TEXTS[0]


def test_a_refused_image_is_named_in_the_status_details(server: ServerProcess) -> None:
    """The refused image's position travels as a google.rpc.BadRequest on images[N] in the
    status details, for a list of images and for a lone one (whose message has no index)."""
    good = png(render_line(TEXTS[0]))
    wide = png(np.full((40, 6000), 255, np.uint8))  # over the line width limit
    with OcrClient(server.address, timeout=60) as client:
        with pytest.raises(InvalidRequest) as bad:
            client.recognize_lines([good, good, b"not an image", good])
        with pytest.raises(InvalidRequest) as too_wide:
            client.recognize_lines([good, wide])
        with pytest.raises(InvalidRequest) as alone:
            client.recognize_lines([b"not an image"])
        with pytest.raises(ModelNotFound) as no_image:
            client.recognize_lines([good], model="nope")
        # And the server goes on serving.
        assert client.recognize_line(good).text == TEXTS[0]
    assert bad.value.image_index == 2 and bad.value.details.startswith("image 2: image data")
    assert too_wide.value.image_index == 1 and "over the limit of" in too_wide.value.details
    assert alone.value.image_index == 0 and alone.value.details.startswith("image data")
    assert no_image.value.image_index is None


def test_cli_names_a_refused_line_image_and_prints_the_others(
    server: ServerProcess, tmp_path
) -> None:
    paths = []
    for name, data in [
        ("a", png(render_line(TEXTS[0]))),
        ("junk", b"junk"),
        ("b", png(render_line(TEXTS[1]))),
    ]:
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        paths.append(str(path))
    cmd = [sys.executable, "-m", "ocr_client.cli", "lines", "--address", server.address]
    out = subprocess.run([*cmd, *paths], capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert out.stdout == f"{paths[0]}\t{TEXTS[0]}\n{paths[2]}\t{TEXTS[1]}\n"
    assert out.stderr.startswith(f"error: {paths[1]}: image data (4 bytes) is not a decodable")
    assert out.stderr.count("\n") == 1


def test_small_limits_server_enforces_message_size_and_queue(tmp_path) -> None:
    srv = start_server(
        tmp_path / "small.log",
        "--max-message-bytes", "200000",
        "--queue-capacity", "4",
        "--max-lines-per-request", "8",
    )  # fmt: skip
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = ocr_pb2_grpc.OcrServiceStub(channel)
            big = ocr_pb2.Image(data=b"\x00" * 300_000)
            code, _ = code_of(lambda: recognize(stub, big))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            line = ocr_pb2.Image(data=png(render_line("queue")))
            assert recognize(stub, *[line] * 4).results[3].text == "queue"
            # More lines than the whole queue holds go in when it is empty (refused, they
            # could never be served); a full queue's refusal is in tests/test_overload.py.
            assert [r.text for r in recognize(stub, *[line] * 5).results] == ["queue"] * 5
        with OcrClient(srv.address) as client:
            assert len(client.recognize_lines([png(render_line("queue"))] * 8)) == 8
    finally:
        assert stop_server(srv) == 0, srv.log()


def test_the_message_limit_bounds_requests_not_answers(tmp_path) -> None:
    """``--max-message-bytes`` is "largest request"; it also capped what the server sent,
    so a small limit failed calls with RESOURCE_EXHAUSTED after their work was done."""
    srv = start_server(tmp_path / "tiny-limit.log", "--max-message-bytes", "64")
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = ocr_pb2_grpc.OcrServiceStub(channel)
            listed = stub.ListModels(ocr_pb2.ListModelsRequest(), timeout=30)
            assert listed.ByteSize() > 64 and listed.limits.max_message_bytes == 64
            line = ocr_pb2.Image(data=png(render_line("too big")))
            code, _ = code_of(lambda: recognize(stub, line))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        assert stop_server(srv) == 0, srv.log()


def test_a_stream_cut_off_at_the_end_of_the_grace_period_is_logged_as_such(tmp_path) -> None:
    """A stream still open when the shutdown's grace period ends gets UNAVAILABLE; the
    server logged and counted it "cancelled by the client", sending its operator looking
    for a client fault."""
    srv = start_server(tmp_path / "cut-off.log", "--grace-s", "3")
    line = ocr_pb2.Image(data=png(render_line("held open")))
    release = threading.Event()

    def held_open() -> Iterator[ocr_pb2.StreamRecognizeRequest]:
        yield ocr_pb2.StreamRecognizeRequest(id="only", line=line)
        release.wait(60)

    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = ocr_pb2_grpc.OcrServiceStub(channel)
            held, left = (stub.StreamRecognize(held_open(), timeout=120) for _ in range(2))
            assert next(held).line.text == "held open"
            assert next(left).line.text == "held open"
            srv.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            left.cancel()  # the client leaves during the drain: its own doing
            with pytest.raises(grpc.RpcError) as info:
                next(held)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            release.set()
        assert srv.process.wait(60) == 0, srv.log()
        log_text = srv.log()
        cut_off = "StreamRecognize cut off by the server's shutdown (grace period over)"
        assert log_text.count(cut_off) == 1
        assert log_text.count("StreamRecognize cancelled by the client") == 1
    finally:
        release.set()
        stop_server(srv)


def test_sigterm_finishes_in_flight_work_then_refuses_new_calls(tmp_path) -> None:
    """SIGTERM: health turns NOT_SERVING and a new call is refused with UNAVAILABLE while
    accepted work is still in flight; that work is then answered in full and the server
    exits 0.

    A stream this test holds open keeps accepted work in flight until those checks are done,
    so they meet the draining server, not an exited process (which would refuse anything).
    """
    srv = start_server(tmp_path / "shutdown.log", "--grace-s", "30")
    line = ocr_pb2.Image(data=png(render_line("in flight " * 6)))
    text = "in flight " * 5 + "in flight"
    checked = threading.Event()

    def held_open() -> Iterator[ocr_pb2.StreamRecognizeRequest]:
        yield ocr_pb2.StreamRecognizeRequest(id="before", line=line)
        checked.wait(60)  # the second item is sent during the grace period
        yield ocr_pb2.StreamRecognizeRequest(id="after", line=line)

    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = ocr_pb2_grpc.OcrServiceStub(channel)
            # Watch, not Check: once draining, the server answers no new call, Check included.
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="ocr.v1.OcrService"), timeout=30
            )
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            stream = stub.StreamRecognize(held_open(), timeout=120)
            first = next(stream)  # the stream is accepted and being served
            assert (first.id, first.line.text) == ("before", text)
            before = stats(stub)
            future = stub.RecognizeLines.future(
                ocr_pb2.RecognizeLinesRequest(images=[line] * 40), timeout=120
            )
            wait_enqueued(stub, before, 40)
            srv.process.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()  # an open watch would hold the server for the whole grace period
            code, _ = code_of(lambda: recognize(stub, line, timeout=10))
            assert code == grpc.StatusCode.UNAVAILABLE
            assert srv.process.poll() is None, "refused by an exited server, not a draining one"
            checked.set()
            response = future.result(timeout=120)  # accepted before SIGTERM: answered in full
            assert [r.text for r in response.results] == [text] * 40
            assert [(r.id, r.line.text) for r in stream] == [("after", text)]
        assert srv.process.wait(60) == 0, srv.log()
        assert "shutting down" in srv.log()
    finally:
        checked.set()
        if srv.process.poll() is None:
            srv.process.kill()


def test_stubs_import_from_namespaced_package() -> None:
    assert ocr_pb2.DESCRIPTOR.package == "ocr.v1"
    assert (REPO_ROOT / "proto" / "ocr" / "v1" / "ocr.proto").exists()


def test_a_lone_call_runs_on_the_idle_session_and_a_burst_does_not(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    srv = start_server(
        tmp_path_factory.mktemp("idle") / "server.log", "--workers", "2", "--threads", "1"
    )
    try:
        assert "idle session 2 threads" in srv.log()
        with OcrClient(srv.address, timeout=60) as client:
            image = png(render_line(TEXTS[0]))
            before = client.get_stats().batchers[0].idle_batches
            assert client.recognize_line(image).text == TEXTS[0]
            after = client.get_stats().batchers[0]
            assert after.idle_batches == before + 1

            async def burst() -> list[str]:
                async with AsyncOcrClient(srv.address, timeout=60) as aclient:
                    lines = await asyncio.gather(
                        *(aclient.recognize_line(image) for _ in range(32))
                    )
                return [line.text for line in lines]

            assert set(asyncio.run(burst())) == {TEXTS[0]}
            final = client.get_stats().batchers[0]
        # Lines that queued behind others ran on the worker sessions, in batches.
        burst_batches = final.batches - after.batches
        burst_idle = final.idle_batches - after.idle_batches
        assert burst_batches - burst_idle >= 1 and burst_batches < 32
    finally:
        assert stop_server(srv) == 0, srv.log()


def _thread_cpus(pid: int) -> list[str]:
    """Each thread's allowed CPU list (``Cpus_allowed_list`` in /proc), as the kernel writes it."""
    found = []
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for row in status.read_text().splitlines():
            if row.startswith("Cpus_allowed_list:"):
                found.append(row.split(":", 1)[1].strip())
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pinned_inference_threads_run_on_the_cpus_the_log_names_after_lines_and_pages(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    cpus = usable_cpus()
    expected = [cpus[0], cpus[1 % len(cpus)]]
    srv = start_server(
        tmp_path_factory.mktemp("pin") / "server.log",
        *("--workers", "2", "--threads", "1", "--pin-workers", "on"),
    )
    try:
        pinned = [row for row in srv.log().splitlines() if "pinned to CPUs (on)" in row]
        assert len(pinned) == 1 and pinned[0].endswith(f" {expected}"), srv.log()

        async def burst() -> set[str]:
            async with AsyncOcrClient(srv.address, timeout=60) as aclient:
                image = png(render_line(TEXTS[1]))
                lines = await asyncio.gather(*(aclient.recognize_line(image) for _ in range(32)))
            return {line.text for line in lines}

        assert asyncio.run(burst()) == {TEXTS[1]}
        # A page frees the batcher threads while it is read (detection beside pinned
        # threads is slower) and they are pinned again once no page is in flight.
        with OcrClient(srv.address, timeout=60) as client:
            page = client.recognize_page(png(render_page(TEXTS)))
        assert [line.text for line in page.lines] == TEXTS
        allowed = _thread_cpus(srv.process.pid)
        if len(cpus) > 1:
            # Only the two batcher threads are pinned; the rest (event loop, gRPC, decode,
            # ONNX Runtime's pool) keep every CPU.
            assert sorted(a for a in allowed if a in map(str, cpus)) == sorted(map(str, expected))
        # Pinned, so --sched-batch auto put the event loop (the main thread) and the
        # threads started after it, the batcher's among them, under SCHED_BATCH.
        assert "threads run as SCHED_BATCH (--sched-batch auto)" in srv.log()
        policies = _thread_policies(srv.process.pid)
        assert policies[srv.process.pid] == os.SCHED_BATCH
        if len(cpus) > 1:  # on one CPU every thread looks pinned
            pinned = [tid for tid in policies if len(os.sched_getaffinity(tid)) == 1]
            assert len(pinned) == 2 and {policies[tid] for tid in pinned} == {os.SCHED_BATCH}
    finally:
        assert stop_server(srv) == 0, srv.log()


def _thread_policies(pid: int) -> dict[int, int]:
    """Each thread's scheduling policy (``os.SCHED_*``) by native thread id."""
    policies = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            policies[int(task.name)] = os.sched_getscheduler(int(task.name))
    return policies


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_unpinned_threads_keep_the_default_policy_unless_sched_batch_is_on(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    folder = tmp_path_factory.mktemp("sched")
    for flag, main_policy in (("auto", os.SCHED_OTHER), ("on", os.SCHED_BATCH)):
        srv = start_server(
            folder / f"server-{flag}.log", "--pin-workers", "off", "--sched-batch", flag
        )
        try:
            with OcrClient(srv.address, timeout=60) as client:
                assert client.recognize_line(png(render_line(TEXTS[0]))).text == TEXTS[0]
            assert _thread_policies(srv.process.pid)[srv.process.pid] == main_policy
            assert ("run as SCHED_BATCH" in srv.log()) == (flag == "on"), srv.log()
        finally:
            assert stop_server(srv) == 0, srv.log()
