"""bench.mixed_callers: its callers against the real server, the width split, the statistics
and the command line, so the bench that set ``--idle-max-pixels``' default keeps working."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import mixed_callers
from tests.conftest import ServerProcess, png, render_line


def test_the_callers_run_against_the_real_server_and_count_only_the_window(
    server: ServerProcess,
) -> None:
    wide = png(render_line("a long line of text for the wide caller"))
    narrow = png(render_line("short"))
    stats = mixed_callers.run_callers(
        server.address, {"A": ([wide], 0.01), "B": ([narrow], 0.0)}, 0.3, 1.0, seed=1
    )
    assert set(stats) == {"A", "B"}
    for caller in stats.values():
        assert caller.calls >= 1
        assert 0 < caller.p50_ms <= caller.p95_ms
        assert caller.mean_ms > 0
    # B never pauses, so in the same window it makes more calls than A.
    assert stats["B"].calls > stats["A"].calls


def test_a_failing_caller_fails_the_window(server: ServerProcess) -> None:
    with pytest.raises(RuntimeError, match="a caller failed"):
        mixed_callers.run_callers(server.address, {"A": ([b"not an image"], 0.0)}, 0.0, 0.5, 1)


def test_lines_are_split_by_their_width_at_the_model_height() -> None:
    # 100 x 10 is 480 px wide at height 48; 300 x 10 is 1440; 1024 exactly stays narrow.
    sizes = [(100, 10), (300, 10), (1024, 48), (2100, 48)]
    assert mixed_callers.split_by_width(sizes, 48, 1024) == ([1, 3], [0, 2])


def test_caller_stats() -> None:
    stats = mixed_callers.caller_stats([30.0, 10.0, 20.0, 40.0])
    assert stats.calls == 4
    assert stats.p50_ms == pytest.approx(25.0)
    assert stats.mean_ms == pytest.approx(25.0)
    assert 30.0 < stats.p95_ms <= 40.0
    assert math.isnan(mixed_callers.caller_stats([]).mean_ms)


def test_the_drawn_line_is_wider_than_the_default_idle_bound() -> None:
    data = mixed_callers.rendered_line(5)
    assert mixed_callers.width_at(mixed_callers.image_size(data), 48) > 2048
    assert mixed_callers.image_size(png(np.zeros((10, 30), np.uint8))) == (30, 10)


def test_the_report_has_a_row_per_window() -> None:
    args = mixed_callers.parse_args(["--bounds", "98304,0", "--rounds", "1"])
    a = mixed_callers.CallerStats(3, 50.0, 60.0, 55.0)
    b = mixed_callers.CallerStats(9, 20.0, 30.0, 22.0)
    windows = [
        mixed_callers.Window("real", 98304, 1, a, b),
        mixed_callers.Window("real", 0, 1, a, b),
    ]
    text = mixed_callers.report(windows, args, "note")
    assert "| real | 98304 | 1 | 3 | 50.0 | 60.0 | 55.0 | 9 | 20.0 | 30.0 | 22.0 |" in text
    assert "| real | 0 (none) | 1 |" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["--bounds", "x"],
        ["--bounds", "-1"],
        ["--scenarios", "other"],
        ["--rounds", "0"],
        ["--duration", "0"],
        ["--narrow-pause-ms", "-1"],
    ],
)
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        mixed_callers.parse_args(argv)
    assert exc.value.code == 2


def test_arguments() -> None:
    args = mixed_callers.parse_args(["--bounds", "49152,0", "--scenarios", "rendered"])
    assert args.bounds == [49152, 0] and args.scenarios == ["rendered"]
