"""Raw ONNX Runtime on the real line crops vs the gRPC server at several concurrencies.

Why both: a server's lines/s only means something next to what the same model does on the
same machine without a server. The *raw limit* feeds the very tensors the server would build
(the project's own decode, resize and bucket padding) straight into ONNX Runtime, in the
server's session layout (``--workers`` sessions with ``--threads`` intra-op threads each, one
Python thread per session), so ``server / raw`` is the price of everything the server adds:
PNG decoding and resizing per request, gRPC, the micro-batcher, the asyncio loop, and sharing
the cores with whatever sends the requests.

The server runs as its own process (the real ``ocr-server``) and the load comes from a second
process, so neither shares the other's GIL; on a small machine they still share the cores,
which the report shows as CPU used by each process.

    .venv/bin/python -m bench.bench_lines [--model ppocr-v6-small] [--concurrency 1,4,16,64]
        [--duration 15] [--workers 2 --threads 1] [--out docs/benchmarks.md]

Heavy imports (numpy, onnxruntime, grpc) happen inside functions: the spawned load process
imports this module and should carry only the client.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import multiprocessing
import shlex
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from bench.common import (
    DEFAULT_DATA,
    REPO_ROOT,
    RESULTS_DIR,
    LineImage,
    exact_command,
    load_lines,
    machine_busy_seconds,
    machine_info,
    percentile,
    proc_cpu_seconds,
    proc_status_kib,
    repo_path,
    repo_relative,
    running_server,
    update_markdown_section,
)

# The server's default --max-image-pixels: the raw run decodes each line under the same limit.
MAX_IMAGE_PIXELS = 16_000_000


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
    """Group prepared lines by bucket width into batches within the server's default limits.

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


def measure_raw(model_path: Path, height: int, lines: Sequence[LineImage], args: Any) -> dict:
    """Both raw modes (batch 1 and bucket-batched); the better one is the raw limit."""
    from ocr_core.batching import BatchLimits
    from ocr_core.images import decode_image
    from ocr_core.preprocess import WidthBuckets, assemble_batch, prepare_line

    buckets = WidthBuckets()
    prepared = [
        prepare_line(decode_image(x.data, MAX_IMAGE_PIXELS), height, buckets) for x in lines
    ]

    def feed(batch: list[Any]) -> tuple[Any, int, int, int]:
        content = sum(p.width for p in batch) * height
        padded = len(batch) * batch[0].bucket_width * height - content
        return assemble_batch(batch, height), len(batch), content, padded

    sessions = make_sessions(model_path, args.workers, args.threads, args.graph_optimization)
    input_name = sessions[0].get_inputs()[0].name
    single = [feed([p]) for p in prepared]
    batches = bucket_batches(prepared, args.max_batch, BatchLimits().max_pixels, height)
    batched = [feed(b) for b in batches]
    # The first two modes use every session (the server's layout) and decide the raw limit;
    # the third runs one session alone, the latency a lone request could get at best, which
    # is what a server call at concurrency 1 should be compared with.
    runs = (
        ("batch-1", single, sessions),
        (f"bucket-batched (<= {args.max_batch})", batched, sessions),
        ("batch-1, one session (latency reference)", single, sessions[:1]),
    )
    results = []
    for mode, feeds, used in runs:
        print(f"raw {mode}: {args.warmup:g} s warm-up + {args.duration:g} s ...", flush=True)
        result = run_raw(used, input_name, feeds, args.warmup, args.duration, mode)
        print(f"  {result.lines_per_s:.1f} lines/s (mean batch {result.mean_batch:.2f})")
        results.append(result)
    best = max(results[:2], key=lambda r: r.lines_per_s)
    return {
        "modes": [asdict(r) for r in results],
        "limit_lines_per_s": best.lines_per_s,
        "limit_mode": best.mode,
        "batches_per_cycle": len(batches),
        "bucket_widths": sorted({p.bucket_width for p in prepared}),
    }


# --------------------------------------------------------------------------- load process


@dataclass(frozen=True)
class Level:
    """One concurrency level for the load process: where the server is and how to load it."""

    address: str
    paths: tuple[str, ...]  # the line crops' files, read by the load process itself
    concurrency: int
    warmup_s: float
    duration_s: float
    model: str
    server_pid: int  # for its CPU time
    workers: int  # the server's inference workers, for "worker busy"
    timeout_s: float  # deadline per call


def load_level(level: Level) -> dict[str, Any]:
    """Entry point of the load process: drive one concurrency level, return its figures.

    Runs in a spawned process so the load generator's Python work (building requests,
    reading responses) never takes the server's GIL. The images (82 small files) are read
    before the measured window.
    """
    return asyncio.run(_drive(level, [Path(p).read_bytes() for p in level.paths]))


async def _drive(level: Level, images: Sequence[bytes]) -> dict[str, Any]:
    """``concurrency`` workers, each sending one line per RecognizeLines call, back to back.

    Workers take the next line from one shared cursor, so the calls form one sequence over
    the cycled lines; throughput (``closed_loop_rate``) and latency cover its whole cycles
    inside the measured window (see ``measured_calls``). GetStats, the server's CPU time
    and this process's CPU time are sampled at the window's two ends for the deltas.
    """
    from ocr_client import AsyncOcrClient, OcrClientError

    calls: list[Call] = []
    cursor = 0
    snapshots: list[tuple[float, Any, float, float, float]] = []

    async with AsyncOcrClient(level.address, timeout=level.timeout_s) as client:
        await client.wait_ready(30)
        m0 = time.perf_counter() + level.warmup_s
        m1 = m0 + level.duration_s

        async def worker() -> None:
            nonlocal cursor
            while time.perf_counter() < m1:
                index = cursor
                cursor += 1
                t0 = time.perf_counter()
                failure = None
                try:
                    await client.recognize_lines([images[index % len(images)]], model=level.model)
                except OcrClientError as exc:
                    failure = type(exc).__name__
                calls.append(
                    Call(index, t0, time.perf_counter(), 1 if failure is None else 0, failure)
                )

        async def snapshot() -> None:
            stats = await client.get_stats()
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
            await snapshot()
            await asyncio.sleep(max(0.0, m1 - time.perf_counter()))
            await snapshot()

        await asyncio.gather(sampler(), *(worker() for _ in range(level.concurrency)))

    kept, cycles = measured_calls(calls, len(images), m0, m1)
    ok = [c for c in kept if c.error is None]
    lat_ms = sorted((c.end - c.start) * 1e3 for c in ok)
    window_lines = sum(1 for c in calls if c.error is None and m0 <= c.end <= m1)
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
    sizes = {
        int(k): int(v - before.batch_size_counts.get(k, 0))
        for k, v in after.batch_size_counts.items()
        if v - before.batch_size_counts.get(k, 0) > 0
    }
    return {
        "concurrency": level.concurrency,
        "seconds": level.duration_s,
        "cycles": cycles,
        "lines": len(lat_ms),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        # A failed call held its worker too: it counts in the call time but as 0 lines.
        "lines_per_s": closed_loop_rate(kept, level.concurrency),
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
            "batch_size_counts": dict(sorted(sizes.items())),
            "padding_waste": d_padded / (d_content + d_padded) if d_content + d_padded else 0.0,
            "queue_wait_ms_mean": d_wait / d_lines if d_lines else float("nan"),
            "inference_ms_per_line": d_infer / d_lines if d_lines else float("nan"),
            "worker_busy": d_infer / (window * 1e3 * level.workers) if window > 0 else float("nan"),
            "dropped_cancelled": after.dropped_cancelled - before.dropped_cancelled,
            "dropped_expired": after.dropped_expired - before.dropped_expired,
            "rejected_queue_full": after.rejected_queue_full - before.rejected_queue_full,
            "failed_batches": after.failed_batches - before.failed_batches,
        },
        "window_s": window,
        "cpu_ms_per_line": {
            "server": (cb - ca) * 1e3 / d_lines if d_lines else float("nan"),
            "load_generator": (pb - pa) * 1e3 / d_lines if d_lines else float("nan"),
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


# --------------------------------------------------------------------------- report


def _f(x: float, digits: int = 1) -> str:
    return "n/a" if x != x else f"{x:.{digits}f}"  # x != x: NaN


def raw_table(raw: dict) -> list[str]:
    rows = [
        "| mode | lines/s | mean batch | ms per session call (p50) | session ms per line "
        "| padding | cycles | bench CPU | other CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in raw["modes"]:
        rows.append(
            f"| {r['mode']} | {_f(r['lines_per_s'])} | {_f(r['mean_batch'], 2)} "
            f"| {_f(r['call_ms_p50'])} | {_f(r['session_ms_per_line'])} "
            f"| {_f(100 * r['padding_waste'])} % | {_f(r['cycles'])} "
            f"| {_f(r['own_cpu_cores'], 2)} "
            f"| {_f(r['other_cpu_cores'], 2)} |"
        )
    return rows


def server_table(levels: Sequence[dict], raw_limit: float) -> list[str]:
    rows = [
        "| concurrency | lines/s | cycles | p50 ms | p95 ms | p99 ms | x raw limit | mean batch "
        "| padding | queue wait ms | worker busy | server CPU | load-gen CPU | other CPU "
        "| errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lv in levels:
        lat, srv, cpu = lv["latency_ms"], lv["server"], lv["cpu_cores"]
        rows.append(
            f"| {lv['concurrency']} | {_f(lv['lines_per_s'])} | {_f(lv['cycles'])} "
            f"| {_f(lat['p50'])} "
            f"| {_f(lat['p95'])} | {_f(lat['p99'])} | {_f(lv['lines_per_s'] / raw_limit, 2)} "
            f"| {_f(srv['mean_batch'], 2)} | {_f(100 * srv['padding_waste'])} % "
            f"| {_f(srv['queue_wait_ms_mean'])} | {_f(100 * srv['worker_busy'], 0)} % "
            f"| {_f(cpu['server'], 2)} | {_f(cpu['load_generator'], 2)} "
            f"| {_f(cpu['other'], 2)} | {lv['errors']} |"
        )
    return rows


def analysis(result: dict) -> str:
    """The "what limits it" paragraph, built only from this run's figures.

    Generated rather than hand-written so that a re-run cannot leave stale prose next to
    new numbers.
    """
    raw = result["raw"]
    levels = result["server"]["levels"]
    nproc = result["machine"]["nproc"]
    workers = result["settings"]["workers"]
    limit = raw["limit_lines_per_s"]
    b1, batched = raw["modes"][0], raw["modes"][1]
    best = max(levels, key=lambda lv: lv["lines_per_s"])
    first = levels[0]
    out = [
        f"Raw ONNX Runtime reaches {b1['lines_per_s']:.1f} lines/s one line at a time and "
        f"{batched['lines_per_s']:.1f} lines/s with bucket batching (mean batch "
        f"{batched['mean_batch']:.2f}: the {result['settings']['lines']} lines fall into "
        f"{len(raw['bucket_widths'])} "
        f"bucket widths, so batches stay small): batching changes raw throughput "
        f"{batched['lines_per_s'] / b1['lines_per_s']:.2f}x, so the raw limit is "
        f"{limit:.1f} lines/s ({raw['limit_mode']}).",
        f"The server peaks at {best['lines_per_s']:.1f} lines/s at concurrency "
        f"{best['concurrency']}, {best['lines_per_s'] / limit:.2f}x the raw limit, with "
        f"mean batch {best['server']['mean_batch']:.2f} and "
        f"{100 * best['server']['padding_waste']:.1f} % padding.",
    ]
    busy = best["server"]["worker_busy"]
    srv_cpu = best["cpu_cores"]["server"]
    gen_cpu = best["cpu_cores"]["load_generator"]
    infer = best["server"]["inference_ms_per_line"]
    out.append(
        f"There the {workers} inference workers were busy {100 * busy:.0f} % of the window, "
        f"the server process used {srv_cpu:.2f} cores and the load generator {gen_cpu:.2f} "
        f"of the machine's {nproc}; inference took {infer:.1f} ms of worker time per line "
        f"in the server against {batched['session_ms_per_line']:.1f} ms (batched) and "
        f"{b1['session_ms_per_line']:.1f} ms (batch 1) of session time per line raw."
    )
    limit_mode = b1 if raw["limit_mode"] == b1["mode"] else batched
    raw_cpu_ms = limit_mode["own_cpu_cores"] * 1e3 / limit_mode["lines_per_s"]
    srv_cpu_ms = best["cpu_ms_per_line"]["server"]
    gen_cpu_ms = best["cpu_ms_per_line"]["load_generator"]
    out.append(
        f"Per line, the server process spent {srv_cpu_ms:.1f} ms of CPU and the load "
        f"generator {gen_cpu_ms:.1f} ms, against {raw_cpu_ms:.1f} ms of CPU per line in the "
        f"raw run: serving a line (decode, resize, gRPC and protobuf on both sides, "
        f"batching, logging) costs {srv_cpu_ms + gen_cpu_ms - raw_cpu_ms:.1f} ms of CPU "
        f"more than inferring it, {(srv_cpu_ms + gen_cpu_ms) / raw_cpu_ms - 1:+.0%} on top "
        "of inference alone, and the inference threads share the cores with that work, "
        "which is why their time per line is longer in the server than raw."
    )
    other_cpu = best["cpu_cores"]["other"]
    if other_cpu >= 0.25:
        out.append(
            f"Other processes on the machine took {other_cpu:.2f} cores during that window, "
            "so the server had less than the whole machine."
        )
    if srv_cpu + gen_cpu + other_cpu >= 0.85 * nproc and other_cpu >= 0.25:
        out.append(
            "The cores are saturated, partly by other processes, so this window does not show "
            "the server's own limit; re-run on a quiet machine."
        )
    elif srv_cpu + gen_cpu + other_cpu >= 0.85 * nproc:
        out.append(
            f"The cores are saturated ({srv_cpu + gen_cpu:.2f} of {nproc} used by the server "
            "and its load generator), so that extra work comes straight out of the CPU the "
            "raw run gave entirely to inference: that is what keeps the server below the raw "
            "limit on this machine"
            + (
                ", not missing batches (bucket batching does not speed up raw inference here)."
                if batched["lines_per_s"] <= 1.05 * b1["lines_per_s"]
                else "."
            )
        )
    elif busy >= 0.9:
        out.append(
            "The inference workers are the bottleneck: more throughput needs more or faster "
            "sessions, not a faster front end."
        )
    else:
        out.append(
            "Neither the cores nor the inference workers are saturated, so the limit is "
            "latency between stages (batch formation, hand-offs between the loop and the "
            "worker threads) rather than compute."
        )
    lone = raw["modes"][2]
    raw_call = lone["call_ms_p50"]
    overhead = first["latency_ms"]["p50"] - raw_call
    out.append(
        f"At concurrency {first['concurrency']} a call takes {first['latency_ms']['p50']:.1f} "
        f"ms (p50) against {raw_call:.1f} ms for one raw batch-1 call on a lone session, "
        + (
            f"so the server's fixed cost per one-line call is about {overhead:.1f} ms."
            if overhead > 0
            else "so the server adds no measurable fixed cost per call at this load."
        )
    )
    if len(levels) > 1:
        last, previous = levels[-1], levels[-2]
        gain = last["lines_per_s"] / previous["lines_per_s"] if previous["lines_per_s"] else 0
        out.append(
            f"Going from concurrency {previous['concurrency']} to {last['concurrency']} "
            f"changes throughput {gain:.2f}x while p50 latency goes from "
            f"{previous['latency_ms']['p50']:.0f} to {last['latency_ms']['p50']:.0f} ms; at "
            f"{last['concurrency']} a call takes {last['latency_ms']['mean']:.0f} ms on "
            f"average, {last['server']['queue_wait_ms_mean']:.0f} ms of it waiting in the "
            "batcher's queue."
        )
        if gain < 1.1:
            out.append("Past that point extra concurrency only adds queueing.")
    disturbed = [
        (lv["concurrency"], lv["cpu_cores"]["other"])
        for lv in levels
        if lv["cpu_cores"]["other"] >= 0.25
    ]
    disturbed_raw = [
        f"raw {r['mode']} ({r['other_cpu_cores']:.2f} cores)"
        for r in raw["modes"]
        if r["other_cpu_cores"] >= 0.25
    ]
    if disturbed or disturbed_raw:
        where = ", ".join(
            [*disturbed_raw, *(f"concurrency {c} ({o:.2f} cores)" for c, o in disturbed)]
        )
        out.append(
            f"Caution: other processes used at least a quarter of a core during: {where}; "
            "those figures are lower than this machine gives when it is otherwise idle."
        )
    return " ".join(out)


REPORT_SECTION = "Line recognition: raw ONNX Runtime vs the server"


def write_markdown(path: Path, result: dict) -> None:
    """Replace this benchmark's section of ``path`` with this run's report.

    Only the section is replaced: other benchmarks (bench_pages) keep theirs in the same file.
    """
    m = result["machine"]
    s = result["settings"]
    raw = result["raw"]
    srv = result["server"]
    stop = srv["shutdown"]
    rss = srv["peak_rss_kib"]
    text = [
        f"- Date: {result['date']}",
        f"- Machine: {m['nproc']} usable cores, {m['cpu_model']}; Python {m['python']}, "
        f"onnxruntime {m['onnxruntime']}, grpcio {m['grpcio']}, Linux {m['kernel']}; "
        f"load average at start {' '.join(m['loadavg_at_start'])}",
        f"- Command: `{result['command']}`",
        f'- Data: {s["lines"]} real line crops (`kind == "line"` in '
        f"`{s['data']}/manifest.jsonl`), cycled; each sent as its PNG/JPEG file.",
        f"- Model: {s['model']}; {s['workers']} session(s) x {s['threads']} intra-op "
        f"thread(s), graph optimisation `{s['graph_optimization']}`, in both the raw run and "
        "the server.",
        f"- Each measurement: {s['warmup_s']:g} s warm-up, then a {s['duration_s']:g} s window. "
        "Line widths (and costs) differ by more than 30x, so lines/s and latencies cover "
        "the whole cycles through the line set started in the window (column *cycles*; a "
        "fraction means not even one cycle fitted and the figure depends on which lines ran). "
        "Lines/s is the closed-loop rate, callers x lines / summed call time (Little's law), "
        "which has no edge effect from calls in flight at the window's ends; the JSON also "
        "holds the plain count of lines finished inside the window (`lines_per_s_window`).",
        "",
        "### Raw limit (no server, in-process)",
        "",
        "Every line is decoded and resized once with the project's code "
        "(`decode_image`, `prepare_line`, `WidthBuckets()`, `assemble_batch`), then only "
        "`InferenceSession.run` is timed: one Python thread per session, each taking the "
        "next input from a shared cycle. Bucket-batched groups the lines of one bucket width "
        f"into batches of at most {s['max_batch']} lines within the server's pixel budget "
        f"({raw['batches_per_cycle']} batches per cycle of the {s['lines']} lines). The last "
        "row runs one session alone, as a latency reference; it does not count towards the "
        "limit. Bench CPU: cores this process used; other CPU: what the rest of the machine "
        "used meanwhile.",
        "",
        *raw_table(raw),
        "",
        f"Raw limit: **{raw['limit_lines_per_s']:.1f} lines/s** ({raw['limit_mode']}).",
        "",
        "### Server (separate process) under load from a separate process",
        "",
        f"`{shlex.join(repo_relative(a) for a in srv['command'])}`; health SERVING after "
        f"{srv['ready_s']:.1f} s. "
        "The load process runs one asyncio loop with *concurrency* workers sharing one "
        "`AsyncOcrClient` channel, each sending one line per `RecognizeLines` call back to "
        "back. Latency is per call as the client sees it; mean batch, padding "
        "(padded / (content + padded) pixels), queue wait and worker busy (inference time / "
        "(window x workers)) are GetStats deltas over the measured window; CPU is cores used "
        "(CPU seconds / window) by the server process and by the load process; other CPU is the "
        "machine's busy time (/proc/stat) minus those two, i.e. what other processes took.",
        "",
        *server_table(srv["levels"], raw["limit_lines_per_s"]),
        "",
        (f"Server peak RSS (VmHWM): {rss / 1024:.0f} MiB. " if rss else "Peak RSS: n/a. ")
        + f"SIGTERM: exit status {stop['exit_code']} after {stop['seconds']:.1f} s "
        f"({'clean' if stop['clean'] else 'NOT clean'}; grace {s['grace_s']:g} s).",
        "",
        "### What limits it",
        "",
        analysis(result),
    ]
    update_markdown_section(path, REPORT_SECTION, text)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_lines",
        description="Raw ONNX Runtime vs the gRPC server on the real line crops.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="ppocr-v6-small", help="model name (as the server knows it)")
    p.add_argument("--data", default=DEFAULT_DATA, help="evaluation set folder (repo-relative)")
    p.add_argument("--concurrency", default="1,4,16,64", help="comma-separated levels")
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run")
    p.add_argument("--workers", type=int, default=2, help="sessions (raw threads, server workers)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per session")
    p.add_argument("--graph-optimization", default="all", help="all|extended|basic|disabled")
    p.add_argument("--max-batch", type=int, default=16, help="lines per raw bucket batch")
    p.add_argument("--grace-s", type=float, default=10.0, help="server --grace-s")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline per call, seconds")
    p.add_argument("--server-args", default="", help="extra ocr-server flags (one string)")
    p.add_argument("--out", default="docs/benchmarks.md", help="report whose section to replace")
    args = p.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        p.error(f"--concurrency must be comma-separated integers, got {args.concurrency!r}")
    if not args.levels or min(args.levels) < 1:
        p.error("--concurrency needs at least one level, each at least 1")
    if args.duration <= 0 or args.warmup < 0 or args.workers < 1 or args.threads < 1:
        p.error("--duration must be positive, --warmup not negative, --workers/--threads >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = repo_path(args.data)
    lines = load_lines(data_dir, "bench_lines")

    from ocr_core.registry import ModelRegistry

    spec = ModelRegistry.from_files().resolve(args.model)
    started = dt.datetime.now().astimezone()
    result: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": exact_command("bench.bench_lines"),
        "machine": machine_info(),
        "settings": {
            "model": args.model,
            "model_file": str(spec.recognizer_path),
            "data": args.data,
            "lines": len(lines),
            "workers": args.workers,
            "threads": args.threads,
            "graph_optimization": args.graph_optimization,
            "max_batch": args.max_batch,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "grace_s": args.grace_s,
            "concurrency": args.levels,
        },
    }
    print(f"{len(lines)} lines from {data_dir}; model {args.model} ({spec.recognizer_path})")
    result["raw"] = measure_raw(spec.recognizer_path, spec.input_height, lines, args)
    print("\n".join(raw_table(result["raw"])), flush=True)

    stamp = started.strftime("%Y%m%d-%H%M%S")
    log_path = RESULTS_DIR / f"lines-{stamp}-server.log"
    levels: list[dict[str, Any]] = []
    with running_server(args, log_path, args.grace_s) as server:
        base = Level(
            address=server.address,
            paths=tuple(str(x.path) for x in lines),
            concurrency=0,  # each level's, below
            warmup_s=args.warmup,
            duration_s=args.duration,
            model=args.model,
            server_pid=server.pid,
            workers=args.workers,
            timeout_s=args.timeout,
        )
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            for c in args.levels:
                print(f"concurrency {c}: {args.warmup:g} s + {args.duration:g} s ...", flush=True)
                future = pool.submit(load_level, replace(base, concurrency=c))
                level = future.result(timeout=args.warmup + args.duration + 120)
                levels.append(level)
                print(
                    f"  {level['lines_per_s']:.1f} lines/s, p50 "
                    f"{level['latency_ms']['p50']:.1f} ms, errors {level['errors']}",
                    flush=True,
                )
        peak_rss = proc_status_kib(server.pid, "VmHWM")
    shutdown = server.shutdown
    result["server"] = {
        "command": server.command,
        "ready_s": server.ready_s,
        "levels": levels,
        "peak_rss_kib": peak_rss,
        "shutdown": shutdown,
        "log": str(log_path.relative_to(REPO_ROOT)),
    }

    json_path = RESULTS_DIR / f"lines-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    out = repo_path(args.out)
    write_markdown(out, result)
    print()
    print("\n".join(server_table(levels, result["raw"]["limit_lines_per_s"])))
    print(
        f"\nraw limit {result['raw']['limit_lines_per_s']:.1f} lines/s; peak RSS "
        f"{(peak_rss or 0) / 1024:.0f} MiB; wrote {out} and {json_path}"
    )
    if not shutdown["clean"]:
        print("server did not exit 0 within its grace period after SIGTERM", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
