"""One client, several servers: gRPC's round_robin, health checking and retries.

Unit tests pin how an address turns into a gRPC target and service config, and use small
fake servers (real gRPC on loopback) to show the channel really balances, skips a server
whose health says NOT_SERVING, and retries UNAVAILABLE and CANCELLED on another server
(never a call its caller cancelled). The integration test starts three real servers,
spreads single-line calls over all three, SIGTERMs one while four threads have calls in
flight, and checks that every call came back right.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ocr_client import AsyncOcrClient, OcrClient, ServerError, ServerUnavailable
from ocr_client.client import (
    SCALE_OUT_RETRY_BUFFER_BYTES,
    SERVICE_NAME,
    _target_and_options,
    resolve_target,
    scale_out_service_config,
)
from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from tests.conftest import ServerProcess, png, render_line, start_server, stop_server

TEXTS = ["Hello World 2026", "The quick brown fox", "invoice total 42.50"]


# --------------------------------------------------------------------------- targets


def test_a_single_address_is_passed_on_unchanged() -> None:
    for address in ("localhost:50051", "10.0.0.7:50051", "unix:/tmp/ocr.sock", ["h:1"]):
        target, balanced = resolve_target(address)
        assert (target, balanced) == (
            address if isinstance(address, str) else address[0],
            False,
        )
    _, target, options = _target_and_options("localhost:50051", ())
    assert target == "localhost:50051"
    # No service config: a one-server client keeps gRPC's defaults (pick_first, no retries).
    assert "grpc.service_config" not in dict(options)
    with OcrClient("localhost:50051") as client:
        assert (client.address, client.target) == ("localhost:50051", "localhost:50051")


def test_several_addresses_become_one_balanced_target() -> None:
    assert resolve_target("127.0.0.1:1,127.0.0.2:2") == ("ipv4:127.0.0.1:1,127.0.0.2:2", True)
    assert resolve_target(["127.0.0.1:1", " 127.0.0.1:2 "]) == (
        "ipv4:127.0.0.1:1,127.0.0.1:2",
        True,
    )
    assert resolve_target(["[::1]:1", "[::1]:2"]) == ("ipv6:[::1]:1,[::1]:2", True)
    # Names are resolved once, to addresses (a gRPC target cannot list several names).
    target, balanced = resolve_target("localhost:5001,127.0.0.9:5002")
    assert balanced and target.startswith("ipv4:127.") and target.endswith(",127.0.0.9:5002")
    # Targets a gRPC resolver expands to several addresses are balanced as they are.
    for target in ("dns:///ocr-headless.ocr.svc.cluster.local:50051", "ipv4:1.2.3.4:1"):
        assert resolve_target(target) == (target, True)


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:1,127.0.0.1", "expected HOST:PORT"),
        (["127.0.0.1:1", "h:x"], "expected HOST:PORT"),
        ([], "expected a server address"),
        ("", "expected a server address"),
        (["127.0.0.1:1", "[::1]:2"], "mixes IPv4-only and IPv6-only"),
        ("127.0.0.1:1,no-such-host.invalid:2", "cannot resolve 'no-such-host.invalid'"),
    ],
)
def test_bad_address_lists_are_refused(address: str | list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OcrClient(address)


def test_balanced_channels_get_the_service_config() -> None:
    text, _, options = _target_and_options(["127.0.0.1:1", "127.0.0.1:2"], ())
    assert text == "127.0.0.1:1,127.0.0.1:2"
    opts = dict(options)
    config = json.loads(opts["grpc.service_config"])
    assert config == scale_out_service_config()
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": SERVICE_NAME}
    assert opts["grpc.per_rpc_retry_buffer_size"] == SCALE_OUT_RETRY_BUFFER_BYTES
    # The caller's options still win, key by key.
    _, _, options = _target_and_options("127.0.0.1:1,127.0.0.1:2", [("grpc.service_config", "{}")])
    assert dict(options)["grpc.service_config"] == "{}"


def test_service_config_names_real_methods_and_retries_unavailable_and_cancelled() -> None:
    config = scale_out_service_config()
    service = ocr_pb2.DESCRIPTOR.services_by_name["OcrService"]
    assert service.full_name == SERVICE_NAME
    methods = {m.name for m in service.methods}
    for entry in config["methodConfig"]:
        for name in entry["name"]:
            assert name["service"] == SERVICE_NAME
            assert "method" not in name or name["method"] in methods
        retry = entry["retryPolicy"]
        assert 3 <= retry["maxAttempts"] <= 5
        assert retry["retryableStatusCodes"] == ["UNAVAILABLE", "CANCELLED"]
        assert retry["initialBackoff"].endswith("s") and retry["maxBackoff"].endswith("s")
    timeouts = {
        n.get("method", "*"): e.get("timeout") for e in config["methodConfig"] for n in e["name"]
    }
    assert timeouts == {"*": None, "ListModels": "10s", "GetStats": "10s"}
    with pytest.raises(ValueError, match="max_attempts"):
        scale_out_service_config(max_attempts=6)


# --------------------------------------------------------------------------- fake servers


class _NamedOcr(ocr_pb2_grpc.OcrServiceServicer):
    """Answers ListModels with its own name, so a test sees which server a call reached.

    ``fail`` makes every call fail with that status before any response header; ``hold``,
    while set, keeps every call waiting (``started`` is set once one has arrived)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fail: grpc.StatusCode | None = None
        self.hold: threading.Event | None = None
        self.started = threading.Event()
        self.calls = 0

    def ListModels(
        self, request: ocr_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> ocr_pb2.ListModelsResponse:
        self.calls += 1
        self.started.set()
        if self.hold is not None:
            self.hold.wait(10)
        if self.fail is not None:
            context.abort(self.fail, f"{self.name} is going away")
        return ocr_pb2.ListModelsResponse(models=[ocr_pb2.ModelInfo(name=self.name)])


@pytest.fixture
def fakes() -> Iterator[list[tuple[str, _NamedOcr, health.HealthServicer]]]:
    """Three fake OCR servers with health services, all SERVING."""
    started = []
    for i in range(3):
        servicer = _NamedOcr(f"fake{i}")
        health_servicer = health.HealthServicer()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        ocr_pb2_grpc.add_OcrServiceServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        for name in ("", SERVICE_NAME):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        started.append((server, f"127.0.0.1:{port}", servicer, health_servicer))
    yield [(address, s, h) for _, address, s, h in started]
    for server, *_ in started:
        server.stop(0)


def _names(client: OcrClient, calls: int) -> Counter[str]:
    return Counter(client.list_models()[0].name for _ in range(calls))


def _until_every_server_answered(client: OcrClient, names: set[str]) -> None:
    """Call until each of ``names`` has answered once: round_robin picks only among the
    connections that are up, so until then the split depends on how fast each came up."""
    seen: set[str] = set()
    deadline = time.monotonic() + 10
    while seen != names:
        assert time.monotonic() < deadline, f"only {sorted(seen)} answered"
        seen |= set(_names(client, 1))


def test_round_robin_spreads_calls_over_every_server(
    fakes: list[tuple[str, _NamedOcr, health.HealthServicer]],
) -> None:
    with OcrClient([a for a, _, _ in fakes], timeout=10) as client:
        client.wait_ready()
        _until_every_server_answered(client, {"fake0", "fake1", "fake2"})
        seen = _names(client, 30)
    # round_robin takes the ready servers in turn: an even split.
    assert seen == {"fake0": 10, "fake1": 10, "fake2": 10}


def test_a_server_that_is_not_serving_gets_no_calls(
    fakes: list[tuple[str, _NamedOcr, health.HealthServicer]],
) -> None:
    """Client-side health checking: a server that is warming up or draining (NOT_SERVING
    for ocr.v1.OcrService) is skipped, and used again once it says SERVING."""
    _, _, draining = fakes[1]
    with OcrClient([a for a, _, _ in fakes], timeout=10) as client:
        client.wait_ready()
        _until_every_server_answered(client, {"fake0", "fake1", "fake2"})
        draining.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        deadline = time.monotonic() + 5
        while "fake1" in _names(client, 3):  # until the Watch stream delivers the change
            assert time.monotonic() < deadline, "a NOT_SERVING server still gets calls"
            time.sleep(0.1)
        assert set(_names(client, 20)) == {"fake0", "fake2"}
        draining.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        deadline = time.monotonic() + 5
        while "fake1" not in _names(client, 3):
            assert time.monotonic() < deadline, "the server came back but gets no calls"
            time.sleep(0.1)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED])
def test_a_refused_call_is_retried_on_another_server(
    fakes: list[tuple[str, _NamedOcr, health.HealthServicer]], code: grpc.StatusCode
) -> None:
    """UNAVAILABLE: a server going away. CANCELLED: a call gRPC received but had not yet
    handed to the server when it shut down (grpc/grpc#41785)."""
    _, failing, _ = fakes[0]
    failing.fail = code
    with OcrClient([a for a, _, _ in fakes], timeout=10) as client:
        client.wait_ready()
        seen = _names(client, 30)  # no call raises
    assert set(seen) == {"fake1", "fake2"}
    assert failing.calls > 0, "the failing server was tried, and its calls were retried"


@pytest.mark.parametrize(
    ("code", "error"),
    [(grpc.StatusCode.UNAVAILABLE, ServerUnavailable), (grpc.StatusCode.CANCELLED, ServerError)],
)
def test_without_several_addresses_nothing_is_retried(
    fakes: list[tuple[str, _NamedOcr, health.HealthServicer]],
    code: grpc.StatusCode,
    error: type[Exception],
) -> None:
    """The control for the test above: one address, no service config, the error shows."""
    address, failing, _ = fakes[0]
    failing.fail = code
    with OcrClient(address, timeout=10) as client, pytest.raises(error, match="going away"):
        client.list_models()
    assert failing.calls == 1


def test_a_call_its_caller_cancels_is_not_retried(
    fakes: list[tuple[str, _NamedOcr, health.HealthServicer]],
) -> None:
    """CANCELLED is retryable in the service config; a caller's own cancel must still end
    the call there (gRPC retries only statuses that come from a server)."""
    _, target, options = _target_and_options([a for a, _, _ in fakes], [])
    release = threading.Event()
    for _, servicer, _ in fakes:
        servicer.hold = release
    try:
        with grpc.insecure_channel(target, options=options) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            call = ocr_pb2_grpc.OcrServiceStub(channel).ListModels.future(
                ocr_pb2.ListModelsRequest(), timeout=10
            )
            deadline = time.monotonic() + 10
            while not any(s.started.is_set() for _, s, _ in fakes):
                assert time.monotonic() < deadline, "the call reached no server"
                time.sleep(0.01)
            assert call.cancel()
            with pytest.raises(grpc.FutureCancelledError):
                call.result()
            time.sleep(1.0)  # past the retry policy's backoff (0.1 s, then 0.2 s)
    finally:
        release.set()
    assert sum(s.calls for _, s, _ in fakes) == 1


# --------------------------------------------------------------------------- real servers


@pytest.fixture(scope="module")
def three_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    """Three real servers on loopback, started at once (each takes ~10 s to load and warm
    up); one session and thread each, so that three fit on a small machine."""
    folder = tmp_path_factory.mktemp("scale_out")
    with futures.ThreadPoolExecutor(3) as pool:
        pending = [
            pool.submit(start_server, folder / f"server{i}.log", "--workers", "1", "--threads", "1")
            for i in range(3)
        ]
        futures.wait(pending)
    servers = [f.result() for f in pending if f.exception() is None]
    try:
        for f in pending:
            f.result()  # raises the first start failure, after the others are stopped below
        yield servers
    finally:
        for server in servers:
            stop_server(server)


def _lines_enqueued(server: ServerProcess) -> int:
    with OcrClient(server.address, timeout=10) as client:
        return sum(b.lines_enqueued for b in client.get_stats().batchers)


@pytest.fixture(scope="module")
def line_images() -> list[bytes]:
    return [png(render_line(t)) for t in TEXTS]


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_calls_spread_over_three_real_servers(
    three_servers: list[ServerProcess], line_images: list[bytes]
) -> None:
    before = [_lines_enqueued(s) for s in three_servers]
    with OcrClient([s.address for s in three_servers], timeout=30) as client:
        client.wait_ready()
        texts = [client.recognize_line(line_images[i % 3]).text for i in range(60)]
    assert texts == [TEXTS[i % 3] for i in range(60)]
    received = [_lines_enqueued(s) - b for s, b in zip(three_servers, before, strict=True)]
    assert sum(received) == 60, received
    # round_robin in turn over ready servers; a connection still coming up at the start
    # may cost a server a few calls, never its share.
    assert min(received) >= 10, received


@pytest.mark.integration
@pytest.mark.timeout(180)
async def test_async_client_spreads_calls_too(
    three_servers: list[ServerProcess], line_images: list[bytes]
) -> None:
    async with AsyncOcrClient(",".join(s.address for s in three_servers), timeout=30) as client:
        await client.wait_ready()
        # The channel is READY once one connection is up, and round_robin picks only among
        # connections that are up: a burst sent at once could all land on the first. One
        # call at a time until every server has answered one (a client that does not
        # spread calls never gets there and fails here).
        start = [_lines_enqueued(s) for s in three_servers]
        deadline = time.monotonic() + 30
        while any(_lines_enqueued(s) == b for s, b in zip(three_servers, start, strict=True)):
            assert time.monotonic() < deadline, "calls never reached every server"
            await client.recognize_line(line_images[0])
        before = [_lines_enqueued(s) for s in three_servers]
        lines = await asyncio.gather(
            *(client.recognize_line(line_images[i % 3]) for i in range(30))
        )
    assert [r.text for r in lines] == [TEXTS[i % 3] for i in range(30)]
    received = [_lines_enqueued(s) - b for s, b in zip(three_servers, before, strict=True)]
    # round_robin in turn over the three: ten each, give or take a connection hiccup.
    assert sum(received) == 30 and min(received) >= 5, received


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_sigterm_on_one_server_mid_run_loses_no_call(
    three_servers: list[ServerProcess], line_images: list[bytes]
) -> None:
    """Four threads send 120 single-line calls through one client; after 30 have come
    back, one server gets SIGTERM. It turns NOT_SERVING, finishes its calls in flight and
    closes its connections; the channel sends new calls to the other two (and retries one
    refused in the race). Every call must succeed with the right text.

    This holds with retries turned off too, because the server drains; what the retry
    policy adds is shown by ``test_unavailable_is_retried_on_another_server``. A server
    killed without draining (SIGKILL) fails its calls in flight with UNAVAILABLE after it
    sent their headers, which gRPC does not retry: see ``scale_out_service_config``."""
    total, kill_after, threads = 120, 30, 4
    victim, survivors = three_servers[2], three_servers[:2]
    results: list[str | None] = [None] * total
    errors: list[tuple[int, BaseException]] = []
    lock = threading.Lock()
    next_index = iter(range(total))
    completed = 0
    kill_now = threading.Event()

    with OcrClient([s.address for s in three_servers], timeout=60) as client:
        client.wait_ready()

        def work() -> None:
            nonlocal completed
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                try:
                    results[i] = client.recognize_line(line_images[i % 3]).text
                except BaseException as exc:
                    with lock:
                        errors.append((i, exc))
                    continue
                with lock:
                    completed += 1
                    if completed == kill_after:
                        kill_now.set()

        before_victim = _lines_enqueued(victim)
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for t in workers:
            t.start()
        assert kill_now.wait(120), "the first calls did not complete"
        assert _lines_enqueued(victim) > before_victim, "the victim got no calls before"
        at_kill = [_lines_enqueued(s) for s in survivors]
        with lock:
            completed_at_kill = completed
        victim.process.send_signal(signal.SIGTERM)
        for t in workers:
            t.join(120)
        assert not any(t.is_alive() for t in workers)

    assert errors == [], errors[:3]
    assert results == [TEXTS[i % 3] for i in range(total)]
    assert victim.process.wait(30) == 0, victim.log()
    assert "shutting down" in victim.log()
    # The calls after the SIGTERM went to the two others (at most the calls in flight then,
    # and any that raced the signal, were still the victim's to finish).
    after_kill = [_lines_enqueued(s) - n for s, n in zip(survivors, at_kill, strict=True)]
    assert all(n > 0 for n in after_kill), after_kill
    assert sum(after_kill) >= total - completed_at_kill - 2 * threads, after_kill
