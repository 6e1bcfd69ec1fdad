"""One server process with W sessions against W server processes with one session each.

The issue's lever "one process per core with SO_REUSEPORT", measured on the real lines. One
process shares one GIL between its event loop, its decode threads and the Python parts of
its inference threads; at saturation on 2 cores that left ~8 % of the cores idle
(docs/benchmarks.md, Levers measured). Several processes each have their own.

Each round runs both layouts back to back with fresh servers. The processes get separate
ports and the load spreads its channels evenly over them: ``--reuse-port`` spreads
connections by a hash, which over a handful of connections is uneven, and an even split
isolates what the process layout itself changes. One line per call (``unary``) or per stream
item (``stream``), ``--concurrency`` in flight, from this process (the servers are separate
processes). Prints lines/s, the servers' CPU ms per line, this process's, and the cores
busy. Not part of ``make bench``; its figures are quoted where they are used.

Usage: python -m bench.processes [--model ppocr-v6-tiny] [--mode unary] [--concurrency 64]
       [--processes 2] [--duration 12] [--warmup 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from bench.bench_lines import load_requests
from bench.common import (
    DEFAULT_DATA,
    RESULTS_DIR,
    load_lines,
    machine_busy_seconds,
    proc_cpu_seconds,
    repo_path,
    running_server,
)


async def drive(
    addresses: Sequence[str],
    images: Sequence[bytes],
    args: argparse.Namespace,
    pids: Sequence[int],
) -> dict[str, float]:
    """``args.concurrency`` callers spread evenly over 2 channels per address; one window."""
    import grpc

    from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc

    # A local subchannel pool each, so the channels are separate connections.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(addresses[i % len(addresses)], options=options)
        for i in range(2 * len(addresses))
    ]
    stubs = [ocr_pb2_grpc.OcrServiceStub(c) for c in channels]
    unary, _ = load_requests(images, "unary-1", args.model)
    items, _ = load_requests(images, "stream", args.model)
    cursor = 0
    end = time.perf_counter() + args.warmup + args.duration

    def take() -> int:
        nonlocal cursor
        cursor += 1
        return cursor

    async def unary_caller(stub: Any) -> None:
        while time.perf_counter() < end:
            await stub.RecognizeLines(unary[take() % len(unary)], timeout=120)

    async def stream_caller(stub: Any) -> None:
        call = stub.StreamRecognize(timeout=args.warmup + args.duration + 120)
        await call.write(
            ocr_pb2.StreamRecognizeRequest(options=ocr_pb2.StreamOptions(model=args.model))
        )
        while time.perf_counter() < end:
            await call.write(items[take() % len(items)])
            reply = await call.read()
            if reply is grpc.aio.EOF or reply.WhichOneof("result") == "error":
                raise RuntimeError(f"stream item failed: {reply}")
        await call.done_writing()

    async def window() -> dict[str, float]:
        await asyncio.sleep(args.warmup)
        start = (cursor, time.perf_counter(), time.process_time(), machine_busy_seconds())
        server_cpu = sum(proc_cpu_seconds(p) for p in pids)
        await asyncio.sleep(args.duration - 1.0)  # ends before the callers stop
        calls = cursor - start[0]
        seconds = time.perf_counter() - start[1]
        return {
            "lines_per_s": calls / seconds,
            "server_cpu_ms_per_line": (sum(proc_cpu_seconds(p) for p in pids) - server_cpu)
            / calls
            * 1e3,
            "load_cpu_ms_per_line": (time.process_time() - start[2]) / calls * 1e3,
            "cores_busy": (machine_busy_seconds() - start[3]) / seconds,
        }

    caller = unary_caller if args.mode == "unary" else stream_caller
    try:
        figures, *_ = await asyncio.gather(
            window(), *(caller(stubs[i % len(stubs)]) for i in range(args.concurrency))
        )
    finally:
        for channel in channels:
            await channel.close()
    return figures


def run_layout(
    args: argparse.Namespace, images: Sequence[bytes], processes: int, workers: int
) -> dict[str, float]:
    """Start ``processes`` servers with ``workers`` sessions each, load them, stop them."""
    server_args = SimpleNamespace(
        model=args.model,
        workers=workers,
        threads=1,
        idle_threads=0,  # a saturated server never uses it; keeps memory alike
        # auto pins the one-process layout only (W x 1 processes leave each thread free).
        pin_workers="auto",
        graph_optimization="all",
        server_args="",
    )
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                running_server(
                    server_args, RESULTS_DIR / f"processes-{processes}x{workers}-{i}.log", 10.0
                )
            )
            for i in range(processes)
        ]
        return asyncio.run(
            drive([s.address for s in servers], images, args, [s.pid for s in servers])
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.processes", description=__doc__)
    p.add_argument("--model", default="ppocr-v6-tiny")
    p.add_argument("--mode", choices=("unary", "stream"), default="unary")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--processes", type=int, default=2, help="W: sessions vs processes")
    p.add_argument("--duration", type=float, default=12.0, help="measured seconds per window")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--data", default=DEFAULT_DATA, help="evaluation set folder (repo-relative)")
    args = p.parse_args(argv)
    if args.duration < 2 or args.concurrency < 1 or args.processes < 2 or args.rounds < 1:
        p.error("--duration >= 2, --concurrency >= 1, --processes >= 2, --rounds >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    lines = load_lines(repo_path(args.data), "bench.processes")
    images = [line.data for line in lines]
    w = args.processes
    for round_ in range(1, args.rounds + 1):
        for processes, workers in ((1, w), (w, 1)):
            f = run_layout(args, images, processes, workers)
            print(
                f"round {round_}: {args.model} {args.mode} x{args.concurrency}, "
                f"{processes} process(es) x {workers} session(s): "
                f"{f['lines_per_s']:.1f} lines/s, server CPU {f['server_cpu_ms_per_line']:.2f} "
                f"ms/line, load {f['load_cpu_ms_per_line']:.2f} ms/line, "
                f"cores busy {f['cores_busy']:.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
