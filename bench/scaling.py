"""Line throughput on a machine with more cores: server layouts against the raw limit.

Every other line figure was taken on 2 cores, where one process is all that fits. The issue
asks how to use a larger machine ("one process per core with SO_REUSEPORT"), and one process
has one GIL: its event loop and the Python around each inference share it, whatever the
number of cores. This bench measures, in one run on the same CPUs:

* the raw limit: one 1-thread ONNX Runtime session per CPU, in a process confined to those
  CPUs, batch-1 and bucket-batched (the better is the limit, as in ``bench_lines``);
* each layout ``PxW``: P server processes with W worker sessions (1 thread) each, process i
  confined to its own W CPUs (so ``--pin-workers auto`` pins its workers one to one), each
  on its own port; the load spreads its channels evenly over them (``--reuse-port``
  spreads connections by a hash, uneven over a few connections);
* the load from ``--load-processes`` processes (one Python process cannot drive thousands
  of calls a second), on the same CPUs, or on ``--load-cpus`` kept apart from the servers'
  and the raw run's, which stands in for clients on other machines.

A window counts the lines whose calls end inside it, across all load processes, on the
wall clock they share. Prints one row per layout and mode and writes the figures as JSON to
bench/results/. Not part of ``make bench``; its figures are quoted where they are used.

Usage: python -m bench.scaling [--model ppocr-v6-tiny] [--modes stream,unary-1]
       [--layouts 1xN,...] [--concurrency 256] [--load-processes 4] [--load-cpus 12-15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.bench_lines import lines_per_call, load_requests, measure_raw, reset_peak_rss
from bench.common import (
    DEFAULT_DATA,
    RESULTS_DIR,
    LineImage,
    Server,
    bench_parser,
    confined,
    exact_command,
    free_port,
    load_lines,
    machine_busy_seconds,
    machine_info,
    percentile,
    proc_cpu_seconds,
    proc_status_kib,
    repo_path,
    server_command,
    start_process,
    stop_server,
    wait_serving,
)
from ocr_core.cpus import usable_cpus


def parse_cpus(text: str) -> list[int]:
    """A CPU list as ``taskset`` writes it ("0-3,8,10-11") -> [0, 1, 2, 3, 8, 10, 11]."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        first, _, last = part.partition("-")
        lo, hi = int(first), int(last or first)
        if lo < 0 or hi < lo:
            raise ValueError(f"bad CPU range {part!r}")
        cpus.update(range(lo, hi + 1))
    if not cpus:
        raise ValueError("no CPUs given")
    return sorted(cpus)


def parse_layout(text: str, cpus: int) -> tuple[int, int]:
    """``"PxW"`` -> (P processes, W sessions each); P x W must use exactly ``cpus`` CPUs."""
    processes, sep, workers = text.lower().partition("x")
    if not sep:
        raise ValueError(f"layout {text!r} is not PxW")
    p, w = int(processes), int(workers)
    if p < 1 or w < 1 or p * w != cpus:
        raise ValueError(f"layout {text!r} needs {p * w} CPUs; the servers have {cpus}")
    return p, w


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` callers over ``parts`` load processes, the first ones taking the remainder."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# --------------------------------------------------------------------------- raw limit


def raw_limit(
    model_path: str, height: int, lines: Sequence[LineImage], cpus: Sequence[int], args: Any
) -> dict[str, Any]:
    """In a spawned process: ``bench_lines``' raw limit with one 1-thread session per CPU of
    ``cpus``, confined to them.

    The process confines itself before it makes any thread, so the sessions' threads stay
    on those CPUs as the servers' do.
    """
    os.sched_setaffinity(0, cpus)
    layout = SimpleNamespace(
        workers=len(cpus),
        threads=1,
        graph_optimization="all",
        max_batch=16,
        warmup=args.warmup,
        duration=args.duration,
        server_args="",  # the server's default batch bounds
    )
    return measure_raw(Path(model_path), height, lines, layout, latency_reference=False)


# --------------------------------------------------------------------------- load processes


@dataclass(frozen=True)
class LoadJob:
    """One load process's share of a window."""

    addresses: tuple[str, ...]
    paths: tuple[str, ...]
    mode: str  # "unary-K" or "stream"
    model: str
    callers: int
    start_at: float  # wall clock (time.time) at which the callers start
    warmup_s: float
    duration_s: float
    timeout_s: float
    cpus: tuple[int, ...] = ()  # confine this process to them; () = wherever it runs


def run_load(job: LoadJob) -> dict[str, Any]:
    """Entry point of a spawned load process: drive its callers, count the window's lines."""
    if job.cpus:
        os.sched_setaffinity(0, job.cpus)
    return asyncio.run(_drive(job, [Path(p).read_bytes() for p in job.paths]))


async def _drive(job: LoadJob, images: Sequence[bytes]) -> dict[str, Any]:
    """``job.callers`` callers, each with one call in flight, over one channel per address.

    Callers go round-robin over the channels, so each server gets an equal share of every
    load process's callers. The window is [start + warm-up, start + warm-up + duration] on
    the wall clock every load process and the parent share.
    """
    import grpc

    from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc

    requests, sizes = load_requests(images, job.mode, job.model)
    # A local subchannel pool each, so the channels are separate connections.
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)]
    channels = [grpc.aio.insecure_channel(a, options=options) for a in job.addresses]
    stubs = [ocr_pb2_grpc.OcrServiceStub(c) for c in channels]
    m0 = job.start_at + job.warmup_s
    m1 = m0 + job.duration_s
    done: list[tuple[float, float, int]] = []  # (end wall time, seconds, lines)
    errors: list[str] = []
    cpu: list[float] = []
    turns = itertools.count(1)  # one cursor over the pass for every caller

    async def unary_caller(stub: Any) -> None:
        while time.time() < m1:
            k = next(turns) % len(requests)
            t0 = time.perf_counter()
            try:
                await stub.RecognizeLines(requests[k], timeout=job.timeout_s)
            except grpc.aio.AioRpcError as exc:
                errors.append(exc.code().name)
                continue
            done.append((time.time(), time.perf_counter() - t0, sizes[k]))

    async def stream_caller(stub: Any) -> None:
        call = stub.StreamRecognize(timeout=job.warmup_s + job.duration_s + job.timeout_s)
        await call.write(
            ocr_pb2.StreamRecognizeRequest(options=ocr_pb2.StreamOptions(model=job.model))
        )
        while time.time() < m1:
            t0 = time.perf_counter()
            await call.write(requests[next(turns) % len(requests)])
            reply = await call.read()
            if reply is grpc.aio.EOF:
                errors.append("stream ended")
                return
            if reply.WhichOneof("result") == "error":
                errors.append(f"item error {reply.error.code}")
                continue
            done.append((time.time(), time.perf_counter() - t0, 1))
        await call.done_writing()
        while await call.read() is not grpc.aio.EOF:
            pass

    async def cpu_marks() -> None:
        for mark in (m0, m1):
            await asyncio.sleep(max(0.0, mark - time.time()))
            cpu.append(time.process_time())

    await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), 30)
    await asyncio.sleep(max(0.0, job.start_at - time.time()))
    caller = stream_caller if job.mode == "stream" else unary_caller
    try:
        await asyncio.gather(
            cpu_marks(), *(caller(stubs[i % len(stubs)]) for i in range(job.callers))
        )
    finally:
        for channel in channels:
            await channel.close()
    inside = [(s, n) for end, s, n in done if m0 <= end <= m1]
    return {
        "lines": sum(n for _, n in inside),
        "call_ms": sorted(s * 1e3 for s, _ in inside),
        "calls_answered": len(done),  # warm-up included: what the window left out shows
        "cpu_s": cpu[1] - cpu[0],
        "errors": errors,
    }


# --------------------------------------------------------------------------- one layout


@dataclass(frozen=True)
class Target:
    """What a layout's load goes to: its distinct addresses, and the pids that serve them."""

    addresses: tuple[str, ...]
    pids: tuple[int, ...]


def _settings(model: str, workers: int, server_args: str) -> SimpleNamespace:
    return SimpleNamespace(
        model=model,
        workers=workers,
        threads=1,
        idle_threads=0,  # a saturated server never uses it; keeps memory alike across layouts
        pin_workers="auto",
        graph_optimization="all",
        server_args=f"--queue-capacity 8192 {server_args}".strip(),
    )


def _stop_all(servers: Sequence[Server]) -> None:
    """SIGTERM every server at once: one after the other, 16 shutdowns add up to seconds."""
    with ThreadPoolExecutor(max(1, len(servers))) as stopping:
        for server, shutdown in zip(
            servers, stopping.map(lambda s: stop_server(s.proc, 10.0), servers), strict=True
        ):
            server.shutdown = shutdown


@contextlib.contextmanager
def layout_servers(
    model: str,
    workers: int,
    cpu_sets: Sequence[Sequence[int]],
    stamp: str,
    confine: bool = True,
    shared_port: bool = False,
    server_args: str = "",
) -> Iterator[Target]:
    """One server per CPU set, ``workers`` sessions each, started together, all SERVING.

    ``confine``: each process runs on its CPU set only (else anywhere, as a plain
    ``ocr-server`` would). ``shared_port``: all listen on one port with ``--reuse-port``
    and the kernel spreads connections, as README's "One process per core" recipe does.
    """
    settings = _settings(model, workers, server_args + (" --reuse-port" if shared_port else ""))
    servers: list[Server] = []
    one_port = free_port()
    try:
        for i, cpus in enumerate(cpu_sets):
            port = one_port if shared_port else free_port()
            command = server_command(settings, port, 10.0)
            if confine:
                command = confined(command, cpus)
            log = RESULTS_DIR / f"scaling-{stamp}-{len(cpu_sets)}x{workers}-{i}.log"
            servers.append(start_process(command, port, log))
        for server in servers:
            server.ready_s = wait_serving(server.proc, server.address, 120.0)
        yield Target(
            tuple(dict.fromkeys(s.address for s in servers)), tuple(s.pid for s in servers)
        )
    finally:
        _stop_all(servers)


@contextlib.contextmanager
def supervised_server(
    model: str,
    processes: int,
    workers: int,
    cpus: Sequence[int],
    stamp: str,
    server_args: str = "",
) -> Iterator[Target]:
    """One ``ocr-server --processes P`` on ``cpus``: its children split them and the port."""
    settings = _settings(model, workers, f"{server_args} --processes {processes}")
    port = free_port()
    log = RESULTS_DIR / f"scaling-{stamp}-supervised-{processes}x{workers}.log"
    server = start_process(confined(server_command(settings, port, 10.0), cpus), port, log)
    try:
        server.ready_s = wait_serving(server.proc, server.address, 120.0)
        deadline = time.monotonic() + 120.0
        while log.read_text(errors="replace").count("serving ocr.v1.OcrService") < processes:
            if time.monotonic() > deadline or server.proc.poll() is not None:
                raise RuntimeError(f"not every server process is SERVING; see {log}")
            time.sleep(0.2)
        pid = server.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        # --processes 1 serves from this very process: there is no supervisor.
        yield Target((server.address,), tuple(int(c) for c in children) or (pid,))
    finally:
        _stop_all([server])


def measure_window(
    target: Target,
    paths: Sequence[str],
    mode: str,
    args: argparse.Namespace,
    pool: ProcessPoolExecutor,
) -> dict[str, Any]:
    """One window of ``mode`` over every server: lines/s, CPU per line, latency, memory."""
    addresses = target.addresses * args.channels  # each port opened ``--channels`` times
    pids = target.pids
    start_at = time.time() + 2.0  # time for the load processes to start and connect
    jobs = [
        LoadJob(
            addresses,
            tuple(paths),
            mode,
            args.model,
            callers,
            start_at,
            args.warmup,
            args.duration,
            args.timeout,
            tuple(args.load_cpu_list),
        )
        for callers in split_evenly(args.concurrency, args.load_processes)
        if callers
    ]
    futures = [pool.submit(run_load, job) for job in jobs]
    m0 = start_at + args.warmup
    time.sleep(max(0.0, m0 - time.time()))
    for pid in pids:
        reset_peak_rss(pid)
    before = (time.time(), [proc_cpu_seconds(p) for p in pids], machine_busy_seconds())
    time.sleep(max(0.0, m0 + args.duration - time.time()))
    after = (time.time(), [proc_cpu_seconds(p) for p in pids], machine_busy_seconds())
    peak_kib = sum(proc_status_kib(p, "VmHWM") or 0 for p in pids)
    loads = [f.result(timeout=args.warmup + args.duration + args.timeout + 120) for f in futures]
    seconds = after[0] - before[0]
    lines = sum(x["lines"] for x in loads)
    call_ms = sorted(ms for x in loads for ms in x["call_ms"])
    per_line = 1e3 / lines if lines else float("nan")
    return {
        "lines_per_s": lines / args.duration,
        "server_cpu_ms_per_line": (sum(after[1]) - sum(before[1])) * per_line,
        # How evenly the processes were loaded (a shared port spreads by connection hash).
        "server_cores_each": [(b - a) / seconds for a, b in zip(before[1], after[1], strict=True)],
        "load_cpu_ms_per_line": sum(x["cpu_s"] for x in loads) * per_line,
        "cores_busy": (after[2] - before[2]) / seconds,
        "p50_ms": percentile(call_ms, 50),
        "p99_ms": percentile(call_ms, 99),
        "peak_rss_mib": peak_kib / 1024,
        "errors": [e for x in loads for e in x["errors"]],
    }


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = bench_parser(
        "python -m bench.scaling",
        "Server layouts (processes x sessions) against the raw limit on many CPUs.",
    )
    p.add_argument("--model", default="ppocr-v6-tiny")
    p.add_argument("--modes", default="stream,unary-1", help="unary-K and/or stream")
    p.add_argument("--layouts", default="", help="PxW,... (default: 1xN and Nx1, N = CPUs)")
    p.add_argument("--cpus", default="", help="CPUs for servers and load (default: usable)")
    p.add_argument(
        "--load-cpus", default="", help="CPUs kept for the load processes (default: shared)"
    )
    p.add_argument("--load-processes", type=int, default=4)
    p.add_argument("--channels", type=int, default=1, help="connections per port per load process")
    p.add_argument(
        "--shared-port",
        action="store_true",
        help="all processes on one port with --reuse-port (the kernel spreads connections)",
    )
    p.add_argument(
        "--no-confine",
        dest="confine",
        action="store_false",
        help="let each server process run on any CPU (unpinned unless it has them all)",
    )
    p.add_argument(
        "--supervised",
        action="store_true",
        help="each layout PxW as one `ocr-server --processes P --workers W`",
    )
    p.add_argument("--server-args", default="", help="extra ocr-server flags (one string)")
    p.add_argument("--rounds", type=int, default=1, help="the raw limit and every layout again")
    p.add_argument("--concurrency", type=int, default=256, help="calls or streams in flight")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per window")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=120.0, help="deadline per call, seconds")
    p.add_argument("--data", default=DEFAULT_DATA, help="evaluation set folder (repo-relative)")
    args = p.parse_args(argv)
    try:
        usable = usable_cpus()
        everything = parse_cpus(args.cpus) if args.cpus else usable
        args.load_cpu_list = parse_cpus(args.load_cpus) if args.load_cpus else []
        args.server_cpus = [c for c in everything if c not in args.load_cpu_list]
        if not set(everything) <= set(usable) or not set(args.load_cpu_list) <= set(usable):
            raise ValueError(f"CPUs outside this process's affinity ({usable})")
        if not args.server_cpus:
            raise ValueError("--load-cpus leaves no CPU for the servers")
        n = len(args.server_cpus)
        layouts = args.layouts or (f"1x{n},{n}x1" if n > 1 else "1x1")
        args.layout_list = [parse_layout(x, n) for x in layouts.split(",") if x.strip()]
        args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
        for mode in args.mode_list:
            lines_per_call(mode)
    except ValueError as exc:
        p.error(str(exc))
    if min(args.load_processes, args.concurrency, args.channels, args.rounds) < 1:
        p.error("--load-processes, --concurrency, --channels and --rounds must be >= 1")
    if args.duration <= 0 or args.warmup < 0:
        p.error("--duration must be positive and --warmup not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    lines = load_lines(repo_path(args.data), "bench.scaling")
    paths = [str(x.path) for x in lines]

    from ocr_core.registry import ModelRegistry

    spec = ModelRegistry.from_files().resolve(args.model)
    started = dt.datetime.now().astimezone()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    n = len(args.server_cpus)
    print(
        f"{args.model}: servers and raw on CPUs {args.server_cpus}, load "
        f"{args.load_processes} process(es) on {args.load_cpu_list or 'the same CPUs'}",
        flush=True,
    )
    context = multiprocessing.get_context("spawn")
    raws: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.load_processes, mp_context=context) as pool:
        for round_ in range(1, args.rounds + 1):
            # A fresh process each round: the raw sessions are gone before the servers start.
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as raw_pool:
                raw = raw_pool.submit(
                    raw_limit,
                    str(spec.recognizer_path),
                    spec.input_height,
                    lines,
                    args.server_cpus,
                    args,
                ).result()
            raws.append(raw)
            limit = raw["limit_lines_per_s"]
            modes = ", ".join(f"{m['mode']} {m['lines_per_s']:.1f}" for m in raw["modes"])
            print(
                f"round {round_}: raw limit, {n} sessions x 1 thread: {limit:.1f} lines/s "
                f"({modes})",
                flush=True,
            )
            for processes, workers in args.layout_list:
                cpu_sets = [
                    args.server_cpus[i * workers : (i + 1) * workers] for i in range(processes)
                ]
                servers = (
                    supervised_server(
                        args.model, processes, workers, args.server_cpus, stamp, args.server_args
                    )
                    if args.supervised
                    else layout_servers(
                        args.model,
                        workers,
                        cpu_sets,
                        stamp,
                        args.confine,
                        args.shared_port,
                        args.server_args,
                    )
                )
                with servers as target:
                    for mode in args.mode_list:
                        f = measure_window(target, paths, mode, args, pool)
                        row = {
                            "round": round_,
                            "layout": f"{processes}x{workers}",
                            "mode": mode,
                            "x_raw": f["lines_per_s"] / limit,
                            **f,
                        }
                        rows.append(row)
                        print(
                            f"round {round_}: {row['layout']} {mode} x{args.concurrency}: "
                            f"{f['lines_per_s']:.1f} lines/s ({row['x_raw']:.2f}x raw), server "
                            f"CPU {f['server_cpu_ms_per_line']:.2f} ms/line, load "
                            f"{f['load_cpu_ms_per_line']:.2f}, cores busy {f['cores_busy']:.2f}, "
                            f"p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f}, peak RSS "
                            f"{f['peak_rss_mib']:.0f} MiB, errors {len(f['errors'])}; cores "
                            f"per process {' '.join(f'{c:.1f}' for c in f['server_cores_each'])}",
                            flush=True,
                        )
    result = {
        "date": started.isoformat(timespec="seconds"),
        "command": exact_command("bench.scaling"),
        "machine": machine_info(),
        "server_cpus": args.server_cpus,
        "load_cpus": args.load_cpu_list,
        "confined": args.confine,
        "shared_port": args.shared_port,
        "supervised": args.supervised,
        "server_args": args.server_args,
        "channels": args.channels,
        "raw": raws,
        "rows": rows,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"scaling-{stamp}-{args.model}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}", flush=True)
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
