"""Bounded work: concurrent calls, a cancelled stream's queued lines, and recovery.

Uses the session server (default limits) and small-limit servers of its own.
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from tests.conftest import ServerProcess, png, render_line, start_server, stop_server
from tests.test_server import settled, stats, wait_enqueued

pytestmark = pytest.mark.integration


def test_cancelled_stream_drops_its_queued_lines(server: ServerProcess) -> None:
    image = ocr_pb2.Image(data=png(render_line("stream cancel " * 8)))
    with grpc.insecure_channel(server.address) as channel:
        stub = ocr_pb2_grpc.OcrServiceStub(channel)
        before = stats(stub)
        items = [ocr_pb2.StreamRecognizeRequest(id=str(i), line=image) for i in range(60)]
        call = stub.StreamRecognize(iter(items), timeout=120)
        wait_enqueued(stub, before, 60)  # every item read and queued by the server
        call.cancel()
        inferred, dropped = settled(stub, before, 60)
        assert inferred + dropped == 60
        after = stats(stub)
        assert after.dropped_cancelled - before.dropped_cancelled == dropped > 0
        assert after.queue_depth == 0


def test_concurrent_calls_beyond_the_bound_are_refused_then_served(tmp_path) -> None:
    srv = start_server(tmp_path / "rpcs.log", "--max-concurrent-rpcs", "2")
    release = threading.Event()
    line = ocr_pb2.Image(data=png(render_line("open stream")))

    def held_open():
        yield ocr_pb2.StreamRecognizeRequest(id="first", line=line)
        release.wait(60)  # keep the stream (and its slot) open until told

    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = ocr_pb2_grpc.OcrServiceStub(channel)
            streams = [stub.StreamRecognize(held_open(), timeout=120) for _ in range(2)]
            for call in streams:  # both are being served: each answered its first item
                assert next(call).line.text == "open stream"
            with pytest.raises(grpc.RpcError) as info:
                stub.RecognizeLines(ocr_pb2.RecognizeLinesRequest(images=[line]), timeout=30)
            assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            release.set()
            for call in streams:
                assert list(call) == []
            deadline = time.monotonic() + 30
            while True:  # the slots free up as the streams end
                try:
                    response = stub.RecognizeLines(
                        ocr_pb2.RecognizeLinesRequest(images=[line]), timeout=30
                    )
                    break
                except grpc.RpcError as exc:
                    assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            assert response.results[0].text == "open stream"
    finally:
        release.set()
        assert stop_server(srv) == 0, srv.log()
