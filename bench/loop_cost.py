"""The server's own event-loop CPU per line, measured without gRPC and without inference.

Why: under load the event loop is the server's one Python thread that every call passes
through, and whatever it spends per line comes straight out of throughput on a machine
whose cores are all busy. In a whole-server benchmark that cost is mixed with gRPC, the
load generator, ONNX Runtime and the machine's noise (5-10 % between runs here), so a
change worth 1 % of a line cannot be seen there. This measures only the loop:

* the real ``OcrServicer``, ``OcrEngine`` and ``MicroBatcher`` run in this process, called
  directly (no gRPC: a stand-in context gives the handlers what they read from a call);
* the recognizer is a stand-in that sleeps ``--infer-ms`` per line with the GIL released,
  as ONNX Runtime runs, on the batcher's worker threads, and answers every line with
  ``grpc_floor``'s fixed result; so batching, hand-offs and result messages work as in the
  server while the cores stay free;
* ``--concurrency`` callers keep one line each in flight: one-line ``RecognizeLines`` calls
  (``unary``) or one ``StreamRecognize`` stream each (``stream``);
* each line is sent as its real file (``files``: decoded and resized as the server does)
  and as raw pixels (``raw``: no decode), so the decode's share shows as the difference;
* the same callers against ``grpc_floor``'s servicer, which answers at once with the same
  result (``driver``), measure what the callers themselves cost on the loop, to subtract.

Reading: the loop thread's CPU time (``time.thread_time``) over the window, per line.
Alternate rounds (``--rounds``) and compare medians; the spread between rounds is small
next to the whole-server benchmarks, since nothing here waits on ONNX Runtime.

    .venv/bin/python -m bench.loop_cost [--modes unary,stream] [--concurrency 64]
        [--duration 5] [--rounds 3] [--data ../shared/eval/real]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import DEFAULT_DATA, load_lines, repo_path
from bench.grpc_floor import FLOOR_TEXT, floor_servicer

MODES = ("unary", "stream")
SOURCES = ("files", "raw", "driver")


@dataclass(frozen=True)
class Reading:
    mode: str
    source: str
    lines_per_s: float
    loop_ms_per_line: float


class SleepingRecognizer:
    """Stands in for ``LineRecognizer``: sleeps ``seconds_per_line`` per line (GIL released).

    Returns one fixed ``LineText`` for every line, the same text and word boxes as
    ``grpc_floor``'s fixed answer (``floor_line``), so both answer messages of one size.
    """

    name = "loop-cost"
    input_height = 48
    has_idle_session = True

    def __init__(self, seconds_per_line: float, workers: int) -> None:
        from ocr_core.ctc import LineText, Word

        self.workers = workers
        self._seconds = seconds_per_line
        words = FLOOR_TEXT.split()
        boxes = tuple(Word(w, 0.99, 48 * i, 48 * i + 40) for i, w in enumerate(words))
        self._result = LineText(FLOOR_TEXT, 0.99, boxes)

    def infer(self, worker: int, lines: Sequence[Any]) -> list[Any]:
        time.sleep(self._seconds * len(lines))
        return [self._result] * len(lines)

    def infer_idle(self, lines: Sequence[Any]) -> list[Any]:
        return self.infer(0, lines)


class StandInContext:
    """What the servicer reads from a ``grpc.aio.ServicerContext``, without a call."""

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    async def send_initial_metadata(self, metadata: Any) -> None:
        pass

    def time_remaining(self) -> float:
        return 60.0

    async def abort(self, code: Any, message: str) -> None:
        raise RuntimeError(f"the servicer failed a call: {code} {message}")


def raw_request_images(data: Sequence[bytes]) -> list[Any]:
    """Each file decoded once, as the ``Image.raw`` a client could send instead."""
    import numpy as np

    from ocr_client.proto.ocr.v1 import ocr_pb2
    from ocr_core.engine import RequestLimits
    from ocr_core.images import decode_image

    images = []
    for encoded in data:
        bgr = np.ascontiguousarray(decode_image(encoded, RequestLimits().max_image_pixels))
        images.append(
            ocr_pb2.Image(
                raw=ocr_pb2.RawImage(
                    width=bgr.shape[1],
                    height=bgr.shape[0],
                    channels=3,
                    pixels=bgr.tobytes(),
                    color_order=ocr_pb2.COLOR_ORDER_BGR,
                )
            )
        )
    return images


async def _callers(
    servicer: Any, mode: str, images: Sequence[Any], concurrency: int, stop: Callable[[], bool]
) -> tuple[list[asyncio.Task[None]], list[int]]:
    """Start ``concurrency`` callers with one line each in flight; returns them and a counter."""
    from ocr_client.proto.ocr.v1 import ocr_pb2

    done = [0]
    cursor = [0]

    def take() -> int:
        cursor[0] += 1
        return (cursor[0] - 1) % len(images)

    # Requests are built once, as a load generator would: copying a raw image into a new
    # message on every call would count the caller's work as the loop's.
    unary_requests = [ocr_pb2.RecognizeLinesRequest(images=[image]) for image in images]
    stream_requests = [
        ocr_pb2.StreamRecognizeRequest(id=str(i), line=image) for i, image in enumerate(images)
    ]

    async def unary() -> None:
        context = StandInContext()
        while not stop():
            await servicer.RecognizeLines(unary_requests[take()], context)
            done[0] += 1
            await asyncio.sleep(0)  # grpc_floor's servicer never suspends: let the loop run

    async def stream() -> None:
        inbox: asyncio.Queue[Any] = asyncio.Queue()

        async def requests() -> AsyncIterator[Any]:
            while (request := await inbox.get()) is not None:
                yield request

        replies = servicer.StreamRecognize(requests(), StandInContext())
        while not stop():
            inbox.put_nowait(stream_requests[take()])
            reply = await replies.__anext__()
            if reply.WhichOneof("result") != "line":
                raise RuntimeError(f"stream item failed: {reply}")
            done[0] += 1
            await asyncio.sleep(0)
        inbox.put_nowait(None)
        async for _ in replies:
            pass

    caller = unary if mode == "unary" else stream
    return [asyncio.create_task(caller()) for _ in range(concurrency)], done


async def measure(
    mode: str, source: str, images: Sequence[Any], args: argparse.Namespace
) -> Reading:
    """One window: warm up, then the loop thread's CPU over ``args.duration`` s per line."""
    from ocr_core.batching import BatchLimits
    from ocr_core.engine import OcrEngine, RequestLimits
    from ocr_server.app import server_limits
    from ocr_server.config import parse_config
    from ocr_server.servicer import OcrServicer

    engine = None
    if source == "driver":
        servicer: Any = floor_servicer("loop-cost", hold_s=0.0)
    else:
        recognizer = SleepingRecognizer(args.infer_ms / 1000.0, args.workers)
        engine = OcrEngine(
            {recognizer.name: recognizer},  # type: ignore[dict-item]
            recognizer.name,
            BatchLimits(queue_capacity=8192),
            RequestLimits(),
            preprocess_threads=max(2, args.workers),
        )
        engine.start()
        servicer = OcrServicer(engine, server_limits(parse_config(["--no-fetch"])))
    stopping = False
    tasks, done = await _callers(servicer, mode, images, args.concurrency, lambda: stopping)
    try:
        await asyncio.sleep(args.warmup)
        lines0, cpu0, wall0 = done[0], time.thread_time(), time.perf_counter()
        await asyncio.sleep(args.duration)
        lines1, cpu1, wall1 = done[0], time.thread_time(), time.perf_counter()
    finally:
        stopping = True
        await asyncio.gather(*tasks)
        if engine is not None:
            await engine.aclose()
    lines = max(lines1 - lines0, 1)
    return Reading(mode, source, lines / (wall1 - wall0), (cpu1 - cpu0) / lines * 1e3)


def report(readings: Sequence[Reading], args: argparse.Namespace) -> str:
    """Median loop CPU per line by mode and source, the spread, and the differences."""
    out = [
        f"loop CPU per line (ms, median of {args.rounds} rounds, min - max); "
        f"{args.concurrency} callers, stand-in inference {args.infer_ms} ms per line on "
        f"{args.workers} worker threads",
    ]
    for mode in args.modes:
        by_source: dict[str, list[float]] = {}
        rates: dict[str, list[float]] = {}
        for r in readings:
            if r.mode == mode:
                by_source.setdefault(r.source, []).append(r.loop_ms_per_line)
                rates.setdefault(r.source, []).append(r.lines_per_s)
        med = {s: statistics.median(v) for s, v in by_source.items()}
        for source, values in by_source.items():
            out.append(
                f"  {mode:6s} {source:6s} {med[source]:.3f} ({min(values):.3f} - "
                f"{max(values):.3f}) at {statistics.median(rates[source]):.0f} lines/s"
            )
        out.append(
            f"  {mode:6s} decode (files - raw) {med['files'] - med['raw']:.3f}; servicer, "
            f"engine, batcher and resize (raw - driver) {med['raw'] - med['driver']:.3f}"
        )
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.loop_cost", description=__doc__.split("\n")[0]
    )
    p.add_argument("--modes", default="unary,stream", help="comma list of unary, stream")
    p.add_argument("--concurrency", type=int, default=64, help="callers, one line each")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per window")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before each window")
    p.add_argument("--rounds", type=int, default=3, help="alternated rounds of every window")
    p.add_argument("--infer-ms", type=float, default=6.8, help="stand-in inference per line")
    p.add_argument("--workers", type=int, default=2, help="batcher worker threads")
    p.add_argument("--data", default=DEFAULT_DATA, help="folder with manifest.jsonl and lines/")
    args = p.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    if not args.modes or any(m not in MODES for m in args.modes):
        p.error(f"--modes takes a comma list of {', '.join(MODES)}")
    for name in ("concurrency", "rounds", "workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.duration <= 0 or args.warmup < 0 or args.infer_ms < 0:
        p.error("--duration must be positive, --warmup and --infer-ms not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from ocr_client.proto.ocr.v1 import ocr_pb2

    data = [line.data for line in load_lines(repo_path(args.data), "bench.loop_cost")]
    images = {
        "files": [ocr_pb2.Image(data=d) for d in data],
        "raw": raw_request_images(data),
    }
    images["driver"] = images["files"]
    readings = []
    for _ in range(args.rounds):
        for mode in args.modes:
            for source in SOURCES:
                reading = asyncio.run(measure(mode, source, images[source], args))
                print(
                    f"{mode} {source}: {reading.loop_ms_per_line:.3f} ms per line at "
                    f"{reading.lines_per_s:.0f} lines/s",
                    flush=True,
                )
                readings.append(reading)
    print(report(readings, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
