"""Helpers shared by the benchmark scripts (``bench_lines``, ``bench_pages``, ``soak``).

* paths: the repository root, the results folder, the evaluation set and its manifest;
* the server process: its command line, start on a free port, health ``SERVING``, SIGTERM
  with a checked exit (``running_server``);
* readings from /proc: CPU time of a process and of the whole machine, a process's memory;
* what a report records: the machine and the exact command;
* the report files: several benchmarks write into one ``docs/benchmarks.md``; each owns a
  level-2 section of it and must replace only that section, so running one benchmark never
  erases another's last report.

Heavy imports (grpc, onnxruntime) happen inside functions: bench_lines' spawned load process
imports this module and should carry only the client.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ocr_core.batching import BatchLimits

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DEFAULT_DATA = "../shared/eval/real"
HEALTH_TIMEOUT_S = 120.0
# Extra seconds, beyond the server's own --grace-s, that SIGTERM may take before it counts
# as a failed shutdown (interpreter teardown, closing the ONNX Runtime sessions).
SHUTDOWN_SLACK_S = 10.0


# --------------------------------------------------------------------------- paths


def repo_path(arg: str) -> Path:
    """A path argument as given, relative ones taken from the repository root."""
    path = Path(arg).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def repo_relative(arg: str) -> str:
    """``arg`` relative to the repository root if it is a path inside it, for the report."""
    path = Path(arg)
    if path.is_absolute() and path.is_relative_to(REPO_ROOT):
        return str(path.relative_to(REPO_ROOT))
    return arg


def exact_command(module: str) -> str:
    """``python -m module`` as typed from the repository root (interpreter path made relative)."""
    return shlex.join([repo_relative(sys.executable), "-m", module, *sys.argv[1:]])


# --------------------------------------------------------------------------- evaluation set


class NoEvalSet(Exception):
    """The evaluation set, or any item of the kind asked for, is not there.

    The set lives outside the repository (``../shared/eval/real``), so a checkout without it
    must say where it looked rather than fail with a traceback.
    """


def manifest_items(
    data_dir: Path, kind: str, prog: str, only: Collection[str] = ()
) -> list[tuple[dict[str, Any], Path]]:
    """The ``kind`` items of ``manifest.jsonl`` with their image paths, in manifest order.

    With ``only``, just the items with those ids (the caller checks for ids not found).
    Raises ``NoEvalSet`` where the manifest is absent or has no item of ``kind`` at all;
    exits naming the manifest line where an item's image is missing.
    """
    manifest = data_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise NoEvalSet(f"no evaluation set at {data_dir} (expected {manifest})")
    items: list[tuple[dict[str, Any], Path]] = []
    of_kind = 0
    for number, text in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        item = json.loads(text)
        if item.get("kind") != kind:
            continue
        of_kind += 1
        if only and item["id"] not in only:
            continue
        path = data_dir / item["image"]
        if not path.is_file():
            raise SystemExit(f"{prog}: {manifest}:{number} lists {path}, which is missing")
        items.append((item, path))
    if not of_kind:
        raise NoEvalSet(f"{manifest} lists no items with kind == {kind!r}")
    return items


@dataclass(frozen=True)
class LineImage:
    """One line crop of the evaluation set: its id, file and encoded bytes."""

    id: str
    path: Path
    data: bytes


def load_lines(data_dir: Path, prog: str) -> list[LineImage]:
    """The ``kind == "line"`` items of the set, read into memory; exits with a message if absent."""
    try:
        items = manifest_items(data_dir, "line", prog)
    except NoEvalSet as exc:
        raise SystemExit(
            f"{prog}: {exc}; pass --data DIR pointing at the folder holding manifest.jsonl "
            "and lines/"
        ) from None
    return [LineImage(str(item["id"]), path, path.read_bytes()) for item, path in items]


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` (0..100) of already sorted values; NaN if empty."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# --------------------------------------------------------------------------- /proc


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) from /proc."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat), for "other load".

    The machine may be shared (other people's tests): busy time that is neither the
    server's nor the load generator's says how much of the cores someone else took during a
    window, so a disturbed run can be recognised instead of trusted.
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid: int, key: str) -> int | None:
    """A ``kB`` value (e.g. VmHWM, the peak RSS) from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


#: CPU features that change which ONNX Runtime kernels run, so two hosts that both call
#: themselves "Intel(R) Xeon(R) Processor" can still be told apart in a report (v6 tiny's raw
#: limit read 298 lines/s on one such host and 357 on another, the latter with AVX-512 and AMX).
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_description(cpuinfo: str) -> str:
    """One line naming the CPU of a ``/proc/cpuinfo`` text: model, family/model/stepping, features.

    Virtual machines often show a generic model name; the numbers and the vector features
    are what decide ONNX Runtime's speed, and so whether two runs are comparable.
    """
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block is enough: every core reads the same here
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name", "unknown")
    numbers = ", ".join(
        f"{label} {fields[key]}"
        for key, label in (("cpu family", "family"), ("model", "model"), ("stepping", "stepping"))
        if key in fields
    )
    flags = set(fields.get("flags", "").split())
    features = " ".join(f for f in CPU_FEATURES if f in flags)
    details = [numbers] if numbers else []
    if "flags" in fields:
        details.append(features or "no AVX2")
    return f"{name} ({'; '.join(details)})" if details else name


def machine_info() -> dict[str, Any]:
    """What the figures depend on: cores, CPU model, library versions, load at start."""
    import grpc
    import onnxruntime

    try:
        cpu = cpu_description(Path("/proc/cpuinfo").read_text())
    except OSError:
        cpu = "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    try:
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        loadavg = []
    return {
        "nproc": usable,
        "cpu_model": cpu,
        "onnxruntime": onnxruntime.__version__,
        "grpcio": grpc.__version__,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": loadavg,
    }


# --------------------------------------------------------------------------- server process


def free_port() -> int:
    """A port that was free a moment ago (the server does not report a port 0 it picked)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A bench's argument parser, giving defaults in its help as ``ocr-server --help`` does."""
    from ocr_server.config import DefaultsHelpFormatter  # here: it imports numpy and OpenCV

    return argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=DefaultsHelpFormatter
    )


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """The server flags ``server_command`` reads, declared once for every benchmark.

    ``--model`` is left to each benchmark (bench_lines takes a list of models).
    """
    parser.add_argument("--workers", type=int, default=2, help="server sessions per model")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per session")
    parser.add_argument(
        "--idle-threads",
        type=int,
        default=None,
        help="threads of the server's idle session (default: workers x threads)",
    )
    parser.add_argument("--pin-workers", default="auto", help="server --pin-workers: auto|on|off")
    parser.add_argument("--graph-optimization", default="all", help="all|extended|basic|disabled")
    parser.add_argument(
        "--server-args",
        default="",
        help="extra ocr-server flags, one string; a lone flag needs the = form "
        "(--server-args=--no-pages), or argparse takes it for a flag of the bench",
    )


def idle_threads(args: Any) -> int:
    """The server's idle-session threads for these benchmark flags (as ``--idle-threads auto``)."""
    from ocr_core.sessions import resolve_idle_threads

    return resolve_idle_threads(args.idle_threads, args.workers, args.threads)


def server_batch_limits(args: Any) -> BatchLimits:
    """The ``BatchLimits`` a server started with these benchmark flags uses.

    Read with the server's own flag parser from ``args.server_args`` (extra flags such as
    ``--max-batch-pixels`` or ``--idle-max-pixels``; environment variables ignored), so the
    raw references that follow the batcher's bounds follow the server actually measured.
    """
    from ocr_server.app import batch_limits
    from ocr_server.config import parse_config

    return batch_limits(parse_config(shlex.split(args.server_args), env={}))


def server_command(args: Any, port: int, grace_s: float) -> list[str]:
    """The ``ocr-server`` command line: the installed script next to this interpreter.

    ``args`` holds the benchmark's ``model``, ``workers``, ``threads``, ``idle_threads``,
    ``pin_workers``, ``graph_optimization`` and ``server_args`` (extra flags, one string).
    """
    script = Path(sys.executable).parent / "ocr-server"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "ocr_server.main"]
    return [
        *base,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model",
        args.model,
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
        "--idle-threads",
        str(idle_threads(args)),
        "--pin-workers",
        args.pin_workers,
        "--graph-optimization",
        args.graph_optimization,
        "--no-fetch",
        *shlex.split(args.server_args),
        "--grace-s",
        str(grace_s),
    ]


def wait_serving(proc: subprocess.Popen[bytes], address: str, timeout_s: float) -> float:
    """Poll grpc health (service "") until SERVING; returns the seconds it took.

    Fails early if the server process exits, so a bad flag or model shows at once.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    t0 = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with status {proc.returncode} before SERVING")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - t0
            except grpc.RpcError:
                pass
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"server at {address} not SERVING within {timeout_s:g} s")
            time.sleep(0.2)


def stop_server(proc: subprocess.Popen[bytes], grace_s: float) -> dict[str, Any]:
    """SIGTERM, then wait the server's grace period plus slack; kill if it overruns."""
    if proc.poll() is not None:
        return {"exit_code": proc.returncode, "seconds": 0.0, "clean": False, "killed": False}
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=grace_s + SHUTDOWN_SLACK_S)
        killed = False
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
        killed = True
    seconds = time.monotonic() - t0
    return {
        "exit_code": code,
        "seconds": seconds,
        "clean": code == 0 and not killed,
        "killed": killed,
    }


@dataclass
class Server:
    """A server process started by ``running_server``; ``shutdown`` is set when it stops."""

    proc: subprocess.Popen[bytes]
    address: str
    command: list[str]
    ready_s: float = float("nan")
    shutdown: dict[str, Any] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextlib.contextmanager
def running_server(
    args: Any, log_path: Path, grace_s: float, health_timeout_s: float = HEALTH_TIMEOUT_S
) -> Iterator[Server]:
    """The real ``ocr-server`` as its own process on a free port, SERVING inside the block.

    Its output goes to ``log_path``. However the block ends, the server gets SIGTERM and
    ``grace_s`` (plus slack) to exit; how it exited is left in ``Server.shutdown``.
    """
    port = free_port()
    command = server_command(args, port, grace_s)
    with running_process(command, port, log_path, grace_s, health_timeout_s) as server:
        yield server


#: Run as ``python -c CONFINE CPUS PROGRAM ARGS...``: restrict this process to the CPUs
#: (comma-separated), then become PROGRAM. Affinity set before exec is inherited by every
#: thread the program starts, which setting it on a running server's pid would not be.
CONFINE = (
    "import os, sys; "
    "os.sched_setaffinity(0, [int(c) for c in sys.argv[1].split(',')]); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def confined(command: Sequence[str], cpus: Collection[int]) -> list[str]:
    """``command`` run on ``cpus`` only (``command[0]`` must be a path, as ``server_command``'s)."""
    return [sys.executable, "-c", CONFINE, ",".join(str(c) for c in sorted(cpus)), *command]


def start_process(command: list[str], port: int, log_path: Path) -> Server:
    """Start a gRPC server ``command`` that listens on ``port``; its output goes to ``log_path``.

    Does not wait for it: ``wait_serving`` does, so several can start at once.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    print(f"server pid {proc.pid} on 127.0.0.1:{port}, log {log_path}", flush=True)
    return Server(proc, f"127.0.0.1:{port}", command)


@contextlib.contextmanager
def running_process(
    command: list[str],
    port: int,
    log_path: Path,
    grace_s: float,
    health_timeout_s: float = HEALTH_TIMEOUT_S,
) -> Iterator[Server]:
    """Any gRPC server ``command`` listening on ``port`` with grpc health, as ``running_server``."""
    server = start_process(command, port, log_path)
    proc, address = server.proc, server.address
    try:
        server.ready_s = wait_serving(proc, address, health_timeout_s)
        print(f"server SERVING after {server.ready_s:.1f} s", flush=True)
        yield server
    finally:
        server.shutdown = stop_server(proc, grace_s)
        print(
            f"server stopped: exit status {server.shutdown['exit_code']} after "
            f"{server.shutdown['seconds']:.1f} s",
            flush=True,
        )


# --------------------------------------------------------------------------- report file

REPORT_TITLE = "# Benchmarks"
REPORT_INTRO = (
    "Figures are only comparable as ratios within one run on one machine; re-run the "
    "benchmark (`bench/bench_lines.py`, `bench/bench_pages.py`) rather than comparing with "
    "numbers from elsewhere (see bench/README.md)."
)


def _section_bounds(lines: Sequence[str], heading: str) -> tuple[int, int] | None:
    """Line range [start, end) of the ``## heading`` section, ignoring fenced code blocks.

    A section runs to the next level-2 heading (``## ``; ``###`` and deeper belong to it) or
    to the end of the file.
    """
    start: int | None = None
    fenced = False
    for index, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced or not line.startswith("## "):
            continue
        if start is not None:
            return start, index
        if line[3:].strip() == heading:
            start = index
    return (start, len(lines)) if start is not None else None


def update_markdown_section(path: Path, heading: str, body: Sequence[str]) -> None:
    """Replace the ``## heading`` section of ``path`` with ``body``, or append it.

    The rest of the file (the title, other benchmarks' sections) is kept byte for byte; a
    missing file is created with the common title and introduction.
    """
    section = [f"## {heading}", "", *body]
    while section and not section[-1].strip():
        section.pop()
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
    else:
        lines = [REPORT_TITLE, "", REPORT_INTRO]
    bounds = _section_bounds(lines, heading)
    if bounds is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ["", *section]
    else:
        start, end = bounds
        tail = lines[end:]
        lines = [*lines[:start], *section, *([""] if tail else []), *tail]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
