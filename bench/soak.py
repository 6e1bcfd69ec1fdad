"""Soak: a server under steady load (~70 % of capacity) for minutes; RSS growth and errors.

Run: ``.venv/bin/python -m bench.soak --duration 600 --rate 25`` (``make soak``).

An open-loop load (calls sent at a fixed rate whatever the answers do, like real traffic)
of single-line ``RecognizeLines`` calls with the real line crops, from this process against
a server process. Every ``--sample-s`` seconds the server's RSS is read from /proc. RSS
swings by ~10 % from sample to sample (ONNX Runtime and the allocator take and give back
buffers as batch shapes change), so growth compares peaks, not samples: the peak of the last
minute against the peak of the first minute after ``--warmup`` seconds. Writes a
JSON result to bench/results and the "Soak" section of docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import grpc

from bench.common import (
    DEFAULT_DATA,
    REPO_ROOT,
    RESULTS_DIR,
    add_server_flags,
    exact_command,
    load_lines,
    machine_info,
    percentile,
    proc_status_kib,
    repo_path,
    running_server,
    update_markdown_section,
)
from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc

# The server's default --grace-s: how long SIGTERM may take at the end (plus slack).
GRACE_S = 10.0


class Load:
    """Sends calls at a fixed rate on a background thread and records every outcome.

    Open loop: a call is due every ``1 / rate`` seconds whatever the answers do. A due call
    is not sent (it counts in ``skipped``) while ``max_in_flight`` calls are unanswered.
    """

    def __init__(self, stub: Any, images: Sequence[bytes], rate: float, max_in_flight: int):
        self._stub = stub
        self._images = images
        self._interval = 1.0 / rate
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._answered = threading.Condition()  # guards _in_flight and results
        self.results: list[tuple[float, float, str]] = []  # (sent at, latency s, code)
        self.skipped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop sending, then wait (at most ``timeout_s``) until every call sent is answered."""
        self._stop.set()
        self._thread.join()
        with self._answered:
            self._answered.wait_for(lambda: self._in_flight == 0, timeout_s)

    def _run(self) -> None:
        next_at = time.monotonic()
        index = 0
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self._interval
            with self._answered:
                if self._in_flight >= self._max_in_flight:
                    self.skipped += 1
                    continue
                self._in_flight += 1
            image = ocr_pb2.Image(data=self._images[index % len(self._images)])
            index += 1
            sent = time.monotonic()
            future = self._stub.RecognizeLines.future(
                ocr_pb2.RecognizeLinesRequest(images=[image]), timeout=60
            )
            future.add_done_callback(lambda f, sent=sent: self._done(f, sent))

    def _done(self, future: Any, sent: float) -> None:
        latency = time.monotonic() - sent
        try:
            future.result()
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
        except grpc.FutureCancelledError:
            code = "CANCELLED"
        with self._answered:
            self.results.append((sent, latency, code))
            self._in_flight -= 1
            self._answered.notify_all()


def run(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    images = [line.data for line in load_lines(repo_path(args.data), "soak")]
    log_path = RESULTS_DIR / f"soak-{stamp}-server.log"
    samples: list[tuple[float, int]] = []  # (seconds since the load started, RSS KiB)
    with (
        running_server(args, log_path, GRACE_S, health_timeout_s=300) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        load = Load(ocr_pb2_grpc.OcrServiceStub(channel), images, args.rate, args.in_flight)
        start = time.monotonic()
        load.start()
        while (elapsed := time.monotonic() - start) < args.duration:
            rss = proc_status_kib(server.pid, "VmRSS") or 0
            samples.append((elapsed, rss))
            print(f"  {elapsed:6.0f} s  RSS {rss / 1024:7.1f} MiB", flush=True)
            time.sleep(args.sample_s)
        load.stop()
    after = [kib for t, kib in samples if t >= args.warmup]
    first = [kib for t, kib in samples if args.warmup <= t < args.warmup + 60]
    last = [kib for t, kib in samples if t >= samples[-1][0] - 60] if samples else []
    baseline = max(first) if first else 0
    # (seconds since the load started, latency s, code), in the order sent
    results = sorted((sent - start, latency, code) for sent, latency, code in load.results)
    latencies = sorted(lat for _, lat, code in results if code == "OK")
    errors = Counter(code for _, _, code in results if code != "OK")
    minutes = []
    for m in range(int(args.duration // 60) + 1):
        window = sorted(lat for t, lat, c in results if c == "OK" and m * 60 <= t < (m + 1) * 60)
        rss = [kib for t, kib in samples if m * 60 <= t < (m + 1) * 60]
        if window and rss:
            minutes.append(
                {
                    "minute": m + 1,
                    "calls": len(window),
                    "p50_ms": percentile(window, 50) * 1e3,
                    "p99_ms": percentile(window, 99) * 1e3,
                    "rss_mib": max(rss) / 1024,
                }
            )
    return {
        "command": exact_command("bench.soak"),
        "machine": machine_info(),
        "model": args.model,
        "rate": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "calls": len(results),
        "ok": len(latencies),
        "errors": dict(errors),
        "skipped": load.skipped,
        "achieved_rate": len(latencies) / args.duration,
        "p50_ms": percentile(latencies, 50) * 1e3 if latencies else None,
        "p99_ms": percentile(latencies, 99) * 1e3 if latencies else None,
        "rss_baseline_mib": baseline / 1024,
        "rss_max_after_warmup_mib": max(after) / 1024 if after else None,
        "rss_final_mib": samples[-1][1] / 1024 if samples else None,
        "rss_last_minute_peak_mib": max(last) / 1024 if last else None,
        "rss_growth_pct": (max(last) - baseline) / baseline * 100 if baseline and last else None,
        "rss_mean_mib": statistics.fmean(kib for _, kib in samples) / 1024 if samples else None,
        "minutes": minutes,
        "shutdown": server.shutdown,
        "server_log": str(log_path.relative_to(REPO_ROOT)),
    }


def _num(value: float | None, spec: str) -> str:
    """``value`` formatted, or "n/a" when the run gave none (no OK call, too short a run)."""
    return "n/a" if value is None else format(value, spec)


def markdown(result: dict[str, Any]) -> list[str]:
    growth = result["rss_growth_pct"]
    meets = growth is not None and growth < 5 and result["ok"] > 0 and not result["errors"]
    verdict = "meets" if meets else "misses"
    lines = [
        f"- Command: `{result['command']}`",
        f"- Machine: {result['machine'].get('nproc', '?')} usable cores, "
        f"{result['machine'].get('cpu_model', '')}",
        f"- Load: {result['rate']:g} single-line RecognizeLines calls/s to model "
        f"{result.get('model', '?')}, open loop, real line crops, for {result['duration_s']:g} s; "
        f"warm-up {result['warmup_s']:g} s.",
        "",
        "| calls | OK | errors | not sent (in-flight cap) | achieved lines/s | p50 ms | p99 ms |",
        "|---:|---:|---|---:|---:|---:|---:|",
        f"| {result['calls']} | {result['ok']} | {result['errors'] or 'none'} | "
        f"{result['skipped']} | {result['achieved_rate']:.1f} | {_num(result['p50_ms'], '.0f')} | "
        f"{_num(result['p99_ms'], '.0f')} |",
        "",
        f"RSS: peak of the first minute after warm-up {result['rss_baseline_mib']:.1f} MiB, "
        f"peak of the last minute {_num(result['rss_last_minute_peak_mib'], '.1f')} MiB: "
        f"growth **{_num(growth, '.2f')} %** ({verdict} the < 5 % and zero-error target, "
        f"with {result['ok']} OK calls); largest sample after warm-up "
        f"{_num(result['rss_max_after_warmup_mib'], '.1f')} MiB, final "
        f"{_num(result['rss_final_mib'], '.1f')} MiB.",
        "",
        "| minute | calls | p50 ms | p99 ms | peak RSS MiB |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {m['minute']} | {m['calls']} | {m['p50_ms']:.0f} | {m['p99_ms']:.0f} | "
            f"{m['rss_mib']:.1f} |"
            for m in result["minutes"]
        ),
        "",
        f"Shutdown after the soak: exit {result['shutdown']['exit_code']} in "
        f"{result['shutdown']['seconds']:.1f} s.",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    p.add_argument("--rate", type=float, default=25.0, help="calls (lines) per second")
    p.add_argument("--in-flight", type=int, default=64, help="most unanswered calls")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline")
    p.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period")
    p.add_argument("--data", default=DEFAULT_DATA, help="evaluation set (repo-relative)")
    p.add_argument("--model", default="ppocr-v6-small")
    add_server_flags(p)
    p.add_argument("--out", default="docs/reliability.md", help="report to update")
    args = p.parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result = run(args, stamp)
    out_json = RESULTS_DIR / f"soak-{stamp}.json"
    out_json.write_text(json.dumps(result, indent=2))
    update_markdown_section(repo_path(args.out), "Soak", markdown(result))
    print("\n".join(markdown(result)))
    print(f"wrote {out_json.relative_to(REPO_ROOT)} and {args.out}")
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
