"""Where a page's CPU goes: every stage of the page pipeline, in process, on one thread.

Why: the server's pages/s is bounded by the CPU a page needs, and ``bench_pages`` gives
the server's CPU per page under load (its *side CPU* over pages/s). This gives what the
pipeline itself needs, stage by stage, with the server's own code and models and nothing
around it (no gRPC, no threads sharing the cores), so that

* the difference to ``bench_pages``'s CPU per page is what serving adds, and
* a change to one stage (a detector size, a classifier, batching) shows in its own row
  instead of in a whole-server figure that moves 5-10 % between runs on this machine.

Each page is decoded, turned upright (page orientation), detected (model, then the
post-processing that makes line regions), cut into line crops and checked for upside-down
lines (``find_lines``, as the server runs it), then its lines are resized and recognised in
batches of one width bucket within the server's default batch limits (as the micro-batcher
groups them; each batch includes assembly, argmax and CTC decoding), and the page is
assembled. CPU is ``time.thread_time`` per stage; ``--rounds`` passes over the pages,
medians per stage.

    .venv/bin/python -m bench.page_cost [--model ppocr-v6-small] [--rounds 3]
        [--data ../shared/eval/real]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.bench_lines import bucket_batches
from bench.common import DEFAULT_DATA, NoEvalSet, manifest_items, repo_path

#: Rows of the report, in pipeline order.
STAGES = (
    "decode",
    "page orientation",
    "detection: resize and model",
    "detection: regions",
    "crops and the rest of find_lines",
    "line classifier",
    "line resize",
    "recognition",
    "page assembly",
)


class StageClock:
    """Adds up the thread CPU of named stages; ``timing`` times a method of one object."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)

    def time(self, stage: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return call(*args, **kwargs)
        finally:
            self.seconds[stage] += time.thread_time() - start

    @contextlib.contextmanager
    def timing(self, owner: object, method: str, stage: str) -> Iterator[None]:
        """Time every call of ``owner.method`` (that object only) as ``stage`` while open;
        afterwards the object calls its class's method again, so passes do not stack."""
        setattr(owner, method, functools.partial(self.time, stage, getattr(owner, method)))
        try:
            yield
        finally:
            delattr(owner, method)


def load_pipeline(model: str, model_dir: Path | None) -> tuple[Any, Any]:
    """The recognizer (one 1-thread session) and the page models, as the server loads them."""
    from ocr_core.recognizer import LineRecognizer
    from ocr_core.registry import ModelRegistry
    from ocr_core.sessions import SessionConfig
    from ocr_server.app import load_page_models

    registry = ModelRegistry.from_files(cache_dir=model_dir, user_config=None)
    spec = registry.resolve(model or registry.default_name, fetch_missing=False)
    config = SessionConfig(workers=1, intra_op_threads=1)
    page_models = load_page_models(spec, config)
    if page_models is None:
        raise SystemExit(f"bench.page_cost: model {spec.name!r} has no detector; it reads lines")
    return LineRecognizer.load(spec, config), page_models


def measure_pass(
    pages: Sequence[bytes], recognizer: Any, page_models: Any
) -> tuple[dict[str, float], int]:
    """One pass over ``pages``: CPU seconds per stage (``STAGES``), summed over the pages,
    and the number of lines found."""
    from ocr_core.batching import BatchLimits
    from ocr_core.engine import RequestLimits
    from ocr_core.images import decode_image
    from ocr_core.pages import PageOptions, assemble_page, find_lines
    from ocr_core.preprocess import WidthBuckets, prepare_line

    clock = StageClock()
    timed = [
        (page_models.page_orientation, "upright_rotation", "page orientation"),
        (page_models.line_orientation, "turned_probability", "line classifier"),
        # detect() calls probability_map(): its own time is the regions' minus the model's.
        (page_models.detector, "probability_map", "detection: resize and model"),
        (page_models.detector, "detect", "detection: regions"),
    ]
    limits, batch = RequestLimits(), BatchLimits()
    buckets = WidthBuckets(max_width=limits.max_line_width)
    options = PageOptions()
    height = recognizer.input_height
    found_lines = 0
    with contextlib.ExitStack() as stack:
        for owner, method, stage in timed:
            if owner is not None:
                stack.enter_context(clock.timing(owner, method, stage))
        for data in pages:
            image = clock.time("decode", decode_image, data, limits.max_image_pixels)
            found, crops = clock.time("find_lines", find_lines, image, page_models, options)
            lines = [
                clock.time("line resize", prepare_line, c, height, buckets, True) for c in crops
            ]
            found_lines += len(lines)
            # Batches group the lines by bucket; each result goes back to its line's place.
            texts: dict[int, Any] = {}
            for group in bucket_batches(lines, batch.max_lines, batch.max_pixels, height):
                results = clock.time("recognition", recognizer.infer, 0, group)
                texts.update(zip(map(id, group), results, strict=True))
            ordered = [texts[id(line)] for line in lines]
            clock.time("page assembly", assemble_page, found, ordered, options)
    seconds = clock.seconds
    seconds["detection: regions"] -= seconds["detection: resize and model"]
    inside = [stage for _, _, stage in timed]
    seconds["crops and the rest of find_lines"] = seconds.pop("find_lines") - sum(
        seconds[s] for s in inside
    )
    return {stage: seconds[stage] for stage in STAGES}, found_lines


def report(passes: Sequence[dict[str, float]], pages: int, lines: int, model: str) -> str:
    """A markdown table: median ms per page by stage, its share, and the passes' spread."""
    totals = [sum(p.values()) for p in passes]
    total = statistics.median(totals)
    out = [
        f"{model}: {pages} pages, {lines} lines; CPU per page by stage, one thread, median of "
        f"{len(passes)} passes (min - max)",
        "",
        "| stage | ms per page | min - max | share |",
        "|---|---:|---:|---:|",
    ]
    for stage in STAGES:
        values = [p[stage] / pages * 1000 for p in passes]
        med = statistics.median(values)
        out.append(
            f"| {stage} | {med:.1f} | {min(values):.1f} - {max(values):.1f} | "
            f"{med / (total / pages * 1000):.1%} |"
        )
    per_page = [t / pages * 1000 for t in totals]
    out.append(
        f"| **all** | **{total / pages * 1000:.0f}** | {min(per_page):.0f} - {max(per_page):.0f} "
        "| 100.0% |"
    )
    out += [
        "",
        f"One core would read {pages / total:.2f} pages/s; compare the server's CPU per page "
        "(bench_pages: side CPU / pages/s) for what serving adds.",
    ]
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.page_cost", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", default="", help="model name (default: the registry's default)")
    p.add_argument(
        "--model-dir", type=Path, default=None, help="model cache (default: the server's)"
    )
    p.add_argument("--rounds", type=int, default=3, help="passes over the pages")
    p.add_argument("--data", default=DEFAULT_DATA, help="folder with manifest.jsonl and pages/")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        items = manifest_items(repo_path(args.data), "page", "bench.page_cost")
    except NoEvalSet as exc:
        raise SystemExit(f"bench.page_cost: {exc}; pass --data DIR") from None
    pages = [path.read_bytes() for _, path in items]
    recognizer, page_models = load_pipeline(args.model, args.model_dir)
    measure_pass(pages[:1], recognizer, page_models)  # warm-up: sessions' first runs
    passes = []
    for number in range(args.rounds):
        seconds, lines = measure_pass(pages, recognizer, page_models)
        passes.append(seconds)
        print(f"pass {number + 1}: {sum(seconds.values()):.2f} s CPU", flush=True)
    print(report(passes, len(pages), lines, recognizer.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
