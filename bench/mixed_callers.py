"""Two callers under light load: what a lone wide line on every core costs the other one.

Why: a batch that is all the server has runs on the idle session, which uses every core,
and a line that arrives meanwhile waits for the whole run (``ocr_core.batching``).
``--idle-max-pixels`` bounds how wide such a lone batch may be; wider ones run on one
worker session and leave the other worker free. A wider bound makes wide lines faster
alone and makes the other caller wait longer behind them; which bound is better depends on
who calls. The line suite cannot show it: its concurrency-1 check has one caller, and from
4 in flight on the batcher is never idle. This runs, against the real server on the real
lines, for each bound (alternated over ``--rounds``):

* caller A sends wide lines, caller B narrow ones, each a synchronous one-line
  ``RecognizeLines`` call on a channel of its own, pausing between calls for a uniform
  random time (mean ``--wide-pause-ms`` / ``--narrow-pause-ms``, seeded) so that the
  server is often idle and the two callers' lines often meet;
* scenario ``real``: A the real lines wider than ``--split-width`` px at the model's
  height, B the others; scenario ``rendered``: A one line drawn with OpenCV's Hershey font,
  ``--rendered-repeats`` copies of a pangram (~4000 px at height 48 by default), B every
  real line.

Each caller's latency (p50, p95, mean) and calls in the window are reported per round.

    .venv/bin/python -m bench.mixed_callers [--model ppocr-v6-small]
        [--bounds 49152,98304,0] [--scenarios real,rendered] [--duration 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    DEFAULT_DATA,
    RESULTS_DIR,
    add_server_flags,
    exact_command,
    load_lines,
    machine_info,
    percentile,
    repo_path,
    running_server,
)

SCENARIOS = ("real", "rendered")
PANGRAM = "The quick brown fox jumps over the lazy dog 0123456789 "


@dataclass(frozen=True)
class CallerStats:
    """One caller's calls in one window: count and latency in ms."""

    calls: int
    p50_ms: float
    p95_ms: float
    mean_ms: float


@dataclass(frozen=True)
class Window:
    scenario: str
    bound: int
    round: int
    wide: CallerStats
    narrow: CallerStats


def caller_stats(latencies_ms: Sequence[float]) -> CallerStats:
    """Count, p50, p95 and mean of one caller's call latencies (NaN when it made none)."""
    ordered = sorted(latencies_ms)
    mean = statistics.fmean(ordered) if ordered else float("nan")
    return CallerStats(len(ordered), percentile(ordered, 50), percentile(ordered, 95), mean)


def width_at(image_size: tuple[int, int], height: int) -> float:
    """A (width, height) image's width once scaled to the model's ``height``."""
    width, h = image_size
    return width * height / h


def split_by_width(
    sizes: Sequence[tuple[int, int]], height: int, split_width: int
) -> tuple[list[int], list[int]]:
    """Indices of the images wider than ``split_width`` at ``height``, and of the others."""
    wide = [i for i, size in enumerate(sizes) if width_at(size, height) > split_width]
    narrow = [i for i, size in enumerate(sizes) if width_at(size, height) <= split_width]
    return wide, narrow


def rendered_line(repeats: int) -> bytes:
    """A long gray text line as a PNG: ``repeats`` pangrams in OpenCV's Hershey font."""
    import cv2
    import numpy as np

    text = PANGRAM * repeats
    font = cv2.FONT_HERSHEY_DUPLEX
    (w, h), base = cv2.getTextSize(text, font, 1.2, 2)
    img = np.full((h + base + 20, w + 20), 255, np.uint8)
    cv2.putText(img, text, (10, h + 10), font, 1.2, 0, 2, cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("cannot encode the rendered line")
    return buf.tobytes()


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) an encoded image's header declares (the server's own reader)."""
    from ocr_core.images import declared_size

    size = declared_size(data)
    if size is None:
        raise ValueError("not an image file the server reads")
    return size


def run_callers(
    address: str,
    callers: dict[str, tuple[list[bytes], float]],
    warmup_s: float,
    duration_s: float,
    seed: int,
) -> dict[str, CallerStats]:
    """Each caller (images, mean pause in s) on a thread and channel of its own, then stats.

    A call counts when it started after the warm-up; every caller stops starting calls at
    the window's end.
    """
    import grpc

    from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc

    begin = time.perf_counter() + warmup_s
    end = begin + duration_s
    latencies: dict[str, list[float]] = {name: [] for name in callers}
    failures: list[BaseException] = []

    def call_loop(name: str, images: list[bytes], pause_s: float) -> None:
        rng = random.Random(f"{seed}-{name}")
        requests = [ocr_pb2.RecognizeLinesRequest(images=[ocr_pb2.Image(data=d)]) for d in images]
        try:
            with grpc.insecure_channel(address) as channel:
                stub = ocr_pb2_grpc.OcrServiceStub(channel)
                i = 0
                while (t0 := time.perf_counter()) < end:
                    stub.RecognizeLines(requests[i % len(requests)], timeout=60)
                    if t0 >= begin:
                        latencies[name].append((time.perf_counter() - t0) * 1e3)
                    i += 1
                    time.sleep(rng.uniform(0.0, 2 * pause_s))
        except BaseException as exc:  # reported below; a window with a failed call is void
            failures.append(exc)

    threads = [
        threading.Thread(target=call_loop, args=(name, images, pause), daemon=True)
        for name, (images, pause) in callers.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"a caller failed: {failures[0]!r}")
    return {name: caller_stats(values) for name, values in latencies.items()}


def report(windows: Sequence[Window], args: argparse.Namespace, wide_note: str) -> str:
    """A markdown table, one row per window, in the order run."""
    info = machine_info()
    out = [
        f"- Command: `{exact_command('bench.mixed_callers')}`",
        f"- Machine: {info.get('nproc', '?')} usable cores, {info.get('cpu_model', '?')}",
        f"- Model {args.model}; caller A pauses 0-{2 * args.wide_pause_ms:g} ms between calls, "
        f"caller B 0-{2 * args.narrow_pause_ms:g} ms (uniform); {args.warmup:g} s warm-up, "
        f"{args.duration:g} s measured per window; {wide_note}",
        "",
        "| scenario | `--idle-max-pixels` | round | A calls | A p50 ms | A p95 ms | A mean ms "
        "| B calls | B p50 ms | B p95 ms | B mean ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in windows:
        bound = "0 (none)" if w.bound == 0 else str(w.bound)
        a, b = w.wide, w.narrow
        out.append(
            f"| {w.scenario} | {bound} | {w.round} | {a.calls} | {a.p50_ms:.1f} | "
            f"{a.p95_ms:.1f} | {a.mean_ms:.1f} | {b.calls} | {b.p50_ms:.1f} | "
            f"{b.p95_ms:.1f} | {b.mean_ms:.1f} |"
        )
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.mixed_callers", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", default="ppocr-v6-small", help="model the server serves")
    add_server_flags(p)
    p.add_argument(
        "--bounds", default="49152,98304,0", help="comma list of --idle-max-pixels values"
    )
    p.add_argument("--scenarios", default="real,rendered", help="comma list of real, rendered")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per window")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before each window")
    p.add_argument("--rounds", type=int, default=2, help="alternated rounds of every window")
    p.add_argument("--wide-pause-ms", type=float, default=100.0, help="caller A's mean pause")
    p.add_argument("--narrow-pause-ms", type=float, default=20.0, help="caller B's mean pause")
    p.add_argument("--split-width", type=int, default=1024, help="real: A gets lines wider")
    p.add_argument("--rendered-repeats", type=int, default=5, help="pangrams in the drawn line")
    p.add_argument("--seed", type=int, default=1, help="seed of the callers' pauses")
    p.add_argument("--data", default=DEFAULT_DATA, help="folder with manifest.jsonl and lines/")
    p.add_argument("--out", default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    try:
        args.bounds = [int(b) for b in args.bounds.split(",") if b]
    except ValueError:
        p.error("--bounds takes a comma list of integers (0 = no bound)")
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    if not args.bounds or any(b < 0 for b in args.bounds):
        p.error("--bounds takes a comma list of integers >= 0 (0 = no bound)")
    if not args.scenarios or any(s not in SCENARIOS for s in args.scenarios):
        p.error(f"--scenarios takes a comma list of {', '.join(SCENARIOS)}")
    for name in ("rounds", "split_width", "rendered_repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration <= 0 or args.warmup < 0 or min(args.wide_pause_ms, args.narrow_pause_ms) < 0:
        p.error("--duration must be positive, --warmup and the pauses not negative")
    return args


def callers_for(
    scenario: str, lines: list[bytes], height: int, args: argparse.Namespace
) -> dict[str, tuple[list[bytes], float]]:
    """Caller A (wide) and B (narrow) for a model of input ``height``: images, mean pauses (s)."""
    if scenario == "real":
        wide_idx, narrow_idx = split_by_width(
            [image_size(d) for d in lines], height, args.split_width
        )
        if not wide_idx or not narrow_idx:
            raise SystemExit(
                f"bench.mixed_callers: --split-width {args.split_width} leaves one caller "
                "without lines"
            )
        wide = [lines[i] for i in wide_idx]
        narrow = [lines[i] for i in narrow_idx]
    else:
        wide, narrow = [rendered_line(args.rendered_repeats)], lines
    return {"A": (wide, args.wide_pause_ms / 1e3), "B": (narrow, args.narrow_pause_ms / 1e3)}


def main(argv: Sequence[str] | None = None) -> int:
    from ocr_core.registry import ModelRegistry

    args = parse_args(argv)
    lines = [x.data for x in load_lines(repo_path(args.data), "bench.mixed_callers")]
    height = ModelRegistry.from_files().resolve(args.model).input_height
    plans = {s: callers_for(s, lines, height, args) for s in args.scenarios}
    notes = []
    if "real" in plans:
        notes.append(
            f"real: A sends the {len(plans['real']['A'][0])} real lines wider than "
            f"{args.split_width} px at height {height}, B the others"
        )
    if "rendered" in plans:
        drawn = width_at(image_size(plans["rendered"]["A"][0][0]), height)
        notes.append(
            f"rendered: A one drawn line ({drawn:.0f} px at height {height}), B every real line"
        )
    windows: list[Window] = []
    for round_no in range(1, args.rounds + 1):
        for scenario in args.scenarios:
            for bound in args.bounds:
                server_args = f"{args.server_args} --idle-max-pixels {bound}".strip()
                server_flags = argparse.Namespace(**{**vars(args), "server_args": server_args})
                log = RESULTS_DIR / f"mixed-callers-{scenario}-{bound}.log"
                with running_server(server_flags, log, grace_s=5.0) as server:
                    stats = run_callers(
                        server.address, plans[scenario], args.warmup, args.duration, args.seed
                    )
                window = Window(scenario, bound, round_no, stats["A"], stats["B"])
                print(
                    f"{scenario} bound {bound} round {round_no}: A mean {window.wide.mean_ms:.1f} "
                    f"ms ({window.wide.calls} calls), B mean {window.narrow.mean_ms:.1f} ms "
                    f"({window.narrow.calls} calls)",
                    flush=True,
                )
                windows.append(window)
    text = report(windows, args, "; ".join(notes))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
