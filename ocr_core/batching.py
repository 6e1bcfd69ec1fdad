"""The micro-batcher: one queue per model, shared by every call and stream, feeding workers.

Lines wait in one arrival-ordered queue. A batch is taken when
- the batcher is idle (no batch running anywhere): at once, so a lone request never waits;
- a bucket has a full batch (``max_lines`` lines or ``max_pixels`` padded pixels); or
- the oldest line has waited ``max_delay``: its bucket goes, full or not.

Up to two batches per worker thread are taken at once: the one running and the next,
waiting in the threads' shared work queue. A thread that finishes a batch starts the next
at once instead of idling its core while the event loop, busy with gRPC, gets round to
handing it one. Under 64 one-line callers a v6 tiny server kept its cores a little busier
(1.90-1.94 of 2 instead of 1.87-1.92 in A/B probes); lines per second moved by 1-2 % at
most, within this machine's noise (docs/benchmarks.md, "Levers measured"). A taken batch
still drops, on its thread just before inference, lines that were cancelled or expired
while it waited, and its inference time is timed there, without the wait.

A batch holds lines of one width bucket only (see ``preprocess``), so results do not depend
on batch-mates. Choosing a batch is a pure function (``next_batch``, then ``runs_on_idle``)
tested without a loop.

A batch that is all the batcher has (nothing running, nothing left queued, within
``idle_max_pixels``) runs on the idle inference function when one is given: a session with
every core the workers own, so a lone request is not held to one core while the others sit
idle. No other batch starts while it runs (its threads already use those cores); lines that
arrive meanwhile wait for it.

``recognize_alone`` is the same idle run reached sooner: a request that finds the batcher
idle is decoded, resized and recognised in one hop on the idle thread, instead of going
from the event loop to a decode thread, back, into the queue, and out to the idle thread.
In alternated A/B pairs at concurrency 1 that took ~0.6 ms (v6 small) and ~0.3 ms (v6 tiny)
off a one-line call (docs/benchmarks.md, "Levers measured"). Lines that would not run alone
(more than one line, or wider than ``idle_max_pixels``) go into the queue from there,
already prepared.

Cancellation is data: a line whose future was cancelled (its call went away) is dropped
before inference, and one whose deadline passed fails with ``DeadlineExpired``; neither is
ever computed. Every accepted line's future gets exactly one outcome.

Thread safety: the queue, the counters and every future are touched on the event loop
only. A worker thread reads a taken batch's futures' ``done()`` and the loop's clock, both
plain reads; a stale ``done()`` only means a line whose call has just gone runs anyway and
its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ocr_core.cpus import ThreadPins
from ocr_core.ctc import LineText
from ocr_core.errors import DeadlineExpired, InferenceFailed, Overloaded, ShuttingDown
from ocr_core.preprocess import PreparedLine

log = logging.getLogger(__name__)

InferFn = Callable[[int, Sequence[PreparedLine]], list[LineText]]
IdleInferFn = Callable[[Sequence[PreparedLine]], list[LineText]]


@dataclass(frozen=True)
class BatchLimits:
    """Batch and queue bounds of one batcher.

    ``max_pixels`` bounds memory more than speed: a CTC recognizer's class scores are
    [N, W/8, classes] float32, ~75 KB per time step with PP-OCRv6's 18.7k classes, and ONNX
    Runtime's arena keeps a session's largest batch for good. 48 x 2048 padded pixels keeps
    that near 60 MB per session (48 x 8192 cost ~250 MB per session); larger batches gave no
    throughput on the CPUs measured (docs/benchmarks.md).
    """

    max_lines: int = 16
    max_pixels: int = 48 * 2048
    max_delay_s: float = 0.002
    queue_capacity: int = 1024
    #: Largest batch (padded pixels) the idle function runs, wider lone batches going to a
    #: worker; None: no bound. An idle run holds every core, so a line arriving meanwhile
    #: waits for all of it: the bound caps that wait at a default batch's pixels (~40 ms of
    #: v6 small on 2 cores). v6 small under light mixed load (one caller sending the 16 real
    #: lines over 1024 px at height 48, another the other 66, pausing 0-200 / 0-40 ms
    #: between calls; 30 s, twice): at 48 x 2048 the wide caller's mean 65-68 ms instead of
    #: 102-103 at 48 x 1024, the narrow one's 27-28 instead of 23-24 (p95 67-70 against
    #: 44-46). With no bound and a rendered 4057 px line as the wide caller's: its p50 153
    #: instead of 265-270 ms, but the narrow caller's mean 69 instead of 38-39 (p95 179-183
    #: against 105-108). Memory does not depend on the bound (all of a recognizer's
    #: sessions share one arena: 4057 px lines alone 398-404 MiB RSS on the idle session,
    #: 401-402 on a worker).
    idle_max_pixels: int | None = 48 * 2048


@dataclass(eq=False)
class PendingLine:
    """A queued line: its pixels, the future its caller awaits, and its timing."""

    line: PreparedLine
    future: asyncio.Future[LineText]
    enqueued_at: float
    deadline: float | None
    height: int

    @property
    def bucket(self) -> int:
        return self.line.bucket_width

    @property
    def cost(self) -> int:
        """Padded pixels this line adds to a batch."""
        return self.line.bucket_width * self.height


def plan_batch(
    pending: Sequence[PendingLine], bucket: int, max_lines: int, max_pixels: int
) -> tuple[list[PendingLine], list[PendingLine], bool]:
    """Take the oldest lines of ``bucket`` up to the limits; return (batch, rest, full).

    ``rest`` keeps arrival order. A line bigger than ``max_pixels`` on its own still forms a
    batch of one, so it is never stuck. ``full`` says a limit was reached (more of the bucket
    could not be added, or ``max_lines`` was hit).
    """
    batch: list[PendingLine] = []
    rest: list[PendingLine] = []
    pixels = 0
    for index, item in enumerate(pending):
        if item.bucket != bucket:
            rest.append(item)
            continue
        if batch and pixels + item.cost > max_pixels:
            rest.extend(pending[index:])  # full: the rest stays queued, in order
            return batch, rest, True
        batch.append(item)
        pixels += item.cost
        if len(batch) >= max_lines or pixels >= max_pixels:
            rest.extend(pending[index + 1 :])
            return batch, rest, True
    return batch, rest, False


def next_batch(
    pending: Sequence[PendingLine], now: float, limits: BatchLimits, idle: bool
) -> tuple[list[PendingLine], list[PendingLine]] | None:
    """Decide what the next batch is now, or None to keep waiting.

    The oldest line's bucket goes when the batcher is idle or that line has waited
    ``max_delay``; otherwise the first bucket (in arrival order) with a full batch goes.
    """
    if not pending:
        return None
    oldest = pending[0]
    if idle or now - oldest.enqueued_at >= limits.max_delay_s:
        batch, rest, _ = plan_batch(pending, oldest.bucket, limits.max_lines, limits.max_pixels)
        return batch, rest
    seen: set[int] = set()
    for item in pending:
        if item.bucket in seen:
            continue
        seen.add(item.bucket)
        batch, rest, full = plan_batch(pending, item.bucket, limits.max_lines, limits.max_pixels)
        if full:
            return batch, rest
    return None


def runs_on_idle(
    batch: Sequence[PendingLine], rest: Sequence[PendingLine], idle: bool, limits: BatchLimits
) -> bool:
    """Whether a planned batch runs on the idle function, if the batcher has one.

    It does when nothing runs (``idle``), nothing is left queued (``rest``) and the batch is
    within ``limits.idle_max_pixels`` (if set).
    """
    return idle and not rest and within_idle_bound(sum(item.cost for item in batch), limits)


def within_idle_bound(padded_pixels: int, limits: BatchLimits) -> bool:
    """Whether a batch of ``padded_pixels`` is small enough for the idle function."""
    return limits.idle_max_pixels is None or padded_pixels <= limits.idle_max_pixels


@dataclass
class _Ran:
    """What a worker thread did with a taken batch (see ``MicroBatcher._infer_taken``)."""

    #: The lines it ran, a subset of the batch in order: cancelled and expired ones are not.
    lines: list[PendingLine]
    #: When the thread took the batch up and inference started, on the loop's clock; 0.0 when
    #: the batcher was closing.
    started: float = 0.0
    seconds: float = 0.0
    results: list[LineText] | None = None
    error: Exception | None = None
    #: The batcher was closing before the batch started: its lines fail with ShuttingDown.
    closed: bool = False


@dataclass
class _Alone:
    """What the idle thread did with a request it prepared itself (``recognize_alone``)."""

    lines: list[PreparedLine]
    #: None when the lines did not run here: not one line within the idle bound, or expired.
    results: list[LineText] | None = None
    seconds: float = 0.0
    error: Exception | None = None
    expired: bool = False


#: A call cancelled this close to its deadline ended at it: the client cancels at its own
#: deadline, which comes before the server's by the request's time in transit.
DEADLINE_SLACK_S = 0.1


def _expired(item: PendingLine, now: float) -> bool:
    return item.deadline is not None and now >= item.deadline


def _timed_run(
    infer: Callable[[], list[LineText]], lines: int
) -> tuple[list[LineText] | None, float, Exception | None]:
    """Run one batch of ``lines`` on a worker thread: (results, seconds, error); never raises.

    An error (or a result count that does not match) is returned, not raised: the loop
    counts and logs it and fails that batch's lines with ``InferenceFailed``, nothing else.
    """
    t0 = time.perf_counter()
    try:
        results = infer()
        if len(results) != lines:
            raise RuntimeError(f"inference returned {len(results)} results for {lines}")
    except Exception as exc:
        return None, time.perf_counter() - t0, exc
    return results, time.perf_counter() - t0, None


#: Upper bounds (seconds) of the per-batch inference-time histogram; the last is infinite.
INFERENCE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, float("inf"))


@dataclass
class BatcherStats:
    """Counters of one batcher (owned by it; read with ``MicroBatcher.stats``)."""

    lines_enqueued: int = 0
    lines_inferred: int = 0
    batches: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)
    queue_wait_s_total: float = 0.0
    queue_wait_s_max: float = 0.0
    inference_s_total: float = 0.0
    #: Batches whose inference took at most each bound of ``INFERENCE_BUCKETS_S``
    #: (cumulative, as a histogram's buckets); the last counts every batch.
    inference_s_buckets: list[int] = field(default_factory=lambda: [0] * len(INFERENCE_BUCKETS_S))
    content_pixels: int = 0
    padded_pixels: int = 0
    dropped_cancelled: int = 0
    dropped_expired: int = 0
    rejected_queue_full: int = 0
    failed_batches: int = 0
    #: Batches run on the idle inference function (all of the batcher's cores).
    idle_batches: int = 0


class MicroBatcher:
    """Batches lines of one model across all callers and runs them on ``workers`` threads.

    ``infer(worker_index, lines)`` runs in a dedicated thread pool, one thread per worker, and
    worker thread ``i`` only ever calls it with index ``i`` (so each can own a session).
    ``infer_idle(lines)``, if given, runs a batch that is all there is to do, with no other
    batch running beside it. Use ``start()`` inside the event loop and ``aclose()`` to stop.
    ``cpus``, if given, holds one CPU per worker thread: each thread pins itself to the next
    one when it starts (see ``ocr_core.cpus``).
    """

    def __init__(
        self,
        name: str,
        infer: InferFn,
        workers: int,
        height: int,
        limits: BatchLimits,
        infer_idle: IdleInferFn | None = None,
        cpus: Sequence[int] = (),
    ) -> None:
        if cpus and len(cpus) != workers:
            raise ValueError(f"{len(cpus)} CPUs given for {workers} worker threads")
        self.name = name
        self.limits = limits
        self._infer = infer
        self._infer_idle = infer_idle
        self._workers = workers
        self._height = height
        self._pending: list[PendingLine] = []
        self._running = 0  # batches taken and not yet settled, running or queued
        self._idle_run = False  # a batch is on the idle function: nothing else may start
        self._closed = False
        self._changed: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._idle_executor: ThreadPoolExecutor | None = None
        self._stats = BatcherStats()
        self._pins = ThreadPins(cpus) if cpus else None
        self._thread_index = threading.local()
        self._next_index = itertools.count()

    def start(self) -> None:
        """Start the taker tasks and worker threads on the running loop."""
        if self._executor is not None:
            raise RuntimeError("batcher already started")
        self._changed = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            self._workers,
            thread_name_prefix=f"infer-{self.name}",
            initializer=self._init_worker_thread,
        )
        if self._infer_idle is not None:
            # A thread of its own, never pinned: the idle session's threads should take
            # whichever cores are free at that moment, not wait for one worker's core.
            self._idle_executor = ThreadPoolExecutor(
                1, thread_name_prefix=f"infer-{self.name}-idle"
            )
        # Two takers per worker thread: one batch running on it, one waiting behind.
        for index in range(2 * self._workers):
            task = asyncio.get_running_loop().create_task(
                self._taker(), name=f"batcher-{self.name}-{index}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _init_worker_thread(self) -> None:
        """Give a new worker thread its session index (and its CPU, when pinning)."""
        self._thread_index.value = next(self._next_index)
        if self._pins is not None:
            self._pins.pin_this_thread()

    def set_pinned(self, active: bool) -> None:
        """Pin the worker threads to their CPUs (True) or give them back the CPUs they had.

        A no-op for a batcher without CPUs; threads made later follow the latest call.
        """
        if self._pins is not None:
            self._pins.set_active(active)

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def stats(self) -> BatcherStats:
        """A snapshot of the counters."""
        s = self._stats
        return BatcherStats(
            **{
                **s.__dict__,
                "batch_sizes": Counter(s.batch_sizes),
                "inference_s_buckets": list(s.inference_s_buckets),
            }
        )

    def submit(
        self, lines: Sequence[PreparedLine], deadline: float | None = None
    ) -> list[asyncio.Future[LineText]]:
        """Queue ``lines`` (all or none) and return one future per line.

        ``deadline`` is on the loop's clock (``loop.time()``). Raises ``Overloaded`` when the
        queue has no room for all of them (more than its capacity fit only into an empty
        queue) and ``ShuttingDown`` once closing.
        """
        if self._closed or self._changed is None:
            raise ShuttingDown("the server is shutting down; retry on another instance")
        capacity = self.limits.queue_capacity
        # An empty queue takes any request: more lines than the whole queue holds (a dense
        # page's crops) would otherwise be refused however long the caller waited.
        if self._pending and len(lines) > capacity - len(self._pending):
            self._stats.rejected_queue_full += len(lines)
            larger = (
                "a request larger than the whole queue is taken only when it is empty; "
                if len(lines) > capacity
                else ""
            )
            raise Overloaded(
                f"the server's queue for model {self.name!r} is full ({len(self._pending)} of "
                f"{capacity} lines waiting, {len(lines)} more asked); "
                f"{larger}retry with backoff or send fewer lines per call"
            )
        loop = asyncio.get_running_loop()
        now = loop.time()
        futures: list[asyncio.Future[LineText]] = []
        for line in lines:
            fut: asyncio.Future[LineText] = loop.create_future()
            self._pending.append(PendingLine(line, fut, now, deadline, self._height))
            futures.append(fut)
        self._stats.lines_enqueued += len(lines)
        self._changed.set()
        return futures

    async def recognize(
        self, lines: Sequence[PreparedLine], deadline: float | None = None
    ) -> list[LineText]:
        """Submit ``lines`` and wait for all results; cancelling this drops the queued lines."""
        futures = self.submit(lines, deadline)
        try:
            return list(await asyncio.gather(*futures))
        finally:
            for fut in futures:
                fut.cancel()  # no-op on finished ones; queued ones are dropped unrun

    async def recognize_alone(
        self, prepare: Callable[[], list[PreparedLine]], deadline: float | None = None
    ) -> list[LineText] | None:
        """Prepare and recognise in one hop on the idle thread if the batcher is idle, else None.

        ``prepare`` (decode and resize) runs on the idle thread and its errors propagate as
        they are. While it and the inference run, the batcher counts as running an idle
        batch, so other lines queue behind it as they would behind any idle run. Prepared
        lines that are not one line within the idle bound go through ``recognize``. None
        means the batcher was busy (or has no idle function): the caller prepares and calls
        ``recognize`` itself.
        """
        if self._closed or self._idle_executor is None or self._running or self._pending:
            return None  # an idle run counts in ``_running`` too
        loop = asyncio.get_running_loop()
        self._running += 1
        self._idle_run = True
        work = self._idle_executor.submit(self._prepare_and_infer, prepare, deadline, loop.time)

        def finished(done: Future[_Alone]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._alone_finished, done)

        # Registered before the caller's wrapper, so the batcher is free again (and the
        # outcome counted) by the time the caller resumes.
        work.add_done_callback(finished)
        alone = await asyncio.wrap_future(work)
        if alone.expired:
            raise DeadlineExpired("the deadline passed while the line was prepared; it was not run")
        if alone.error is not None:
            raise InferenceFailed("inference failed on the server; the error was logged")
        if alone.results is None:
            return await self.recognize(alone.lines, deadline)
        return alone.results

    def _prepare_and_infer(
        self,
        prepare: Callable[[], list[PreparedLine]],
        deadline: float | None,
        clock: Callable[[], float],
    ) -> _Alone:
        """On the idle thread: prepare, then run on the idle function if it is one line within
        the idle bound (several lines would need ``plan_batch``'s rules: they take the queue).
        """
        lines = prepare()
        if deadline is not None and clock() >= deadline:
            return _Alone(lines, expired=True)
        if len(lines) != 1 or not within_idle_bound(
            lines[0].bucket_width * self._height, self.limits
        ):
            return _Alone(lines)
        infer_idle = self._infer_idle
        assert infer_idle is not None
        results, seconds, error = _timed_run(lambda: infer_idle(lines), len(lines))
        return _Alone(lines, results, seconds, error)

    def _alone_finished(self, done: Future[_Alone]) -> None:
        """On the loop: end the idle run ``recognize_alone`` started and count what it did."""
        self._running -= 1
        self._idle_run = False
        if self._changed is not None:
            self._changed.set()
        if done.cancelled() or done.exception() is not None:
            return  # not started, or ``prepare`` refused the input: nothing was accepted
        alone = done.result()
        stats = self._stats
        if alone.expired:
            stats.lines_enqueued += len(alone.lines)
            stats.dropped_expired += len(alone.lines)
            return
        if alone.results is None and alone.error is None:
            return  # handed to ``recognize``, which counts them
        stats.lines_enqueued += len(alone.lines)
        self._count_run(alone.lines, alone.seconds, alone.error, alone=True)

    def _count_run(
        self, lines: Sequence[PreparedLine], seconds: float, error: Exception | None, alone: bool
    ) -> None:
        """Count one inference run: its time, then the batch, or the failure (logged)."""
        stats = self._stats
        stats.inference_s_total += seconds
        for i, bound in enumerate(INFERENCE_BUCKETS_S):
            if seconds <= bound:
                stats.inference_s_buckets[i] += 1
        if error is not None:
            stats.failed_batches += 1
            log.error(
                "inference failed for a batch of %d lines (model %s)",
                len(lines),
                self.name,
                exc_info=error,
            )
            return
        stats.batches += 1
        stats.idle_batches += int(alone)
        stats.batch_sizes[len(lines)] += 1
        stats.lines_inferred += len(lines)
        content = sum(line.width for line in lines) * self._height
        padded = len(lines) * lines[0].bucket_width * self._height
        stats.content_pixels += content
        stats.padded_pixels += padded - content

    async def aclose(self) -> None:
        """Stop taking work, fail what is queued with ``ShuttingDown``, and stop the workers.

        Batches already running finish and deliver their results.
        """
        self._closed = True
        for item in self._pending:
            if not item.future.done():
                item.future.set_exception(ShuttingDown("the server shut down before this ran"))
        self._pending.clear()
        if self._changed is not None:
            self._changed.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for executor in (self._executor, self._idle_executor):
            if executor is not None:
                executor.shutdown(wait=True)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("batcher worker %s crashed", task.get_name(), exc_info=task.exception())

    def _drop_dead(self, now: float) -> None:
        """Remove cancelled lines and fail expired ones, before any batch is planned."""
        alive: list[PendingLine] = []
        for item in self._pending:
            if item.future.done() or _expired(item, now):
                self._drop(item, now)
            else:
                alive.append(item)
        self._pending = alive

    def _drop(self, item: PendingLine, now: float) -> None:
        """Count a line that will not run, failing it with ``DeadlineExpired`` if its caller
        still waits. One past its deadline counts as expired even when its caller has gone:
        gRPC cancels a call at its deadline before the batcher's own check sees it."""
        gone_near_deadline = item.future.done() and _expired(item, now + DEADLINE_SLACK_S)
        if _expired(item, now) or gone_near_deadline:
            self._stats.dropped_expired += 1
        else:
            self._stats.dropped_cancelled += 1
        if not item.future.done():
            item.future.set_exception(
                DeadlineExpired("the deadline passed while the line was queued; it was not run")
            )

    async def _take_batch(self) -> tuple[list[PendingLine], bool] | None:
        """The next batch and whether it runs on the idle function; None once closed."""
        assert self._changed is not None
        loop = asyncio.get_running_loop()
        while True:
            self._changed.clear()
            if self._closed:
                return None
            timeout = None
            if not self._idle_run:
                now = loop.time()
                self._drop_dead(now)
                idle = self._running == 0
                plan = next_batch(self._pending, now, self.limits, idle=idle)
                if plan is not None:
                    batch, self._pending = plan
                    alone = self._infer_idle is not None and runs_on_idle(
                        batch, self._pending, idle, self.limits
                    )
                    return batch, alone
                if self._pending:
                    timeout = max(0.0, self._pending[0].enqueued_at + self.limits.max_delay_s - now)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait()

    async def _taker(self) -> None:
        """Take batches and hand them to the worker threads (or the idle one) until closed."""
        loop = asyncio.get_running_loop()
        while (taken := await self._take_batch()) is not None:
            batch, alone = taken
            self._running += 1
            if alone:
                self._idle_run = True
            try:
                executor = self._idle_executor if alone else self._executor
                ran = await loop.run_in_executor(
                    executor, self._infer_taken, batch, alone, loop.time
                )
                self._settle(batch, ran, alone)
            finally:
                self._running -= 1
                if alone:
                    self._idle_run = False
                if self._changed is not None:
                    self._changed.set()

    def _infer_taken(
        self, batch: list[PendingLine], alone: bool, clock: Callable[[], float]
    ) -> _Ran:
        """On a worker (or the idle) thread: run the batch's live lines; never raises."""
        if self._closed:
            return _Ran([], closed=True)
        now = clock()
        lines = [item for item in batch if not item.future.done() and not _expired(item, now)]
        if not lines:
            return _Ran([], now)
        pixels = [item.line for item in lines]
        if alone:
            infer_idle = self._infer_idle
            assert infer_idle is not None
            results, seconds, error = _timed_run(lambda: infer_idle(pixels), len(lines))
        else:
            results, seconds, error = _timed_run(
                lambda: self._infer(self._thread_index.value, pixels), len(lines)
            )
        return _Ran(lines, now, seconds, results, error)

    def _settle(self, batch: list[PendingLine], ran: _Ran, alone: bool) -> None:
        """On the loop: give every line of a taken batch its outcome and count it."""
        stats = self._stats
        if ran.closed:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(ShuttingDown("the server shut down before this ran"))
            return
        run = {id(item) for item in ran.lines}
        for item in batch:
            if id(item) not in run:  # cancelled, or expired when the thread took it up
                self._drop(item, ran.started)
        if not ran.lines:
            return
        for item in ran.lines:
            wait = ran.started - item.enqueued_at
            stats.queue_wait_s_total += wait
            stats.queue_wait_s_max = max(stats.queue_wait_s_max, wait)
        self._count_run([item.line for item in ran.lines], ran.seconds, ran.error, alone)
        if ran.results is None:
            for item in ran.lines:
                if not item.future.done():
                    item.future.set_exception(
                        InferenceFailed("inference failed on the server; the error was logged")
                    )
            return
        for item, result in zip(ran.lines, ran.results, strict=True):
            if not item.future.done():
                item.future.set_result(result)
