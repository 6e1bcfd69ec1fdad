"""The gRPC floor: the same load against the real server and against one that does no OCR.

Why: the line targets compare the server with raw ONNX Runtime, and whatever the server
adds shows as one gap. Part of that gap is the price of serving over gRPC from Python at
all, which no change to this server can remove. To separate it, this runs, in one run on
one machine:

* the raw limit of ``bench_lines`` (``measure_raw``: the same tensors straight into ONNX
  Runtime, the server's session layout), for the CPU one line's inference costs;
* the real ``ocr-server``, loaded from a separate process by ``bench_lines``' own load
  generator (``load_level``), in each mode at each level;
* the *floor*: a ``grpc.aio`` OcrService (``FloorServicer``, this file) that answers every
  line with one fixed result without looking at the image (no decode, no batcher, no
  inference), loaded the same way, so its CPU per line is gRPC, protobuf and asyncio on
  both sides and nothing else;
* at concurrency 1, every real line as a one-line call on the synchronous stub, back to
  back, through both servers (and raw, in ``bench_lines``' alternating blocks), and through
  a floor whose every call waits on a thread for the raw inference's p50 first: what gRPC
  and one hand-off to a thread and back cost a call that waits as long as a lone line's
  inference (more than an instant answer: see the report).

The report splits a line's CPU into load generator + floor server + raw inference + the
line work every served line needs (decode and resize, batch assembly, argmax, CTC decoding
and the result message, timed in process: ``line_work``) + the rest (what this server adds
beyond all that: its own Python, hand-offs, inference slowed by shared cores), gives the
ceiling those necessary parts leave for x raw, and says what the throughput target needs.

    .venv/bin/python -m bench.grpc_floor [--models ppocr-v6-tiny,ppocr-v6-small]
        [--modes unary-1,stream] [--concurrency 64] [--duration 8]

Writes the ``gRPC floor`` section of ``docs/benchmarks.md`` (``--out``); the floor server
itself is ``python -m bench.grpc_floor --serve-floor PORT --model M``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import multiprocessing
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.bench_lines import (
    LatencyJob,
    Level,
    add_load_flags,
    bucket_batches,
    check_load_args,
    load_level,
    make_sessions,
    measure_latency_c1,
    measure_raw,
    median,
    replace_model,
    time_each,
)
from bench.common import (
    RESULTS_DIR,
    LineImage,
    bench_parser,
    exact_command,
    free_port,
    idle_threads,
    load_lines,
    machine_info,
    percentile,
    repo_path,
    running_process,
    running_server,
    server_batch_limits,
    update_markdown_section,
)

REPORT_HEADING = "gRPC floor: the same load against a server that does no OCR"
# What the floor answers for every line: a typical line's result (text, confidence, words).
FLOOR_TEXT = "The quick brown fox jumps over the lazy dog"


# --------------------------------------------------------------------------- floor server


def floor_line() -> Any:
    """The fixed LineResult the floor returns, about the size of a real line's result."""
    from ocr_client.proto.ocr.v1 import ocr_pb2

    words = []
    x = 0
    for word in FLOOR_TEXT.split():
        words.append(ocr_pb2.Word(text=word, confidence=0.99, x_start=x, x_end=x + 40))
        x += 48
    return ocr_pb2.LineResult(text=FLOOR_TEXT, confidence=0.99, words=words)


def floor_servicer(model: str, hold_s: float, hold_on_thread: bool = False) -> Any:
    """An OcrService whose line calls cost gRPC and protobuf only (built here: lazy imports).

    Each line's answer waits ``hold_s`` first, without CPU: on the event loop (an asyncio
    sleep), so the floor can be held to the real server's rate under load, or with
    ``hold_on_thread`` on one thread that sleeps while the loop awaits it, as the real
    server awaits a lone line's inference on its idle thread (one thread: for the c=1
    check, where calls come one at a time). The c=1 check also runs it without holding.
    """
    from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc

    line = floor_line()
    thread = ThreadPoolExecutor(1, thread_name_prefix="floor-hold") if hold_on_thread else None

    async def hold() -> None:
        if hold_s <= 0:
            return
        if thread is None:
            await asyncio.sleep(hold_s)
        else:
            await asyncio.get_running_loop().run_in_executor(thread, time.sleep, hold_s)

    class FloorServicer(ocr_pb2_grpc.OcrServiceServicer):
        async def RecognizeLines(self, request: Any, context: Any) -> Any:
            await hold()
            return ocr_pb2.RecognizeLinesResponse(results=[line] * len(request.images), model=model)

        async def StreamRecognize(
            self, request_iterator: AsyncIterator[Any], context: Any
        ) -> AsyncIterator[Any]:
            async for request in request_iterator:
                if request.HasField("line"):
                    await hold()
                    yield ocr_pb2.StreamRecognizeResponse(id=request.id, line=line)

        async def GetStats(self, request: Any, context: Any) -> Any:
            # The load generator reads batcher counters; the floor has none to report.
            return ocr_pb2.GetStatsResponse(batchers=[ocr_pb2.BatcherStats(model=model)])

    return FloorServicer()


async def serve_floor(port: int, model: str, hold_s: float, hold_on_thread: bool = False) -> None:
    """Serve the floor on 127.0.0.1:``port`` (with grpc health) until SIGTERM or SIGINT."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1.health import aio as health_aio

    from ocr_client.proto.ocr.v1 import ocr_pb2_grpc

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    ocr_pb2_grpc.add_OcrServiceServicer_to_server(
        floor_servicer(model, hold_s, hold_on_thread), server
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def floor_command(port: int, model: str, hold_ms: float, on_thread: bool = False) -> list[str]:
    return [
        *(sys.executable, "-m", "bench.grpc_floor", "--serve-floor", str(port)),
        *("--model", model, "--hold-ms", f"{hold_ms:.3f}"),
        *(["--hold-on-thread"] if on_thread else []),
    ]


# --------------------------------------------------------------------------- measurement


def floor_latency_c1(address: str, paths: Sequence[str], model: str, passes: int) -> dict:
    """In the load process: every line as a one-line call to the floor, back to back.

    The same calls as ``measure_latency_c1``'s server blocks (synchronous stub, one caller),
    so the two p50s differ by what the real server does beyond gRPC.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc

    images = [ocr_pb2.Image(data=Path(p).read_bytes()) for p in paths]
    requests = [ocr_pb2.RecognizeLinesRequest(images=[x], model=model) for x in images]
    empty = health_pb2.HealthCheckRequest()
    calls: list[float] = []
    with grpc.insecure_channel(address) as channel:
        stub = ocr_pb2_grpc.OcrServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        for request in requests[:8]:  # warm up
            stub.RecognizeLines(request, timeout=30)
        call = functools.partial(stub.RecognizeLines, timeout=30)
        for _ in range(passes):
            calls += time_each(functools.partial(call, r) for r in requests)
        checks = time_each(functools.partial(health.Check, empty, timeout=30) for _ in requests)
    return {
        "call_ms_p50": percentile(sorted(calls), 50),
        "call_ms_mean": sum(calls) / len(calls),
        "empty_call_ms_p50": percentile(sorted(checks), 50),
        "calls": len(calls),
    }


def line_work(spec: Any, lines: Sequence[LineImage], args: argparse.Namespace) -> dict[str, Any]:
    """In process: the work a served line needs beyond its inference, in ms per line.

    Hot, on one worker session laid out as the server's: decoding each real line's file
    and resizing it (``decode_image``, ``prepare_line``), then, over the lines grouped in
    bucket batches within the server's limits (the raw limit's bucket-batched mode),
    assembling each batch tensor and the output side (``LineRecognizer.read_output``:
    argmax and CTC decoding, then each line's ``LineResult`` message). ``session.run``
    between them is not timed. Medians of ``--line-work-passes`` passes. No server design
    can skip this for a PNG line, so with the floor's gRPC and the load generator it bounds
    what x raw can reach.
    """
    from ocr_core.engine import RequestLimits
    from ocr_core.images import decode_image
    from ocr_core.preprocess import WidthBuckets, assemble_batch, prepare_line
    from ocr_core.recognizer import LineRecognizer, SessionConfig
    from server.convert import line_result

    config = SessionConfig(
        workers=1, intra_op_threads=args.threads, graph_optimization=args.graph_optimization
    )
    recognizer = LineRecognizer.load(spec, config)  # its labels and read_output
    session = make_sessions(spec.recognizer_path, 1, args.threads, args.graph_optimization)[0]
    input_name = session.get_inputs()[0].name
    buckets = WidthBuckets()
    max_pixels = RequestLimits().max_image_pixels
    height = spec.input_height
    passes: dict[str, list[float]] = {"decode_resize": [], "assembly": [], "output": []}
    max_batch_pixels = server_batch_limits(args).max_pixels
    batches: list[list[Any]] = []
    for _ in range(args.line_work_passes):
        spent = dict.fromkeys(passes, 0.0)
        prepared = []
        for line in lines:
            t0 = time.perf_counter()
            prepared.append(prepare_line(decode_image(line.data, max_pixels), height, buckets))
            spent["decode_resize"] += time.perf_counter() - t0
        batches = bucket_batches(prepared, args.max_batch, max_batch_pixels, height)
        for batch_lines in batches:
            t0 = time.perf_counter()
            batch = assemble_batch(batch_lines, height)
            t1 = time.perf_counter()
            probs = session.run(None, {input_name: batch})[0]
            t2 = time.perf_counter()
            for text in recognizer.read_output(probs, batch_lines, batch.shape[3]):
                line_result(text)
            spent["assembly"] += t1 - t0
            spent["output"] += time.perf_counter() - t2
        for name, seconds in spent.items():
            passes[name].append(seconds * 1e3 / len(lines))
    medians = {name: median(v) for name, v in passes.items()}
    return medians | {"passes": args.line_work_passes, "mean_batch": len(lines) / len(batches)}


def measure_model(
    model: str, spec: Any, lines: Sequence[LineImage], args: argparse.Namespace, stamp: str
) -> dict[str, Any]:
    """Raw limit, then the real server through every level, then the floor through the same.

    At each level the floor holds every call (an asyncio sleep) for the real server's mean
    latency there, so it answers at about the same rate: gRPC's CPU per call depends on
    the rate (at thousands of calls per second its wake-ups are shared between calls).
    """
    paths = tuple(str(x.path) for x in lines)
    result: dict[str, Any] = {
        "raw": measure_raw(spec.recognizer_path, spec.input_height, lines, args),
        "line_work": line_work(spec, lines, args),
    }
    server_args = replace_model(args, model)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:

        def load(address: str, pid: int, mode: str, c: int, what: str) -> dict[str, Any]:
            level = Level(
                address, paths, mode, c, args.warmup, args.duration, model, pid,
                args.workers, args.timeout,
            )  # fmt: skip
            figures = pool.submit(load_level, level).result(
                timeout=args.warmup + args.duration + args.timeout + 120
            )
            print(
                f"  {what} {mode} x{c}: {figures['lines_per_s']:.1f} lines/s, server "
                f"{figures['cpu_ms_per_line']['server']:.2f} + load "
                f"{figures['cpu_ms_per_line']['load_generator']:.2f} CPU ms per line",
                flush=True,
            )
            return figures

        log = RESULTS_DIR / f"floor-{stamp}-{model}-server.log"
        with running_server(server_args, log, args.grace_s) as server:
            job = LatencyJob(
                server.address, paths, model, str(spec.recognizer_path), spec.input_height,
                args.threads, idle_threads(args), server_batch_limits(args).idle_max_pixels,
                args.graph_optimization,
                args.latency_passes, args.timeout,
            )  # fmt: skip
            result["server_c1"] = pool.submit(measure_latency_c1, job).result(timeout=900)
            result["server"] = [
                load(server.address, server.pid, mode, c, "ocr-server")
                for mode in args.mode_list
                for c in args.levels
            ]
        shutdowns = [server.shutdown]

        def floor(hold_ms: float, on_thread: bool = False) -> Any:
            port = free_port()
            log = RESULTS_DIR / f"floor-{stamp}-{model}-floor-{len(shutdowns)}.log"
            command = floor_command(port, model, hold_ms, on_thread)
            return running_process(command, port, log, 5.0)

        def floor_c1(address: str) -> dict[str, Any]:
            return pool.submit(floor_latency_c1, address, paths, model, args.latency_passes).result(
                timeout=900
            )

        with floor(0.0) as quick:  # not held: back to back, as the server's c=1 blocks
            result["floor_c1"] = floor_c1(quick.address)
        shutdowns.append(quick.shutdown)
        # Each call waits on a thread as long as a lone line's inference takes raw (p50).
        hold_ms = result["server_c1"]["raw_ms_p50"]
        with floor(hold_ms, on_thread=True) as waiting:
            result["floor_c1_held"] = {**floor_c1(waiting.address), "hold_ms": hold_ms}
        shutdowns.append(waiting.shutdown)
        result["floor"] = []
        for real in result["server"]:
            hold_ms = real["latency_ms"]["mean"]
            with floor(hold_ms) as held:
                figures = load(held.address, held.pid, real["mode"], real["concurrency"], "floor")
                result["floor"].append({**figures, "hold_ms": hold_ms})
            shutdowns.append(held.shutdown)
    result["clean_shutdowns"] = all(x is not None and x["clean"] for x in shutdowns)
    return result


# --------------------------------------------------------------------------- report


def _cores(figures: dict[str, Any]) -> float:
    return figures["cpu_cores"]["server"] + figures["cpu_cores"]["load_generator"]


def model_report(model: str, result: dict[str, Any]) -> list[str]:
    """One model's tables and the split of a line's CPU."""
    raw = result["raw"]
    limit = raw["limit_lines_per_s"]
    best_raw = next(m for m in raw["modes"] if m["mode"] == raw["limit_mode"])
    raw_cpu = best_raw["own_cpu_cores"] * 1e3 / best_raw["lines_per_s"]
    out = [
        f"### {model}",
        "",
        f"Raw limit {limit:.1f} lines/s ({raw['limit_mode']}), {raw_cpu:.2f} ms of CPU per line.",
        "",
        "| mode | in flight | server | lines/s | x raw | p50 ms | server CPU ms/line "
        "| load-gen CPU ms/line | cores busy |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for real, floor in zip(result["server"], result["floor"], strict=True):
        held = f"floor, each call held {floor['hold_ms']:.0f} ms"
        for name, f in (("ocr-server", real), (held, floor)):
            cpu = f["cpu_ms_per_line"]
            out.append(
                f"| {f['mode']} | {f['concurrency']} | {name} | {f['lines_per_s']:.1f} "
                f"| {f['lines_per_s'] / limit:.2f} | {f['latency_ms']['p50']:.1f} "
                f"| {cpu['server']:.2f} | {cpu['load_generator']:.2f} | {_cores(f):.2f} |"
            )
    work = result["line_work"]
    line_ms = work["decode_resize"] + work["assembly"] + work["output"]
    out += [
        "",
        "A line's CPU at each level, in ms: what the load generator spends on the real "
        "server, what a server that does no OCR spends (the floor: gRPC, protobuf and "
        "asyncio), the raw inference, the *line work* every served line needs besides "
        "(measured in process, hot, median of "
        f"{work['passes']} passes: decode and resize {work['decode_resize']:.3f}; in the raw "
        f"limit's bucket batches, mean {work['mean_batch']:.2f} lines, batch assembly "
        f"{work['assembly']:.3f} and argmax, CTC decoding and the result messages "
        f"{work['output']:.3f}), and the *rest*: what this server spends beyond all of that "
        "(its own Python on the event loop, hand-offs between threads, inference slower "
        "than raw while the cores are shared). *Ceiling* is the x raw a server would reach "
        "with both cores always busy if it spent nothing but load generator + floor + raw "
        "+ line work per line; *needed for the target* is the CPU per line at which the "
        "cores busy in this window would give the target's share of the raw limit.",
        "",
        "| mode | in flight | load gen | floor server | raw inference | line work | rest "
        "| total | ceiling (x raw) | needed for 0.80x / 0.90x |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for real, floor in zip(result["server"], result["floor"], strict=True):
        cpu = real["cpu_ms_per_line"]
        floor_server = floor["cpu_ms_per_line"]["server"]
        rest = cpu["server"] - floor_server - raw_cpu - line_ms
        total = cpu["server"] + cpu["load_generator"]
        ceiling = raw_cpu / (cpu["load_generator"] + floor_server + raw_cpu + line_ms)
        cores = _cores(real)
        need = [cores * 1e3 / (share * limit) for share in (0.80, 0.90)]
        out.append(
            f"| {real['mode']} | {real['concurrency']} | {cpu['load_generator']:.2f} "
            f"| {floor_server:.2f} | {raw_cpu:.2f} | {line_ms:.2f} | {rest:.2f} | {total:.2f} "
            f"| {ceiling:.2f} | {need[0]:.2f} / {need[1]:.2f} |"
        )
    c1 = result["server_c1"]
    f1 = result["floor_c1"]
    held = result["floor_c1_held"]
    held_extra = held["call_ms_p50"] - held["hold_ms"]
    out += [
        "",
        "Concurrency 1 (every line as a one-line call on the synchronous stub, back to back; "
        "raw in alternating blocks as in `bench_lines`), p50 ms. *Floor, waiting* is the "
        f"floor with every call first waiting {held['hold_ms']:.1f} ms (the raw p50) on a "
        "thread the event loop awaits, as the real server awaits a lone line's inference; "
        "its column is the call minus that wait: gRPC and one hand-off to a thread and "
        "back, around a wait as long as the inference. *Server's own* is what is left of "
        "*ocr-server - raw* beyond it (decode and resize, batch assembly, argmax, CTC "
        "decoding, the result message).",
        "",
        "| raw inference | ocr-server | ocr-server - raw | floor | floor, waiting (minus "
        "the wait) | server's own | empty call to the floor (health Check) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {c1['raw_ms_p50']:.2f} | {c1['server_ms_p50']:.2f} | {c1['extra_ms_p50']:.2f} "
        f"| {f1['call_ms_p50']:.2f} | {held_extra:.2f} | {c1['extra_ms_p50'] - held_extra:.2f} "
        f"| {f1['empty_call_ms_p50']:.2f} |",
        "",
    ]
    return out


def write_report(path: Path, results: dict[str, Any], command: str, machine: dict) -> None:
    body = [
        f"- Date: {results['date']}",
        f"- Command: `{command}`",
        f"- Machine: {machine['nproc']} usable cores, {machine['cpu_model']}; Python "
        f"{machine['python']}, onnxruntime {machine['onnxruntime']}, grpcio "
        f"{machine['grpcio']}; load average at start {' '.join(machine['loadavg_at_start'])}",
        "- The floor (`bench/grpc_floor.py`, `FloorServicer`) is a `grpc.aio` OcrService that "
        "answers every line with one fixed result of a typical line's size without reading "
        "the image; both servers get the same load from a separate process "
        "(`bench_lines.load_level`: requests built before the window, its own asyncio loop "
        f"and channel), one {results['warmup_s']:g} s warm-up and {results['duration_s']:g} s "
        "window per level. One run, not repeated: read the figures against each other, not "
        "against the suite's medians above.",
        "",
    ]
    for model, result in results["models"].items():
        body += model_report(model, result)
    update_markdown_section(path, REPORT_HEADING, body)


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = bench_parser(
        "python -m bench.grpc_floor",
        "The real server vs a gRPC server that does no OCR, same load, one run.",
    )
    add_load_flags(p, "ppocr-v6-tiny,ppocr-v6-small", "unary-1,stream", "64")
    p.add_argument(
        "--line-work-passes",
        type=int,
        default=5,
        help="passes over the lines when timing their decode and output in process (median)",
    )
    p.add_argument("--model", default="", help="the model name the floor reports (--serve-floor)")
    p.add_argument("--serve-floor", type=int, default=0, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--hold-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--hold-on-thread", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_load_args(p, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_floor:
        hold_s = args.hold_ms / 1e3
        asyncio.run(
            serve_floor(args.serve_floor, args.model or "floor", hold_s, args.hold_on_thread)
        )
        return 0
    from ocr_core.registry import ModelRegistry

    registry = ModelRegistry.from_files()
    specs = {model: registry.resolve(model) for model in args.model_list}
    lines = load_lines(repo_path(args.data), "grpc_floor")
    started = dt.datetime.now().astimezone()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    command = exact_command("bench.grpc_floor")
    machine = machine_info()
    results: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": command,
        "machine": machine,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "models": {},
    }
    for model, spec in specs.items():
        results["models"][model] = measure_model(model, spec, lines, args, stamp)
    json_path = RESULTS_DIR / f"floor-{stamp}.json"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    out = repo_path(args.out)
    write_report(out, results, command, machine)
    for model, result in results["models"].items():
        print("\n".join(model_report(model, result)))
    print(f"wrote {out}, {json_path}", flush=True)
    clean = all(r["clean_shutdowns"] for r in results["models"].values())
    if not clean:
        print("a server did not exit 0 within its grace period after SIGTERM", file=sys.stderr)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
