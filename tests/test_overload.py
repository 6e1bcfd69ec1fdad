"""Bounded work: concurrent calls, a cancelled stream's queued lines, and recovery.

Uses the session server (default limits) and small-limit servers of its own.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

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
                stub.RecognizeLines(
                    ocr_pb2.RecognizeLinesRequest(images=[line]),
                    timeout=30,
                    metadata=(("x-request-id", "over-the-bound-1"),),
                )
            assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit of 2 calls and streams" in info.value.details()
            assert "--max-concurrent-rpcs" in info.value.details()
            # A refusal is logged and answers with the request id, like every other error.
            assert ("x-request-id", "over-the-bound-1") in info.value.trailing_metadata()
            assert "[over-the-bound-1] RecognizeLines RESOURCE_EXHAUSTED: " in srv.log()
            # Probes are not counted: a liveness check must not fail (and restart the pod,
            # ending every stream) because streams hold every slot.
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "ocr.v1.OcrService"):
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
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


def test_cancelled_and_failed_calls_give_their_slot_back(tmp_path) -> None:
    """With one slot, a stream the client cancels and a call that fails must each free it:
    a leaked slot would refuse every later call."""
    srv = start_server(tmp_path / "slot.log", "--max-concurrent-rpcs", "1")
    line = ocr_pb2.Image(data=png(render_line("one slot")))
    release = threading.Event()

    def held_open():
        yield ocr_pb2.StreamRecognizeRequest(id="first", line=line)
        release.wait(60)

    def served() -> ocr_pb2.RecognizeLinesResponse:
        deadline = time.monotonic() + 30
        while True:  # the slot frees once the server has seen the call end
            try:
                return stub.RecognizeLines(ocr_pb2.RecognizeLinesRequest(images=[line]), timeout=30)
            except grpc.RpcError as exc:
                assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
                assert time.monotonic() < deadline
                time.sleep(0.05)

    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = ocr_pb2_grpc.OcrServiceStub(channel)
            for _ in range(3):
                call = stub.StreamRecognize(held_open(), timeout=120)
                assert next(call).line.text == "one slot"
                call.cancel()
                assert served().results[0].text == "one slot"
                with pytest.raises(grpc.RpcError) as info:
                    stub.RecognizeLines(ocr_pb2.RecognizeLinesRequest(), timeout=30)
                assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert served().results[0].text == "one slot"
    finally:
        release.set()
        assert stop_server(srv) == 0, srv.log()


def _vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/{pid}/status")


def test_four_times_capacity_sheds_load_keeps_latency_bounded_and_recovers(tmp_path) -> None:
    """Open-loop load at 4x the measured capacity, for a bounded time and count, loopback.

    Accepted calls must finish in about the time the bounded queue takes to drain; the rest
    are refused at once with RESOURCE_EXHAUSTED; memory stays bounded; afterwards the queue
    is empty and a call is answered promptly.
    """
    capacity_lines = 32
    srv = start_server(tmp_path / "load.log", "--queue-capacity", str(capacity_lines))
    line = ocr_pb2.Image(data=png(render_line("overload test " * 5)))
    text = ("overload test " * 5).strip()  # what the model reads from that line, exactly
    request = ocr_pb2.RecognizeLinesRequest(images=[line])
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = ocr_pb2_grpc.OcrServiceStub(channel)
            # Capacity: a few closed-loop callers for 3 s.
            done = []
            stop_at = time.monotonic() + 3

            def caller() -> None:
                while time.monotonic() < stop_at:
                    stub.RecognizeLines(request, timeout=30)
                    done.append(1)

            threads = [threading.Thread(target=caller) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            capacity = len(done) / 3
            assert capacity > 1
            # 4x capacity, open loop, in two phases of 6 s (bounded count), at most 512
            # unanswered calls. Memory must plateau: the second phase, offered as much again,
            # must not raise the peak (bounded by the queue, not by the offered load).
            rate = 4 * capacity
            outcomes: list[tuple[float, str]] = []
            lock = threading.Lock()
            slots = threading.BoundedSemaphore(512)

            def finished(future, sent: float) -> None:
                try:
                    ok = future.result().results[0].text == text
                    code = "OK" if ok else "WRONG TEXT"
                except grpc.RpcError as exc:
                    code = exc.code().name
                with lock:
                    outcomes.append((time.monotonic() - sent, code))
                slots.release()

            def overload(seconds: float) -> int:
                start = time.monotonic()
                sent = 0
                while (now := time.monotonic()) - start < seconds:
                    if sent >= rate * (now - start) or not slots.acquire(blocking=False):
                        time.sleep(0.001)
                        continue
                    sent_at = time.monotonic()
                    future = stub.RecognizeLines.future(request, timeout=60)
                    future.add_done_callback(lambda f, t=sent_at: finished(f, t))
                    sent += 1
                return sent

            sent = overload(6)
            peak_first = _vm_kib(srv.process.pid, "VmHWM")
            sent += overload(6)
            deadline = time.monotonic() + 60
            while len(outcomes) < sent:
                assert time.monotonic() < deadline, "calls left unanswered"
                time.sleep(0.05)
            peak_second = _vm_kib(srv.process.pid, "VmHWM")

            codes = [code for _, code in outcomes]
            accepted = sorted(latency for latency, code in outcomes if code == "OK")
            assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, set(codes)
            assert codes.count("RESOURCE_EXHAUSTED") > sent // 3, "load was not shed"
            assert len(accepted) > capacity * 6, "the server stopped serving under overload"
            # A queued line waits at most for the queue ahead of it to drain.
            drain_s = capacity_lines / capacity
            assert accepted[int(0.99 * (len(accepted) - 1))] < 3 * drain_s + 2
            assert peak_second - peak_first < 0.05 * peak_first, (peak_first, peak_second)

            # Recovery: the queue empties and a call is answered like on an idle server.
            deadline = time.monotonic() + 30
            while stats(stub).queue_depth:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            t0 = time.monotonic()
            assert stub.RecognizeLines(request, timeout=30).results[0].text == text
            assert time.monotonic() - t0 < 2
    finally:
        assert stop_server(srv) == 0, srv.log()


def test_sigterm_under_load_answers_every_accepted_call(tmp_path) -> None:
    """SIGTERM while callers keep calling: health turns NOT_SERVING, new calls are refused
    with UNAVAILABLE while the server still drains (none started after NOT_SERVING is
    answered), and accepted calls and stream items all get their answers (right text).

    The stream sends its second half only after every caller was refused: it keeps the
    server draining until then, so the refusals come from it and not from an exited
    process, and its late items must be read and answered during the grace period.
    """
    srv = start_server(tmp_path / "sigterm.log", "--grace-s", "30")
    text = "drain me " * 4
    line = ocr_pb2.Image(data=png(render_line(text)))
    request = ocr_pb2.RecognizeLinesRequest(images=[line] * 4)
    outcomes: list[tuple[float, str]] = []  # (when the call started, its outcome)
    lock = threading.Lock()
    callers_refused = threading.Event()
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = ocr_pb2_grpc.OcrServiceStub(channel)

            def caller() -> None:
                while True:
                    started = time.monotonic()
                    try:
                        response = stub.RecognizeLines(request, timeout=60)
                        ok = [r.text for r in response.results] == [text.strip()] * 4
                        outcome = "OK" if ok else "WRONG TEXT"
                    except grpc.RpcError as exc:
                        outcome = exc.code().name
                    with lock:
                        outcomes.append((started, outcome))
                    if outcome != "OK":
                        return

            def items() -> Iterator[ocr_pb2.StreamRecognizeRequest]:
                for i in range(40):
                    if i == 20:
                        callers_refused.wait(60)
                    yield ocr_pb2.StreamRecognizeRequest(id=str(i), line=line)

            # Watch, not Check: once draining, the server answers no new call, Check included.
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="ocr.v1.OcrService"), timeout=60
            )
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            stream = stub.StreamRecognize(items(), timeout=120)
            threads = [threading.Thread(target=caller) for _ in range(6)]
            for t in threads:
                t.start()
            time.sleep(3)
            srv.process.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            not_serving_seen = time.monotonic()
            watch.cancel()  # an open watch would hold the server for the whole grace period
            for t in threads:
                t.join(120)
            assert not any(t.is_alive() for t in threads), "a caller was never refused"
            assert srv.process.poll() is None, "callers refused by an exited server"
            callers_refused.set()
            answers = list(stream)  # accepted before SIGTERM: every item answered
        assert sorted(int(a.id) for a in answers) == list(range(40))
        assert all(a.line.text == text.strip() for a in answers)
        # A call still queued inside gRPC, not yet handed to the servicer, when shutdown
        # starts comes back CANCELLED instead of UNAVAILABLE: gRPC core's doing
        # (grpc/grpc#41785; it failed this test once in a clean-clone CI run). The servicer
        # never saw such a call; one it had accepted and not answered would log a
        # cancellation.
        codes = [code for _, code in outcomes]
        assert set(codes) <= {"OK", "UNAVAILABLE", "CANCELLED"}, set(codes)
        refused = codes.count("UNAVAILABLE") + codes.count("CANCELLED")
        assert codes.count("OK") > 0 and refused == 6
        # The server stops taking calls before its NOT_SERVING reaches a watcher, so a call
        # made after this test saw NOT_SERVING must not have been served.
        late = [code for started, code in outcomes if started > not_serving_seen]
        assert "OK" not in late, late
        assert srv.process.wait(60) == 0
        assert "shutting down" in srv.log()
        assert "cancelled by the client" not in srv.log()
    finally:
        callers_refused.set()
        if srv.process.poll() is None:
            stop_server(srv)


def test_an_aged_connection_keeps_its_stream_to_the_end(tmp_path) -> None:
    """The age grace was --grace-s: a stream longer than age + grace (a book's pages, here
    2 s against 1 + 0.5) was cut with UNAVAILABLE, logged as cancelled by the client."""
    srv = start_server(tmp_path / "age.log", "--max-connection-age-s", "1", "--grace-s", "0.5")
    line = ocr_pb2.Image(data=png(render_line("still here")))

    def slow_items() -> Iterator[ocr_pb2.StreamRecognizeRequest]:
        for i in range(8):
            yield ocr_pb2.StreamRecognizeRequest(id=str(i), line=line)
            time.sleep(0.25)

    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = ocr_pb2_grpc.OcrServiceStub(channel)
            answers = list(stub.StreamRecognize(slow_items(), timeout=60))
            assert [a.line.text for a in answers] == ["still here"] * 8
            # Calls after the age go on a new connection.
            reply = stub.RecognizeLines(ocr_pb2.RecognizeLinesRequest(images=[line]), timeout=30)
            assert reply.results[0].text == "still here"
    finally:
        assert stop_server(srv) == 0, srv.log()
