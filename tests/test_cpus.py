"""Pinning the batcher's inference threads to CPUs: the plan, and that threads follow it."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from ocr_core.batching import BatchLimits, MicroBatcher
from ocr_core.cpus import (
    PinSwitch,
    plan_worker_cpus,
    set_thread_cpus,
    usable_cpus,
    wants_sched_batch,
)
from ocr_core.ctc import LineText
from ocr_core.preprocess import PreparedLine
from tests.test_batching import HEIGHT, line

needs_affinity = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="no CPU affinity API on this platform"
)


def test_auto_pins_one_cpu_per_thread_across_models_in_order() -> None:
    plan, why = plan_worker_cpus("auto", [2, 1], 1, [0, 1, 5])
    assert plan == [[0, 1], [5]] and why == "auto"


def test_auto_leaves_threads_free_where_pinning_was_not_measured_or_would_crowd() -> None:
    assert plan_worker_cpus("auto", [2], 1, [0])[0] is None  # more threads than CPUs
    assert plan_worker_cpus("auto", [2, 2], 1, [0, 1, 2])[0] is None
    # Fewer: every process like this one would crowd onto the first CPUs.
    plan, why = plan_worker_cpus("auto", [1], 1, [0, 1])
    assert plan is None and why == "auto: 1 inference threads for 2 CPUs"
    assert plan_worker_cpus("auto", [1, 1], 2, [0, 1])[0] is None  # multi-threaded sessions
    plan, why = plan_worker_cpus("auto", [2], 1, [])
    assert plan is None and "affinity" in why


def test_on_pins_round_robin_whatever_the_counts_and_off_never_pins() -> None:
    assert plan_worker_cpus("on", [2, 2], 2, [4, 7])[0] == [[4, 7], [4, 7]]
    assert plan_worker_cpus("on", [3], 1, [5])[0] == [[5, 5, 5]]
    assert plan_worker_cpus("off", [1], 1, [0, 1]) == (None, "off")
    with pytest.raises(ValueError, match="pin mode"):
        plan_worker_cpus("always", [1], 1, [0])


def test_a_batcher_needs_one_cpu_per_worker_thread() -> None:
    with pytest.raises(ValueError, match="2 CPUs given for 1 worker"):
        MicroBatcher("m", lambda i, lines: [], 1, HEIGHT, BatchLimits(), cpus=[0, 1])


@needs_affinity
async def test_each_worker_thread_runs_on_the_cpu_it_was_given() -> None:
    cpus = usable_cpus()
    given = [cpus[0], cpus[-1]]
    both_running = threading.Barrier(2, timeout=10)
    seen: list[frozenset[int]] = []

    def infer(worker: int, lines: Sequence[PreparedLine]) -> list[LineText]:
        seen.append(frozenset(os.sched_getaffinity(0)))
        both_running.wait()  # two batches at once: the pool has made both of its threads
        return [LineText(str(x.width), 1.0, ()) for x in lines]

    batcher = MicroBatcher("m", infer, 2, HEIGHT, BatchLimits(), cpus=given)
    batcher.start()
    try:
        first = batcher.recognize([line(64)])
        second = batcher.recognize([line(500)])
        await asyncio.wait_for(asyncio.gather(first, second), timeout=20)
    finally:
        await batcher.aclose()
    assert sorted(seen, key=sorted) == sorted(({given[0]}, {given[1]}), key=sorted)


@needs_affinity
def test_a_cpu_the_os_refuses_leaves_the_thread_as_it_was(caplog) -> None:
    result: list[tuple[bool, set[int]]] = []

    def attempt() -> None:
        before = os.sched_getaffinity(0)
        result.append((set_thread_cpus(0, {1 << 20}), before == os.sched_getaffinity(0)))

    with caplog.at_level(logging.WARNING, logger="ocr_core.cpus"):
        thread = threading.Thread(target=attempt)
        thread.start()
        thread.join()
    assert result == [(False, True)]
    assert "could not set inference thread 0 to CPUs {1048576}" in caplog.text


@needs_affinity
async def test_the_idle_run_is_not_held_to_a_pinned_workers_cpu() -> None:
    cpus = usable_cpus()
    seen: list[set[int]] = []

    def infer_idle(lines: Sequence[PreparedLine]) -> list[LineText]:
        seen.append(os.sched_getaffinity(0))
        return [LineText(str(x.width), 1.0, ()) for x in lines]

    def infer(worker: int, lines: Sequence[PreparedLine]) -> list[LineText]:
        raise AssertionError("a lone line runs on the idle function")

    batcher = MicroBatcher(
        "m", infer, 2, HEIGHT, BatchLimits(), infer_idle=infer_idle, cpus=[cpus[0], cpus[0]]
    )
    batcher.start()
    try:
        await asyncio.wait_for(batcher.recognize([line(64)]), timeout=20)
    finally:
        await batcher.aclose()
    assert seen == [set(cpus)]


def test_the_switch_frees_threads_while_any_page_is_in_flight() -> None:
    calls: list[bool] = []
    pins = PinSwitch(calls.append)
    pins.enter()
    pins.enter()
    pins.leave()
    assert calls == [False]
    pins.leave()
    pins.enter()
    pins.leave()
    assert calls == [False, True, False, True]


@needs_affinity
async def test_freed_worker_threads_get_their_cpus_back_and_are_pinned_again() -> None:
    cpus = usable_cpus()
    threads: list[int] = []

    def infer(worker: int, lines: Sequence[PreparedLine]) -> list[LineText]:
        threads.append(threading.get_native_id())
        return [LineText(str(x.width), 1.0, ()) for x in lines]

    batcher = MicroBatcher("m", infer, 1, HEIGHT, BatchLimits(), cpus=[cpus[-1]])
    batcher.start()
    try:
        await batcher.recognize([line(64)])
        assert os.sched_getaffinity(threads[0]) == {cpus[-1]}
        batcher.set_pinned(False)
        assert os.sched_getaffinity(threads[0]) == set(cpus)
        await batcher.recognize([line(64)])  # the same thread, still free
        assert threads[1] == threads[0] and os.sched_getaffinity(threads[0]) == set(cpus)
        batcher.set_pinned(True)
        assert os.sched_getaffinity(threads[0]) == {cpus[-1]}
    finally:
        await batcher.aclose()


def test_sched_batch_auto_follows_pinning_and_on_or_off_do_not() -> None:
    assert wants_sched_batch("auto", workers_pinned=True)
    assert not wants_sched_batch("auto", workers_pinned=False)
    assert wants_sched_batch("on", workers_pinned=False)
    assert not wants_sched_batch("off", workers_pinned=True)
    with pytest.raises(ValueError, match="sched-batch mode"):
        wants_sched_batch("yes", workers_pinned=True)


def _run_in_child(code: str) -> str:
    """Run ``code`` in a fresh interpreter (a scheduling policy stays with the process that set
    it, so these tests keep it out of pytest's); its standard output."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


SCHED_PROBE = """
import os, threading
from ocr_core.cpus import schedule_as_batch

go = threading.Event()
policies = {}

def before():  # running before the call, waits until after it
    go.wait()
    policies["before"] = os.sched_getscheduler(0)

def after():
    policies["after"] = os.sched_getscheduler(0)

old = threading.Thread(target=before)
old.start()
policies["set"] = schedule_as_batch()
policies["main"] = os.sched_getscheduler(0)
policies["again"] = schedule_as_batch()  # already so: nothing to do
go.set()
old.join()
new = threading.Thread(target=after)
new.start()
new.join()
print(sorted(policies.items()))
"""


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="no SCHED_BATCH on this platform")
def test_batch_policy_covers_the_caller_and_threads_it_starts_not_those_running() -> None:
    output = _run_in_child(SCHED_PROBE)
    batch = os.SCHED_BATCH
    other = os.SCHED_OTHER
    expected = [
        ("after", batch),
        ("again", True),
        ("before", other),
        ("main", batch),
        ("set", True),
    ]
    assert output.strip() == str(expected)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="no SCHED_IDLE on this platform")
def test_a_policy_set_at_start_other_than_the_default_is_kept() -> None:
    probe = (
        "import os\n"
        "from ocr_core.cpus import schedule_as_batch\n"
        "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
        "print(schedule_as_batch(), os.sched_getscheduler(0) == os.SCHED_IDLE)\n"
    )
    assert _run_in_child(probe).split() == ["False", "True"]
