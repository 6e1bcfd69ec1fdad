"""ONNX Runtime sessions: how they are built, and a pool that lends one to each running thread.

Every model of this server (recognizer, detector, classifiers) is run through sessions built
here, so session options are decided in one place. A session never runs two inferences at
once here: on small machines several 1-thread sessions outrun one multi-threaded session
(``shared/design/models.md``: 10-60 % on 2 cores), and an idle session costs only memory.
"""

from __future__ import annotations

import contextlib
import functools
import queue
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np

from ocr_core.errors import ModelLoadError

GRAPH_OPTIMIZATION_LEVELS = ("all", "extended", "basic", "disabled")
#: Longest spin (microseconds) of an idle-session pool thread waiting for its next piece of
#: a run. 200 and 1000 measured the same; the smaller is kept because a pool thread spinning
#: through a long serial operator would hold a core a worker session may want (reasoning,
#: not measured).
IDLE_SPIN_US = 200


class InferenceSession(Protocol):
    """The part of ``onnxruntime.InferenceSession`` this project uses (fakeable in tests)."""

    def run(self, output_names: list[str] | None, input_feed: dict[str, np.ndarray]) -> list: ...


@dataclass(frozen=True)
class SessionConfig:
    """How to build a model's ONNX Runtime sessions.

    ``graph_optimization`` "all" is fastest. ONNX Runtime's optimised kernels then give
    batch-size-1 results that differ from batched ones by float rounding (~1e-6 in the
    probabilities, which did not change any decoded character on the real evaluation set);
    "disabled" makes outputs bitwise identical for every batch size at about 20 % lower
    throughput.

    ``idle_threads`` > ``intra_op_threads`` gives the line recognizer one more session with
    that many threads, run only when a batch is all the batcher has (``MicroBatcher``): a
    lone line then uses the cores the other sessions leave idle (v6 small, the real lines
    that fit it, one at a time in process: 13.5 instead of 24.2 ms p50 on 2 cores). Under
    load it is never used, since two 1-thread sessions outrun one 2-thread session there.
    """

    workers: int = 2
    intra_op_threads: int = 1
    graph_optimization: str = "all"
    idle_threads: int = 0

    @property
    def has_idle_session(self) -> bool:
        return self.idle_threads > self.intra_op_threads


def resolve_idle_threads(idle_threads: int | None, workers: int, threads: int) -> int:
    """The idle session's threads for ``--idle-threads``: None (auto) = workers x threads."""
    return workers * threads if idle_threads is None else idle_threads


@functools.cache
def _register_shared_arena() -> None:
    """Register ONNX Runtime's process-wide CPU arena, once per process.

    ONNX Runtime's environment is process-wide; sessions opt in to this arena with
    ``session.use_env_allocators``. Registering it twice is an error, hence the cache.
    """
    import onnxruntime as ort

    info = ort.OrtMemoryInfo(
        "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
    )
    # Defaults: no size cap, extend by powers of two (same-as-requested measured worse).
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 0, -1, -1))


def create_session(
    path: Path,
    config: SessionConfig,
    what: str,
    memory_arena: bool = True,
    threads: int | None = None,
    shared_arena: bool = False,
    memory_pattern: bool = True,
) -> Any:
    """One CPU session for the ONNX file at ``path``; ``what`` names it in errors.

    ``threads`` overrides ``config.intra_op_threads`` (the recognizer's idle session, see
    ``SessionConfig``). Such a session's pool threads spin between the parallel parts of a
    run, for at most ``IDLE_SPIN_US`` at a time, and stop spinning when the run returns
    (``session.force_spinning_stop``). Spinning inside a run is what makes two threads fast
    on one line: a pool thread that sleeps between operators has to be woken for the next
    one (in process, the real lines alone, p50: v6 small 13.7-14.0 instead of 17.0 ms,
    v6 tiny 2.9-3.0 instead of 3.7, at the same CPU per line). ONNX Runtime's default also
    spins *after* the run: a whole core for ~28 ms after each run, which the worker
    sessions need.

    ``shared_arena`` puts the session's buffers in one CPU arena shared by every session
    that asks for it (the line recognizer's), instead of an arena of its own: each arena
    keeps the largest batch it ever ran, so separate arenas hold that peak once per session.
    Two v6 small worker sessions and an idle session, after every real line alone and a
    batch on each worker: 399 instead of 456 MiB, at the same speed.

    ``memory_pattern=False`` for models whose input size changes from run to run (the page
    detector): a memory pattern is one block planned per input shape, and the arena keeps
    every shape's block (a page server grew past 2.7 GiB that way). Without patterns the
    arena hands out each tensor's buffer and reuses freed ones whatever the next shape.
    ``memory_arena=False`` gives every buffer back after each run; the next run's buffers
    are then fresh pages the kernel must fault in and zero (~20,000 faults per page on the
    detector, a fifth of its time; see ``TextDetector``).
    """
    import onnxruntime as ort

    if config.graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
        raise ValueError(
            f"graph_optimization must be one of {GRAPH_OPTIMIZATION_LEVELS}, "
            f"not {config.graph_optimization!r}"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads if threads is None else threads
    options.enable_cpu_mem_arena = memory_arena
    options.enable_mem_pattern = memory_pattern
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[config.graph_optimization]
    if threads is not None and threads > 1:
        options.add_session_config_entry("session.intra_op.spin_duration_us", str(IDLE_SPIN_US))
        options.add_session_config_entry("session.force_spinning_stop", "1")
    if shared_arena and memory_arena:
        _register_shared_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelLoadError(f"{what}: ONNX Runtime cannot load {path}: {exc}") from exc


class SessionPool:
    """Sessions of one model lent to whichever thread needs one.

    Page stages (orientation, detection, line classification) run in the engine's thread
    pool, not in a batcher with one worker per session; the pool hands each running thread
    a session of its own, and a thread that finds none free waits for one.
    """

    def __init__(self, sessions: Sequence[InferenceSession]) -> None:
        if not sessions:
            raise ValueError("a session pool needs at least one session")
        self._free: queue.SimpleQueue[InferenceSession] = queue.SimpleQueue()
        for session in sessions:
            self._free.put(session)
        self.first = sessions[0]

    @classmethod
    def load(
        cls,
        path: Path,
        config: SessionConfig,
        what: str,
        memory_arena: bool = True,
        memory_pattern: bool = True,
    ) -> SessionPool:
        return cls(
            [
                create_session(path, config, what, memory_arena, memory_pattern=memory_pattern)
                for _ in range(max(1, config.workers))
            ]
        )

    @contextlib.contextmanager
    def session(self) -> Iterator[InferenceSession]:
        session = self._free.get()
        try:
            yield session
        finally:
            self._free.put(session)


class PooledModel:
    """A model with one image input [N, 3, H, W], run from worker threads via a SessionPool.

    The page detector and both orientation classifiers are this; subclasses add their own
    pre- and post-processing around ``run``.
    """

    #: The input the model must have, as shown in the load error.
    INPUT_SHAPE = "[N, 3, H, W]"
    #: The height and width fed to the model: where the model fixes a size of its own it
    #: must be this one (None: sizes vary, so the model may fix none).
    INPUT_HW: tuple[int | None, int | None] = (None, None)
    #: The first output's shape as the code reads it: its rank, and the sizes that must hold
    #: where the model fixes them (None: any); and that shape as shown in the load error.
    OUTPUT_DIMS: tuple[int | None, ...] | None = None
    OUTPUT_SHAPE = ""
    #: See ``create_session``: patterns off for models whose input size varies between runs.
    MEMORY_ARENA = True
    MEMORY_PATTERN = True

    def __init__(self, sessions: SessionPool, input_name: str) -> None:
        self._sessions = sessions
        self._input_name = input_name

    @classmethod
    def load(cls, path: Path, config: SessionConfig, what: str) -> Self:
        """Build the sessions and check the model has one 3-channel image input."""
        pool = SessionPool.load(path, config, what, cls.MEMORY_ARENA, cls.MEMORY_PATTERN)
        inputs = pool.first.get_inputs()  # type: ignore[attr-defined]
        if (
            len(inputs) != 1
            or len(inputs[0].shape) != 4
            or inputs[0].shape[1] != 3
            or not _fits(inputs[0].shape[2:], cls.INPUT_HW)
        ):
            shapes = [(i.name, i.shape) for i in inputs]
            raise ModelLoadError(
                f"{what} ({path}): expected one input {cls.INPUT_SHAPE}, got {shapes}; "
                "is this the right file for this role?"
            )
        outputs = pool.first.get_outputs()  # type: ignore[attr-defined]
        if cls.OUTPUT_DIMS is not None and not _fits(outputs[0].shape, cls.OUTPUT_DIMS):
            raise ModelLoadError(
                f"{what} ({path}): expected its first output {cls.OUTPUT_SHAPE}, got "
                f"{outputs[0].shape}; is this the right file for this role?"
            )
        return cls(pool, str(inputs[0].name))

    def run(self, tensor: np.ndarray, run_options: Any = None) -> np.ndarray:
        """The model's first output for ``tensor``, on a session no other thread is using."""
        with self._sessions.session() as session:
            return np.asarray(session.run(None, {self._input_name: tensor}, run_options)[0])


def _fits(declared: Sequence[object], wanted: Sequence[int | None]) -> bool:
    """Whether a model's declared dimensions (ints where fixed, names or None where they
    vary) can take ``wanted``: same rank, and every fixed one is the wanted size."""
    if len(declared) != len(wanted):
        return False
    return all(not isinstance(d, int) or d == w for d, w in zip(declared, wanted, strict=True))
