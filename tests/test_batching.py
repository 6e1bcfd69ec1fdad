"""Unit tests of the micro-batcher: pure batch planning, then event-gated behaviour.

The gated tests use a fake inference function that blocks its worker thread on a
``threading.Event`` until the test releases it, so ordering, cancellation, deadlines and
queue-full are tested deterministically, without sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

from ocr_core.batching import BatchLimits, MicroBatcher, next_batch, plan_batch, runs_on_idle
from ocr_core.ctc import LineText
from ocr_core.errors import (
    DeadlineExpired,
    InferenceFailed,
    InvalidInput,
    Overloaded,
    ShuttingDown,
)
from ocr_core.preprocess import PreparedLine

HEIGHT = 48


@dataclass
class Item:
    """Stands in for PendingLine in the pure planning tests (they read only these fields)."""

    name: str
    bucket: int
    enqueued_at: float = 0.0

    @property
    def cost(self) -> int:
        return self.bucket * HEIGHT


def names(items: Sequence[Item]) -> list[str]:
    return [i.name for i in items]


# ---------------------------------------------------------------- pure planning


def test_plan_takes_only_the_requested_bucket_in_arrival_order() -> None:
    pending = [Item("a", 64), Item("b", 128), Item("c", 64), Item("d", 64)]
    batch, rest, full = plan_batch(pending, 64, max_lines=8, max_pixels=10**9)  # type: ignore[arg-type]
    assert names(batch) == ["a", "c", "d"]
    assert names(rest) == ["b"]
    assert not full


def test_plan_stops_at_max_lines_and_keeps_the_rest_in_order() -> None:
    pending = [Item(str(i), 64) for i in range(5)]
    batch, rest, full = plan_batch(pending, 64, max_lines=3, max_pixels=10**9)  # type: ignore[arg-type]
    assert names(batch) == ["0", "1", "2"]
    assert names(rest) == ["3", "4"]
    assert full


def test_plan_stops_at_max_pixels() -> None:
    pending = [Item(str(i), 100) for i in range(5)]
    batch, rest, full = plan_batch(pending, 100, 16, max_pixels=2 * 100 * HEIGHT + 1)  # type: ignore[arg-type]
    assert names(batch) == ["0", "1"]
    assert names(rest) == ["2", "3", "4"]
    assert full


@pytest.mark.parametrize(
    ("max_lines", "max_pixels"), [(2, 10**9), (16, 2 * 100 * HEIGHT + 1)], ids=["lines", "pixels"]
)
def test_a_full_plan_keeps_every_other_line_queued_in_arrival_order(
    max_lines: int, max_pixels: int
) -> None:
    pending = [Item("a", 100), Item("b", 50), Item("c", 100), Item("d", 100), Item("e", 50)]
    batch, rest, full = plan_batch(pending, 100, max_lines, max_pixels)  # type: ignore[arg-type]
    assert names(batch) == ["a", "c"]
    assert names(rest) == ["b", "d", "e"]
    assert full


def test_plan_runs_a_line_larger_than_max_pixels_alone() -> None:
    pending = [Item("huge", 4096), Item("next", 4096)]
    batch, rest, full = plan_batch(pending, 4096, 16, max_pixels=1000)  # type: ignore[arg-type]
    assert names(batch) == ["huge"]
    assert names(rest) == ["next"]
    assert full


def test_next_batch_releases_at_once_when_idle() -> None:
    limits = BatchLimits(max_lines=8, max_delay_s=10.0)
    plan = next_batch([Item("a", 64, enqueued_at=5.0)], now=5.0, limits=limits, idle=True)  # type: ignore[list-item]
    assert plan is not None and names(plan[0]) == ["a"]


def test_next_batch_waits_while_busy_until_full_or_max_delay() -> None:
    limits = BatchLimits(max_lines=2, max_delay_s=0.01)
    one = [Item("a", 64, enqueued_at=1.0)]
    assert next_batch(one, now=1.005, limits=limits, idle=False) is None  # type: ignore[arg-type]
    plan = next_batch(one, now=1.02, limits=limits, idle=False)  # type: ignore[arg-type]
    assert plan is not None and names(plan[0]) == ["a"]


def test_next_batch_sends_a_full_bucket_before_the_oldest_times_out() -> None:
    limits = BatchLimits(max_lines=2, max_delay_s=1.0)
    pending = [Item("old", 64, 0.0), Item("x", 128, 0.1), Item("y", 128, 0.2)]
    plan = next_batch(pending, now=0.3, limits=limits, idle=False)  # type: ignore[arg-type]
    assert plan is not None
    assert names(plan[0]) == ["x", "y"]
    assert names(plan[1]) == ["old"]


def test_next_batch_after_max_delay_serves_the_oldest_bucket_first() -> None:
    limits = BatchLimits(max_lines=2, max_delay_s=0.5)
    pending = [Item("old", 64, 0.0), Item("x", 128, 0.1), Item("y", 128, 0.2)]
    plan = next_batch(pending, now=0.6, limits=limits, idle=False)  # type: ignore[arg-type]
    assert plan is not None and names(plan[0]) == ["old"]


def test_only_a_lone_batch_within_the_idle_bound_runs_on_the_idle_function() -> None:
    limits = BatchLimits(idle_max_pixels=2 * 64 * HEIGHT)
    two = [Item("a", 64), Item("b", 64)]
    assert runs_on_idle(two, [], idle=True, limits=limits)  # type: ignore[arg-type]
    assert not runs_on_idle(two, [], idle=False, limits=limits)  # type: ignore[arg-type]
    assert not runs_on_idle(two, [Item("c", 128)], idle=True, limits=limits)  # type: ignore[arg-type]
    assert not runs_on_idle([*two, Item("c", 64)], [], idle=True, limits=limits)  # type: ignore[arg-type]


# ---------------------------------------------------------------- gated batcher


def line(width: int, bucket: int | None = None) -> PreparedLine:
    return PreparedLine(
        pixels=np.zeros((HEIGHT, width, 3), np.uint8),
        orig_width=width,
        bucket_width=bucket or width,
    )


@dataclass
class FakeInference:
    """Records every batch; optionally blocks until ``release`` is set. Text = orig width."""

    gate: threading.Event | None = None
    started: threading.Event = field(default_factory=threading.Event)
    batches: list[list[int]] = field(default_factory=list)
    fail_width: int | None = None
    #: A batch holding this width gets one result fewer than it has lines.
    short_width: int | None = None

    def __call__(self, worker: int, lines: Sequence[PreparedLine]) -> list[LineText]:
        widths = [ln.orig_width for ln in lines]
        self.batches.append(widths)
        self.started.set()
        if self.gate is not None and not self.gate.wait(timeout=30):
            raise RuntimeError("test gate never released")
        if self.fail_width in widths:
            raise ValueError("boom")
        results = [LineText(text=str(w), confidence=1.0, words=()) for w in widths]
        return results[:-1] if self.short_width in widths else results


async def started(fake: FakeInference) -> None:
    """Wait (off the loop) until the fake's worker thread has entered inference."""
    assert await asyncio.to_thread(fake.started.wait, 10)


@pytest.fixture
async def gated():
    fake = FakeInference(gate=threading.Event())
    batcher = MicroBatcher("m", fake, workers=1, height=HEIGHT, limits=BatchLimits(max_lines=4))
    batcher.start()
    yield batcher, fake
    fake.gate.set()
    await batcher.aclose()


@pytest.fixture
async def gated_queue_of_3():
    """``gated`` with room for 3 waiting lines."""
    fake = FakeInference(gate=threading.Event())
    batcher = MicroBatcher("m", fake, 1, HEIGHT, BatchLimits(queue_capacity=3))
    batcher.start()
    yield batcher, fake
    fake.gate.set()
    await batcher.aclose()


async def test_idle_batcher_runs_a_lone_line_without_waiting_for_max_delay() -> None:
    fake = FakeInference()
    batcher = MicroBatcher("m", fake, 1, HEIGHT, BatchLimits(max_delay_s=3600.0))
    batcher.start()
    try:
        result = await asyncio.wait_for(batcher.recognize([line(64)]), timeout=10)
    finally:
        await batcher.aclose()
    assert [r.text for r in result] == ["64"]


async def test_results_return_in_request_order_across_buckets(gated) -> None:
    batcher, fake = gated
    blocker = asyncio.create_task(batcher.recognize([line(10, 64)]))
    await started(fake)
    widths = [70, 200, 71, 300, 72]
    task = asyncio.create_task(batcher.recognize([line(w, 64 if w < 100 else w) for w in widths]))
    await asyncio.sleep(0)
    fake.gate.set()
    assert [r.text for r in await task] == [str(w) for w in widths]
    await blocker
    # Every batch held lines of one bucket only.
    for batch in fake.batches[1:]:
        assert len({64 if w < 100 else w for w in batch}) == 1
    assert sorted(fake.batches[1]) == [70, 71, 72]


async def test_lines_from_separate_calls_share_a_batch(gated) -> None:
    batcher, fake = gated
    blocker = asyncio.create_task(batcher.recognize([line(1, 64)]))
    await started(fake)
    calls = [asyncio.create_task(batcher.recognize([line(w, 64)])) for w in (2, 3, 4)]
    await asyncio.sleep(0)
    fake.gate.set()
    assert [(await c)[0].text for c in calls] == ["2", "3", "4"]
    await blocker
    assert fake.batches == [[1], [2, 3, 4]]
    stats = batcher.stats()
    assert stats.batches == 2 and stats.lines_inferred == 4 and stats.batch_sizes[3] == 1


async def test_max_lines_splits_batches(gated) -> None:
    batcher, fake = gated
    blocker = asyncio.create_task(batcher.recognize([line(1, 64)]))
    await started(fake)
    call = asyncio.create_task(batcher.recognize([line(w, 64) for w in range(10, 16)]))
    await asyncio.sleep(0)
    fake.gate.set()
    await call
    await blocker
    assert fake.batches[1:] == [[10, 11, 12, 13], [14, 15]]


async def test_cancelled_call_lines_are_dropped_before_inference(gated) -> None:
    batcher, fake = gated
    blocker = asyncio.create_task(batcher.recognize([line(1, 64)]))
    await started(fake)
    doomed = asyncio.create_task(batcher.recognize([line(2, 64), line(3, 64)]))
    await asyncio.sleep(0)
    assert batcher.queue_depth == 2
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    survivor = asyncio.create_task(batcher.recognize([line(4, 64)]))
    await asyncio.sleep(0)
    fake.gate.set()
    assert (await survivor)[0].text == "4"
    await blocker
    assert fake.batches == [[1], [4]]
    assert batcher.stats().dropped_cancelled == 2


async def _past_one_deadline(
    batcher: MicroBatcher, fake: FakeInference
) -> tuple[asyncio.Task[list[LineText]], ...]:
    """With line 1 running (its worker blocked), queue line 2 with a deadline 1 ms away and
    line 3 with one an hour away, and wait until line 2's has passed; the calls of lines
    2, 3 and 1."""
    blocker = asyncio.create_task(batcher.recognize([line(1, 64)]))
    await started(fake)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.001
    short = asyncio.create_task(batcher.recognize([line(2, 64)], deadline=deadline))
    long = asyncio.create_task(batcher.recognize([line(3, 64)], deadline=loop.time() + 3600))
    while loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    return short, long, blocker


async def test_expired_lines_fail_with_deadline_and_are_never_computed(gated) -> None:
    batcher, fake = gated
    expired, alive, blocker = await _past_one_deadline(batcher, fake)
    fake.gate.set()
    with pytest.raises(DeadlineExpired):
        await expired
    assert (await alive)[0].text == "3"
    await blocker
    assert [2] not in fake.batches and all(2 not in b for b in fake.batches)
    assert batcher.stats().dropped_expired == 1


async def test_lines_whose_caller_went_at_the_deadline_count_as_expired(gated) -> None:
    """gRPC cancels a call at its deadline before the batcher's check sees it: the queued
    lines of such a call count as expired, those of a caller that left early as cancelled."""
    batcher, fake = gated
    timed_out, left, blocker = await _past_one_deadline(batcher, fake)
    timed_out.cancel()
    left.cancel()
    fake.gate.set()
    await blocker
    await until(lambda: batcher.queue_depth == 0, "the queue to empty")
    stats = batcher.stats()
    assert (stats.dropped_expired, stats.dropped_cancelled) == (1, 1)
    assert all(2 not in b and 3 not in b for b in fake.batches)


async def until(condition, what: str) -> None:
    """Yield to the loop until ``condition()`` holds (a few iterations; no sleeps)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


def all_taken(batcher: MicroBatcher, enqueued: int) -> Callable[[], bool]:
    """True once ``enqueued`` lines were queued in all and none is left in the queue."""
    return lambda: batcher.stats().lines_enqueued == enqueued and batcher.queue_depth == 0


async def test_a_full_batch_is_taken_while_the_worker_is_busy_and_runs_next(gated) -> None:
    batcher, fake = gated  # one worker thread, max_lines 4
    blocker = asyncio.create_task(batcher.recognize([line(1, 64)]))
    await started(fake)
    full = asyncio.create_task(batcher.recognize([line(w, 64) for w in (2, 3, 4, 5)]))
    await until(all_taken(batcher, 5), "the full batch was taken")
    # At most one batch waits behind the running one: the next full batch stays queued.
    later = asyncio.create_task(batcher.recognize([line(w, 64) for w in (6, 7, 8, 9)]))
    await until(
        lambda: batcher.stats().lines_enqueued == 9 and batcher.queue_depth == 4,
        "the second full batch was queued",
    )
    for _ in range(20):
        await asyncio.sleep(0)
    assert batcher.queue_depth == 4 and fake.batches == [[1]]
    fake.gate.set()
    assert [r.text for r in await full] == ["2", "3", "4", "5"]
    assert [r.text for r in await later] == ["6", "7", "8", "9"]
    await blocker
    assert fake.batches == [[1], [2, 3, 4, 5], [6, 7, 8, 9]]


async def test_lines_cancelled_after_their_batch_was_taken_are_not_computed(gated) -> None:
    batcher, fake = gated
    blocker = asyncio.create_task(batcher.recognize([line(1, 64)]))
    await started(fake)
    doomed = asyncio.create_task(batcher.recognize([line(w, 64) for w in (2, 3, 4, 5)]))
    await until(all_taken(batcher, 5), "the full batch was taken")
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    fake.gate.set()
    await blocker
    assert (await batcher.recognize([line(6, 64)]))[0].text == "6"
    assert fake.batches == [[1], [6]]
    assert batcher.stats().dropped_cancelled == 4


async def test_lines_expired_after_their_batch_was_taken_fail_and_are_not_computed(gated) -> None:
    batcher, fake = gated
    blocker = asyncio.create_task(batcher.recognize([line(1, 64)]))
    await started(fake)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.05
    lines = [line(w, 64) for w in (2, 3, 4)]
    expiring = asyncio.create_task(batcher.recognize(lines, deadline=deadline))
    alive = asyncio.create_task(batcher.recognize([line(5, 64)], deadline=loop.time() + 3600))
    await until(all_taken(batcher, 5), "the full batch was taken")
    while loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    fake.gate.set()
    with pytest.raises(DeadlineExpired):
        await expiring
    assert (await alive)[0].text == "5"
    await blocker
    assert fake.batches == [[1], [5]]
    assert batcher.stats().dropped_expired == 3


async def test_close_fails_a_taken_batch_that_has_not_started(gated) -> None:
    batcher, fake = gated
    running = asyncio.create_task(batcher.recognize([line(1, 64)]))
    await started(fake)
    taken = asyncio.create_task(batcher.recognize([line(w, 64) for w in (2, 3, 4, 5)]))
    await until(all_taken(batcher, 5), "the full batch was taken")
    closing = asyncio.create_task(batcher.aclose())
    await asyncio.sleep(0)
    fake.gate.set()
    assert (await running)[0].text == "1"
    with pytest.raises(ShuttingDown):
        await taken
    await closing
    assert fake.batches == [[1]]


async def test_full_queue_rejects_whole_request_with_overloaded(gated_queue_of_3) -> None:
    batcher, fake = gated_queue_of_3
    blocker = asyncio.create_task(batcher.recognize([line(1, 64)]))
    await started(fake)
    queued = asyncio.create_task(batcher.recognize([line(2, 64), line(3, 64)]))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match=r"queue .* is full"):
        batcher.submit([line(4, 64), line(5, 64)])
    assert batcher.queue_depth == 2  # all or nothing: nothing of the refused call queued
    fake.gate.set()
    assert [r.text for r in await queued] == ["2", "3"]
    await blocker
    assert batcher.stats().rejected_queue_full == 2


async def test_more_lines_than_the_whole_queue_are_taken_when_it_is_empty(
    gated_queue_of_3,
) -> None:
    """A dense page's crops can outnumber the queue's capacity; refused always, such a
    request failed RESOURCE_EXHAUSTED however long the caller backed off."""
    batcher, fake = gated_queue_of_3
    blocker = asyncio.create_task(batcher.recognize([line(1, 64)]))
    await started(fake)
    queued = asyncio.create_task(batcher.recognize([line(2, 64)]))
    await asyncio.sleep(0)
    big = [line(w, 64) for w in range(10, 15)]
    with pytest.raises(Overloaded, match="larger than the whole queue is taken only when"):
        batcher.submit(big)  # one line waits: not now
    fake.gate.set()
    await queued
    await blocker
    assert [r.text for r in await batcher.recognize(big)] == ["10", "11", "12", "13", "14"]


async def test_inference_error_fails_only_its_batch() -> None:
    fake = FakeInference(fail_width=66)
    batcher = MicroBatcher("m", fake, 1, HEIGHT, BatchLimits())
    batcher.start()
    try:
        bad = asyncio.create_task(batcher.recognize([line(66, 64)]))
        good = asyncio.create_task(batcher.recognize([line(500, 512)]))
        with pytest.raises(InferenceFailed):
            await bad
        assert (await good)[0].text == "500"
        assert batcher.stats().failed_batches == 1
        # The batcher keeps serving after a failure.
        assert (await batcher.recognize([line(7, 64)]))[0].text == "7"
    finally:
        await batcher.aclose()


async def test_wrong_result_count_fails_every_line_of_the_batch(gated) -> None:
    batcher, fake = gated
    fake.short_width = 2  # the batch [2, 3] gets one result back
    blocker = asyncio.create_task(batcher.recognize([line(1, 64)]))
    await started(fake)
    # Two one-line calls queued behind the running batch share the next one. Each call is
    # checked on its own: a batcher that handed out the one result it got would serve the
    # call for 2 and fail only 3, which one call holding both lines could not tell apart.
    calls = [asyncio.create_task(batcher.recognize([line(w, 64)])) for w in (2, 3)]
    await asyncio.sleep(0)
    fake.gate.set()
    for call in calls:
        with pytest.raises(InferenceFailed):
            await call
    assert (await blocker)[0].text == "1"
    assert fake.batches == [[1], [2, 3]]
    stats = batcher.stats()
    # Only the blocker's line counts as inferred; the short batch counts as one failure.
    assert stats.failed_batches == 1
    assert stats.batches == 1 and stats.lines_inferred == 1


async def test_close_fails_queued_lines_and_finishes_the_running_batch(gated) -> None:
    batcher, fake = gated
    running = asyncio.create_task(batcher.recognize([line(1, 64)]))
    await started(fake)
    queued = asyncio.create_task(batcher.recognize([line(2, 64)]))
    await asyncio.sleep(0)
    closing = asyncio.create_task(batcher.aclose())
    await asyncio.sleep(0)
    with pytest.raises(ShuttingDown):
        await queued
    fake.gate.set()
    assert (await running)[0].text == "1"
    await closing
    with pytest.raises(ShuttingDown):
        batcher.submit([line(3, 64)])


async def test_two_workers_run_batches_concurrently() -> None:
    gate = threading.Event()
    both = threading.Barrier(2, timeout=10)

    def infer(worker: int, lines: Sequence[PreparedLine]) -> list[LineText]:
        both.wait()  # only returns if two batches are inside inference at the same time
        gate.wait(10)
        return [LineText(str(worker), 1.0, ()) for _ in lines]

    batcher = MicroBatcher("m", infer, 2, HEIGHT, BatchLimits(max_delay_s=0.0))
    batcher.start()
    try:
        a = asyncio.create_task(batcher.recognize([line(1, 64)]))
        b = asyncio.create_task(batcher.recognize([line(2, 128)]))
        gate.set()
        workers = {(await a)[0].text, (await b)[0].text}
    finally:
        await batcher.aclose()
    assert workers == {"0", "1"}


# ---------------------------------------------------------------- the idle function


#: The idle bound (line width at ``HEIGHT``) of ``idle_batcher`` (the default is 2048).
IDLE_BOUND = 1024


def idle_batcher(
    workers: int = 2, idle_max_pixels: int | None = IDLE_BOUND * HEIGHT
) -> tuple[MicroBatcher, FakeInference, FakeInference]:
    """A batcher whose worker sessions and idle session are separate fakes."""
    narrow = FakeInference()
    wide = FakeInference(gate=threading.Event())
    batcher = MicroBatcher(
        "m",
        narrow,
        workers,
        HEIGHT,
        BatchLimits(max_delay_s=0.0, idle_max_pixels=idle_max_pixels),
        infer_idle=lambda lines: wide(-1, lines),
    )
    return batcher, narrow, wide


def preparing(*widths: int) -> tuple[Callable[[], list[PreparedLine]], list[int]]:
    """A ``prepare`` callable for ``recognize_alone`` that records the thread it ran on."""
    threads: list[int] = []

    def prepare() -> list[PreparedLine]:
        threads.append(threading.get_ident())
        return [line(w) for w in widths]

    return prepare, threads


def lone_call(batcher: MicroBatcher, via: str, width: int) -> Awaitable[list[LineText] | None]:
    """A one-line call that finds the batcher idle: through the queue (``recognize``) or
    prepared on the idle thread (``recognize_alone``); either way it is an idle run."""
    if via == "queue":
        return batcher.recognize([line(width, 64)])
    return batcher.recognize_alone(preparing(width)[0])


async def test_a_batch_that_is_all_there_is_runs_on_the_idle_function() -> None:
    batcher, narrow, wide = idle_batcher()
    wide.gate.set()
    batcher.start()
    try:
        result = await asyncio.wait_for(batcher.recognize([line(64)]), timeout=10)
    finally:
        await batcher.aclose()
    assert [r.text for r in result] == ["64"]
    assert wide.batches == [[64]] and narrow.batches == []
    assert batcher.stats().idle_batches == 1


async def test_a_batch_with_lines_left_behind_runs_on_a_worker_session() -> None:
    batcher, narrow, wide = idle_batcher()
    batcher.start()
    try:
        # Two buckets in one call: the first batch leaves the second queued.
        result = await asyncio.wait_for(batcher.recognize([line(1, 64), line(2, 128)]), timeout=10)
    finally:
        wide.gate.set()
        await batcher.aclose()
    assert [r.text for r in result] == ["1", "2"]
    assert wide.batches == [] and sorted(narrow.batches) == [[1], [2]]
    assert batcher.stats().idle_batches == 0


@pytest.mark.parametrize("via", ["queue", "alone"])
async def test_nothing_starts_beside_an_idle_run(via: str) -> None:
    batcher, narrow, wide = idle_batcher()
    batcher.start()
    try:
        first = asyncio.create_task(lone_call(batcher, via, 1))
        await started(wide)
        second = asyncio.create_task(batcher.recognize([line(2, 128)]))
        # The second worker is free, but the idle run's threads hold its core.
        await asyncio.sleep(0.05)
        assert narrow.batches == [] and not second.done()
        wide.gate.set()
        assert (await first)[0].text == "1" and (await second)[0].text == "2"
    finally:
        wide.gate.set()
        await batcher.aclose()
    # Once the idle run ended, the waiting line was again all there was.
    assert wide.batches == [[1], [2]] and narrow.batches == []


@pytest.mark.parametrize("via", ["queue", "alone"])
async def test_a_failing_idle_run_fails_its_lines_and_the_batcher_goes_on(via: str) -> None:
    batcher, _narrow, wide = idle_batcher()
    wide.gate.set()
    wide.fail_width = 7
    batcher.start()
    try:
        with pytest.raises(InferenceFailed):
            await asyncio.wait_for(lone_call(batcher, via, 7), timeout=10)
        ok = await asyncio.wait_for(lone_call(batcher, via, 8), timeout=10)
    finally:
        await batcher.aclose()
    assert ok[0].text == "8"
    assert batcher.stats().failed_batches == 1


async def test_by_default_a_lone_line_up_to_a_full_batch_runs_on_the_idle_function() -> None:
    limits = BatchLimits()
    assert limits.idle_max_pixels == limits.max_pixels == 2048 * HEIGHT
    batcher, narrow, wide = idle_batcher(idle_max_pixels=limits.idle_max_pixels)
    wide.gate.set()
    batcher.start()
    try:
        edge = await asyncio.wait_for(batcher.recognize([line(2000, 2048)]), timeout=10)
        over = await asyncio.wait_for(batcher.recognize([line(2100, 2112)]), timeout=10)
    finally:
        await batcher.aclose()
    assert edge[0].text == "2000" and over[0].text == "2100"
    assert wide.batches == [[2000]] and narrow.batches == [[2100]]


async def test_with_no_idle_bound_a_lone_line_of_any_width_runs_on_the_idle_function() -> None:
    batcher, narrow, wide = idle_batcher(idle_max_pixels=None)
    wide.gate.set()
    batcher.start()
    try:
        result = await asyncio.wait_for(batcher.recognize([line(4096)]), timeout=10)
    finally:
        await batcher.aclose()
    assert result[0].text == "4096"
    assert narrow.batches == [] and wide.batches == [[4096]]


async def test_a_lone_batch_wider_than_the_idle_bound_runs_on_a_worker_session() -> None:
    batcher, narrow, wide = idle_batcher()
    bound = IDLE_BOUND
    wide.gate.set()
    batcher.start()
    try:
        result = await asyncio.wait_for(batcher.recognize([line(bound + 16)]), timeout=10)
        edge = await asyncio.wait_for(batcher.recognize([line(bound - 16, bound)]), timeout=10)
    finally:
        wide.gate.set()
        await batcher.aclose()
    assert result[0].text == str(bound + 16) and edge[0].text == str(bound - 16)
    assert narrow.batches == [[bound + 16]] and wide.batches == [[bound - 16]]


# ---------------------------------------------------------------- recognize_alone


async def test_an_idle_batcher_prepares_and_infers_in_one_hop_on_the_idle_thread() -> None:
    narrow = FakeInference()
    idle_threads: list[int] = []

    def infer_idle(lines: Sequence[PreparedLine]) -> list[LineText]:
        idle_threads.append(threading.get_ident())
        return [LineText(str(ln.orig_width), 1.0, ()) for ln in lines]

    batcher = MicroBatcher("m", narrow, 2, HEIGHT, BatchLimits(), infer_idle=infer_idle)
    prepare, prepare_threads = preparing(64)
    batcher.start()
    try:
        result = await asyncio.wait_for(batcher.recognize_alone(prepare), timeout=10)
    finally:
        await batcher.aclose()
    assert result is not None and [r.text for r in result] == ["64"]
    assert prepare_threads == idle_threads and prepare_threads[0] != threading.get_ident()
    assert narrow.batches == []
    stats = batcher.stats()
    assert stats.lines_enqueued == stats.lines_inferred == 1
    assert stats.batches == stats.idle_batches == 1


async def test_a_busy_batcher_leaves_the_request_to_the_caller() -> None:
    batcher, _narrow, wide = idle_batcher()
    batcher.start()
    try:
        running = asyncio.create_task(batcher.recognize([line(1, 64)]))
        await started(wide)
        prepare, prepare_threads = preparing(2)
        assert await batcher.recognize_alone(prepare) is None
        assert prepare_threads == []  # not even decoded: the caller does it its usual way
        wide.gate.set()
        await running
    finally:
        wide.gate.set()
        await batcher.aclose()


async def test_a_cancelled_alone_call_holds_the_cores_until_its_run_ends() -> None:
    batcher, narrow, wide = idle_batcher()
    batcher.start()
    try:
        prepare, _ = preparing(1)
        doomed = asyncio.create_task(batcher.recognize_alone(prepare))
        await started(wide)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        later = asyncio.create_task(batcher.recognize([line(2, 128)]))
        await asyncio.sleep(0.05)
        assert narrow.batches == [] and not later.done()  # the run goes on in its thread
        wide.gate.set()
        assert (await later)[0].text == "2"
    finally:
        wide.gate.set()
        await batcher.aclose()
    assert wide.batches == [[1], [2]]


async def test_prepare_errors_reach_the_caller_and_the_batcher_goes_on() -> None:
    batcher, _narrow, wide = idle_batcher()
    wide.gate.set()

    def refuse() -> list[PreparedLine]:
        raise InvalidInput("not an image")

    batcher.start()
    try:
        with pytest.raises(InvalidInput, match="not an image"):
            await asyncio.wait_for(batcher.recognize_alone(refuse), timeout=10)
        prepare, _ = preparing(5)
        assert [r.text for r in await batcher.recognize_alone(prepare)] == ["5"]
    finally:
        await batcher.aclose()
    assert batcher.stats().lines_enqueued == 1


async def test_alone_lines_too_wide_for_the_idle_run_go_through_the_queue_prepared_once() -> None:
    batcher, narrow, wide = idle_batcher()
    wide.gate.set()
    bound = IDLE_BOUND
    prepare, prepare_threads = preparing(bound + 16)
    batcher.start()
    try:
        result = await asyncio.wait_for(batcher.recognize_alone(prepare), timeout=10)
    finally:
        await batcher.aclose()
    assert [r.text for r in result] == [str(bound + 16)]
    assert len(prepare_threads) == 1 and narrow.batches == [[bound + 16]] and wide.batches == []
    assert batcher.stats().lines_enqueued == 1


async def test_an_alone_call_whose_deadline_passed_while_preparing_is_not_run() -> None:
    batcher, _narrow, wide = idle_batcher()
    wide.gate.set()
    batcher.start()
    try:
        past = asyncio.get_running_loop().time() - 1.0
        with pytest.raises(DeadlineExpired):
            await asyncio.wait_for(batcher.recognize_alone(preparing(9)[0], past), timeout=10)
    finally:
        await batcher.aclose()
    assert wide.batches == []
    assert batcher.stats().dropped_expired == 1


async def test_several_alone_lines_go_through_the_queue_prepared_once() -> None:
    batcher, narrow, wide = idle_batcher()
    wide.gate.set()
    prepare, prepare_threads = preparing(1, 2)
    batcher.start()
    try:
        result = await asyncio.wait_for(batcher.recognize_alone(prepare), timeout=10)
    finally:
        await batcher.aclose()
    assert [r.text for r in result] == ["1", "2"]
    assert len(prepare_threads) == 1 and wide.batches == []
    assert sorted(narrow.batches) == [[1], [2]]
