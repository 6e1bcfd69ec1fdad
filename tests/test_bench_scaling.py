"""bench.scaling: its load processes against the real server, the CPU confinement of its
server processes, and the layout / CPU-list parsing, so the bench behind the many-core
figures in docs/benchmarks.md keeps working on a 2-core machine too."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import scaling
from bench.common import confined
from tests.conftest import ServerProcess, png, render_line


def test_cpu_lists_are_read_as_taskset_writes_them() -> None:
    assert scaling.parse_cpus("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11]
    assert scaling.parse_cpus("5") == [5]
    for bad in ("", "3-1", "-1", "a"):
        with pytest.raises(ValueError):
            scaling.parse_cpus(bad)


def test_a_layout_must_use_every_server_cpu() -> None:
    assert scaling.parse_layout("4x4", 16) == (4, 4)
    assert scaling.parse_layout("16X1", 16) == (16, 1)
    with pytest.raises(ValueError, match="needs 8 CPUs; the servers have 16"):
        scaling.parse_layout("2x4", 16)
    with pytest.raises(ValueError, match="not PxW"):
        scaling.parse_layout("16", 16)


def test_callers_are_split_evenly_over_load_processes() -> None:
    assert scaling.split_evenly(256, 4) == [64, 64, 64, 64]
    assert scaling.split_evenly(10, 4) == [3, 3, 2, 2]
    assert sum(scaling.split_evenly(7, 3)) == 7


def test_load_cpus_are_taken_from_the_servers() -> None:
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        pytest.skip("needs 2 usable CPUs")
    last = usable[-1]
    args = scaling.parse_args(["--load-cpus", str(last), "--layouts", f"1x{len(usable) - 1}"])
    assert args.load_cpu_list == [last]
    assert args.server_cpus == usable[:-1]
    assert args.layout_list == [(1, len(usable) - 1)]
    with pytest.raises(SystemExit):
        scaling.parse_args(["--load-cpus", ",".join(map(str, usable))])


def test_a_confined_command_runs_on_its_cpus_only() -> None:
    cpu = sorted(os.sched_getaffinity(0))[0]
    command = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
    out = subprocess.run(confined(command, [cpu]), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"[{cpu}]"


@pytest.mark.parametrize("mode", ["unary-1", "stream", "unary-2"])
def test_a_load_process_counts_only_lines_ending_in_its_window(
    server: ServerProcess, tmp_path: Path, mode: str
) -> None:
    paths = []
    for i, text in enumerate(["scaling one", "scaling two", "three"]):
        path = tmp_path / f"{i}.png"
        path.write_bytes(png(render_line(text)))
        paths.append(str(path))
    job = scaling.LoadJob((server.address,), tuple(paths), mode, "", 3, time.time(), 0.3, 1.0, 30.0)
    t0 = time.time()
    figures = scaling.run_load(job)
    assert figures["errors"] == []
    assert figures["lines"] >= 1
    assert len(figures["call_ms"]) >= 1
    # Only calls that end inside the 1 s window count: those of the 0.3 s warm-up do not.
    assert len(figures["call_ms"]) < figures["calls_answered"]
    assert figures["cpu_s"] > 0
    assert time.time() - t0 >= 1.3


def test_a_load_process_reports_refused_calls_as_errors(
    server: ServerProcess, tmp_path: Path
) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(b"not an image")
    for mode in ("unary-1", "stream"):
        job = scaling.LoadJob(
            (server.address,), (str(path),), mode, "", 1, time.time(), 0.0, 0.5, 30.0
        )
        figures = scaling.run_load(job)
        assert figures["lines"] == 0
        assert figures["errors"], mode


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 usable CPUs")
def test_a_supervised_layout_is_measured_on_its_server_processes() -> None:
    cpus = sorted(os.sched_getaffinity(0))[:2]
    with scaling.supervised_server("", 2, 1, cpus, "test") as target:
        assert len(target.addresses) == 1
        assert len(set(target.pids)) == 2
        for pid in target.pids:  # the children, not the supervisor, which holds no model
            assert Path(f"/proc/{pid}/cmdline").read_bytes().count(b"--processes\x001") == 1
