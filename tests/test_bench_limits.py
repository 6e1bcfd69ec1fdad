"""The benchmarks' raw references follow the batch bounds of the server they measure: the
bounds come from the server's own flag parser over ``--server-args``, and the report says
which idle bound ran."""

from __future__ import annotations

import argparse

import pytest

from bench.bench_lines import _idle_layout, parse_args, reference_rates, summarise
from bench.bench_pages import paired_ratios, ratio_sentence
from bench.common import server_batch_limits
from ocr_core.batching import BatchLimits


def _args(server_args: str) -> argparse.Namespace:
    return argparse.Namespace(server_args=server_args)


def test_no_server_flags_give_the_servers_defaults() -> None:
    assert server_batch_limits(_args("")) == BatchLimits()


def test_server_flags_set_the_bounds() -> None:
    limits = server_batch_limits(
        _args("--queue-capacity 8192 --max-batch-pixels 49152 --idle-max-pixels 0")
    )
    assert limits.max_pixels == 49152
    assert limits.idle_max_pixels is None
    assert limits.queue_capacity == 8192
    assert server_batch_limits(_args("--idle-max-pixels 196608")).idle_max_pixels == 196608


def test_the_report_names_the_idle_bound_that_ran() -> None:
    settings = {"threads": 1, "idle_threads": 2}
    default = _idle_layout({**settings, "idle_max_pixels": BatchLimits().idle_max_pixels})
    assert f"up to {BatchLimits().idle_max_pixels} padded pixels" in default
    assert "at any width" in _idle_layout({**settings, "idle_max_pixels": None})
    assert "up to 49152 padded pixels" in _idle_layout({**settings, "idle_max_pixels": 49152})
    assert "no idle session" in _idle_layout({"threads": 1, "idle_threads": 0})


def test_bench_lines_refuses_bad_load_flags_with_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run that would only fail after minutes (no concurrency-1 passes: a division by
    zero at the report) is refused before anything starts."""
    assert parse_args([]).latency_passes == 2
    bad_flags = (
        ["--latency-passes", "0"],
        ["--concurrency", "0"],
        ["--modes", "unary-0"],
        ["--bracket-from", "-1"],
        ["--bracket-duration", "0"],
    )
    for bad in bad_flags:
        with pytest.raises(SystemExit) as info:
            parse_args(bad)
        assert info.value.code == 2
    assert "--latency-passes must be at least 1" in capsys.readouterr().err


def _level(started: float, ended: float, lines_per_s: float) -> dict:
    return {
        "mode": "stream",
        "concurrency": 64,
        "started": started,
        "ended": ended,
        "lines_per_s": lines_per_s,
    }


def test_a_level_is_compared_with_the_raw_windows_around_it() -> None:
    windows = [
        {"time": 10.0, "lines_per_s": 80.0},  # the repeat's raw limit
        {"time": 30.0, "lines_per_s": 90.0},
        {"time": 50.0, "lines_per_s": 100.0},
    ]
    levels = [_level(12, 20, 0), _level(31, 40, 0), _level(52, 60, 0)]
    reference_rates(levels, windows)
    # between two windows: their mean; after the last: that one alone
    assert [lv["raw_ref_lines_per_s"] for lv in levels] == [85.0, 95.0, 100.0]


def test_ratios_use_the_bracketing_windows_and_old_results_the_repeat_limit() -> None:
    """x raw follows the host: a server at 0.9x of a host that slowed from 100 to 80
    lines/s reads 0.9x, not 0.8x as over the repeat's first raw limit."""
    raw = {"limit_lines_per_s": 100.0, "modes": []}
    server = {
        "batch_size_counts": {},
        "mean_batch": 1,
        "padding_waste": 0,
        "queue_wait_ms_mean": 0,
        "worker_busy": 1,
        "inference_ms_per_line": 1,
    }
    common = {
        "latency_ms": {"p50": 1, "p95": 1, "p99": 1},
        "cycles": 1,
        "server": server,
        "cpu_ms_per_line": {"server": 1, "load_generator": 1},
        "cpu_cores": {"server": 1, "load_generator": 0, "other": 0},
        "peak_rss_kib": 1,
        "peak_rss_window_only": True,
        "errors": 0,
    }
    bracketed = {**_level(0, 1, 72.0), **common, "raw_ref_lines_per_s": 80.0}
    old = {**_level(0, 1, 72.0), **common}
    summary = summarise({"repeats": [{"raw": raw, "levels": [bracketed]}]})
    assert summary["levels"][0]["ratio"] == pytest.approx(0.9)
    summary = summarise({"repeats": [{"raw": raw, "levels": [old]}]})
    assert summary["levels"][0]["ratio"] == pytest.approx(0.72)


def test_pages_ratio_pairs_each_repeats_windows() -> None:
    """A host that slows by a fifth halfway through moves both sides of a repeat alike."""
    server = {"pages_per_s": [2.0, 1.6, 1.62], "pages_per_s_median": 1.62}
    rapid = {"pages_per_s": [1.0, 0.8, 0.9], "pages_per_s_median": 0.9}
    assert paired_ratios(server, rapid) == pytest.approx([2.0, 2.0, 1.8])
    sentence = ratio_sentence(server, rapid)
    assert sentence.startswith("**2.00x**, the median of the repeats' own ratios")
    assert "(2.00 / 2.00 / 1.80)" in sentence and "the medians' ratio is 1.80x" in sentence
