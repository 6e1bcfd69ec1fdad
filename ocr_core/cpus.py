"""Which CPU each inference thread runs on: one of its own, when there are enough.

Why pin at all: under load on a 2-core machine, each batcher thread spends most of its time
in ONNX Runtime with the GIL released, while the event loop and the decode threads wake up
between its runs. Left to the scheduler, a v6 tiny server kept its cores busy 1.78-1.83 of 2
under 64 callers (our guess: woken threads land on a core an inference thread is using while
the other idles); with each inference thread on a core of its own, 1.88-1.90, and it answered
3-10 % more lines per second (docs/benchmarks.md, "Levers measured"). The raw ONNX Runtime
limit does not move with pinning: it has nothing else to schedule.

Only the batcher's own threads are pinned; ONNX Runtime's pool threads (the idle session's
second thread), the event loop and the decode threads stay free to go where a core is idle.
And only while no page is being read: with page detection running beside them, pinned
recognizer threads cost a v6 small server about a tenth of its pages/s (0.94 -> 0.83 in an
A/B), so the engine frees them for as long as any page is in flight (``PinSwitch``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

#: ``--pin-workers`` values: ``auto`` pins when the process's inference threads and its CPUs
#: pair up one to one, ``on`` pins round-robin whatever the counts, ``off`` never pins.
PIN_MODES = ("auto", "on", "off")


#: ``--sched-batch`` values: ``auto`` when the inference threads are pinned one per CPU (the
#: layout it was measured on), ``on`` always, ``off`` never.
SCHED_BATCH_MODES = ("auto", "on", "off")


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask), in order; [] where unknown."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux: no affinity API
        return []


def plan_worker_cpus(
    mode: str,
    workers: Sequence[int],
    threads: int,
    cpus: Sequence[int],
) -> tuple[list[list[int]] | None, str]:
    """One CPU per batcher thread of each model, or None; with the reason, for the log.

    ``workers`` are the batcher threads of each served model, in order; ``threads`` the
    intra-op threads of each worker session. ``auto`` pins only the layout it was measured
    on, which is also the one that cannot crowd: one intra-op thread per session and exactly
    one batcher thread per CPU. With fewer threads than CPUs it would put them on the first
    CPUs, and so would every other server process sharing the CPU set (several processes
    with ``--workers 1`` on a node, say), all on the same cores.
    """
    if mode not in PIN_MODES:
        raise ValueError(f"pin mode must be one of {PIN_MODES}, got {mode!r}")
    total = sum(workers)
    if mode == "off":
        return None, "off"
    if not cpus:
        return None, "this platform has no CPU affinity API"
    if mode == "auto":
        if threads != 1:
            return None, f"auto: sessions have {threads} intra-op threads"
        if total != len(cpus):
            return None, f"auto: {total} inference threads for {len(cpus)} CPUs"
    plan: list[list[int]] = []
    next_cpu = 0
    for count in workers:
        plan.append([cpus[(next_cpu + i) % len(cpus)] for i in range(count)])
        next_cpu += count
    return plan, mode


def set_thread_cpus(thread_id: int, cpus: set[int]) -> bool:
    """Restrict a thread (native id; 0 = the calling one) to ``cpus``; False where refused."""
    try:
        os.sched_setaffinity(thread_id, cpus)
    except (AttributeError, OSError) as exc:
        log.warning("could not set inference thread %d to CPUs %s: %s", thread_id, cpus, exc)
        return False
    return True


class ThreadPins:
    """Pins the threads of one pool to ``cpus``, one each in the order they start.

    ``pin_this_thread`` is the pool's thread initializer; ``set_active`` frees the threads
    (back to the CPUs they had) or pins them again, from any thread; threads that start
    later follow the latest call.
    """

    def __init__(self, cpus: Sequence[int]) -> None:
        self._cpus = list(cpus)
        self._lock = threading.Lock()
        self._active = True
        #: (native thread id, its CPU, the CPUs it had before) of each thread started.
        self._threads: list[tuple[int, int, set[int]]] = []

    def pin_this_thread(self) -> None:
        with self._lock:
            if len(self._threads) >= len(self._cpus):
                return  # more threads than CPUs planned: leave it free
            cpu = self._cpus[len(self._threads)]
            self._threads.append((threading.get_native_id(), cpu, os.sched_getaffinity(0)))
            if self._active:
                set_thread_cpus(0, {cpu})

    def set_active(self, active: bool) -> None:
        with self._lock:
            if active == self._active:
                return
            self._active = active
            for thread_id, cpu, before in self._threads:
                set_thread_cpus(thread_id, {cpu} if active else before)


class PinSwitch:
    """Frees pinned threads while any page is in flight and pins them again after.

    ``set_pinned(False)`` is called when the first page starts and ``set_pinned(True)`` when
    the last one ends; entering and leaving happen on one thread (the event loop).
    """

    def __init__(self, set_pinned: Callable[[bool], None]) -> None:
        self._set_pinned = set_pinned
        self._pages = 0

    def enter(self) -> None:
        self._pages += 1
        if self._pages == 1:
            self._set_pinned(False)

    def leave(self) -> None:
        self._pages -= 1
        if self._pages == 0:
            self._set_pinned(True)


def wants_sched_batch(mode: str, workers_pinned: bool) -> bool:
    """Whether the server's threads should run under ``SCHED_BATCH`` (``schedule_as_batch``)."""
    if mode not in SCHED_BATCH_MODES:
        raise ValueError(f"sched-batch mode must be one of {SCHED_BATCH_MODES}, got {mode!r}")
    return mode == "on" or (mode == "auto" and workers_pinned)


def schedule_as_batch() -> bool:
    """Put the calling thread, and every thread it starts from now on, under ``SCHED_BATCH``.

    Why: with an inference thread pinned to every CPU, each wake-up of the event loop or of
    gRPC's threads (a message in, a result back) preempted an inference thread in mid-run,
    about 1.4 context switches per line on each, and left the CPUs idle ~3 % of the time
    (docs/benchmarks.md, "Levers measured"). A ``SCHED_BATCH`` thread that wakes does not
    preempt the running one: it runs when that one's time slice ends or a CPU is free, and
    then does more work per wake-up. It changes nothing on an idle CPU, so a lone call is
    not delayed. Needs no privilege (the nice value stays). Threads inherit the policy of
    the thread that starts them; threads already running keep theirs, which the server
    relies on: ONNX Runtime's intra-op pools, made while the models load, wake to run
    parallel work and should preempt (with them under ``SCHED_BATCH`` too, pages/s fell
    ~2 % in an A/B). A policy other than the default that the process was started with
    (``chrt``) is left as it is. False where the thread does not run under ``SCHED_BATCH``
    afterwards: another policy kept, no such policy on this platform, or refused.
    """
    try:
        current = os.sched_getscheduler(0)
        if current == os.SCHED_BATCH:
            return True
        if current != os.SCHED_OTHER:
            log.info("scheduling policy %d set at start kept; --sched-batch not applied", current)
            return False
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError) as exc:
        log.warning("could not schedule the server's threads as SCHED_BATCH: %s", exc)
        return False
    return True
