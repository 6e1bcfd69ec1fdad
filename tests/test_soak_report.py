"""The soak report is written whatever the run gave, including a run with no OK call."""

from __future__ import annotations

from typing import Any

from bench.soak import markdown


def soak_result(**changes: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "command": "python -m bench.soak",
        "machine": {"nproc": 2, "cpu_model": "test"},
        "rate": 25.0,
        "duration_s": 600.0,
        "warmup_s": 60.0,
        "calls": 15000,
        "ok": 15000,
        "errors": {},
        "skipped": 0,
        "achieved_rate": 25.0,
        "p50_ms": 40.0,
        "p99_ms": 120.0,
        "rss_baseline_mib": 400.0,
        "rss_max_after_warmup_mib": 410.0,
        "rss_final_mib": 405.0,
        "rss_last_minute_peak_mib": 408.0,
        "rss_growth_pct": 2.0,
        "minutes": [{"minute": 1, "calls": 1500, "p50_ms": 40.0, "p99_ms": 120.0, "rss_mib": 400}],
        "shutdown": {"exit_code": 0, "seconds": 0.2},
    }
    result.update(changes)
    return result


def test_a_clean_soak_meets_the_target() -> None:
    text = "\n".join(markdown(soak_result()))
    assert "growth **2.00 %** (meets the < 5 % and zero-error target, with 15000 OK calls)" in text


def test_a_soak_where_every_call_failed_is_reported_as_missing_the_target() -> None:
    text = "\n".join(
        markdown(
            soak_result(
                ok=0,
                errors={"UNAVAILABLE": 15000},
                achieved_rate=0.0,
                p50_ms=None,
                p99_ms=None,
                rss_max_after_warmup_mib=None,
                rss_final_mib=None,
                rss_last_minute_peak_mib=None,
                rss_growth_pct=None,
                minutes=[],
            )
        )
    )
    assert "| 15000 | 0 | {'UNAVAILABLE': 15000} | 0 | 0.0 | n/a | n/a |" in text
    assert "growth **n/a %** (misses the < 5 % and zero-error target, with 0 OK calls)" in text


def test_growth_under_five_percent_with_no_ok_call_still_misses() -> None:
    text = "\n".join(markdown(soak_result(ok=0, errors={}, rss_growth_pct=0.5)))
    assert "(misses the < 5 % and zero-error target, with 0 OK calls)" in text
