"""Raw ONNX Runtime on the real line crops vs the gRPC server at several concurrencies.

Why both: a server's lines/s only means something next to what the same model does on the
same machine without a server. The *raw limit* feeds the very tensors the server would build
(the project's own decode, resize and bucket padding) straight into ONNX Runtime, in the
server's session layout (``--workers`` sessions with ``--threads`` intra-op threads each, one
Python thread per session), so ``server / raw`` is the price of everything the server adds:
PNG decoding and resizing per request, gRPC, the micro-batcher, the asyncio loop, and sharing
the cores with whatever sends the requests.

The server runs as its own process (the real ``ocr-server``, a fresh one per mode) and the
load comes from a second process, so neither shares the other's GIL; on a small machine they
still share the cores, which the report shows as CPU used by each process. Three modes:
``unary-1`` (one line per ``RecognizeLines``), ``unary-16`` (up to 16 lines per call) and
``stream`` (one ``StreamRecognize`` per caller, one line in flight on each), each over a
sweep of calls or streams in flight; the whole run is repeated and medians are reported.

    .venv/bin/python -m bench.bench_lines [--models ppocr-v6-small,ppocr-v6-tiny]
        [--modes unary-1,unary-16,stream] [--concurrency 1,4,16,64,256] [--repeats 3]
        [--duration 8] [--workers 2 --threads 1] [--out docs/benchmarks.md]

Heavy imports (numpy, onnxruntime, grpc) happen inside functions: the spawned load process
imports this module and should carry only the client.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import itertools
import json
import multiprocessing
import shlex
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from bench.common import (
    DEFAULT_DATA,
    REPO_ROOT,
    RESULTS_DIR,
    LineImage,
    add_server_flags,
    bench_parser,
    exact_command,
    idle_threads,
    load_lines,
    machine_busy_seconds,
    machine_info,
    percentile,
    proc_cpu_seconds,
    proc_status_kib,
    repo_path,
    repo_relative,
    running_server,
    server_batch_limits,
    update_markdown_section,
)

# --------------------------------------------------------------------------- statistics


class Call(NamedTuple):
    """One timed call: its position in the input cycle's sequence, times, and outcome."""

    index: int
    start: float
    end: float
    lines: int
    error: str | None = None


def measured_calls(
    calls: Sequence[Call], cycle: int, start: float, stop: float
) -> tuple[list[Call], float]:
    """The calls of the whole input cycles started inside [start, stop]: (calls, cycles).

    Line widths, and so costs, differ by more than 30x across the set; a window that cut a
    cycle anywhere would over- or under-represent the wide lines, so the figures cover whole
    cycles of the call sequence: calls ``k0`` to ``k1 - 1``, where ``k0`` is the first cycle
    boundary started at or after ``start`` and ``k1`` the last one started before ``stop``.
    Every started call is awaited to its end, so all their latencies are known. If not even
    one whole cycle fits, it falls back to the calls that ended inside the window
    (``cycles`` is then a fraction and the mix of widths is whatever ran).
    """
    by_index = {c.index: c for c in calls}
    started = sorted(c.index for c in calls if start <= c.start < stop)
    if started:
        k0 = -(-started[0] // cycle) * cycle
        k1 = k0 + (started[-1] - k0) // cycle * cycle
        if k1 > k0 and all(k in by_index for k in range(k0, k1)):
            return [by_index[k] for k in range(k0, k1)], (k1 - k0) / cycle
    kept = sorted(c for c in calls if start <= c.end <= stop)
    return kept, len(kept) / cycle


def closed_loop_rate(calls: Sequence[Call], concurrency: int) -> float:
    """Lines per second of ``concurrency`` callers that each always have one call in flight.

    Little's law for a closed loop without think time: throughput = callers / mean call
    time, here weighted by lines per call. Unlike counting what finished between two
    instants, it has no edge effect from the calls in flight at those instants, which at
    concurrency 64 would be a whole latency (seconds) of error.
    """
    busy = sum(c.end - c.start for c in calls)
    return concurrency * sum(c.lines for c in calls) / busy if busy > 0 else float("nan")


# --------------------------------------------------------------------------- raw limit


@dataclass
class RawResult:
    """One raw ONNX Runtime measurement (no server) over the measured window."""

    mode: str
    lines_per_s: float
    lines_per_s_window: float
    lines: int
    calls: int
    seconds: float
    cycles: float
    mean_batch: float
    call_ms_p50: float
    call_ms_mean: float
    session_ms_per_line: float
    padding_waste: float
    own_cpu_cores: float
    other_cpu_cores: float


def make_sessions(
    model_path: Path, workers: int, threads: int, graph_optimization: str
) -> list[Any]:
    """Sessions built with the options ``LineRecognizer.load`` uses, one per worker.

    Built here rather than taken from a ``LineRecognizer`` because the raw figure must be
    ONNX Runtime alone, without the recognizer's batch assembly and CTC decoding.
    """
    import onnxruntime as ort

    level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[graph_optimization]
    sessions = []
    for _ in range(workers):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = level
        sessions.append(
            ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        )
    return sessions


def bucket_batches(lines: Sequence[Any], max_lines: int, max_pixels: int, height: int) -> list:
    """Group prepared lines by bucket width into batches within the server's batch limits.

    Same rule as the micro-batcher: only one bucket per batch, at most ``max_lines`` lines
    and ``max_pixels`` padded pixels (a single line over the pixel budget still runs alone).
    """
    by_bucket: dict[int, list[Any]] = {}
    for line in lines:
        by_bucket.setdefault(line.bucket_width, []).append(line)
    batches: list[list[Any]] = []
    for bucket, group in by_bucket.items():
        current: list[Any] = []
        for line in group:
            if current and (
                len(current) >= max_lines or (len(current) + 1) * bucket * height > max_pixels
            ):
                batches.append(current)
                current = []
            current.append(line)
        batches.append(current)
    return batches


def run_raw(
    sessions: Sequence[Any],
    input_name: str,
    feeds: Sequence[tuple[Any, int, int, int]],
    warmup_s: float,
    duration_s: float,
    mode: str,
) -> RawResult:
    """Run ``feeds`` (tensor, lines, content px, padded px) round-robin on one thread per session.

    Each thread owns one session, as the server's batcher workers do, and all threads take
    the next feed from one shared counter so every input is run equally often; the figures
    cover the whole cycles of feeds run after ``warmup_s`` (see ``measured_calls`` and
    ``closed_loop_rate``).
    """
    counter = itertools.count()
    barrier = threading.Barrier(len(sessions) + 1)
    start: list[float] = []
    marks: list[tuple[float, float, float]] = []  # (time, machine busy s, own CPU s)
    records: list[list[Call]] = [[] for _ in sessions]

    def worker(index: int) -> None:
        session = sessions[index]
        out = records[index]
        barrier.wait()
        stop = start[0] + warmup_s + duration_s
        while (t0 := time.perf_counter()) < stop:
            k = next(counter)
            tensor, n, _, _ = feeds[k % len(feeds)]
            session.run(None, {input_name: tensor})
            out.append(Call(k, t0, time.perf_counter(), n))

    threads = [
        threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(sessions))
    ]
    for thread in threads:
        thread.start()
    start.append(time.perf_counter())
    barrier.wait()
    for mark in (start[0] + warmup_s, start[0] + warmup_s + duration_s):
        time.sleep(max(0.0, mark - time.perf_counter()))
        marks.append((time.perf_counter(), machine_busy_seconds(), time.process_time()))
    for thread in threads:
        thread.join()
    (ta, busy_a, own_a), (tb, busy_b, own_b) = marks
    own_cores = (own_b - own_a) / (tb - ta)
    other_cores = max(0.0, (busy_b - busy_a) / (tb - ta) - own_cores)
    m0 = start[0] + warmup_s
    all_calls = [c for out in records for c in out]
    kept, cycles = measured_calls(all_calls, len(feeds), m0, m0 + duration_s)
    window_lines = sum(c.lines for c in all_calls if m0 <= c.end <= m0 + duration_s)
    lines = sum(c.lines for c in kept)
    call_ms = sorted((c.end - c.start) * 1e3 for c in kept)
    content = sum(feeds[c.index % len(feeds)][2] for c in kept)
    padded = sum(feeds[c.index % len(feeds)][3] for c in kept)
    return RawResult(
        mode=mode,
        lines_per_s=closed_loop_rate(kept, len(sessions)),
        lines_per_s_window=window_lines / duration_s,
        lines=lines,
        calls=len(kept),
        seconds=duration_s,
        cycles=cycles,
        mean_batch=lines / len(kept) if kept else float("nan"),
        call_ms_p50=percentile(call_ms, 50),
        call_ms_mean=sum(call_ms) / len(call_ms) if call_ms else float("nan"),
        session_ms_per_line=sum(call_ms) / lines if lines else float("nan"),
        padding_waste=padded / (content + padded) if content + padded else 0.0,
        own_cpu_cores=own_cores,
        other_cpu_cores=other_cores,
    )


RAW_SINGLE = "batch-1"


@dataclass
class RawRig:
    """The raw limit's sessions and prepared inputs, kept for the windows that bracket the
    server's (``bracket_window``): warm sessions, no model load between windows."""

    sessions: list[Any]
    input_name: str
    feeds: dict[str, list[tuple[Any, int, int, int]]]  # raw mode -> inputs: batch-1, bucket
    batches_per_cycle: int
    bucket_widths: list[int]


def prepare_raw(model_path: Path, height: int, lines: Sequence[LineImage], args: Any) -> RawRig:
    """Sessions laid out as the server's workers, and every line prepared both ways: alone,
    and in bucket batches within the server's batch bounds (see ``measure_raw``)."""
    from ocr_core.engine import RequestLimits
    from ocr_core.images import decode_image
    from ocr_core.preprocess import WidthBuckets, assemble_batch, prepare_line

    buckets = WidthBuckets()
    max_pixels = RequestLimits().max_image_pixels  # the server's default limit
    prepared = [prepare_line(decode_image(x.data, max_pixels), height, buckets) for x in lines]

    def feed(batch: list[Any]) -> tuple[Any, int, int, int]:
        content = sum(p.width for p in batch) * height
        padded = len(batch) * batch[0].bucket_width * height - content
        return assemble_batch(batch, height), len(batch), content, padded

    sessions = make_sessions(model_path, args.workers, args.threads, args.graph_optimization)
    max_batch_pixels = server_batch_limits(args).max_pixels
    batches = bucket_batches(prepared, args.max_batch, max_batch_pixels, height)
    return RawRig(
        sessions=sessions,
        input_name=sessions[0].get_inputs()[0].name,
        feeds={
            RAW_SINGLE: [feed([p]) for p in prepared],
            f"bucket-batched (<= {args.max_batch})": [feed(b) for b in batches],
        },
        batches_per_cycle=len(batches),
        bucket_widths=sorted({p.bucket_width for p in prepared}),
    )


def measure_raw(
    model_path: Path,
    height: int,
    lines: Sequence[LineImage],
    args: Any,
    latency_reference: bool = True,
) -> dict:
    """Both raw modes (batch 1 and bucket-batched); the better one is the raw limit.

    ``latency_reference`` adds a third run, one session alone (see ``measure_rig``); ``args``
    holds ``workers``, ``threads``, ``graph_optimization``, ``max_batch``, ``warmup``,
    ``duration`` and ``server_args``.
    """
    return measure_rig(prepare_raw(model_path, height, lines, args), args, latency_reference)


def measure_rig(rig: RawRig, args: Any, latency_reference: bool = True) -> dict:
    """``measure_raw`` on sessions and inputs already prepared (``prepare_raw``)."""
    # The first two modes use every session (the server's layout) and decide the raw limit;
    # the third runs one session alone, the latency a lone request could get at best, which
    # is what a server call at concurrency 1 should be compared with.
    runs = [(mode, feeds, rig.sessions) for mode, feeds in rig.feeds.items()]
    if latency_reference:
        runs.append(
            ("batch-1, one session (latency reference)", rig.feeds[RAW_SINGLE], rig.sessions[:1])
        )
    results = []
    for mode, feeds, used in runs:
        print(f"raw {mode}: {args.warmup:g} s warm-up + {args.duration:g} s ...", flush=True)
        result = run_raw(used, rig.input_name, feeds, args.warmup, args.duration, mode)
        print(f"  {result.lines_per_s:.1f} lines/s (mean batch {result.mean_batch:.2f})")
        results.append(result)
    best = max(results[:2], key=lambda r: r.lines_per_s)
    return {
        "modes": [asdict(r) for r in results],
        "limit_lines_per_s": best.lines_per_s,
        "limit_mode": best.mode,
        "batches_per_cycle": rig.batches_per_cycle,
        "bucket_widths": rig.bucket_widths,
    }


def bracket_window(rig: RawRig, mode: str, duration_s: float) -> dict[str, Any]:
    """One raw window of the limit's ``mode`` between two server windows (the server idle).

    The host's speed drifts by several per cent within minutes, and the server's lines/s
    move with it; a ratio over raw windows measured just before and after a server window
    does not carry that drift (see ``reference_rates``).
    """
    result = run_raw(rig.sessions, rig.input_name, rig.feeds[mode], 1.0, duration_s, mode)
    return {"time": time.time(), "lines_per_s": result.lines_per_s}


def reference_rates(levels: list[dict[str, Any]], windows: list[dict[str, Any]]) -> None:
    """Set each level's ``raw_ref_lines_per_s``: the mean of the raw windows nearest before
    its start and after its end (one of them where the other does not exist)."""
    for level in levels:
        before = [w for w in windows if w["time"] <= level["started"]]
        after = [w for w in windows if w["time"] >= level["ended"]]
        near = ([before[-1]] if before else []) + ([after[0]] if after else [])
        if near:
            level["raw_ref_lines_per_s"] = sum(w["lines_per_s"] for w in near) / len(near)


# --------------------------------------------------------------------------- load process


@dataclass(frozen=True)
class Level:
    """One measured window for the load process: where the server is and how to load it."""

    address: str
    paths: tuple[str, ...]  # the line crops' files, read by the load process itself
    mode: str  # "unary-K" (K lines per RecognizeLines call) or "stream"
    concurrency: int  # calls (unary) or streams (stream) in flight
    warmup_s: float
    duration_s: float
    model: str
    server_pid: int  # for its CPU time and peak RSS
    workers: int  # the server's inference workers, for "worker busy"
    timeout_s: float  # deadline per call (unary) or per line (stream)


def lines_per_call(mode: str) -> int:
    """Lines per request of ``mode``: K for "unary-K", 1 for "stream"."""
    if mode == "stream":
        return 1
    if mode.startswith("unary-") and mode[6:].isdigit() and int(mode[6:]) >= 1:
        return int(mode[6:])
    raise ValueError(f"unknown mode {mode!r}; use unary-K (K lines per call) or stream")


def cycle_groups(n_lines: int, per_call: int) -> list[range]:
    """The line indices of each call of one pass: consecutive runs of up to ``per_call``.

    A pass over the set is a whole number of calls (the last may be shorter), so whole
    cycles of calls are whole passes over the lines and every width is represented once.
    """
    return [range(i, min(i + per_call, n_lines)) for i in range(0, n_lines, per_call)]


def load_level(level: Level) -> dict[str, Any]:
    """Entry point of the load process: drive one window, return its figures.

    Runs in a spawned process so the load generator's Python work never takes the server's
    GIL. The images (82 small files) are read and every request message is built before
    the measured window, with the generated stub, so the load process spends its CPU on
    gRPC only: the figures are the server's, not a client library's.
    """
    return asyncio.run(_drive(level, [Path(p).read_bytes() for p in level.paths]))


def reset_peak_rss(pid: int) -> bool:
    """Reset the server's VmHWM (peak RSS) so the next reading covers this window only.

    Writing "5" to /proc/<pid>/clear_refs does that (Linux >= 4.0, same user); where it is
    refused the reading is the peak since the server started, and the report says so.
    """
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def load_requests(images: Sequence[bytes], mode: str, model: str) -> tuple[list[Any], list[int]]:
    """Every request of one pass over ``images`` in ``mode``, and the lines in each.

    ``stream``: one ``StreamRecognizeRequest`` item per line (the model goes in the stream's
    first message); ``unary-K``: ``RecognizeLinesRequest``s of K consecutive lines. Built
    before a window, so the load process spends its CPU on gRPC only.
    """
    from ocr_client.proto.ocr.v1 import ocr_pb2

    groups = cycle_groups(len(images), lines_per_call(mode))
    if mode == "stream":
        requests: list[Any] = [
            ocr_pb2.StreamRecognizeRequest(id=str(i), line=ocr_pb2.Image(data=images[i]))
            for i in range(len(images))
        ]
    else:
        requests = [
            ocr_pb2.RecognizeLinesRequest(
                images=[ocr_pb2.Image(data=images[i]) for i in group], model=model
            )
            for group in groups
        ]
    return requests, [len(g) for g in groups]


async def _drive(level: Level, images: Sequence[bytes]) -> dict[str, Any]:
    """``concurrency`` callers, each with one request in flight, back to back.

    Callers take the next request of the pass from one shared cursor, so the calls form one
    sequence over the cycled lines; throughput (``closed_loop_rate``) and latency cover its
    whole cycles inside the measured window (see ``measured_calls``). GetStats, the
    server's CPU time and this process's CPU time are sampled at the window's two ends.
    """
    import grpc

    from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc

    requests, sizes = load_requests(images, level.mode, level.model)
    calls: list[Call] = []
    cursor = 0
    snapshots: list[tuple[float, Any, float, float, float]] = []
    rss_reset: list[bool] = []
    options = [("grpc.max_receive_message_length", 64 << 20)]

    async with grpc.aio.insecure_channel(level.address, options=options) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        stub = ocr_pb2_grpc.OcrServiceStub(channel)
        m0 = time.perf_counter() + level.warmup_s
        m1 = m0 + level.duration_s

        def take() -> int:
            nonlocal cursor
            index = cursor
            cursor += 1
            return index

        async def unary_caller() -> None:
            while time.perf_counter() < m1:
                index = take()
                k = index % len(requests)
                t0 = time.perf_counter()
                failure = None
                try:
                    await stub.RecognizeLines(requests[k], timeout=level.timeout_s)
                except grpc.aio.AioRpcError as exc:
                    failure = exc.code().name
                lines = sizes[k] if failure is None else 0
                calls.append(Call(index, t0, time.perf_counter(), lines, failure))

        async def stream_caller() -> None:
            call = stub.StreamRecognize(timeout=level.warmup_s + level.duration_s + 600)
            await call.write(
                ocr_pb2.StreamRecognizeRequest(options=ocr_pb2.StreamOptions(model=level.model))
            )
            while time.perf_counter() < m1:
                index = take()
                t0 = time.perf_counter()
                await call.write(requests[index % len(requests)])
                reply = await call.read()
                failure = None
                if reply is grpc.aio.EOF:
                    failure = "stream ended"
                elif reply.WhichOneof("result") == "error":
                    failure = f"item error {reply.error.code}"
                calls.append(
                    Call(index, t0, time.perf_counter(), 1 if failure is None else 0, failure)
                )
                if reply is grpc.aio.EOF:
                    return
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                pass
            await call.code()

        async def snapshot() -> None:
            stats = await stub.GetStats(ocr_pb2.GetStatsRequest(), timeout=30)
            snapshots.append(
                (
                    time.perf_counter(),
                    stats,
                    proc_cpu_seconds(level.server_pid),
                    time.process_time(),
                    machine_busy_seconds(),
                )
            )

        async def sampler() -> None:
            await asyncio.sleep(max(0.0, m0 - time.perf_counter()))
            rss_reset.append(reset_peak_rss(level.server_pid))
            await snapshot()
            await asyncio.sleep(max(0.0, m1 - time.perf_counter()))
            await snapshot()

        caller = stream_caller if level.mode == "stream" else unary_caller
        await asyncio.gather(sampler(), *(caller() for _ in range(level.concurrency)))
        peak_rss = proc_status_kib(level.server_pid, "VmHWM")

    kept, cycles = measured_calls(calls, len(requests), m0, m1)
    rate = closed_loop_rate(kept, level.concurrency)
    ok = [c for c in kept if c.error is None]
    lat_ms = sorted((c.end - c.start) * 1e3 for c in ok)
    window_lines = sum(c.lines for c in calls if c.error is None and m0 <= c.end <= m1)
    errors = Counter(c.error for c in kept if c.error is not None)
    (ta, sa, ca, pa, ma), (tb, sb, cb, pb, mb) = snapshots
    window = tb - ta
    server_cores = (cb - ca) / window
    generator_cores = (pb - pa) / window
    other_cores = max(0.0, (mb - ma) / window - server_cores - generator_cores)
    before = _batcher(sa, level.model)
    after = _batcher(sb, level.model)
    d_lines = after.lines_inferred - before.lines_inferred
    d_batches = after.batches - before.batches
    d_content = after.content_pixels - before.content_pixels
    d_padded = after.padded_pixels - before.padded_pixels
    d_wait = after.queue_wait_ms_total - before.queue_wait_ms_total
    d_infer = after.inference_ms_total - before.inference_ms_total
    batch_sizes = {
        int(k): int(v - before.batch_size_counts.get(k, 0))
        for k, v in after.batch_size_counts.items()
        if v - before.batch_size_counts.get(k, 0) > 0
    }
    return {
        "mode": level.mode,
        "concurrency": level.concurrency,
        "seconds": level.duration_s,
        "cycles": cycles,
        "calls": len(ok),
        "lines": sum(c.lines for c in ok),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        # A failed call held its caller too: it counts in the call time but as 0 lines.
        "lines_per_s": rate,
        "lines_per_s_window": window_lines / level.duration_s,
        "latency_ms": {
            "p50": percentile(lat_ms, 50),
            "p95": percentile(lat_ms, 95),
            "p99": percentile(lat_ms, 99),
            "mean": sum(lat_ms) / len(lat_ms) if lat_ms else float("nan"),
            "max": lat_ms[-1] if lat_ms else float("nan"),
        },
        "server": {
            "lines_inferred": d_lines,
            "batches": d_batches,
            "mean_batch": d_lines / d_batches if d_batches else float("nan"),
            "batch_size_counts": dict(sorted(batch_sizes.items())),
            "padding_waste": d_padded / (d_content + d_padded) if d_content + d_padded else 0.0,
            "queue_wait_ms_mean": d_wait / d_lines if d_lines else float("nan"),
            "inference_ms_per_line": d_infer / d_lines if d_lines else float("nan"),
            "worker_busy": d_infer / (window * 1e3 * level.workers) if window > 0 else float("nan"),
            "dropped_cancelled": after.dropped_cancelled - before.dropped_cancelled,
            "dropped_expired": after.dropped_expired - before.dropped_expired,
            "rejected_queue_full": after.rejected_queue_full - before.rejected_queue_full,
            "failed_batches": after.failed_batches - before.failed_batches,
        },
        "peak_rss_kib": peak_rss,
        "peak_rss_window_only": bool(rss_reset and rss_reset[0]),
        "window_s": window,
        # Cores over the closed-loop rate, as for the raw limit: lines counted inside the
        # window are whichever lines happen to end there, whose costs differ by over 30x (v6
        # small: 45.9 lines/s counted in the window against 49.0 over whole passes).
        "cpu_ms_per_line": {
            "server": server_cores * 1e3 / rate if rate > 0 else float("nan"),
            "load_generator": generator_cores * 1e3 / rate if rate > 0 else float("nan"),
        },
        "cpu_cores": {
            "server": server_cores,
            "load_generator": generator_cores,
            "other": other_cores,
        },
    }


def _batcher(stats: Any, model: str) -> Any:
    """The BatcherStats of ``model`` in a GetStats reply."""
    for batcher in stats.batchers:
        if batcher.model == model:
            return batcher
    raise RuntimeError(f"GetStats has no batcher for model {model!r}")


@dataclass(frozen=True)
class LatencyJob:
    """The concurrency-1 latency check: every line through the server and raw, in blocks."""

    address: str
    paths: tuple[str, ...]
    model: str
    model_path: str
    height: int
    threads: int
    idle_threads: int  # the server's idle session; <= threads: it has none
    idle_max_pixels: int | None  # the server's idle bound (None: none)
    graph_optimization: str
    passes: int
    timeout_s: float


def time_each(calls: Iterable[Callable[[], Any]]) -> list[float]:
    """Milliseconds of each call, run back to back (building the next is not timed)."""
    out = []
    for call in calls:
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def measure_latency_c1(job: LatencyJob) -> dict[str, Any]:
    """Time every line through the server at concurrency 1 and raw, in alternating blocks.

    Runs in the load process. Each pass sends every line as a one-line call, back to back
    (a closed loop of one caller, as a client at concurrency 1 does), then runs the same
    lines raw, back to back, on a session laid out as the server runs that lone line (its
    idle session: ``idle_threads`` threads, spinning only inside a run, within
    ``BatchLimits.idle_max_pixels``; otherwise one worker session), same options, on the
    same prepared tensor the server would build, timing ``run`` only. Passes alternate the
    two blocks, so machine drift (these machines are noisy) hits both sides alike, and
    neither side runs between the other's calls: an earlier version ran raw inference (two
    sessions) in the load process between server calls, which made each call 1.3-1.5 ms
    slower (v6 tiny probe: threads woken after a longer gap, caches emptied by the other
    process), a cost of the measurement, not of the server. Nothing else is running, so
    this is what "no waiting when idle" means: the server's latency for a lone call against
    the inference it cannot avoid. Reference blocks time the lines on one worker session's
    layout and an empty call (gRPC health ``Check``), the floor of a call.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc
    from ocr_core.batching import BatchLimits, within_idle_bound
    from ocr_core.engine import RequestLimits
    from ocr_core.images import decode_image
    from ocr_core.preprocess import WidthBuckets, assemble_batch, prepare_line
    from ocr_core.sessions import SessionConfig, create_session

    images = [Path(p).read_bytes() for p in job.paths]
    max_pixels = RequestLimits().max_image_pixels  # the server's default limit
    config = SessionConfig(1, job.threads, job.graph_optimization, job.idle_threads)
    worker_session = create_session(Path(job.model_path), config, "bench raw session")
    idle_session = worker_session
    if config.has_idle_session:
        idle_session = create_session(
            Path(job.model_path), config, "bench raw idle session", threads=job.idle_threads
        )
    name = worker_session.get_inputs()[0].name
    tensors = [
        assemble_batch(
            [prepare_line(decode_image(x, max_pixels), job.height, WidthBuckets())],
            job.height,
        )
        for x in images
    ]
    # The session the server runs each lone line on: its idle session within the batcher's
    # bound, a worker session beyond it.
    limits = BatchLimits(idle_max_pixels=job.idle_max_pixels)
    lone_sessions = [
        idle_session if within_idle_bound(t.shape[2] * t.shape[3], limits) else worker_session
        for t in tensors
    ]
    requests = [
        ocr_pb2.RecognizeLinesRequest(images=[ocr_pb2.Image(data=x)], model=job.model)
        for x in images
    ]

    def raw_block(sessions: Sequence[Any]) -> list[float]:
        return time_each(
            functools.partial(session.run, None, {name: tensor})
            for tensor, session in zip(tensors, sessions, strict=True)
        )

    def call_block(call: Callable[..., Any], messages: Sequence[Any]) -> list[float]:
        return time_each(functools.partial(call, m, timeout=job.timeout_s) for m in messages)

    raw_ms: list[float] = []
    raw_worker_ms: list[float] = []
    server_ms: list[float] = []
    empty_ms: list[float] = []
    empty = health_pb2.HealthCheckRequest()
    with grpc.insecure_channel(job.address) as channel:
        stub = ocr_pb2_grpc.OcrServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        for k in range(min(8, len(images))):  # warm both sides
            worker_session.run(None, {name: tensors[k]})
            idle_session.run(None, {name: tensors[k]})
            stub.RecognizeLines(requests[k], timeout=job.timeout_s)
            health.Check(empty, timeout=job.timeout_s)
        before = _batcher(stub.GetStats(ocr_pb2.GetStatsRequest(), timeout=30), job.model)
        for _ in range(job.passes):
            server_ms += call_block(stub.RecognizeLines, requests)
            raw_ms += raw_block(lone_sessions)
        after = _batcher(stub.GetStats(ocr_pb2.GetStatsRequest(), timeout=30), job.model)
        if config.has_idle_session:
            raw_worker_ms = raw_block([worker_session] * len(tensors))
        empty_ms = call_block(health.Check, [empty] * len(images))
    lines = after.lines_inferred - before.lines_inferred
    worker_ms = (after.inference_ms_total - before.inference_ms_total) / max(lines, 1)
    diffs = sorted(s - r for s, r in zip(server_ms, raw_ms, strict=True))
    return {
        "lines_timed": len(diffs),
        "raw_ms_p50": percentile(sorted(raw_ms), 50),
        "raw_worker_ms_p50": percentile(sorted(raw_worker_ms or raw_ms), 50),
        "server_ms_p50": percentile(sorted(server_ms), 50),
        "extra_ms_p50": percentile(sorted(server_ms), 50) - percentile(sorted(raw_ms), 50),
        "line_extra_ms_p50": percentile(diffs, 50),
        "line_extra_ms_p90": percentile(diffs, 90),
        # Means split the call: the worker's time per line (batch assembly, session.run,
        # argmax and CTC decoding) and the rest (decode/resize, gRPC both ways, hand-offs).
        "raw_ms_mean": sum(raw_ms) / len(raw_ms),
        "server_ms_mean": sum(server_ms) / len(server_ms),
        "server_worker_ms_mean": worker_ms,
        "empty_call_ms_p50": percentile(sorted(empty_ms), 50),
    }


# --------------------------------------------------------------------------- aggregation


def median(values: Sequence[float]) -> float:
    finite = sorted(v for v in values if v == v)
    return percentile(finite, 50) if finite else float("nan")


def spread(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if v == v]
    return (min(finite), max(finite)) if finite else (float("nan"), float("nan"))


def median_of(rows: Sequence[Any], get: Callable[[Any], float]) -> float:
    """The median of ``get(row)`` over ``rows`` (NaNs left out)."""
    return median([get(row) for row in rows])


#: Figures of the concurrency-1 check that are summarised as medians over repeats.
LATENCY_KEYS = (
    "raw_ms_p50",
    "raw_worker_ms_p50",
    "server_ms_p50",
    "extra_ms_p50",
    "line_extra_ms_p50",
    "line_extra_ms_p90",
    "raw_ms_mean",
    "server_ms_mean",
    "server_worker_ms_mean",
    "empty_call_ms_p50",
)


def summarise(model_result: dict[str, Any]) -> dict[str, Any]:
    """Medians and spreads over repeats; ratios are taken within a repeat, then summarised."""
    repeats = model_result["repeats"]
    limits = [r["raw"]["limit_lines_per_s"] for r in repeats]
    raw_modes = []
    for i, first in enumerate(repeats[0]["raw"]["modes"]):
        runs = [r["raw"]["modes"][i] for r in repeats]
        rates = [m["lines_per_s"] for m in runs]
        raw_modes.append(
            {
                "mode": first["mode"],
                "lines_per_s": median(rates),
                "spread": spread(rates),
                "mean_batch": median_of(runs, lambda m: m["mean_batch"]),
                "call_ms_p50": median_of(runs, lambda m: m["call_ms_p50"]),
                "session_ms_per_line": median_of(runs, lambda m: m["session_ms_per_line"]),
                "padding_waste": first["padding_waste"],
                "cpu_ms_per_line": median_of(
                    runs, lambda m: m["own_cpu_cores"] * 1e3 / m["lines_per_s"]
                ),
                "other_cpu_max": max(m["other_cpu_cores"] for m in runs),
            }
        )
    levels = []
    for key in [(lv["mode"], lv["concurrency"]) for lv in repeats[0]["levels"]]:
        runs, ratios = [], []
        for r in repeats:
            for lv in r["levels"]:
                if (lv["mode"], lv["concurrency"]) == key:
                    runs.append(lv)
                    reference = lv.get("raw_ref_lines_per_s", r["raw"]["limit_lines_per_s"])
                    ratios.append(lv["lines_per_s"] / reference)
        rates = [lv["lines_per_s"] for lv in runs]
        sizes: Counter[int] = Counter()
        for lv in runs:
            sizes.update({int(k): v for k, v in lv["server"]["batch_size_counts"].items()})
        rss = [lv["peak_rss_kib"] for lv in runs if lv["peak_rss_kib"]]
        levels.append(
            {
                "mode": key[0],
                "concurrency": key[1],
                "lines_per_s": median(rates),
                "spread": spread(rates),
                "ratio": median(ratios),
                "ratio_spread": spread(ratios),
                "p50": median_of(runs, lambda lv: lv["latency_ms"]["p50"]),
                "p95": median_of(runs, lambda lv: lv["latency_ms"]["p95"]),
                "p99": median_of(runs, lambda lv: lv["latency_ms"]["p99"]),
                "cycles": min(lv["cycles"] for lv in runs),
                "mean_batch": median_of(runs, lambda lv: lv["server"]["mean_batch"]),
                "batch_size_counts": dict(sorted(sizes.items())),
                "padding_waste": median_of(runs, lambda lv: lv["server"]["padding_waste"]),
                "queue_wait_ms": median_of(runs, lambda lv: lv["server"]["queue_wait_ms_mean"]),
                "worker_busy": median_of(runs, lambda lv: lv["server"]["worker_busy"]),
                "inference_ms_per_line": median_of(
                    runs, lambda lv: lv["server"]["inference_ms_per_line"]
                ),
                "server_cpu_ms_per_line": median_of(
                    runs, lambda lv: lv["cpu_ms_per_line"]["server"]
                ),
                "generator_cpu_ms_per_line": median_of(
                    runs, lambda lv: lv["cpu_ms_per_line"]["load_generator"]
                ),
                "server_cores": median_of(runs, lambda lv: lv["cpu_cores"]["server"]),
                "generator_cores": median_of(runs, lambda lv: lv["cpu_cores"]["load_generator"]),
                "other_cores_max": max(lv["cpu_cores"]["other"] for lv in runs),
                "peak_rss_mib": max(rss) / 1024 if rss else float("nan"),
                "peak_rss_window_only": all(lv["peak_rss_window_only"] for lv in runs),
                "errors": sum(lv["errors"] for lv in runs),
            }
        )
    checks = [r["latency_c1"] for r in repeats if r.get("latency_c1")]
    latency = None
    if checks:
        latency = {
            key: median_of(checks, lambda p, key=key: p.get(key, float("nan")))
            for key in LATENCY_KEYS
        }
        latency["extra_spread"] = spread([p["extra_ms_p50"] for p in checks])
        latency["lines_timed"] = sum(p["lines_timed"] for p in checks)
    brackets = [w["lines_per_s"] for r in repeats for w in r.get("raw_windows", [])[1:]]
    return {
        "limit_lines_per_s": median(limits),
        "limit_spread": spread(limits),
        "brackets": len(brackets),
        "bracket_spread": spread(brackets),
        "raw_modes": raw_modes,
        "levels": levels,
        "latency_c1": latency,
    }


# --------------------------------------------------------------------------- report


def _f(x: float, digits: int = 1) -> str:
    return "n/a" if x != x else f"{x:.{digits}f}"  # x != x: NaN


def _range(pair: tuple[float, float], digits: int = 1) -> str:
    return f"{_f(pair[0], digits)} - {_f(pair[1], digits)}"


def raw_table(summary: dict[str, Any]) -> list[str]:
    rows = [
        "| mode | lines/s (median) | min - max | mean batch | ms per session call (p50) "
        "| session ms per line | CPU ms per line | padding | other CPU (max) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["raw_modes"]:
        rows.append(
            f"| {r['mode']} | {_f(r['lines_per_s'])} | {_range(r['spread'])} "
            f"| {_f(r['mean_batch'], 2)} | {_f(r['call_ms_p50'])} "
            f"| {_f(r['session_ms_per_line'])} | {_f(r['cpu_ms_per_line'])} "
            f"| {_f(100 * r['padding_waste'])} % | {_f(r['other_cpu_max'], 2)} |"
        )
    return rows


def server_table(summary: dict[str, Any]) -> list[str]:
    rows = [
        "| mode | in flight | lines/s (median) | min - max | x raw (median) | min - max "
        "| p50 ms | p95 ms | p99 ms | mean batch | padding | queue wait ms | worker busy "
        "| server CPU ms/line | load-gen CPU ms/line | other CPU (max) | peak RSS MiB "
        "| errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
        "|---:|---:|",
    ]
    for lv in summary["levels"]:
        rows.append(
            f"| {lv['mode']} | {lv['concurrency']} | {_f(lv['lines_per_s'])} "
            f"| {_range(lv['spread'])} | {_f(lv['ratio'], 2)} | {_range(lv['ratio_spread'], 2)} "
            f"| {_f(lv['p50'])} | {_f(lv['p95'])} | {_f(lv['p99'])} "
            f"| {_f(lv['mean_batch'], 2)} | {_f(100 * lv['padding_waste'])} % "
            f"| {_f(lv['queue_wait_ms'])} | {_f(100 * lv['worker_busy'], 0)} % "
            f"| {_f(lv['server_cpu_ms_per_line'])} | {_f(lv['generator_cpu_ms_per_line'], 2)} "
            f"| {_f(lv['other_cores_max'], 2)} | {_f(lv['peak_rss_mib'], 0)} | {lv['errors']} |"
        )
    return rows


def batch_table(summary: dict[str, Any]) -> list[str]:
    """Batch-size distribution at each mode's highest concurrency, all repeats pooled."""
    rows = ["| mode | in flight | batches of size n (n: count) |", "|---|---:|---|"]
    top = {}
    for lv in summary["levels"]:
        if lv["concurrency"] >= top.get(lv["mode"], {"concurrency": 0})["concurrency"]:
            top[lv["mode"]] = lv
    for mode, lv in top.items():
        counts = " ".join(f"{k}: {v}" for k, v in lv["batch_size_counts"].items())
        rows.append(f"| {mode} | {lv['concurrency']} | {counts} |")
    return rows


#: The issue's targets, by model: least share of the raw limit at saturating concurrency.
RATIO_TARGETS = {"ppocr-v6-small": 0.90, "ppocr-v6-tiny": 0.80}
LATENCY_TARGET_MS = 3.0
RSS_TARGET_MB = 600


def best_levels(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each mode's level with the highest median lines/s."""
    best: dict[str, dict[str, Any]] = {}
    for lv in summary["levels"]:
        if lv["lines_per_s"] > best.get(lv["mode"], {"lines_per_s": -1.0})["lines_per_s"]:
            best[lv["mode"]] = lv
    return best


def targets_table(model: str, summary: dict[str, Any]) -> list[str]:
    rows = ["| target | measured | holds |", "|---|---|---|"]
    target = RATIO_TARGETS.get(model)
    for mode, lv in best_levels(summary).items():
        if target is None:
            continue
        rows.append(
            f"| {mode}: lines/s >= {target:.2f}x raw at saturating concurrency "
            f"| {lv['ratio']:.2f}x at {lv['concurrency']} in flight "
            f"(repeats {_range(lv['ratio_spread'], 2)}) "
            f"| {'yes' if lv['ratio'] >= target else 'no'} |"
        )
    lat = summary["latency_c1"]
    if lat:
        rows.append(
            f"| concurrency 1: p50 <= single-line inference + {LATENCY_TARGET_MS:g} ms "
            f"| {lat['server_ms_p50']:.1f} ms vs {lat['raw_ms_p50']:.1f} ms: "
            f"+{lat['extra_ms_p50']:.1f} ms (repeats {_range(lat['extra_spread'])}) "
            f"| {'yes' if lat['extra_ms_p50'] <= LATENCY_TARGET_MS else 'no'} |"
        )
    for lv in summary["levels"]:
        if lv["mode"] == "stream" and lv["concurrency"] == 64:
            mb = lv["peak_rss_mib"] * 1.048576
            rows.append(
                f"| 64 concurrent streams: peak RSS <= {RSS_TARGET_MB} MB "
                f"| {mb:.0f} MB ({lv['peak_rss_mib']:.0f} MiB), largest of the repeats "
                f"| {'yes' if mb <= RSS_TARGET_MB else 'no'} |"
            )
    return rows


def analysis(model: str, result: dict[str, Any]) -> str:
    """The "what limits it" paragraph, from this run's figures only (no stale prose)."""
    summary = result["summary"]
    nproc = result["machine"]["nproc"]
    raw1 = summary["raw_modes"][0]
    batched = summary["raw_modes"][1]
    limit = summary["limit_lines_per_s"]
    raw_cpu = min(raw1["cpu_ms_per_line"], batched["cpu_ms_per_line"])
    out = [
        f"Raw ONNX Runtime does {raw1['lines_per_s']:.1f} lines/s one line per run and "
        f"{batched['lines_per_s']:.1f} bucket-batched (mean batch "
        f"{batched['mean_batch']:.2f}), so batching changes raw throughput "
        f"{batched['lines_per_s'] / raw1['lines_per_s']:.2f}x on this CPU; the raw limit is "
        f"{limit:.1f} lines/s and costs {raw_cpu:.1f} ms of CPU per line."
    ]
    for mode, lv in best_levels(summary).items():
        total = lv["server_cpu_ms_per_line"] + lv["generator_cpu_ms_per_line"]
        used = lv["server_cores"] + lv["generator_cores"]
        out.append(
            f"{mode}: best {lv['lines_per_s']:.1f} lines/s at {lv['concurrency']} in flight "
            f"({lv['ratio']:.2f}x raw); the server spent {lv['server_cpu_ms_per_line']:.1f} ms "
            f"of CPU per line and the load generator {lv['generator_cpu_ms_per_line']:.2f}, "
            f"together {total:.1f} ms against the raw "
            f"{raw_cpu:.1f}, with "
            f"{used:.2f} of {nproc} cores busy"
            + (
                ": the cores are the limit, so every ms of CPU spent outside inference "
                "(decoding, resizing, gRPC and protobuf on both sides, asyncio, CTC decoding) "
                "comes straight out of throughput."
                if used >= 0.9 * nproc
                else ": the cores were not saturated, so hand-offs between stages, not CPU, "
                "limited this mode."
            )
        )
    lat = summary["latency_c1"]
    if lat:
        out.append(
            f"At concurrency 1 a one-line call took {lat['server_ms_p50']:.1f} ms (p50) "
            f"against {lat['raw_ms_p50']:.1f} ms for the same lines run raw in alternating "
            f"blocks (per-line difference p50 {lat['line_extra_ms_p50']:.1f} ms, p90 "
            f"{lat['line_extra_ms_p90']:.1f} ms): that is the whole fixed cost of a call "
            "(both gRPC sides, decode and resize, the hand-offs to the worker thread and "
            "back, CTC decoding). An empty gRPC call, back to back, took "
            f"{lat['empty_call_ms_p50']:.1f} ms of it."
        )
    busy = [
        f"{lv['mode']} at {lv['concurrency']} ({lv['other_cores_max']:.2f} cores)"
        for lv in summary["levels"]
        if lv["other_cores_max"] >= 0.25
    ]
    if busy:
        out.append(
            "Caution: other processes took a quarter of a core or more during: "
            + ", ".join(busy)
            + "; those figures are lower than a quiet machine gives."
        )
    return " ".join(out)


def _idle_layout(settings: dict[str, Any]) -> str:
    """How the server runs a lone line, in words, from a result's settings."""
    from ocr_core.sessions import SessionConfig

    idle = settings.get("idle_threads", 0)
    if SessionConfig(intra_op_threads=settings["threads"], idle_threads=idle).has_idle_session:
        bound = settings["idle_max_pixels"]
        beyond = (
            "at any width (`--idle-max-pixels 0`)"
            if bound is None
            else f"up to {bound} padded pixels (`--idle-max-pixels`), on a worker session beyond"
        )
        return (
            f"a lone line runs on the idle session: {idle} intra-op threads, spinning only "
            f"inside a run (`--idle-threads`), {beyond}"
        )
    return "no idle session: a lone line runs on one worker session"


def report_section(model: str) -> str:
    return f"Line recognition: {model}"


def _ratio_method(settings: dict[str, Any]) -> str:
    """How *x raw* was taken in this run."""
    if not settings.get("bracket_from"):
        return "*x raw* is each repeat's server figure over the same repeat's raw limit."
    return (
        "*x raw* is each server figure over the raw limit measured around it: the mean of "
        "the raw windows just before and just after the level (the limit's mode on the same "
        f"warm sessions, 1 s warm-up + {settings['bracket_duration_s']:g} s, the server idle "
        f"meanwhile), one after every level from {settings['bracket_from']} in flight and the "
        "repeat's raw limit at its start; the host's speed drifts by several per cent within "
        "minutes, and the server's lines/s move with it."
    )


def write_markdown(path: Path, model: str, result: dict[str, Any], plot: Path | None) -> None:
    """Replace this model's section of ``path`` with this run's report; others are kept."""
    m = result["machine"]
    s = result["settings"]
    summary = result["summary"]
    repeats = result["repeats"]
    stops = [r["shutdown"] for r in repeats for r in r["servers"]]
    clean = all(x["clean"] for x in stops)
    peak = max(summary["levels"], key=lambda lv: lv["peak_rss_mib"])
    server_flags = shlex.join(repo_relative(a) for a in repeats[0]["servers"][0]["command"][1:])
    exits = "all exited 0 within the grace period" if clean else f"NOT all clean: {stops}"
    text = [
        f"- Date: {result['date']}",
        f"- Machine: {m['nproc']} usable cores, {m['cpu_model']}; Python {m['python']}, "
        f"onnxruntime {m['onnxruntime']}, grpcio {m['grpcio']}, Linux {m['kernel']}; "
        f"load average at start {' '.join(m['loadavg_at_start'])}",
        f"- Command: `{result['command']}`",
        f'- Data: {s["lines"]} real line crops (`kind == "line"` in '
        f"`{s['data']}/manifest.jsonl`), cycled; each sent as its PNG/JPEG file.",
        f"- Model: {model}; {s['workers']} session(s) x {s['threads']} intra-op thread(s), "
        f"graph optimisation `{s['graph_optimization']}`, in the raw run and the server; "
        f"{_idle_layout(s)}; server flags `{server_flags}`.",
        f"- {s['repeats']} repeat(s); each runs the raw modes, then one fresh server per mode "
        f"through the concurrency sweep. Each window: {s['warmup_s']:g} s warm-up, then "
        f"{s['duration_s']:g} s measured. Tables give the median over repeats with min - max; "
        + _ratio_method(s),
        "- Lines/s is the closed-loop rate, callers x lines / summed call time (Little's law), "
        "over the whole passes through the line set started in the window (widths, and so "
        "costs, differ by more than 30x). Latency is per call as the caller sees it (a "
        "call of the `unary-16` mode carries up to 16 lines). Mean batch, padding "
        "(padded / (content + padded) pixels), queue wait and worker busy are GetStats "
        "deltas; CPU per line is the process's cores used over the window / lines/s (as "
        "for the raw limit); other "
        "CPU is the machine's busy time minus the server and the load process (0.25 or "
        "more: a busy machine). Peak RSS is the server's VmHWM from the window's start until "
        "its last call ended"
        + (
            " (reset at the window's start through /proc/PID/clear_refs)."
            if all(lv["peak_rss_window_only"] for lv in summary["levels"])
            else " since the server started (resetting it was refused here)."
        ),
        "- Modes, all from a separate load process (its own asyncio loop and channel, "
        "requests built before the window with the generated stub): `unary-1`, one line "
        "per `RecognizeLines` call; `unary-16`, up to 16 consecutive lines per call (a pass "
        "is 6 calls: 5 x 16 + 2); `stream`, one `StreamRecognize` per caller, one line "
        "item in flight on each (send, wait for its response, send the next). *In flight* "
        "is calls (unary) or streams.",
        f"- Server: queue capacity raised to {s['queue_capacity']} lines so that 256 calls "
        "of 16 lines fit (the default 1024 would shed that load with RESOURCE_EXHAUSTED, "
        f"as designed). SIGTERM after each mode: {exits}.",
        "",
        "### Targets",
        "",
        *targets_table(model, summary),
        "",
        "### Raw limit (no server, in-process)",
        "",
        "Every line is decoded and resized once with the project's code (`decode_image`, "
        "`prepare_line`, `WidthBuckets()`, `assemble_batch`); only `InferenceSession.run` is "
        "timed, one Python thread per session, each taking the next input from a shared "
        "cycle. Bucket-batched groups the lines of one bucket width into batches within the "
        "server's batch pixel bound and `--max-batch` lines. The last row runs one session "
        "alone (latency reference; not part of the limit).",
        "",
        *raw_table(summary),
        "",
        f"Raw limit: **{summary['limit_lines_per_s']:.1f} lines/s** (median; repeats "
        f"{_range(summary['limit_spread'])})"
        + (
            f"; the {summary['brackets']} raw windows between server windows read "
            f"{_range(summary['bracket_spread'])} lines/s."
            if summary.get("brackets")
            else "."
        ),
        "",
        "### Server",
        "",
        *server_table(summary),
        "",
        f"Server peak RSS (VmHWM): {peak['peak_rss_mib']:.0f} MiB, the largest of any window "
        f"above ({peak['mode']} at {peak['concurrency']} in flight).",
        "",
        *([f"![lines/s and p50 latency by concurrency]({plot.name})", ""] if plot else []),
        "Batch sizes at each mode's highest concurrency (all repeats):",
        "",
        *batch_table(summary),
        "",
    ]
    lat = summary["latency_c1"]
    if lat:
        text += [
            "### Concurrency 1: latency against inference alone",
            "",
            "The load process alternates blocks: every line as a one-line `RecognizeLines` "
            "call on the synchronous generated stub, back to back (one caller in a closed "
            "loop), then the same lines as raw `session.run` calls on the prepared tensors, "
            f"back to back; {lat['lines_timed']} lines each side in all. The raw session is laid "
            f"out as the server runs a lone line ({_idle_layout(s)}), same options. Server "
            f"p50 **{lat['server_ms_p50']:.1f} ms**, raw p50 **{lat['raw_ms_p50']:.1f} ms**: "
            f"**+{lat['extra_ms_p50']:.1f} ms** (repeats {_range(lat['extra_spread'])}); "
            f"per-line difference (same line, same pass) p50 "
            f"{lat['line_extra_ms_p50']:.1f} ms, p90 "
            f"{lat['line_extra_ms_p90']:.1f} ms. For reference, the same lines on one "
            f"worker session ({s['threads']} thread(s)) took {lat['raw_worker_ms_p50']:.1f} ms "
            "p50 raw.",
            "",
            f"Where the time goes (means): a call took {lat['server_ms_mean']:.1f} ms against "
            f"{lat['raw_ms_mean']:.1f} ms raw; the server's inference worker spent "
            f"{lat['server_worker_ms_mean']:.1f} ms per line (GetStats: batch assembly, "
            "`session.run`, argmax over the classes and CTC decoding), so "
            f"{lat['server_worker_ms_mean'] - lat['raw_ms_mean']:.1f} ms of the gap is inside "
            f"the worker and {lat['server_ms_mean'] - lat['server_worker_ms_mean']:.1f} ms "
            "outside it (image decode and resize, gRPC and protobuf on both sides, the "
            "hand-offs between the event loop and the threads).",
            "",
            "The floor: an empty call (gRPC health `Check`) to the same server, back to back, "
            f"took **{lat['empty_call_ms_p50']:.1f} ms** p50. That much of the gap is gRPC on "
            "both sides and threads waking up, before any "
            "of the server's own work; the rest, "
            f"{lat['extra_ms_p50'] - lat['empty_call_ms_p50']:.1f} ms, is the server's own "
            "(decode and resize, batch assembly, argmax and CTC decoding, hand-offs).",
            "",
        ]
    text += ["### What limits it", "", analysis(model, result)]
    update_markdown_section(path, report_section(model), text)


def plot_png(path: Path, model: str, summary: dict[str, Any]) -> Path | None:
    """lines/s (with the raw limit) and p50 latency against concurrency, one line per mode.

    Needs matplotlib (the ``bench`` extra); without it the report simply has no plot.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot", flush=True)
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    modes = list(dict.fromkeys(lv["mode"] for lv in summary["levels"]))
    for mode in modes:
        lv = [x for x in summary["levels"] if x["mode"] == mode]
        xs = [x["concurrency"] for x in lv]
        left.errorbar(
            xs,
            [x["lines_per_s"] for x in lv],
            yerr=[
                [x["lines_per_s"] - x["spread"][0] for x in lv],
                [x["spread"][1] - x["lines_per_s"] for x in lv],
            ],
            marker="o",
            capsize=3,
            label=mode,
        )
        right.plot(xs, [x["p50"] for x in lv], marker="o", label=mode)
    limit = summary["limit_lines_per_s"]
    left.axhline(limit, color="black", linestyle="--", linewidth=1, label="raw limit")
    target = RATIO_TARGETS.get(model)
    if target:
        left.axhline(
            target * limit, color="gray", linestyle=":", linewidth=1, label=f"{target:.2f}x raw"
        )
    levels = sorted({lv["concurrency"] for lv in summary["levels"]})
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.minorticks_off()
        ax.set_xlabel("in flight (calls or streams)")
        ax.grid(True, alpha=0.3)
    left.set_ylabel("lines/s (median, min-max bars)")
    left.set_ylim(bottom=0)
    right.set_yscale("log")
    right.set_ylabel("p50 latency per call, ms")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    fig.suptitle(f"{model}: server vs raw ONNX Runtime")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main


def add_load_flags(p: argparse.ArgumentParser, models: str, modes: str, concurrency: str) -> None:
    """The flags of a benchmark that loads the server as ``bench_lines`` does (``grpc_floor``
    too): models, data, modes and levels, windows, raw layout, server settings, report."""
    p.add_argument("--models", default=models, help="comma-separated model names")
    p.add_argument("--data", default=DEFAULT_DATA, help="evaluation set folder (repo-relative)")
    p.add_argument("--modes", default=modes, help="unary-K and/or stream")
    p.add_argument("--concurrency", default=concurrency, help="comma-separated levels")
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per window")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per window")
    add_server_flags(p)  # also the raw run's sessions x threads
    p.add_argument("--max-batch", type=int, default=16, help="lines per raw bucket batch")
    p.add_argument("--latency-passes", type=int, default=2, help="passes of the c=1 blocks")
    p.add_argument("--queue-capacity", type=int, default=8192, help="server --queue-capacity")
    p.add_argument("--grace-s", type=float, default=10.0, help="server --grace-s")
    p.add_argument("--timeout", type=float, default=120.0, help="deadline per call, seconds")
    p.add_argument("--out", default="docs/benchmarks.md", help="report whose sections to replace")


def check_load_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check ``add_load_flags``' values and set ``levels``, ``mode_list`` and ``model_list``
    from the comma-separated flags; anything wrong exits with ``p``'s usage error."""
    try:
        args.levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
        args.mode_list = [x.strip() for x in args.modes.split(",") if x.strip()]
        for mode in args.mode_list:
            lines_per_call(mode)
    except ValueError as exc:
        p.error(f"--concurrency / --modes: {exc}")
    args.model_list = [x.strip() for x in args.models.split(",") if x.strip()]
    if not args.levels or min(args.levels) < 1 or not args.mode_list or not args.model_list:
        p.error("need at least one model, one mode and one concurrency level (each >= 1)")
    if args.duration <= 0 or args.warmup < 0 or args.workers < 1 or args.threads < 1:
        p.error("--duration must be positive, --warmup not negative, --workers/--threads >= 1")
    if args.latency_passes < 1:
        p.error("--latency-passes must be at least 1 (the concurrency-1 check is a target)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = bench_parser(
        "python -m bench.bench_lines",
        "Raw ONNX Runtime vs the gRPC server on the real line crops.",
    )
    add_load_flags(p, "ppocr-v6-small,ppocr-v6-tiny", "unary-1,unary-16,stream", "1,4,16,64,256")
    p.add_argument("--repeats", type=int, default=3, help="whole runs; medians are reported")
    p.add_argument(
        "--bracket-from",
        type=int,
        default=16,
        help="a raw window after every level with this many in flight or more; x raw is over "
        "the raw windows around a level (0: over the repeat's raw limit only)",
    )
    p.add_argument(
        "--bracket-duration", type=float, default=5.0, help="measured seconds per raw window"
    )
    args = p.parse_args(argv)
    check_load_args(p, args)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.bracket_from < 0 or args.bracket_duration <= 0:
        p.error("--bracket-from must not be negative, --bracket-duration must be positive")
    return args


def run_repeat(
    model: str, spec: Any, lines: Sequence[LineImage], args: argparse.Namespace, stamp: str
) -> dict[str, Any]:
    """One repeat for one model: the raw modes, then a fresh server per mode, with a raw
    window after every level from ``--bracket-from`` in flight (``bracket_window``)."""
    rig = prepare_raw(spec.recognizer_path, spec.input_height, lines, args)
    result: dict[str, Any] = {"raw": measure_rig(rig, args)}
    limit_mode = result["raw"]["limit_mode"]
    windows = [{"time": time.time(), "lines_per_s": result["raw"]["limit_lines_per_s"]}]
    server_args = replace_model(args, model)
    paths = tuple(str(x.path) for x in lines)
    levels: list[dict[str, Any]] = []
    servers: list[dict[str, Any]] = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        for mode in args.mode_list:
            log_path = RESULTS_DIR / f"lines-{stamp}-{model}-{mode}-server.log"
            with running_server(server_args, log_path, args.grace_s) as server:
                if mode == args.mode_list[0]:
                    job = LatencyJob(
                        server.address,
                        paths,
                        model,
                        str(spec.recognizer_path),
                        spec.input_height,
                        args.threads,
                        idle_threads(args),
                        server_batch_limits(args).idle_max_pixels,
                        args.graph_optimization,
                        args.latency_passes,
                        args.timeout,
                    )
                    print("concurrency 1, alternating with raw inference ...", flush=True)
                    result["latency_c1"] = pool.submit(measure_latency_c1, job).result(timeout=900)
                    p = result["latency_c1"]
                    print(
                        f"  server p50 {p['server_ms_p50']:.1f} ms, raw p50 "
                        f"{p['raw_ms_p50']:.1f} ms (+{p['extra_ms_p50']:.1f})",
                        flush=True,
                    )
                for c in args.levels:
                    level = Level(
                        server.address,
                        paths,
                        mode,
                        c,
                        args.warmup,
                        args.duration,
                        model,
                        server.pid,
                        args.workers,
                        args.timeout,
                    )
                    print(
                        f"{model} {mode} x{c}: {args.warmup:g} s + {args.duration:g} s ...",
                        flush=True,
                    )
                    started = time.time()
                    figures = pool.submit(load_level, level).result(
                        timeout=args.warmup + args.duration + args.timeout + 120
                    )
                    figures["started"], figures["ended"] = started, time.time()
                    levels.append(figures)
                    print(
                        f"  {figures['lines_per_s']:.1f} lines/s "
                        f"({figures['lines_per_s'] / windows[-1]['lines_per_s']:.2f}x the "
                        f"last raw window), p50 {figures['latency_ms']['p50']:.1f} ms, "
                        f"peak RSS {(figures['peak_rss_kib'] or 0) / 1024:.0f} MiB, "
                        f"errors {figures['errors']}",
                        flush=True,
                    )
                    if args.bracket_from and c >= args.bracket_from:
                        windows.append(bracket_window(rig, limit_mode, args.bracket_duration))
                        print(f"  raw {windows[-1]['lines_per_s']:.1f} lines/s", flush=True)
            servers.append(
                {
                    "mode": mode,
                    "command": server.command,
                    "ready_s": server.ready_s,
                    "shutdown": server.shutdown,
                    "log": str(log_path.relative_to(REPO_ROOT)),
                }
            )
    reference_rates(levels, windows)
    result["levels"] = levels
    result["servers"] = servers
    result["raw_windows"] = windows
    return result


def replace_model(args: argparse.Namespace, model: str) -> argparse.Namespace:
    """The server settings of ``args`` for ``model`` (``running_server`` reads ``.model``)."""
    server_args = argparse.Namespace(**vars(args))
    server_args.model = model
    server_args.server_args = f"--queue-capacity {args.queue_capacity} {args.server_args}".strip()
    return server_args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = repo_path(args.data)
    lines = load_lines(data_dir, "bench_lines")

    from ocr_core.registry import ModelRegistry

    registry = ModelRegistry.from_files()
    specs = {model: registry.resolve(model) for model in args.model_list}
    out = repo_path(args.out)
    failed = False
    for model, spec in specs.items():
        started = dt.datetime.now().astimezone()
        stamp = started.strftime("%Y%m%d-%H%M%S")
        result: dict[str, Any] = {
            "date": started.isoformat(timespec="seconds"),
            "command": exact_command("bench.bench_lines"),
            "machine": machine_info(),
            "settings": {
                "model": model,
                "model_file": str(spec.recognizer_path),
                "data": args.data,
                "lines": len(lines),
                "workers": args.workers,
                "threads": args.threads,
                "idle_threads": idle_threads(args),
                "idle_max_pixels": server_batch_limits(args).idle_max_pixels,
                "graph_optimization": args.graph_optimization,
                "max_batch": args.max_batch,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "grace_s": args.grace_s,
                "repeats": args.repeats,
                "bracket_from": args.bracket_from,
                "bracket_duration_s": args.bracket_duration,
                "modes": args.mode_list,
                "concurrency": args.levels,
                "queue_capacity": args.queue_capacity,
            },
            "repeats": [],
        }
        print(f"{len(lines)} lines from {data_dir}; model {model} ({spec.recognizer_path})")
        for r in range(args.repeats):
            print(f"--- {model}: repeat {r + 1} of {args.repeats}", flush=True)
            result["repeats"].append(run_repeat(model, spec, lines, args, stamp))
        result["summary"] = summarise(result)
        json_path = RESULTS_DIR / f"lines-{stamp}-{model}.json"
        json_path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        plot = plot_png(out.parent / f"bench-lines-{model}.png", model, result["summary"])
        write_markdown(out, model, result, plot)
        print("\n".join(server_table(result["summary"])))
        print("\n".join(targets_table(model, result["summary"])))
        print(f"wrote {out}, {json_path}" + (f", {plot}" if plot else ""), flush=True)
        failed |= not all(s["shutdown"]["clean"] for r in result["repeats"] for s in r["servers"])
    if failed:
        print("a server did not exit 0 within its grace period after SIGTERM", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
