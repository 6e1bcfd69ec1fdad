"""The benchmarks' raw references follow the batch bounds of the server they measure: the
bounds come from the server's own flag parser over ``--server-args``, and the report says
which idle bound ran."""

from __future__ import annotations

import argparse

import pytest

from bench.bench_lines import _idle_layout, parse_args
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
    for bad in (["--latency-passes", "0"], ["--concurrency", "0"], ["--modes", "unary-0"]):
        with pytest.raises(SystemExit) as info:
            parse_args(bad)
        assert info.value.code == 2
    assert "--latency-passes must be at least 1" in capsys.readouterr().err
