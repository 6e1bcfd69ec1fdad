"""Server configuration from command-line flags, with every flag also settable by environment.

Each flag ``--some-name`` has the environment variable ``OCR_SOME_NAME``; a flag given on the
command line wins over the environment, which wins over the default.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from ocr_core.cpus import PIN_MODES, SCHED_BATCH_MODES
from ocr_core.engine import LOOP_DECODE_MAX_PIXELS, LOOP_DECODE_MAX_THREADS


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ServerConfig:
    """Everything the serve function needs, resolved from flags and environment."""

    host: str = "[::]"
    port: int = 50051
    model: str = ""
    extra_models: tuple[str, ...] = ()
    models_config: Path | None = None
    model_dir: Path | None = None
    fetch_missing: bool = True
    workers: int = 2
    threads: int = 1
    #: Threads of the recognizer's idle session (lone batches); None = workers x threads.
    idle_threads: int | None = None
    #: Widest lone batch (padded pixels) the idle session runs; 0 = no bound.
    idle_max_pixels: int = 48 * 2048
    #: Batcher threads on CPUs of their own: auto|on|off (``ocr_core.cpus``).
    pin_workers: str = "auto"
    #: Event loop, gRPC and batcher threads under SCHED_BATCH: auto|on|off (``ocr_core.cpus``).
    sched_batch: str = "auto"
    graph_optimization: str = "all"
    max_batch_lines: int = 16
    max_batch_pixels: int = 48 * 2048
    max_delay_ms: float = 2.0
    queue_capacity: int = 1024
    max_lines_per_request: int = 256
    max_image_pixels: int = 16_000_000
    #: None = auto (``loop_decode_bound``): on the loop with few inference threads only.
    loop_decode_max_pixels: int | None = None
    max_line_width: int = 4096
    max_message_bytes: int = 64 * 1024 * 1024
    stream_max_in_flight: int = 64
    stream_max_pages_in_flight: int = 4
    max_pages_in_flight: int = 4
    max_document_pages: int = 1000
    page_max_side: int = 1024
    page_max_lines: int = 1000
    #: Load the models' detectors and classifiers; False = a lines-only server (``--no-pages``).
    pages: bool = True
    metrics_port: int = 0
    max_concurrent_rpcs: int = 1000
    reuse_port: bool = False
    #: Server processes sharing the port (``ocr_server.supervisor``); 1 = this one serves.
    processes: int = 1
    max_connection_age_s: float = 0.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_tokens_file: Path | None = None
    #: Comma-separated bearer tokens, from the OCR_AUTH_TOKENS environment variable only.
    auth_tokens: str = field(default="", repr=False)
    grace_s: float = 10.0
    log_level: str = "INFO"
    log_format: str = "text"
    reflection: bool = True


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to a flag's help only where the flag has a default value.

    argparse's own formatter also prints "(default: None)" and "(default: )" for flags that
    are simply unset, after help text that says what unset means.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default == "":
            return action.help
        return super()._get_help_string(action)


def _env_name(flag: str) -> str:
    return "OCR_" + flag.lstrip("-").upper().replace("-", "_")


class _ServerParser(argparse.ArgumentParser):
    """An argument parser whose errors name the environment variable a bad value came from.

    A value set as ``OCR_WORKERS=0`` in a container spec reaches argparse as the default of
    ``--workers``; an error that named only ``--workers`` would send the operator looking for a
    flag nobody passed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Flags whose value came from the environment (not given on the command line) ->
        #: variable; filled as flags are added, trimmed once the command line is known.
        self.from_env: dict[str, str] = {}

    def error(self, message: str) -> NoReturn:
        named = [
            var
            for flag, var in self.from_env.items()
            if re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", message)
        ]
        if named:
            message += f" (set by the environment variable {', '.join(named)})"
        super().error(message)


def _given_on_command_line(argv: Sequence[str] | None) -> set[str]:
    """The option strings ``argv`` gives, as argparse resolves them (abbreviations included)."""
    probe = build_parser({}, add_help=False, exit_on_error=False)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    try:
        given, _ = probe.parse_known_args(argv)
    except argparse.ArgumentError:
        # The command line itself is wrong; the real parse reports that, blaming no variable.
        return {action.option_strings[0] for action in probe._actions if action.option_strings}
    return {
        action.option_strings[0]
        for action in probe._actions
        if action.option_strings and action.dest in vars(given)
    }


def build_parser(
    env: Mapping[str, str], add_help: bool = True, exit_on_error: bool = True
) -> _ServerParser:
    """The ``ocr-server`` argument parser, with defaults taken from ``env`` where set."""
    d = ServerConfig()
    parser = _ServerParser(
        prog="ocr-server",
        add_help=add_help,
        exit_on_error=exit_on_error,
        description="gRPC OCR server (ocr.v1.OcrService). Every flag can also be set with the "
        "environment variable OCR_<FLAG_NAME> (e.g. OCR_PORT=50052).",
        formatter_class=DefaultsHelpFormatter,
    )

    def add(flag: str, default: object, help_: str, **kw: object) -> None:
        # An empty variable counts as unset (templates often write VAR: ""); read as a value
        # it would turn OCR_MODEL_DIR= into the working directory, OCR_PORT= into an error.
        env_value = env.get(_env_name(flag)) or None
        if env_value is not None:
            parser.from_env[flag] = _env_name(flag)
        parser.add_argument(
            flag,
            default=env_value if env_value is not None else default,
            help=f"{help_} [env {_env_name(flag)}]",
            **kw,  # type: ignore[arg-type]
        )

    def switch(flag: str, help_: str) -> None:
        """An off-by-default switch: ``--flag``, ``--flag false`` or ``OCR_FLAG=1``."""
        add(flag, False, help_, type=_bool, nargs="?", const=True, metavar="BOOL")

    add("--host", d.host, "address to listen on ([::] = all interfaces, IPv4 and IPv6)")
    add("--port", d.port, "port to listen on (0 = pick a free one and log it)", type=int)
    add("--model", d.model, "default model name (empty = the manifest's default)")
    add("--extra-models", "", "comma-separated further models to serve")
    add("--models-config", None, "TOML file declaring user models (see README)", type=Path)
    add(
        "--model-dir",
        None,
        "model cache folder (default: $XDG_CACHE_HOME/grpc-ocr-server/models, else "
        "~/.cache/grpc-ocr-server/models)",
        type=Path,
    )
    switch(
        "--no-fetch",
        "fail instead of downloading missing model files",
    )
    add(
        "--workers",
        _default_workers(),
        "inference sessions per model (batches run at once)",
        type=int,
    )
    add("--threads", d.threads, "intra-op threads per inference session", type=int)
    add(
        "--idle-threads",
        "auto",
        "threads of the extra session that runs a batch when it is all there is to do "
        "(a lone request uses every core the sessions own); auto = workers x threads, "
        "0 or <= --threads = no such session",
        type=_auto_or_int,
    )
    add(
        "--idle-max-pixels",
        d.idle_max_pixels,
        "widest lone batch (padded pixels) the idle session runs; wider ones run on one "
        "worker session. Lines that arrive during an idle run wait for it, so this caps "
        "that wait; 0 = no bound",
        type=int,
    )
    add(
        "--pin-workers",
        d.pin_workers,
        "pin each inference worker thread to a CPU of its own: auto (when the worker threads "
        "of all models and the usable CPUs pair up one to one and --threads is 1), on "
        "(round-robin), off; while a page is in flight they are free either way",
    )
    add(
        "--sched-batch",
        d.sched_batch,
        "run the event loop, gRPC's threads and the batcher's under Linux's SCHED_BATCH "
        "policy, so that their wake-ups do not preempt inference runs: auto (when the "
        "inference threads are pinned), on, off",
    )
    add(
        "--graph-optimization",
        d.graph_optimization,
        "ONNX Runtime graph optimisation: all|extended|basic|disabled (disabled gives "
        "bitwise batch-invariant outputs, ~20%% slower)",
    )
    add("--max-batch-lines", d.max_batch_lines, "most lines in one batch", type=int)
    add("--max-batch-pixels", d.max_batch_pixels, "most padded pixels in one batch", type=int)
    add(
        "--max-delay-ms",
        d.max_delay_ms,
        "longest a line waits for batch-mates while other batches run (0 = never wait)",
        type=float,
    )
    add(
        "--queue-capacity",
        d.queue_capacity,
        "lines that may wait per model; beyond it calls get RESOURCE_EXHAUSTED",
        type=int,
    )
    add(
        "--max-lines-per-request",
        d.max_lines_per_request,
        "most images per RecognizeLines",
        type=int,
    )
    add("--max-image-pixels", d.max_image_pixels, "most decoded pixels per image", type=int)
    add(
        "--loop-decode-max-pixels",
        "auto",
        "a one-image call this small (pixels) that finds the batcher busy is decoded on the "
        "event loop, cheaper than a hand-off to the preprocessing threads while the cores, not "
        f"the loop, are the limit; 0 = never; auto = {LOOP_DECODE_MAX_PIXELS} with up to "
        f"{LOOP_DECODE_MAX_THREADS} inference threads, else 0",
        type=_auto_or_int,
    )
    add(
        "--max-line-width",
        d.max_line_width,
        "widest line in pixels once resized to the model height",
        type=int,
    )
    add("--max-message-bytes", d.max_message_bytes, "largest request message", type=int)
    add(
        "--stream-max-in-flight",
        d.stream_max_in_flight,
        "items of one stream in flight before the server stops reading it",
        type=int,
    )
    add(
        "--stream-max-pages-in-flight",
        d.stream_max_pages_in_flight,
        "page items of one stream in flight before the server stops reading it",
        type=int,
    )
    add(
        "--max-pages-in-flight",
        d.max_pages_in_flight,
        "pages being detected or recognised at once, server-wide (bounds page memory)",
        type=int,
    )
    add(
        "--max-document-pages",
        d.max_document_pages,
        "most pages of one RecognizeDocument call",
        type=int,
    )
    add(
        "--page-max-side",
        d.page_max_side,
        "default PageOptions.max_side: pages are scaled to this long side for text detection",
        type=int,
    )
    add(
        "--page-max-lines",
        d.page_max_lines,
        "most text lines read on one page, the highest-scoring (PageResult.lines_left_out "
        "counts the rest); bounds the recognizer work one page asks for",
        type=int,
    )
    switch(
        "--no-pages",
        "read pre-cropped lines only: do not load the models' page detectors and classifiers "
        "(~60 MiB less memory with v6 small); page and document calls get FAILED_PRECONDITION",
    )
    add(
        "--max-concurrent-rpcs",
        d.max_concurrent_rpcs,
        "calls (streams included) handled at once, health checks not counted; beyond, "
        "RESOURCE_EXHAUSTED",
        type=int,
    )
    switch(
        "--reuse-port",
        "set SO_REUSEPORT so several server processes share one port (one per core on "
        "bigger machines; the kernel spreads connections across them)",
    )
    add(
        "--processes",
        d.processes,
        "server processes sharing --port (with SO_REUSEPORT), each on its own share of the "
        "CPUs with its own sessions; --workers counts per process (default: its share). "
        "One Python process keeps only 6-10 cores busy with a fast model; clients need several "
        "connections to reach every process (README)",
        type=int,
    )
    add(
        "--max-connection-age-s",
        d.max_connection_age_s,
        "close client connections after this many seconds (0 = never), so clients "
        "re-resolve DNS and spread over new replicas; in-flight calls get --grace-s",
        type=float,
    )
    add(
        "--metrics-port",
        d.metrics_port,
        "serve Prometheus metrics at http://HOST:PORT/metrics (0 = off)",
        type=int,
    )
    add("--tls-cert", None, "PEM certificate chain: serve TLS (with --tls-key)", type=Path)
    add("--tls-key", None, "PEM private key of --tls-cert", type=Path)
    add(
        "--tls-client-ca",
        None,
        "PEM CA bundle: require client certificates signed by it (mutual TLS)",
        type=Path,
    )
    add(
        "--auth-tokens-file",
        None,
        "file of accepted bearer tokens, one per line; calls other than health need "
        "'authorization: Bearer <token>' (tokens may also come from OCR_AUTH_TOKENS, "
        "comma-separated; never from a flag)",
        type=Path,
    )
    add("--grace-s", d.grace_s, "seconds in-flight calls get to finish on shutdown", type=float)
    add("--log-level", d.log_level, "DEBUG, INFO, WARNING or ERROR")
    add("--log-format", d.log_format, "text or json")
    switch(
        "--no-reflection",
        "turn off gRPC server reflection",
    )
    return parser


def loop_decode_bound(configured: int | None, inference_threads: int) -> int:
    """``--loop-decode-max-pixels`` resolved: ``auto`` decodes small images on the event loop
    only while the process runs at most ``LOOP_DECODE_MAX_THREADS`` inference threads.

    Why: decoding on the loop saves the hand-off's CPU, which pays while the cores are the
    limit (+4-10 % lines/s for v6 tiny on 2 cores). With many inference threads the one loop
    thread is the limit instead: on 16 cores, one v6 tiny process streamed 876 lines/s with
    every decode on the pool against 699-706 with small ones on the loop, and its p99 fell
    from 5.6-6.2 s to 0.4 s (docs/benchmarks.md, "Line recognition on 16 cores").
    """
    if configured is not None:
        return configured
    return LOOP_DECODE_MAX_PIXELS if inference_threads <= LOOP_DECODE_MAX_THREADS else 0


def _auto_or_int(value: str | int | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    if value.strip().lower() == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {value!r}") from None


def _bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def parse_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> ServerConfig:
    """Resolve a ``ServerConfig`` from ``argv`` and ``env`` (defaults: sys.argv, os.environ)."""
    env = os.environ if env is None else env
    parser = build_parser(env)
    for flag in _given_on_command_line(argv):
        parser.from_env.pop(flag, None)
    a = parser.parse_args(argv)
    # Environment values arrive as strings; re-run them through their flag's type.
    for action in parser._actions:
        value = getattr(a, action.dest, None)
        if isinstance(value, str) and action.type is not None and action.type is not str:
            setattr(a, action.dest, action.type(value))
    config = ServerConfig(
        host=a.host,
        port=a.port,
        model=a.model,
        extra_models=tuple(m.strip() for m in a.extra_models.split(",") if m.strip()),
        models_config=a.models_config,
        model_dir=a.model_dir,
        fetch_missing=not _bool(a.no_fetch),
        workers=a.workers,
        threads=a.threads,
        idle_threads=a.idle_threads,
        idle_max_pixels=a.idle_max_pixels,
        pin_workers=a.pin_workers.lower(),
        sched_batch=a.sched_batch.lower(),
        graph_optimization=a.graph_optimization.lower(),
        max_batch_lines=a.max_batch_lines,
        max_batch_pixels=a.max_batch_pixels,
        max_delay_ms=a.max_delay_ms,
        queue_capacity=a.queue_capacity,
        max_lines_per_request=a.max_lines_per_request,
        max_image_pixels=a.max_image_pixels,
        loop_decode_max_pixels=a.loop_decode_max_pixels,
        max_line_width=a.max_line_width,
        max_message_bytes=a.max_message_bytes,
        stream_max_in_flight=a.stream_max_in_flight,
        stream_max_pages_in_flight=a.stream_max_pages_in_flight,
        max_pages_in_flight=a.max_pages_in_flight,
        max_document_pages=a.max_document_pages,
        page_max_side=a.page_max_side,
        page_max_lines=a.page_max_lines,
        pages=not _bool(a.no_pages),
        metrics_port=a.metrics_port,
        max_concurrent_rpcs=a.max_concurrent_rpcs,
        reuse_port=_bool(a.reuse_port),
        processes=a.processes,
        max_connection_age_s=a.max_connection_age_s,
        tls_cert=a.tls_cert,
        tls_key=a.tls_key,
        tls_client_ca=a.tls_client_ca,
        auth_tokens_file=a.auth_tokens_file,
        auth_tokens=env.get("OCR_AUTH_TOKENS", ""),
        grace_s=a.grace_s,
        log_level=a.log_level.upper(),
        log_format=a.log_format.lower(),
        reflection=not _bool(a.no_reflection),
    )
    _validate(parser, config)
    return config


def _validate(parser: argparse.ArgumentParser, c: ServerConfig) -> None:
    positive = {
        "--workers": c.workers,
        "--threads": c.threads,
        "--max-batch-lines": c.max_batch_lines,
        "--max-batch-pixels": c.max_batch_pixels,
        "--queue-capacity": c.queue_capacity,
        "--max-lines-per-request": c.max_lines_per_request,
        "--max-image-pixels": c.max_image_pixels,
        "--max-line-width": c.max_line_width,
        "--max-message-bytes": c.max_message_bytes,
        "--stream-max-in-flight": c.stream_max_in_flight,
        "--stream-max-pages-in-flight": c.stream_max_pages_in_flight,
        "--max-pages-in-flight": c.max_pages_in_flight,
        "--max-document-pages": c.max_document_pages,
        "--page-max-lines": c.page_max_lines,
        "--max-concurrent-rpcs": c.max_concurrent_rpcs,
        "--processes": c.processes,
    }
    for flag, value in positive.items():
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    if c.loop_decode_max_pixels is not None and c.loop_decode_max_pixels < 0:
        parser.error(
            f"--loop-decode-max-pixels must not be negative, got {c.loop_decode_max_pixels}"
        )
    if c.idle_max_pixels < 0:
        parser.error(f"--idle-max-pixels must not be negative, got {c.idle_max_pixels}")
    if c.idle_threads is not None and c.idle_threads < 0:
        parser.error(f"--idle-threads must be auto or at least 0, got {c.idle_threads}")
    if c.pin_workers not in PIN_MODES:
        parser.error(f"--pin-workers must be auto|on|off, got {c.pin_workers!r}")
    if c.sched_batch not in SCHED_BATCH_MODES:
        parser.error(f"--sched-batch must be auto|on|off, got {c.sched_batch!r}")
    seconds = {
        "--max-connection-age-s": c.max_connection_age_s,
        "--max-delay-ms": c.max_delay_ms,
        "--grace-s": c.grace_s,
    }
    for flag, value in seconds.items():
        if not (math.isfinite(value) and value >= 0):  # nan passed `value < 0` checks
            parser.error(f"{flag} must be a finite number, at least 0, got {value}")
    if not 0 <= c.port <= 65535:  # the socket layer wraps others around: 70000 served 4464
        parser.error(f"--port must be in 0..65535, got {c.port}")
    if not 0 <= c.metrics_port <= 65535:
        parser.error(f"--metrics-port must be in 0..65535, got {c.metrics_port}")
    if c.metrics_port and c.metrics_port <= c.port <= c.metrics_port + c.processes - 1:
        parser.error(
            f"--metrics-port {c.metrics_port} overlaps --port {c.port}"
            + (" (each process serves metrics on the next port up)" if c.processes > 1 else "")
        )
    if c.processes > 1 and c.port == 0:
        parser.error("--processes needs a fixed --port: the processes share it")
    if c.processes > 1 and c.metrics_port and c.metrics_port + c.processes - 1 > 65535:
        parser.error("--metrics-port: each process serves metrics on the next port up")
    if not 320 <= c.page_max_side <= 4096:
        parser.error(f"--page-max-side must be in 320..4096, got {c.page_max_side}")
    if c.log_format not in ("text", "json"):
        parser.error(f"--log-format must be text or json, got {c.log_format!r}")
    if c.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        parser.error(f"--log-level must be DEBUG, INFO, WARNING or ERROR, got {c.log_level!r}")
    if c.graph_optimization not in ("all", "extended", "basic", "disabled"):
        parser.error("--graph-optimization must be all|extended|basic|disabled")
