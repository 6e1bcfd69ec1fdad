"""The serve function: load models, start gRPC with health and reflection, shut down gracefully.

Lifecycle (grpc's graceful-shutdown example, adapted):
1. resolve and load the models (fetching the default if missing) in a worker thread;
2. start listening with health NOT_SERVING, warm every session up, then report SERVING;
3. on SIGTERM/SIGINT (or ``stop``): health NOT_SERVING, stop accepting calls, give in-flight
   calls ``grace_s`` to finish, then close the batchers.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ocr_client.proto.ocr.v1 import ocr_pb2
from ocr_core.batching import BatchLimits
from ocr_core.cpus import plan_worker_cpus, schedule_as_batch, usable_cpus, wants_sched_batch
from ocr_core.detection import DetectionOptions, TextDetector
from ocr_core.documents import pdf_supported
from ocr_core.engine import OcrEngine, RequestLimits
from ocr_core.orientation import LineOrientation, PageOrientation
from ocr_core.pages import PageModels, PageOptions
from ocr_core.recognizer import LineRecognizer, SessionConfig
from ocr_core.registry import ModelRegistry, ModelSpec
from ocr_core.sessions import PooledModel, resolve_idle_threads
from ocr_server.config import ServerConfig, loop_decode_bound
from ocr_server.metrics import ServerMetrics
from ocr_server.security import TokenAuthInterceptor, load_tokens, server_credentials
from ocr_server.servicer import OcrServicer, add_to_server

log = logging.getLogger(__name__)
M = TypeVar("M", bound=PooledModel)


class ListenError(OSError):
    """The address cannot be bound (in use without --reuse-port, or not ours to bind)."""


def _refusals_counter(metrics: ServerMetrics | None) -> Callable[[str], None] | None:
    """Counts calls refused for their token as ``ocr_rpc_calls_total{code="UNAUTHENTICATED"}``:
    the servicer, which counts every other outcome, never sees them."""
    if metrics is None:
        return None
    return lambda method: metrics.observe_call(method, "UNAUTHENTICATED", 0.0)


def check_host(host: str) -> None:
    """Raise ``ListenError`` when ``--host`` names no address at all (a typo): gRPC would
    only fail to bind, after the model load, and that reads as a port in use."""
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ListenError(
            f"--host {host}: not an address this machine can listen on ({exc.strerror}); "
            "give one of its addresses or names, 0.0.0.0 or [::] for all"
        ) from None


#: Why a ``--no-pages`` server refuses page and document calls (FAILED_PRECONDITION).
PAGES_OFF = (
    "this server reads pre-cropped lines only: it was started with --no-pages (OCR_NO_PAGES), "
    "so no page models are loaded; send lines with RecognizeLines or StreamRecognize, or send "
    "pages to a server started without --no-pages"
)

SERVICE_NAME = ocr_pb2.DESCRIPTOR.services_by_name["OcrService"].full_name
#: Calls of health and reflection gRPC admits beyond --max-concurrent-rpcs OCR calls.
OTHER_SERVICES_CALLS = 64


def load_page_models(
    spec: ModelSpec, sessions: SessionConfig, page_max_side: int = DetectionOptions.max_side
) -> PageModels | None:
    """The detector and classifiers of ``spec``, or None for a recognizer-only model.

    ``page_max_side`` is the server's default detection size, which the detector keeps
    its buffers for (``TextDetector.load``).
    """
    if spec.detector_path is None:
        return None

    def optional(cls: type[M], path: Path | None, role: str) -> M | None:
        return cls.load(path, sessions, f"model {spec.name!r} {role}") if path else None

    return PageModels(
        detector=TextDetector.load(
            spec.detector_path, sessions, f"model {spec.name!r} detector", page_max_side
        ),
        line_orientation=optional(LineOrientation, spec.line_classifier_path, "line classifier"),
        page_orientation=optional(PageOrientation, spec.page_orientation_path, "page orientation"),
    )


def load_recognizers(
    config: ServerConfig,
) -> tuple[dict[str, LineRecognizer], dict[str, PageModels], str]:
    """Resolve (fetching if allowed) and load every configured model.

    Returns (recognizers, page models of the models that have a detector, default name).
    """
    registry = ModelRegistry.from_files(
        cache_dir=config.model_dir, user_config=config.models_config
    )
    default = config.model or registry.default_name
    names = list(dict.fromkeys([default, *config.extra_models]))
    idle_threads = resolve_idle_threads(config.idle_threads, config.workers, config.threads)
    sessions = SessionConfig(
        config.workers, config.threads, config.graph_optimization, idle_threads
    )
    recognizers = {}
    page_models = {}
    for name in names:
        spec = registry.resolve(
            name,
            fetch_missing=config.fetch_missing,
            log=lambda message, name=name: log.info("fetching model %s: %s", name, message),
        )
        recognizers[name] = LineRecognizer.load(spec, sessions)
        pages = load_page_models(spec, sessions, config.page_max_side) if config.pages else None
        if pages is not None:
            page_models[name] = pages
        log.info(
            "loaded model %s (%d characters, height %d, %d sessions x %d threads%s) from %s",
            name,
            recognizers[name].charset_size,
            spec.input_height,
            config.workers,
            config.threads,
            f", idle session {idle_threads} threads" if recognizers[name].has_idle_session else "",
            spec.recognizer_path,
        )
        if not config.pages:
            log.info("model %s serves lines only: page models not loaded (--no-pages)", name)
        elif pages is None:
            log.info("model %s has no detector: it serves lines only", name)
    return recognizers, page_models, default


#: Inference threads beyond which one process's GIL, not its cores, limits a fast model: on
#: 16 cores one v6 tiny process kept 6-10 busy, 2 x 8 was still GIL-bound one line per call
#: (docs/benchmarks.md, "Line recognition on 16 cores").
GIL_BOUND_THREADS = 8


def processes_hint(inference_threads: int, cpus: int) -> str | None:
    """What a server process says at start when it runs more inference threads (all models')
    on more CPUs than one GIL keeps busy; None when it does not."""
    if inference_threads <= GIL_BOUND_THREADS or cpus <= GIL_BOUND_THREADS:
        return None
    share = 4
    return (
        f"{inference_threads} inference threads in one process on {cpus} CPUs: with a fast "
        "model (v6 tiny) one process keeps only 6-10 cores busy; "
        f"--processes {cpus // share} (about {share} cores each) gives each its own GIL, for "
        "clients that open several connections (README, 'Several processes on a bigger machine')"
    )


def pin_plan(
    config: ServerConfig, recognizers: dict[str, LineRecognizer]
) -> dict[str, list[int]] | None:
    """Each model's batcher threads' CPUs under ``--pin-workers`` (logged), or None."""
    names = list(recognizers)
    plan, why = plan_worker_cpus(
        config.pin_workers,
        [recognizers[name].workers for name in names],
        config.threads,
        usable_cpus(),
    )
    if plan is None:
        log.info("inference worker threads not pinned to CPUs (%s)", why)
        return None
    pinned = dict(zip(names, plan, strict=True))
    log.info(
        "inference worker threads pinned to CPUs (%s): %s",
        why,
        ", ".join(f"{name} {cpus}" for name, cpus in pinned.items()),
    )
    return pinned


def server_limits(config: ServerConfig) -> ocr_pb2.ServerLimits:
    return ocr_pb2.ServerLimits(
        max_lines_per_request=config.max_lines_per_request,
        max_image_pixels=config.max_image_pixels,
        max_line_width=config.max_line_width,
        max_message_bytes=config.max_message_bytes,
        stream_max_in_flight=config.stream_max_in_flight,
        max_document_pages=config.max_document_pages,
        max_lines_per_page=config.page_max_lines,
        # A --no-pages server reads no documents at all, PDF or not.
        pdf_support=config.pages and pdf_supported(),
    )


def batch_limits(config: ServerConfig) -> BatchLimits:
    """The batcher's bounds from the server flags (``--idle-max-pixels 0``: no idle bound)."""
    return BatchLimits(
        max_lines=config.max_batch_lines,
        max_pixels=config.max_batch_pixels,
        max_delay_s=config.max_delay_ms / 1000.0,
        queue_capacity=config.queue_capacity,
        idle_max_pixels=config.idle_max_pixels or None,
    )


async def serve(
    config: ServerConfig,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Run the server until SIGTERM/SIGINT or ``stop`` is set; ``on_ready(port)`` once SERVING."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread / not Unix
            pass

    # Security settings and the host are checked before the (slow) model load, so a typo
    # fails at once.
    credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
    tokens = load_tokens(config.auth_tokens_file, config.auth_tokens)
    await asyncio.to_thread(check_host, config.host)
    recognizers, page_models, default = await asyncio.to_thread(load_recognizers, config)
    worker_cpus = pin_plan(config, recognizers)
    # Before the engine's and gRPC's threads start, so that they inherit the policy.
    if wants_sched_batch(config.sched_batch, worker_cpus is not None) and schedule_as_batch():
        log.info(
            "event loop, gRPC and batcher threads run as SCHED_BATCH (--sched-batch %s)",
            config.sched_batch,
        )
    inference_threads = sum(r.workers for r in recognizers.values()) * config.threads
    loop_decode = loop_decode_bound(config.loop_decode_max_pixels, inference_threads)
    log.info(
        "--loop-decode-max-pixels %d%s: %s",
        loop_decode,
        f" (auto, {inference_threads} inference threads)"
        if config.loop_decode_max_pixels is None
        else "",
        "every image decodes on the preprocessing threads"
        if loop_decode == 0
        else "small one-image calls decode on the event loop while the batcher is busy",
    )
    hint = processes_hint(inference_threads, len(usable_cpus()))
    if hint is not None:
        log.info("%s", hint)
    engine = OcrEngine(
        recognizers,
        default,
        batch_limits(config),
        RequestLimits(
            max_lines_per_request=config.max_lines_per_request,
            max_image_pixels=config.max_image_pixels,
            max_line_width=config.max_line_width,
            max_document_pages=config.max_document_pages,
            max_pages_in_flight=config.max_pages_in_flight,
        ),
        preprocess_threads=max(2, config.workers),
        loop_decode_max_pixels=loop_decode,
        page_models=page_models,
        worker_cpus=worker_cpus,
        pages_off_reason="" if config.pages else PAGES_OFF,
    )
    engine.start()
    metrics = ServerMetrics(engine) if config.metrics_port else None
    if metrics is not None:
        try:
            metrics_port = metrics.start_http(config.metrics_port, config.host.strip("[]"))
        except OSError as exc:
            raise ListenError(
                f"could not serve metrics on port {config.metrics_port} (--metrics-port): "
                f"{exc.strerror or exc}; another process may hold it"
            ) from None
        log.info("Prometheus metrics on port %d at /metrics", metrics_port)

    server = grpc.aio.server(
        interceptors=[TokenAuthInterceptor(tokens, _refusals_counter(metrics))] if tokens else [],
        # The OCR service counts its own calls and streams against --max-concurrent-rpcs
        # (OcrServicer); gRPC's bound, which counts every service, sits above it so that
        # health checks still answer while streams hold every OCR slot, and reflection and
        # health cannot pile up without limit either.
        maximum_concurrent_rpcs=config.max_concurrent_rpcs + OTHER_SERVICES_CALLS,
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            # Responses are not capped: --max-message-bytes bounds what a client may send,
            # and a small one must not fail a call after its work is done for its answer.
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 1 if config.reuse_port else 0),
            # An aged connection takes no new calls (the client opens another, re-resolving
            # DNS) and keeps the ones it has: no grace limit, which cut a long stream (a
            # book's pages) at age + grace, with its answered pages lost to the client.
            *(
                [("grpc.max_connection_age_ms", int(config.max_connection_age_s * 1000))]
                if config.max_connection_age_s > 0
                else []
            ),
        ],
    )
    servicer = OcrServicer(
        engine,
        server_limits(config),
        config.stream_max_pages_in_flight,
        PageOptions(
            detection=DetectionOptions(
                max_side=config.page_max_side, max_candidates=config.page_max_lines
            )
        ),
        metrics,
        config.max_concurrent_rpcs,
    )
    add_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    address = f"{config.host}:{config.port}"
    try:
        if credentials is not None:
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises "Failed to bind" where older versions returned 0
        port = 0
    if port == 0:
        raise ListenError(
            f"could not listen on {config.host}:{config.port}: the port is in use (another "
            "server there needs --reuse-port on both to share it), or the address is not "
            "this machine's, or not allowed"
        )
    await server.start()
    try:
        await engine.warm_up()
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        if metrics is not None:
            metrics.serving.set(1)
        log.info(
            "serving ocr.v1.OcrService on %s:%d (default model %s; %s%s)",
            config.host,
            port,
            default,
            "plaintext"
            if credentials is None
            else ("mutual TLS" if config.tls_client_ca else "TLS"),
            f", {len(tokens)} bearer token(s) required" if tokens else "",
        )
        if on_ready is not None:
            on_ready(port)
        await stop.wait()
        log.info(
            "shutting down: NOT_SERVING, finishing in-flight calls (grace %.1f s)", config.grace_s
        )
        await health_servicer.enter_graceful_shutdown()
        if metrics is not None:
            metrics.serving.set(0)
        servicer.begin_shutdown(config.grace_s)
        await server.stop(config.grace_s)
    finally:
        await server.stop(0)
        await engine.aclose()
        log.info("stopped")
