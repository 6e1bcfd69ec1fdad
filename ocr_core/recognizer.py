"""A loaded CTC line recognizer: its charset, its ONNX Runtime sessions, and batch inference.

One ``LineRecognizer`` per served model. It holds one session per batcher worker, each with
its own intra-op thread count: on small machines several 1-thread sessions outrun one
multi-threaded session (shared/design/models.md measured 10-60 % on 2 cores; this project
has not re-measured it yet), and a session never runs two batches at once, so workers never
contend for a session. An optional *idle session* with more threads runs a batch that is all
the batcher has (see ``SessionConfig.idle_threads`` and ``MicroBatcher``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ocr_core.ctc import LineText, class_labels, decode_batch
from ocr_core.errors import ModelLoadError
from ocr_core.preprocess import PreparedLine, assemble_batch
from ocr_core.registry import ModelSpec
from ocr_core.sessions import (
    GRAPH_OPTIMIZATION_LEVELS,
    InferenceSession,
    SessionConfig,
    create_session,
)

__all__ = ["GRAPH_OPTIMIZATION_LEVELS", "LineRecognizer", "SessionConfig"]


class LineRecognizer:
    """A CTC recognizer ready to run batches of prepared lines from worker threads."""

    def __init__(
        self,
        name: str,
        input_height: int,
        charset: Sequence[str],
        sessions: Sequence[InferenceSession],
        input_name: str = "x",
        source: str = "",
        idle_session: InferenceSession | None = None,
    ) -> None:
        if not sessions:
            raise ValueError("a recognizer needs at least one session")
        self.name = name
        self.input_height = input_height
        self.charset_size = len(charset)
        self.labels = class_labels(charset)
        self.source = source
        self._sessions = list(sessions)
        self._idle_session = idle_session
        self._input_name = input_name

    @property
    def workers(self) -> int:
        """Number of sessions, i.e. batches that can run at once."""
        return len(self._sessions)

    @property
    def has_idle_session(self) -> bool:
        return self._idle_session is not None

    @classmethod
    def load(cls, spec: ModelSpec, config: SessionConfig) -> LineRecognizer:
        """Build the sessions for ``spec`` and check the model fits the CTC recognizer contract.

        Checks: one float input of shape [N, 3, H, W] with H equal to the declared height (or
        dynamic), one output [N, T, C] with C = charset size + 2 (blank and space).
        """
        what = f"model {spec.name!r} recognizer"
        sessions = [
            create_session(spec.recognizer_path, config, what, shared_arena=True)
            for _ in range(max(1, config.workers))
        ]
        idle = None
        if config.has_idle_session:
            idle = create_session(
                spec.recognizer_path,
                config,
                f"{what} (idle session)",
                threads=config.idle_threads,
                shared_arena=True,
            )
        first = sessions[0]
        charset = _load_charset(spec, first)
        input_name = _check_io(spec, first, len(charset))
        return cls(spec.name, spec.input_height, charset, sessions, input_name, spec.source, idle)

    def infer(self, worker: int, lines: Sequence[PreparedLine]) -> list[LineText]:
        """Run one same-bucket batch on session ``worker``; called from that worker's thread."""
        return self._run(self._sessions[worker], lines)

    def infer_idle(self, lines: Sequence[PreparedLine]) -> list[LineText]:
        """Run a batch on the idle session (all the batcher's cores); see ``MicroBatcher``."""
        if self._idle_session is None:
            raise RuntimeError(f"model {self.name!r} has no idle session")
        return self._run(self._idle_session, lines)

    def _run(self, session: InferenceSession, lines: Sequence[PreparedLine]) -> list[LineText]:
        batch = assemble_batch(list(lines), self.input_height)
        probs = session.run(None, {self._input_name: batch})[0]
        return self.read_output(probs, lines, batch.shape[3])

    def read_output(
        self, probs: np.ndarray, lines: Sequence[PreparedLine], batch_width: int
    ) -> list[LineText]:
        """Greedy CTC decoding of one batch's [N, T, C] class probabilities into line texts.

        Apart from ``_run`` so that a benchmark can time the output side on its own
        (``bench.grpc_floor``: the work a served line needs beyond inference).
        """
        if probs.ndim != 3 or probs.shape[0] != len(lines):
            raise RuntimeError(f"model output shape {probs.shape} for a batch of {len(lines)}")
        best = probs.argmax(axis=2)
        best_prob = np.take_along_axis(probs, best[:, :, None], axis=2)[:, :, 0]
        return decode_batch(
            best,
            best_prob,
            self.labels,
            [line.width for line in lines],
            [line.orig_width for line in lines],
            batch_width,
        )


def _load_charset(spec: ModelSpec, session: InferenceSession) -> list[str]:
    if spec.charset_path is not None:
        path = Path(spec.charset_path)
        try:
            # utf-8-sig: a byte-order mark (Windows Notepad) is not part of the first character
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ModelLoadError(
                f"model {spec.name!r}: charset file {path} is not UTF-8 "
                f"(byte {exc.object[exc.start]:#04x} at offset {exc.start}); save it as UTF-8"
            ) from None
        except OSError as exc:
            raise ModelLoadError(
                f"model {spec.name!r}: cannot read charset file {path}: {exc.strerror or exc}"
            ) from None
        chars = [line.rstrip("\r\n") for line in text.split("\n")]
        while chars and chars[-1] == "":
            chars.pop()
        if not chars:
            raise ModelLoadError(
                f"model {spec.name!r}: charset file {path} is empty; it needs one character "
                "per line, in the order of the model's classes"
            )
        return chars
    key = spec.charset_metadata_key or "character"
    metadata = session.get_modelmeta().custom_metadata_map  # type: ignore[attr-defined]
    if key not in metadata:
        raise ModelLoadError(
            f"model {spec.name!r}: {spec.recognizer_path} has no metadata key {key!r} holding the "
            f"charset (keys: {sorted(metadata)}); give a charset file in the model config"
        )
    return metadata[key].split("\n")


def _fixed(dim: object) -> bool:
    """Whether an ONNX dimension is a fixed size (an int); -1 or None mean dynamic."""
    return isinstance(dim, int) and dim > 0


def _check_io(spec: ModelSpec, session: InferenceSession, charset_size: int) -> str:
    inputs = session.get_inputs()  # type: ignore[attr-defined]
    outputs = session.get_outputs()  # type: ignore[attr-defined]
    where = f"model {spec.name!r} ({spec.recognizer_path})"
    if len(inputs) != 1 or len(outputs) < 1:
        raise ModelLoadError(
            f"{where}: expected one input and one output, found {len(inputs)} and {len(outputs)}"
        )
    shape = inputs[0].shape
    if inputs[0].type != "tensor(float)" or len(shape) != 4 or shape[1] != 3:
        raise ModelLoadError(
            f"{where}: input must be float32 [N, 3, H, W], found {inputs[0].type} {shape}"
        )
    if isinstance(shape[2], int) and shape[2] != spec.input_height:
        raise ModelLoadError(
            f"{where}: input height is {shape[2]} but the model config says {spec.input_height}"
        )
    # Lines are batched and as wide as they read: a fixed batch or width loads, then fails
    # every call that is not exactly that shape.
    fixed = [(name, d) for name, d in (("batch", shape[0]), ("width", shape[3])) if _fixed(d)]
    if fixed:
        found = ", ".join(f"{name} {d}" for name, d in fixed)
        raise ModelLoadError(
            f"{where}: input {shape} fixes its {found}; the server needs a dynamic batch and "
            "width (export the model with both axes dynamic)"
        )
    if len(outputs[0].shape or ()) != 3:
        raise ModelLoadError(
            f"{where}: output must be [N, T, classes] (CTC scores per time step), found "
            f"{outputs[0].shape}; is this a text recognizer?"
        )
    classes = outputs[0].shape[-1]
    if classes != charset_size + 2:
        raise ModelLoadError(
            f"{where}: output has {classes} classes but the charset has {charset_size} "
            f"characters; a CTC recognizer needs charset + 2 (blank first, space last)"
        )
    return str(inputs[0].name)
