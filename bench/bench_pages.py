"""Whole pages: the gRPC server vs RapidOCR 3.10 (as a library), same model files, one run.

Why side by side: RapidOCR is what a user would otherwise run to read pages with the very
same PP-OCR ONNX files, so the server's pages/s and accuracy only mean something next to
RapidOCR's on the same machine, in the same run, with the same CPU budget. Both sides read
the 12 real pages of the evaluation set; both get the encoded file bytes and decode them
inside the timed call.

* **Server**: the real ``ocr-server`` as its own process (as in ``bench_lines``), load from
  this process: N concurrent ``StreamRecognize`` streams, each with one page item in flight
  at a time (send a page, wait for its answer, send the next).
* **RapidOCR**: kept out of the project's environment (its dependencies and OpenCV pin
  must not change what the server runs with), so it lives in its own virtual environment
  (``bench/.venv-rapidocr``, created once) and runs in ``bench/rapidocr_worker.py``
  subprocesses, loading the server's model files by explicit path (sha256 checked and
  printed). It gets the server's CPU budget in two layouts, one process with 2 intra-op
  threads and 2 processes x 1 thread taking pages from one shared queue; the better one is
  RapidOCR's figure.

    .venv/bin/python -m bench.bench_pages [--streams 1,4] [--rounds 1 | --duration S]
        [--repeats 3] [--rapidocr-layouts 1x2,2x1] [--workers 2 --threads 1]

Heavy imports (grpc, the project's modules) happen inside functions so ``--help`` is quick.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_DATA,
    REPO_ROOT,
    RESULTS_DIR,
    NoEvalSet,
    Server,
    add_server_flags,
    bench_parser,
    exact_command,
    machine_busy_seconds,
    machine_info,
    manifest_items,
    percentile,
    proc_cpu_seconds,
    proc_status_kib,
    repo_path,
    repo_relative,
    running_server,
    update_markdown_section,
)

SIDE_VENV = REPO_ROOT / "bench" / ".venv-rapidocr"
WORKER = REPO_ROOT / "bench" / "rapidocr_worker.py"
RAPIDOCR_VERSION = "3.10.0"
REPORT_SECTION = "Pages: server vs RapidOCR 3.10"
PARTIAL_SCOPE = "partial_excludes_chart_text"
# What the issue reported for RapidOCR 3.10 with the v6 small models and a bag-of-tokens
# metric of this kind; the report says whether this run agrees.
ISSUE_RAPIDOCR_ERRORS = {"en": 0.040, "zh": 0.534}
# The files both sides must run, by the server's role names: the file inside the rapidocr
# 3.10.0 wheel and its sha256 (shared/design/models.md). The page orientation model is the
# server's alone (RapidOCR has no page-rotation stage), so it is listed but not compared.
MODEL_ROLES = {
    "detector": (
        "PP-OCRv6_det_small.onnx",
        "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
    ),
    "recognizer": (
        "PP-OCRv6_rec_small.onnx",
        "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
    ),
    "line_classifier": (
        "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    ),
}
# Largest message either way: pages are a few MB, the server accepts 64 MiB by default.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Longest a worker may take to start (imports, reading the pages, loading three models).
WORKER_START_TIMEOUT_S = 120.0


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Page:
    """One ``kind == "page"`` item of the evaluation set, with its encoded file."""

    id: str
    lang: str
    path: Path
    data: bytes
    text: str
    gt_scope: str | None

    @property
    def group(self) -> str:
        """Language group of the report: ``zh``, or ``en`` (English and mixed Latin pages)."""
        return "zh" if self.lang == "zh" else "en"

    @property
    def by_chars(self) -> bool:
        """Chinese has no spaces between words: compare it as a bag of characters."""
        return self.lang == "zh"

    @property
    def count_extra(self) -> bool:
        """False where the ground truth leaves out visible text (chart labels): only misses."""
        return self.gt_scope != PARTIAL_SCOPE


def load_pages(data_dir: Path, only: Sequence[str]) -> list[Page]:
    """The page items of ``manifest.jsonl`` in manifest order, optionally only ``only`` ids.

    Raises ``NoEvalSet`` where the set or its pages are absent (a skip, not a failure).
    """
    items = manifest_items(data_dir, "page", "bench_pages", only)
    unknown = sorted(set(only) - {str(item["id"]) for item, _ in items})
    if unknown:
        raise SystemExit(f"bench_pages: --pages names ids that are not pages: {unknown}")
    return [
        Page(
            id=str(item["id"]),
            lang=str(item["lang"]),
            path=path,
            data=path.read_bytes(),
            text=str(item["text"]),
            gt_scope=item.get("gt_scope"),
        )
        for item, path in items
    ]


# --------------------------------------------------------------------------- accuracy


def score(pages: Sequence[Page], texts: dict[str, str | None]) -> dict[str, Any]:
    """Bag-of-tokens errors per page and pooled per language group (``bag_errors``).

    English and mixed pages are bags of words, Chinese bags of characters; pages whose ground
    truth excludes chart text count only missed tokens. A page without a text (its call
    failed) counts every reference token as missed. The group figure is pooled, sum(errors)
    / sum(reference tokens), so long pages weigh by their length.
    """
    from ocr_core.evaluation import bag_errors

    rows = []
    groups: dict[str, dict[str, Any]] = {}
    for page in pages:
        text = texts.get(page.id)
        bag = bag_errors(page.text, text or "", page.by_chars)
        errors = bag.errors(count_extra=page.count_extra)
        rows.append(
            {
                "id": page.id,
                "lang": page.lang,
                "group": page.group,
                "count_extra": page.count_extra,
                "reference": bag.reference,
                "missed": bag.missed,
                "extra": bag.extra,
                "errors": errors,
                "error_rate": errors / bag.reference if bag.reference else float("nan"),
                "failed": text is None,
            }
        )
        g = groups.setdefault(page.group, {"pages": 0, "reference": 0, "errors": 0})
        g["pages"] += 1
        g["reference"] += bag.reference
        g["errors"] += errors
    for g in groups.values():
        g["error_rate"] = g["errors"] / g["reference"] if g["reference"] else float("nan")
    return {"groups": dict(sorted(groups.items())), "pages": rows}


# --------------------------------------------------------------------------- model files


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def side_models_dir() -> Path | None:
    """``rapidocr/models`` inside the side environment, where the wheel's files are."""
    found = sorted(SIDE_VENV.glob("lib/python3*/site-packages/rapidocr/models"))
    return found[0] if found else None


def model_files(model: str) -> dict[str, Any]:
    """The files each side runs, by role, with their sha256; exits if the sides differ.

    The server reads the model cache (``ocr-models fetch``); RapidOCR is pointed at those
    same cache files. Only where the cache has no file for a role (a model without page
    files) does RapidOCR fall back to the file inside its own wheel. Either way every file
    RapidOCR runs must have the known sha256, and the same sha256 as the server's file for
    that role, or the comparison would not be between the same models.
    """
    from ocr_core.registry import ModelRegistry

    spec = ModelRegistry.from_files().resolve(model)
    server_paths = {
        "detector": spec.detector_path,
        "recognizer": spec.recognizer_path,
        "line_classifier": spec.line_classifier_path,
        "page_orientation": spec.page_orientation_path,
    }
    wheel_dir = side_models_dir()
    roles: dict[str, Any] = {}
    for role, path in server_paths.items():
        server_file = path if path is not None and path.is_file() else None
        entry: dict[str, Any] = {
            "server_file": str(server_file) if server_file else None,
            "server_sha256": sha256_file(server_file) if server_file else None,
        }
        if role in MODEL_ROLES:
            name, known = MODEL_ROLES[role]
            rapid_file = server_file
            if rapid_file is None and wheel_dir is not None:
                rapid_file = wheel_dir / name
            if rapid_file is None or not rapid_file.is_file():
                raise SystemExit(f"bench_pages: no {role} file for RapidOCR ({name})")
            rapid_sha = sha256_file(rapid_file)
            if rapid_sha != known:
                raise SystemExit(
                    f"bench_pages: RapidOCR's {role} {rapid_file} has sha256 {rapid_sha}, "
                    f"expected {known} ({name} of rapidocr {RAPIDOCR_VERSION})"
                )
            if entry["server_sha256"] not in (None, rapid_sha):
                raise SystemExit(
                    f"bench_pages: the server's {role} ({server_file}) differs from "
                    f"RapidOCR's ({rapid_file}); the sides would not run the same model"
                )
            entry.update(
                rapidocr_file=str(rapid_file),
                rapidocr_sha256=rapid_sha,
                same=entry["server_sha256"] == rapid_sha,
            )
        roles[role] = entry
    return roles


# --------------------------------------------------------------------------- side venv


def ensure_side_venv(onnxruntime_version: str) -> Path:
    """The side environment's interpreter, creating the environment once.

    RapidOCR never enters ``.venv``: its dependencies (omegaconf, shapely, requests, its own
    OpenCV requirement; older releases pulled ``opencv-python``, which fights the project's
    ``opencv-python-headless`` over the ``cv2`` module) must not change what the server and
    its tests run with. The side environment gets the
    same onnxruntime version as ``.venv`` so that both sides run the same inference library;
    a marker file records the versions installed, and a change of either rebuilds it.
    """
    python = SIDE_VENV / "bin" / "python"
    marker = SIDE_VENV / ".bench-installed.json"
    wanted = {"rapidocr": RAPIDOCR_VERSION, "onnxruntime": onnxruntime_version}
    try:
        if python.exists() and json.loads(marker.read_text()) == wanted:
            return python
    except (OSError, ValueError):
        pass
    print(
        f"creating {SIDE_VENV.relative_to(REPO_ROOT)} (rapidocr=={RAPIDOCR_VERSION}, "
        f"onnxruntime=={onnxruntime_version}); once, about a minute ...",
        flush=True,
    )
    subprocess.run(["python3", "-m", "venv", "--clear", str(SIDE_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run(
        [*pip, f"rapidocr=={RAPIDOCR_VERSION}", f"onnxruntime=={onnxruntime_version}"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"bench_pages: installing RapidOCR into {SIDE_VENV} failed:\n{tail}")
    marker.write_text(json.dumps(wanted) + "\n")
    return python


# --------------------------------------------------------------------------- closed loop


@dataclass
class Call:
    """One page through one caller: sequence index, page, times, and what came back."""

    k: int
    page: int
    start: float
    end: float
    text: str | None
    error: str | None = None
    inner_s: float | None = None  # RapidOCR: the library call alone, timed in the worker


# A caller runs one page (index k of the sequence, position ``page`` in the page list) and
# returns (text or None, error or None, inner seconds or None).
CallFn = Callable[[int, int], Awaitable[tuple[str | None, str | None, float | None]]]


@dataclass
class Window:
    """What one closed-loop run measured: the calls of indices [k0, k1) and the CPU meanwhile."""

    callers: int
    k0: int
    k1: int
    calls: list[Call]
    all_calls: list[Call]
    t0: float
    t1: float
    cpu: dict[str, float]  # cores used over the window: side, bench, other


def _cpu_sample(pids: Sequence[int]) -> tuple[float, float, float, float]:
    """(time, CPU of ``pids``, CPU of this process, busy CPU of the whole machine)."""
    side = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            side += proc_cpu_seconds(pid)
    return time.perf_counter(), side, time.process_time(), machine_busy_seconds()


async def closed_loop(
    callers: Sequence[CallFn],
    n_pages: int,
    warmup_s: float,
    rounds: int | None,
    duration_s: float | None,
    pids: Sequence[int],
) -> Window:
    """Callers that each always have one page in flight, over one shared sequence of pages.

    Page costs differ by more than 10x, so the measure covers whole passes over the page
    list: every caller takes the next index of one shared sequence (page = index mod pages),
    and any ``n_pages`` consecutive indices hold every page once. Each caller's first page,
    and anything started before ``warmup_s``, is warm-up; the measured calls are indices
    [k0, k1): ``rounds`` passes from the first index started after the warm-up, or, with
    ``duration_s``, the whole passes started within that many seconds (a fraction of one
    pass if not even one fits). The callers go on taking pages until every measured call has
    ended, so all of them see the same load throughout; pages still running then are
    abandoned (the caller's ``close`` cancels them).
    """
    n = len(callers)
    state: dict[str, Any] = {"cursor": 0, "k0": None, "k1": None, "error": None}
    calls: dict[int, Call] = {}
    done = asyncio.Event()
    samples: list[tuple[float, float, float, float]] = []
    timers: list[asyncio.Task[None]] = []
    m0 = time.perf_counter() + warmup_s

    def check_done() -> None:
        k0, k1 = state["k0"], state["k1"]
        if k1 is not None and all(k in calls for k in range(k0, k1)):
            done.set()

    async def close_window() -> None:
        assert duration_s is not None
        await asyncio.sleep(duration_s)
        k0, taken = state["k0"], state["cursor"]
        whole = (taken - k0) // n_pages * n_pages
        state["k1"] = k0 + whole if whole else taken
        check_done()

    async def run(call: CallFn) -> None:
        try:
            while not done.is_set():
                k = state["cursor"]
                state["cursor"] += 1
                t0 = time.perf_counter()
                if state["k0"] is None and k >= n and t0 >= m0:
                    state["k0"] = k
                    samples.append(_cpu_sample(pids))
                    if rounds is not None:
                        state["k1"] = k + rounds * n_pages
                    else:
                        timers.append(asyncio.create_task(close_window()))
                text, error, inner = await call(k, k % n_pages)
                calls[k] = Call(k, k % n_pages, t0, time.perf_counter(), text, error, inner)
                check_done()
        except Exception as exc:  # a broken caller ends the run rather than hanging it
            state["error"] = exc
            done.set()

    tasks = [asyncio.create_task(run(c)) for c in callers]
    await done.wait()
    samples.append(_cpu_sample(pids))
    for task in [*tasks, *timers]:
        task.cancel()
    await asyncio.gather(*tasks, *timers, return_exceptions=True)
    if state["error"] is not None:
        raise state["error"]
    k0, k1 = state["k0"], state["k1"]
    measured = [calls[k] for k in range(k0, k1)]
    (ta, side_a, own_a, busy_a), (tb, side_b, own_b, busy_b) = samples
    span = tb - ta
    cpu = {
        "side": (side_b - side_a) / span,
        "bench": (own_b - own_a) / span,
    }
    cpu["other"] = max(0.0, (busy_b - busy_a) / span - cpu["side"] - cpu["bench"])
    return Window(n, k0, k1, measured, sorted(calls.values(), key=lambda c: c.k), ta, tb, cpu)


async def run_each_once(callers: Sequence[CallFn], n_pages: int) -> dict[int, Call]:
    """Every page exactly once, callers taking the next page as they free up (accuracy)."""
    queue = list(range(n_pages))
    results: dict[int, Call] = {}

    async def run(call: CallFn) -> None:
        while queue:
            page = queue.pop(0)
            t0 = time.perf_counter()
            text, error, inner = await call(page, page)
            results[page] = Call(page, page, t0, time.perf_counter(), text, error, inner)

    await asyncio.gather(*(run(c) for c in callers))
    return results


def window_figures(window: Window, pages: Sequence[Page]) -> dict[str, Any]:
    """Pages/s and latencies of a window's measured calls.

    Pages/s is the closed-loop rate, callers x pages / summed call time (Little's law for
    callers that always have one page in flight). Counting the pages that ended between two
    instants would instead be off by the pages in flight at those instants, each up to a
    whole page's latency (seconds). A failed page held its caller too: it counts in the
    call time but not as a page. ``pages_per_s_span`` (measured pages / time from the first
    measured start to the last measured end) is kept as a cross-check only.
    """
    calls = window.calls
    ok = [c for c in calls if c.error is None]
    busy = sum(c.end - c.start for c in calls)
    lat = sorted(c.end - c.start for c in ok)
    span = max(c.end for c in calls) - min(c.start for c in calls)
    inner = [c.inner_s for c in ok if c.inner_s is not None]
    return {
        "callers": window.callers,
        "pages": len(ok),
        "errors": len(calls) - len(ok),
        "error_kinds": sorted({c.error for c in calls if c.error}),
        "passes": (window.k1 - window.k0) / len(pages),
        "pages_per_s": window.callers * len(ok) / busy if busy > 0 else float("nan"),
        "pages_per_s_span": len(ok) / span if span > 0 else float("nan"),
        "seconds": window.t1 - window.t0,
        "latency_s": {
            "p50": percentile(lat, 50),
            "mean": sum(lat) / len(lat) if lat else float("nan"),
            "max": lat[-1] if lat else float("nan"),
        },
        "inner_s_mean": sum(inner) / len(inner) if inner else None,
        "cpu_cores": window.cpu,
        "indices": [window.k0, window.k1],
        # Every measured page: (id, seconds as the caller saw it, seconds inside RapidOCR).
        "calls": [[pages[c.page].id, round(c.end - c.start, 4), c.inner_s, c.error] for c in calls],
    }


# --------------------------------------------------------------------------- server side


class StreamCaller:
    """One ``StreamRecognize`` call with one page item in flight at a time.

    The first message carries the stream's options (the server reads them there only); each
    item's id is its sequence index, checked on the answer.
    """

    def __init__(self, stub: Any, pages: Sequence[Page], model: str, timeout_s: float) -> None:
        from ocr_client.proto.ocr.v1 import ocr_pb2

        self._pb = ocr_pb2
        self._stub = stub
        self._images = [ocr_pb2.Image(data=p.data) for p in pages]
        self._options = ocr_pb2.StreamOptions(model=model)
        self._timeout_s = timeout_s
        self._call: Any = None

    async def __call__(self, k: int, page: int) -> tuple[str | None, str | None, float | None]:
        import grpc

        request = self._pb.StreamRecognizeRequest(id=str(k), page=self._images[page])
        if self._call is None:
            self._call = self._stub.StreamRecognize()
            request.options.CopyFrom(self._options)
        await self._call.write(request)
        reply = await asyncio.wait_for(self._call.read(), self._timeout_s)
        if reply is grpc.aio.EOF:
            code = await self._call.code()
            details = await self._call.details()
            raise RuntimeError(f"stream ended before answering page {k}: {code} {details}")
        if reply.id != str(k):
            raise RuntimeError(f"stream answered id {reply.id!r} for page {k}")
        kind = reply.WhichOneof("result")
        if kind == "page":
            return reply.page.text, None, None
        if kind == "error":
            return None, f"code {reply.error.code}: {reply.error.message}", None
        return None, f"unexpected result {kind!r}", None

    def close(self) -> None:
        """Cancel the stream (and with it any page still in flight)."""
        if self._call is not None:
            self._call.cancel()
            self._call = None


async def server_accuracy(address: str, pages: Sequence[Page], args: Any) -> dict[int, Call]:
    """Each page once through the server, on up to 4 parallel streams (texts only)."""
    import grpc

    from ocr_client.proto.ocr.v1 import ocr_pb2_grpc

    async with grpc.aio.insecure_channel(address, options=_channel_options()) as channel:
        stub = ocr_pb2_grpc.OcrServiceStub(channel)
        callers = [StreamCaller(stub, pages, args.model, args.timeout) for _ in range(4)]
        try:
            return await run_each_once(callers, len(pages))
        finally:
            for c in callers:
                c.close()


async def server_window(
    address: str, pages: Sequence[Page], streams: int, server_pid: int, args: Any
) -> Window:
    """One timed window of ``streams`` concurrent streams on one channel."""
    import grpc

    from ocr_client.proto.ocr.v1 import ocr_pb2_grpc

    async with grpc.aio.insecure_channel(address, options=_channel_options()) as channel:
        stub = ocr_pb2_grpc.OcrServiceStub(channel)
        callers = [StreamCaller(stub, pages, args.model, args.timeout) for _ in range(streams)]
        try:
            return await closed_loop(
                callers, len(pages), args.warmup, args.rounds, args.duration, [server_pid]
            )
        finally:
            for c in callers:
                c.close()


def _channel_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]


# --------------------------------------------------------------------------- RapidOCR side


class WorkerCaller:
    """One ``rapidocr_worker.py`` process in the side environment, one page at a time."""

    def __init__(self, proc: asyncio.subprocess.Process, timeout_s: float) -> None:
        self.proc = proc
        self.timeout_s = timeout_s
        self.ready: dict[str, Any] = {}
        self.info: dict[str, Any] | None = None

    @classmethod
    async def start(cls, side: RapidSide, threads: int, timeout_s: float) -> WorkerCaller:
        """Start a worker and wait for its ready line (pages read, models loaded)."""
        proc = await asyncio.create_subprocess_exec(
            str(side.python),
            str(WORKER),
            "--det",
            side.files["detector"]["rapidocr_file"],
            "--rec",
            side.files["recognizer"]["rapidocr_file"],
            "--cls",
            side.files["line_classifier"]["rapidocr_file"],
            "--threads",
            str(threads),
            "--pages",
            str(side.page_list),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=side.log,
            limit=MAX_MESSAGE_BYTES,
        )
        worker = cls(proc, WORKER_START_TIMEOUT_S)
        try:
            worker.ready = await worker._read()
            if not worker.ready.get("ready"):
                raise RuntimeError(f"RapidOCR worker did not start: {worker.ready}")
            worker.info = (await worker._ask({"info": True})).get("info")
        except BaseException:
            await worker.close()
            raise
        worker.timeout_s = timeout_s
        return worker

    async def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), self.timeout_s)
        if not line:
            code = await self.proc.wait()
            raise RuntimeError(f"RapidOCR worker exited with status {code} (see its log)")
        return dict(json.loads(line))

    async def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._read()

    async def __call__(self, k: int, page: int) -> tuple[str | None, str | None, float | None]:
        reply = await self._ask({"k": k, "page": page})
        if reply.get("k") != k:
            raise RuntimeError(f"RapidOCR worker answered {reply.get('k')} for page {k}")
        if "error" in reply:
            return None, str(reply["error"]), None
        return str(reply["text"]), None, float(reply["elapsed_s"])

    async def close(self) -> None:
        """End the worker; one still busy with a page (past the window) is killed."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()


@contextlib.asynccontextmanager
async def rapidocr_workers(
    side: RapidSide, layout: Layout, timeout_s: float
) -> AsyncIterator[list[WorkerCaller]]:
    """Start ``layout.processes`` workers together, yield them, always end them."""
    workers: list[WorkerCaller] = []
    try:
        starts = [
            WorkerCaller.start(side, layout.threads, timeout_s) for _ in range(layout.processes)
        ]
        results = await asyncio.gather(*starts, return_exceptions=True)
        workers = [r for r in results if isinstance(r, WorkerCaller)]
        for result in results:
            if isinstance(result, BaseException):
                raise result
        yield workers
    finally:
        await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)


@dataclass(frozen=True)
class RapidSide:
    """What starting RapidOCR workers needs: interpreter, model files, page list, log file."""

    python: Path
    files: dict[str, Any]
    page_list: Path
    log: Any


@dataclass(frozen=True)
class Layout:
    """How RapidOCR gets the CPU budget: ``processes`` workers x ``threads`` intra-op each."""

    processes: int
    threads: int

    @property
    def name(self) -> str:
        return f"{self.processes}x{self.threads}"

    @property
    def label(self) -> str:
        p, t = self.processes, self.threads
        return f"{p} process{'es' if p > 1 else ''} x {t} thread{'s' if t > 1 else ''}"


# --------------------------------------------------------------------------- run


def summarise(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread of pages/s over the repeats of one configuration."""
    rates = [r["pages_per_s"] for r in repeats]
    return {
        "pages_per_s_median": statistics.median(rates),
        "pages_per_s_min": min(rates),
        "pages_per_s_max": max(rates),
        "pages_per_s": rates,
        "latency_s_p50_median": statistics.median(r["latency_s"]["p50"] for r in repeats),
        "errors": sum(r["errors"] for r in repeats),
        "cpu_side_median": statistics.median(r["cpu_cores"]["side"] for r in repeats),
        "cpu_other_max": max(r["cpu_cores"]["other"] for r in repeats),
        "page_latency_s": page_latencies(repeats),
    }


def page_latencies(repeats: list[dict[str, Any]]) -> dict[str, float]:
    """Median seconds per page id over every measured run of it (failed runs left out).

    With one caller this is the page's own latency on the whole CPU budget, the figure to
    compare page by page across the sides.
    """
    seen: dict[str, list[float]] = {}
    for r in repeats:
        for page_id, seconds, _inner, error in r["calls"]:
            if error is None:
                seen.setdefault(page_id, []).append(seconds)
    return {k: statistics.median(v) for k, v in seen.items()}


def text_changes(windows: list[Window], pages: Sequence[Page], reference: dict[str, Any]) -> int:
    """Timed calls whose text differs from the accuracy pass's text of the same page.

    A side that reads a page differently depending on load (batching, thread layout) would
    make its accuracy figure depend on when it was measured; this counts such calls.
    """
    changed = 0
    for window in windows:
        for c in window.all_calls:
            ref = reference.get(pages[c.page].id)
            if c.error is None and ref is not None and c.text != ref:
                changed += 1
    return changed


async def run_all(
    args: Any, pages: list[Page], rapid: RapidSide | None, server: Server | None
) -> dict[str, Any]:
    """Accuracy passes, then the timed windows, repeats interleaved across configurations.

    Interleaving (repeat 1 of every configuration, then repeat 2, ...) spreads any drift in
    the machine's other load over both sides instead of loading it onto one.
    """
    n = len(pages)
    out: dict[str, Any] = {}
    if server is not None:
        print("server accuracy pass (each page once) ...", flush=True)
        once = await server_accuracy(server.address, pages, args)
        out["server"] = accuracy_result(pages, once)
        _print_accuracy("server", out["server"])
        if len(out["server"]["accuracy_errors"]) == n:
            print("server failed every page: no timed server windows", flush=True)
            out["server"]["skipped_timing"] = True
    layouts = args.layouts  # empty unless the RapidOCR side runs (parse_args)
    sessions: dict[str, Any] = {}
    if rapid is not None:
        accuracy_layout = max(layouts, key=lambda x: x.processes)
        print(f"RapidOCR accuracy pass ({accuracy_layout.label}) ...", flush=True)
        async with rapidocr_workers(rapid, accuracy_layout, args.timeout) as workers:
            worker = workers[0].ready
            sessions[accuracy_layout.name] = workers[0].info
            once = await run_each_once(workers, n)
        out["rapidocr"] = {"worker": worker, **accuracy_result(pages, once)}
        _print_accuracy("RapidOCR", out["rapidocr"])

    configs: list[tuple[str, Any]] = [("rapidocr", lay) for lay in layouts]
    if server is not None and not out["server"].get("skipped_timing"):
        configs += [("server", s) for s in args.streams]
    windows: dict[tuple[str, Any], list[Window]] = {c: [] for c in configs}
    figures: dict[tuple[str, Any], list[dict[str, Any]]] = {c: [] for c in configs}
    for repeat in range(1, args.repeats + 1):
        for side, how in configs:
            what = how.label if side == "rapidocr" else f"{how} stream(s)"
            print(f"[{repeat}/{args.repeats}] {side} {what} ...", flush=True)
            if side == "rapidocr":
                assert rapid is not None
                async with rapidocr_workers(rapid, how, args.timeout) as workers:
                    pids = [w.proc.pid for w in workers]
                    window = await closed_loop(
                        workers, n, args.warmup, args.rounds, args.duration, pids
                    )
                    sessions[how.name] = workers[0].info
                    rss = sum(proc_status_kib(pid, "VmHWM") or 0 for pid in pids)
            else:
                assert server is not None
                window = await server_window(server.address, pages, how, server.pid, args)
                rss = proc_status_kib(server.pid, "VmHWM") or 0
                # Abandoned pages may still be computing in the server after their stream
                # was cancelled; the next window must not start on top of them.
                await settle(server.pid)
            fig = {**window_figures(window, pages), "peak_rss_kib": rss}
            windows[(side, how)].append(window)
            figures[(side, how)].append(fig)
            cpu = fig["cpu_cores"]
            print(
                f"  {fig['pages_per_s']:.3f} pages/s over {fig['pages']} pages "
                f"({fig['passes']:.2f} passes, {fig['seconds']:.1f} s), p50 "
                f"{fig['latency_s']['p50']:.2f} s/page, errors {fig['errors']}; CPU cores: "
                f"{side} {cpu['side']:.2f}, bench {cpu['bench']:.2f}, other {cpu['other']:.2f}",
                flush=True,
            )
    if rapid is not None:
        out["rapidocr"]["sessions"] = sessions
    if rapid is not None and args.repeats:
        out["rapidocr"]["layouts"] = [
            {
                "layout": lay.name,
                "label": lay.label,
                "processes": lay.processes,
                "threads": lay.threads,
                "sessions": sessions.get(lay.name),
                "repeats": figures[("rapidocr", lay)],
                **summarise(figures[("rapidocr", lay)]),
                "text_changes": text_changes(
                    windows[("rapidocr", lay)], pages, out["rapidocr"]["texts"]
                ),
            }
            for lay in layouts
        ]
    if server is not None and args.repeats and not out["server"].get("skipped_timing"):
        out["server"]["levels"] = [
            {
                "streams": s,
                "repeats": figures[("server", s)],
                **summarise(figures[("server", s)]),
                "text_changes": text_changes(windows[("server", s)], pages, out["server"]["texts"]),
            }
            for s in args.streams
        ]
    return out


async def settle(pid: int, idle_cores: float = 0.05, limit_s: float = 120.0) -> float:
    """Wait until process ``pid`` is idle (under ``idle_cores`` over half a second).

    Returns the seconds waited; gives up after ``limit_s`` (the next window then shows the
    leftover work as CPU of its own side, not silently).
    """
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        try:
            before = proc_cpu_seconds(pid)
            await asyncio.sleep(0.5)
            if proc_cpu_seconds(pid) - before < idle_cores * 0.5:
                break
        except OSError:
            break
    return time.perf_counter() - t0


def accuracy_result(pages: Sequence[Page], once: dict[int, Call]) -> dict[str, Any]:
    """Texts, failures and scores of one accuracy pass."""
    texts = {pages[i].id: c.text for i, c in sorted(once.items())}
    return {
        "texts": texts,
        "accuracy_errors": {pages[i].id: c.error for i, c in once.items() if c.error},
        "accuracy": score(pages, texts),
    }


def _print_accuracy(side: str, result: dict[str, Any]) -> None:
    accuracy, failures = result["accuracy"], result["accuracy_errors"]
    parts = [
        f"{g} {v['error_rate']:.1%} ({v['errors']}/{v['reference']} tokens, {v['pages']} pages)"
        for g, v in accuracy["groups"].items()
    ]
    print(f"  {side} accuracy: " + "; ".join(parts), flush=True)
    for page_id, error in failures.items():
        print(f"  {side} failed {page_id}: {error}", flush=True)


# --------------------------------------------------------------------------- report


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"  # x != x: NaN


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f} %"


def best_figures(result: dict[str, Any]) -> tuple[dict | None, dict | None]:
    """The server's best streams level and RapidOCR's best layout, by median pages/s."""
    levels = result.get("server", {}).get("levels") or []
    layouts = result.get("rapidocr", {}).get("layouts") or []
    key = "pages_per_s_median"
    best_server = max(levels, key=lambda x: x[key]) if levels else None
    best_rapid = max(layouts, key=lambda x: x[key]) if layouts and key in layouts[0] else None
    return best_server, best_rapid


def paired_ratios(best_server: dict[str, Any], best_rapid: dict[str, Any]) -> list[float]:
    """Each repeat's own server / RapidOCR ratio, from windows that ran about a minute
    apart (repeats are interleaved across configurations), so the host's drift over the
    run, several per cent on either side, cancels within each pair."""
    pairs = zip(best_server["pages_per_s"], best_rapid["pages_per_s"], strict=True)
    return [server / rapid for server, rapid in pairs]


def ratio_sentence(best_server: dict[str, Any], best_rapid: dict[str, Any]) -> str:
    """The headline: the median of the repeats' own ratios, and the medians' ratio."""
    ratios = paired_ratios(best_server, best_rapid)
    of_medians = best_server["pages_per_s_median"] / best_rapid["pages_per_s_median"]
    return (
        f"**{statistics.median(ratios):.2f}x**, the median of the repeats' own ratios "
        f"({' / '.join(f'{x:.2f}' for x in ratios)}); the medians' ratio is "
        f"{of_medians:.2f}x"
    )


def throughput_table(result: dict[str, Any]) -> list[str]:
    rows = [
        "| side | layout | pages/s (median) | min - max | per repeat | p50 s/page | passes "
        "| side CPU | bench CPU | other CPU (max) | peak RSS MiB | errors |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    entries = [
        ("RapidOCR 3.10", x["label"], x) for x in result.get("rapidocr", {}).get("layouts", [])
    ] + [
        ("server", f"{x['streams']} stream(s)", x)
        for x in result.get("server", {}).get("levels", [])
    ]
    for side, label, x in entries:
        reps = x["repeats"]
        if not reps:
            continue
        rows.append(
            f"| {side} | {label} | {_f(x['pages_per_s_median'], 3)} "
            f"| {_f(x['pages_per_s_min'], 3)} - {_f(x['pages_per_s_max'], 3)} "
            f"| {', '.join(_f(r, 3) for r in x['pages_per_s'])} "
            f"| {_f(x['latency_s_p50_median'])} "
            f"| {'/'.join(_f(r['passes'], 2) for r in reps)} "
            f"| {_f(x['cpu_side_median'])} "
            f"| {_f(statistics.median(r['cpu_cores']['bench'] for r in reps))} "
            f"| {_f(x['cpu_other_max'])} "
            f"| {max(r['peak_rss_kib'] for r in reps) / 1024:.0f} | {x['errors']} |"
        )
    return rows


def accuracy_tables(result: dict[str, Any], pages: Sequence[Page]) -> list[str]:
    sides = [
        (name, result[key]["accuracy"])
        for name, key in (("server", "server"), ("RapidOCR", "rapidocr"))
        if key in result and "accuracy" in result[key]
    ]
    if not sides:
        return ["No accuracy figures (neither side ran)."]
    head = " | ".join(f"{name} errors" for name, _ in sides)
    rows = [
        f"| language | pages | reference tokens | {head} |",
        "|---|---:|---:|" + "---:|" * len(sides),
    ]
    for group in sorted({g for _, acc in sides for g in acc["groups"]}):
        first = next(acc["groups"][group] for _, acc in sides if group in acc["groups"])
        cells = []
        for _, acc in sides:
            g = acc["groups"].get(group)
            cells.append(f"{_pct(g['error_rate'])} ({g['errors']})" if g else "n/a")
        name = "en (en + mixed, words)" if group == "en" else "zh (characters)"
        rows.append(f"| {name} | {first['pages']} | {first['reference']} | {' | '.join(cells)} |")
    latency = lone_latencies(result)
    rows += [
        "",
        "Per page (missed / extra tokens; *errors* = max(missed, extra), or missed only where "
        "the ground truth leaves out chart text)"
        + (
            "; *s/page* is the median latency of the page with one caller on the whole budget ("
            + ", ".join(label for label, _ in latency)
            + "):"
            if latency
            else ":"
        ),
        "",
        "| page | lang | counts | reference | "
        + " | ".join(f"{name} missed / extra | {name} errors" for name, _ in sides)
        + "".join(f" | {label.split(' (')[0]} s/page" for label, _ in latency)
        + " |",
        "|---|---|---|---:|" + "---:|---:|" * len(sides) + "---:|" * len(latency),
    ]
    by_id = {name: {r["id"]: r for r in acc["pages"]} for name, acc in sides}
    for page in pages:
        first = by_id[sides[0][0]][page.id]
        cells = []
        for name, _ in sides:
            r = by_id[name][page.id]
            fail = " (failed)" if r["failed"] else ""
            cells.append(f"{r['missed']} / {r['extra']} | {_pct(r['error_rate'])}{fail}")
        counts = "missed + extra" if page.count_extra else "missed only"
        cells += [_f(by_page.get(page.id)) for _, by_page in latency]
        rows.append(
            f"| {page.id} | {page.lang} | {counts} | {first['reference']} | "
            + " | ".join(cells)
            + " |"
        )
    return rows


def lone_latencies(result: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """Per-page latencies of the one-caller configurations: server 1 stream, RapidOCR 1xN."""
    out = []
    for x in result.get("server", {}).get("levels", []):
        if x["streams"] == 1:
            out.append(("server (1 stream)", x["page_latency_s"]))
    for x in result.get("rapidocr", {}).get("layouts", []):
        if x["processes"] == 1:
            out.append((f"RapidOCR ({x['label']})", x["page_latency_s"]))
    return out


def busy_windows(result: dict[str, Any]) -> list[str]:
    """Configurations where other processes took a quarter of a core or more in a window."""
    out = []
    for side, key, name in (("rapidocr", "layouts", "label"), ("server", "levels", "streams")):
        for x in result.get(side, {}).get(key, []):
            worst = x.get("cpu_other_max", 0.0)
            if worst >= 0.25:
                label = x[name] if side == "rapidocr" else f"{x[name]} stream(s)"
                out.append(
                    f"{'RapidOCR' if side == 'rapidocr' else 'server'} {label} ({worst:.2f})"
                )
    return out


def issue_note(result: dict[str, Any]) -> str:
    """Whether RapidOCR's accuracy here matches the figures quoted in the issue."""
    rapid = result.get("rapidocr", {}).get("accuracy")
    if rapid is None:
        return ""
    parts, differs = [], []
    for group, quoted in ISSUE_RAPIDOCR_ERRORS.items():
        g = rapid["groups"].get(group)
        if g is None:
            continue
        parts.append(f"{group} {_pct(g['error_rate'])} (issue: {_pct(quoted)})")
        if abs(g["error_rate"] - quoted) > 0.005:
            differs.append(group)
    text = "RapidOCR 3.10 with these files and this metric: " + ", ".join(parts) + "."
    if result["settings"]["page_subset"]:
        return text + " Only a subset of the pages ran, so these are not comparable."
    if differs:
        text += (
            f" The {' and '.join(differs)} figure{'s differ' if len(differs) > 1 else ' differs'}"
            " from the issue's by more than half a point; the issue's exact metric (which "
            "pages count extra tokens, and how) is not recorded, so the per-page missed and "
            "extra counts above are given to recompute any variant."
        )
    else:
        text += " Both agree with the issue's figures within half a point."
    return text


def write_markdown(path: Path, result: dict[str, Any], pages: Sequence[Page]) -> None:
    """Replace this benchmark's section of ``path`` (other sections are kept)."""
    m = result["machine"]
    s = result["settings"]
    files = result["model_files"]
    best_server, best_rapid = best_figures(result)
    text = [
        f"- Date: {result['date']}",
        f"- Machine: {m['nproc']} usable cores, {m['cpu_model']}; Python {m['python']}, "
        f"onnxruntime {m['onnxruntime']} (both sides), grpcio {m['grpcio']}, Linux "
        f"{m['kernel']}; load average at start {' '.join(m['loadavg_at_start'])}",
        f"- Command: `{result['command']}`",
        f'- Data: {len(pages)} real pages (`kind == "page"` in `{s["data"]}/manifest.jsonl`: '
        + ", ".join(f"{n} {lang}" for lang, n in sorted(s["langs"].items()))
        + "), each sent as its PNG/JPEG file and decoded inside the timed call on both sides.",
        "- Same model files on both sides (sha256 checked at start):",
        "",
        "| role | sha256 | server file | RapidOCR file |",
        "|---|---|---|---|",
    ]
    for role, f in files.items():
        text.append(
            f"| {role} | `{(f.get('rapidocr_sha256') or f['server_sha256'] or 'n/a')[:16]}...` "
            f"| {_home(f['server_file'])} | {_home(f.get('rapidocr_file')) or 'not used'} |"
        )
    rapid = result.get("rapidocr")
    server = result.get("server")
    text += [""]
    if rapid:
        w = rapid.get("worker", {})
        text.append(
            f"- RapidOCR {w.get('rapidocr', RAPIDOCR_VERSION)} (onnxruntime "
            f"{w.get('onnxruntime', '?')}) as a library in its own virtual environment "
            "(`bench/.venv-rapidocr`), run by `bench/rapidocr_worker.py`: `RapidOCR(params=...)` "
            "with `Det/Rec/Cls.model_path` set to the files above, `Det/Rec` PP-OCRv6 small, "
            "`Cls` PP-OCRv4 mobile (its defaults), `EngineConfig.onnxruntime."
            "intra_op_num_threads` per layout, log level warning; everything else default "
            "(`use_cls` on, `max_side_len` 2000, detector `limit_side_len` 736, text score "
            "0.5). A page's text is its `txts` joined with newlines. Layouts, for the same 2-core "
            "budget as the server: "
            + "; ".join(
                f"{lay.label} (sessions built with intra-op threads "
                f"{_threads(rapid.get('sessions', {}).get(lay.name))})"
                for lay in (Layout(*map(int, x.split("x"))) for x in s["rapidocr_layouts"])
            )
            + ". Several processes take pages from one shared queue (the bench hands each "
            "free worker the next page)."
        )
    if server:
        command = shlex.join(repo_relative(a) for a in server["command"])
        text.append(
            f"- Server: `{command}`; health SERVING "
            f"after {server.get('ready_s', float('nan')):.1f} s. Load from the bench process: "
            "*N* concurrent `StreamRecognize` streams on one channel, each with one page item "
            "in flight at a time (`StreamRecognizeRequest(page=Image(data=...))`, the first "
            f"with `options=StreamOptions(model={s['model']!r})`, server page defaults); text "
            "from `PageResult.text`."
        )
    window = (
        f"{s['rounds']} whole pass(es) over the pages"
        if s["rounds"]
        else f"the whole passes over the pages started within {s['duration_s']:g} s"
    )
    text += [
        f"- Timing: each configuration runs {s['repeats']} time(s), repeats interleaved across "
        f"configurations (fresh RapidOCR workers each time). A window is {window}, starting "
        "after each caller's first page (warm-up"
        + (f", and at least {s['warmup_s']:g} s" if s["warmup_s"] else "")
        + "); callers keep taking pages until every measured page has ended, so the load is "
        "the same throughout. Pages/s is the closed-loop rate, callers x pages / summed page "
        "time (Little's law), which has no edge effect from pages in flight at the window's "
        "ends. *p50 s/page* is a page's latency as the caller sees it. CPU is cores used "
        "(CPU seconds / window): *side* by the server process or the RapidOCR workers, "
        "*bench* by this process (the load generator), *other* by everything else (0.25 or "
        "more means a busy machine: re-run).",
        "",
        "### Throughput",
        "",
        *(
            throughput_table(result)
            if s["repeats"]
            else ["No timed windows in this run (`--repeats 0`: accuracy only)."]
        ),
        "",
    ]
    if best_server and best_rapid:
        text.append(
            f"Server **{best_server['pages_per_s_median']:.3f} pages/s** "
            f"({best_server['streams']} stream(s)) vs RapidOCR "
            f"**{best_rapid['pages_per_s_median']:.3f} pages/s** ({best_rapid['label']}, the "
            f"better of its layouts; medians over {s['repeats']} repeat(s)): "
            f"{ratio_sentence(best_server, best_rapid)}."
        )
    elif best_rapid:
        text.append(
            f"RapidOCR: **{best_rapid['pages_per_s_median']:.3f} pages/s** "
            f"({best_rapid['label']}, the better of its layouts). No server figure in this run."
        )
    partial = [
        r["passes"]
        for side, key in (("rapidocr", "layouts"), ("server", "levels"))
        for x in result.get(side, {}).get(key, [])
        for r in x["repeats"]
        if r["passes"] < 1
    ]
    if partial:
        text += [
            "",
            "A *passes* value below 1 means not even one whole pass over the pages fitted in "
            "the window (`--duration` too short): such a row covers only the pages that "
            "happened to run, whose costs differ by more than 10x, and is not comparable.",
        ]
    busy = busy_windows(result)
    if busy:
        text += [
            "",
            "Caution: other processes took at least a quarter of a core during a window of: "
            + ", ".join(busy)
            + " (in parentheses: the most cores others took in one window). Those figures are "
            "lower than this machine gives when otherwise idle, and the comparison is only as "
            "fair as that load was even; re-run on a quiet machine.",
        ]
    changes = [
        f"RapidOCR {x['label']}: {x['text_changes']}" for x in (rapid or {}).get("layouts", [])
    ] + [
        f"server {x['streams']} stream(s): {x['text_changes']}"
        for x in (server or {}).get("levels", [])
    ]
    if changes:
        text += [
            "",
            "Timed pages whose text differed from the same side's accuracy pass: "
            + "; ".join(changes)
            + ".",
        ]
    text += [
        "",
        "### Accuracy",
        "",
        "Each page once per side (outside the timed windows). Metric "
        "(`ocr_core.evaluation.bag_errors`): page texts as bags of tokens, NFKC and "
        "case-folded, English and mixed pages as words, Chinese as characters; a page's errors "
        "are max(missed, extra), or only the missed tokens for pages whose ground truth "
        f'leaves out chart text (`gt_scope == "{PARTIAL_SCOPE}"`); per language the errors '
        "are pooled, sum(errors) / sum(reference tokens).",
        "",
        *accuracy_tables(result, pages),
    ]
    note = issue_note(result)
    if note:
        text += ["", note]
    text += [
        "",
        "Same model files, not the same pipeline: the server (page defaults) first finds the "
        "page's rotation (0/90/180/270, with the page orientation model above) and reads it "
        "upright, detects on the page scaled to at most 1024 px (`--page-max-side`) on its "
        "longer side and cuts "
        "the line crops from the full-resolution page; RapidOCR 3.10 has no page-rotation "
        "stage (a page photographed sideways is read sideways), shrinks a page to at most "
        "2000 px (and cuts its crops from that), then scales it up for detection where needed "
        "so that its shorter side is at least 736 px (never down). Both turn upside-down lines "
        "with the same 0/180 classifier and drop lines scoring below 0.5.",
    ]
    update_markdown_section(path, REPORT_SECTION, text)


def _threads(sessions: dict[str, Any] | None) -> str:
    if not sessions:
        return "n/a"
    values = {v["intra_op_num_threads"] for v in sessions.values() if v}
    return "/".join(str(v) for v in sorted(values)) or "n/a"


def _home(path: str | None) -> str:
    """A path for the report: ``~`` for the home folder, repo-relative inside the repo."""
    if not path:
        return ""
    p = Path(path)
    if p.is_relative_to(REPO_ROOT):
        return f"`{p.relative_to(REPO_ROOT)}`"
    home = Path.home()
    return f"`~/{p.relative_to(home)}`" if p.is_relative_to(home) else f"`{p}`"


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = bench_parser(
        "python -m bench.bench_pages",
        "The gRPC server vs RapidOCR 3.10 on the real pages, same model files.",
    )
    p.add_argument("--model", default="ppocr-v6-small", help="model name (as the server knows it)")
    p.add_argument(
        "--data",
        default=None,
        help=f"evaluation set folder (default $OCR_EVAL_DIR or {DEFAULT_DATA})",
    )
    p.add_argument("--streams", default="1,4", help="server: concurrent streams, comma-separated")
    p.add_argument(
        "--rapidocr-layouts", default="1x2,2x1", help="RapidOCR: PROCESSESxTHREADS, comma-separated"
    )
    window = p.add_mutually_exclusive_group()
    window.add_argument("--rounds", type=int, default=None, help="passes per window (default 1)")
    window.add_argument("--duration", type=float, default=None, help="seconds per window instead")
    p.add_argument("--warmup", type=float, default=0.0, help="extra warm-up seconds per window")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed windows per configuration (0: accuracy only)"
    )
    p.add_argument("--sides", default="server,rapidocr", help="which sides run: server,rapidocr")
    p.add_argument("--pages", default="", help="only these page ids (comma-separated; smoke runs)")
    add_server_flags(p)
    p.add_argument("--grace-s", type=float, default=10.0, help="server --grace-s")
    p.add_argument("--timeout", type=float, default=300.0, help="longest one page may take, s")
    p.add_argument("--out", default="docs/benchmarks.md", help="report whose section to replace")
    args = p.parse_args(argv)
    try:
        args.streams = [int(x) for x in args.streams.split(",") if x.strip()]
        args.layouts = [
            Layout(*(int(v) for v in x.lower().split("x")))
            for x in args.rapidocr_layouts.split(",")
            if x.strip()
        ]
    except (ValueError, TypeError):
        p.error("--streams takes integers, --rapidocr-layouts PROCESSESxTHREADS items (2x1)")
    sides = {x.strip() for x in args.sides.split(",") if x.strip()}
    if not sides or sides - {"server", "rapidocr"}:
        p.error("--sides takes server, rapidocr or both")
    args.server = "server" in sides
    args.rapidocr = "rapidocr" in sides
    if not args.rapidocr:
        args.layouts = []
    if args.rounds is None and args.duration is None:
        args.rounds = 1
    if (args.rounds is not None and args.rounds < 1) or (
        args.duration is not None and args.duration <= 0
    ):
        p.error("--rounds must be >= 1 and --duration positive")
    if not args.streams or min(args.streams) < 1:
        p.error("--streams needs at least one level, each at least 1")
    if any(x.processes < 1 or x.threads < 1 for x in args.layouts):
        p.error("--rapidocr-layouts: processes and threads must be >= 1")
    if args.repeats < 0 or args.warmup < 0 or args.workers < 1 or args.threads < 1:
        p.error("--workers/--threads must be >= 1, --repeats and --warmup not negative")
    args.only = [x.strip() for x in args.pages.split(",") if x.strip()]
    return args


def run_sides(
    args: Any, pages: list[Page], files: dict[str, Any], python: Path | None
) -> dict[str, Any]:
    """Start what the sides need (server process, log files, page list), run, clean up.

    The server is started and stopped here, outside the event loop (``running_server``: a
    separate process on a free port, health SERVING before any load, SIGTERM at the end
    with its grace period checked).
    """
    rapid_log_path = RESULTS_DIR / f"pages-{args.stamp}-rapidocr.log"
    server_log_path = RESULTS_DIR / f"pages-{args.stamp}-server.log"
    with contextlib.ExitStack() as stack:
        rapid = None
        if python is not None:
            page_list = RESULTS_DIR / f"pages-{args.stamp}-list.txt"
            page_list.write_text("".join(f"{p.path}\n" for p in pages), encoding="utf-8")
            stack.callback(page_list.unlink, missing_ok=True)
            log = stack.enter_context(rapid_log_path.open("wb"))
            rapid = RapidSide(python, files, page_list, log)
        server = None
        if args.server:
            server = stack.enter_context(running_server(args, server_log_path, args.grace_s))
        out = asyncio.run(run_all(args, pages, rapid, server))
        if server is not None:
            peak_rss_kib = proc_status_kib(server.pid, "VmHWM")
    if server is not None:
        out["server"] = {
            "command": server.command,
            "log": str(server_log_path.relative_to(REPO_ROOT)),
            "ready_s": server.ready_s,
            "peak_rss_kib": peak_rss_kib,
            "shutdown": server.shutdown,
            **out["server"],
        }
    if rapid is not None:
        out["rapidocr"]["log"] = str(rapid_log_path.relative_to(REPO_ROOT))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = args.data or os.environ.get("OCR_EVAL_DIR") or DEFAULT_DATA
    data_dir = repo_path(data)
    try:
        pages = load_pages(data_dir, args.only)
    except NoEvalSet as skip:
        print(
            f"bench_pages: skipped: {skip}; pass --data DIR or set OCR_EVAL_DIR to the folder "
            "holding manifest.jsonl and pages/",
            file=sys.stderr,
        )
        return 0

    import onnxruntime

    started = dt.datetime.now().astimezone()
    args.stamp = started.strftime("%Y%m%d-%H%M%S")
    python = ensure_side_venv(onnxruntime.__version__) if args.rapidocr else None
    files = model_files(args.model)
    print(f"{len(pages)} pages from {data_dir}; model {args.model}; model files (sha256):")
    for role, f in files.items():
        sha = f.get("rapidocr_sha256") or f["server_sha256"]
        if f.get("same"):
            same = "same file bytes on both sides"
        elif "rapidocr_file" in f:
            same = "RapidOCR only (the server has none)"
        else:
            same = "server only"
        print(f"  {role:16} {sha}  {same}")
        print(f"  {'':16} server:   {f['server_file']}")
        if "rapidocr_file" in f:
            print(f"  {'':16} RapidOCR: {f['rapidocr_file']}")
    result: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": exact_command("bench.bench_pages"),
        "machine": machine_info(),
        "settings": {
            "model": args.model,
            "data": data,
            "pages": [p.id for p in pages],
            "page_subset": bool(args.only),
            "langs": dict(Counter(p.lang for p in pages)),
            "streams": args.streams if args.server else [],
            "rapidocr_layouts": [x.name for x in args.layouts],
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "repeats": args.repeats,
            "workers": args.workers,
            "threads": args.threads,
            "graph_optimization": args.graph_optimization,
            "grace_s": args.grace_s,
        },
        "model_files": files,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    result.update(run_sides(args, pages, files, python))

    json_path = RESULTS_DIR / f"pages-{args.stamp}.json"
    json_path.write_text(
        json.dumps(result, indent=2, default=str, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    out = repo_path(args.out)
    write_markdown(out, result, pages)
    if args.repeats:
        print()
        print("\n".join(throughput_table(result)))
    best_server, best_rapid = best_figures(result)
    if best_server and best_rapid:
        print(f"\nserver / RapidOCR (best of each): {ratio_sentence(best_server, best_rapid)}")
    note = issue_note(result)
    if note:
        print(note)
    print(f"wrote {out} and {json_path}")
    status = 0
    shutdown = result.get("server", {}).get("shutdown")
    if shutdown and not shutdown["clean"]:
        print("server did not exit 0 within its grace period after SIGTERM", file=sys.stderr)
        status = 1
    failures = [
        side
        for side in ("server", "rapidocr")
        if result.get(side, {}).get("accuracy_errors")
        or any(x.get("errors") for x in result.get(side, {}).get("levels", []))
        or any(x.get("errors") for x in result.get(side, {}).get("layouts", []))
    ]
    if failures:
        print(f"pages failed on: {', '.join(failures)} (see the report)", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
