"""Greedy CTC decoding with per-character confidences, time-step positions and word extents.

The recognizer outputs, for each of T time steps, a softmax over C classes: class 0 is the
CTC blank, classes 1..len(charset) are the charset in order, and the last class is a space.
Greedy decoding takes the best class per step, merges repeats and drops blanks. Each kept
character remembers the steps that emitted it, which places it horizontally in the line:
step t covers input columns [t * stride, (t + 1) * stride).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

BLANK = 0


@dataclass(frozen=True)
class Word:
    """A word of a decoded line; ``x_start``/``x_end`` in pixels of the image the client sent."""

    text: str
    confidence: float
    x_start: int
    x_end: int


@dataclass(frozen=True)
class LineText:
    """A decoded line: its text, mean character confidence and words."""

    text: str
    confidence: float
    words: tuple[Word, ...]


@dataclass(frozen=True)
class _Char:
    text: str
    confidence: float
    first_step: int
    last_step: int


def class_labels(charset: Sequence[str]) -> list[str]:
    """All class labels in output order: blank, the charset, then the space class."""
    return ["", *charset, " "]


def decode_batch(
    best_class: np.ndarray,
    best_prob: np.ndarray,
    labels: Sequence[str],
    content_widths: Sequence[int],
    orig_widths: Sequence[int],
    input_width: int,
) -> list[LineText]:
    """Decode a batch from its per-step argmax classes and their probabilities ([N, T] each).

    ``content_widths`` are the lines' widths in the model input before padding and
    ``orig_widths`` the widths of the images sent; ``input_width`` is the padded batch width.
    """
    steps = best_class.shape[1]
    return [
        decode_line(
            best_class[i],
            best_prob[i],
            labels,
            Fraction(input_width, max(steps, 1)),
            content_widths[i],
            orig_widths[i],
        )
        for i in range(best_class.shape[0])
    ]


def decode_line(
    best_class: np.ndarray,
    best_prob: np.ndarray,
    labels: Sequence[str],
    stride: Fraction | float,
    content_width: int,
    orig_width: int,
) -> LineText:
    """Greedy-decode one line; see ``decode_batch`` for the arguments."""
    chars = _collapse(best_class.tolist(), best_prob.tolist(), labels)
    # Spaces at the ends carry no text; drop them so text and confidence agree.
    while chars and chars[0].text == " ":
        chars.pop(0)
    while chars and chars[-1].text == " ":
        chars.pop()
    if not chars:
        return LineText(text="", confidence=0.0, words=())
    text = "".join(c.text for c in chars)
    # Input column -> image column is a rational factor; kept as integers so word edges are
    # exact (float rounding put whole-pixel edges one pixel off) and cheap (Fraction
    # arithmetic per word was a fifth of the CPU spent around a tiny model's inference).
    factor = Fraction(stride) * Fraction(orig_width, content_width)
    num, den = factor.numerator, factor.denominator
    words = tuple(_word(group, num, den, orig_width) for group in _split_words(chars) if group)
    confidence = float(sum(c.confidence for c in chars) / len(chars))
    return LineText(text=text, confidence=confidence, words=words)


def _collapse(classes: list[int], probs: list[float], labels: Sequence[str]) -> list[_Char]:
    chars: list[_Char] = []
    prev = BLANK
    for t, (cls, p) in enumerate(zip(classes, probs, strict=True)):
        if cls != BLANK:
            if cls == prev:
                last = chars[-1]
                chars[-1] = _Char(last.text, max(last.confidence, p), last.first_step, t)
            else:
                chars.append(_Char(labels[cls], p, t, t))
        prev = cls
    return chars


def _stands_alone(ch: str) -> bool:
    """CJK ideographs, kana and full-width forms are words of their own (no spaces between)."""
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _split_words(chars: list[_Char]) -> list[list[_Char]]:
    groups: list[list[_Char]] = [[]]
    for c in chars:
        if c.text == " ":
            groups.append([])
        elif _stands_alone(c.text):
            groups.extend(([c], []))
        else:
            groups[-1].append(c)
    return groups


def _word(chars: list[_Char], num: int, den: int, orig_width: int) -> Word:
    """A word from its characters; step t starts at image column t * num / den."""
    x0 = chars[0].first_step * num // den
    x1 = -(-(chars[-1].last_step + 1) * num // den)
    x0 = min(max(x0, 0), orig_width - 1)
    x1 = min(max(x1, x0 + 1), orig_width)
    return Word(
        text="".join(c.text for c in chars),
        confidence=float(sum(c.confidence for c in chars) / len(chars)),
        x_start=x0,
        x_end=x1,
    )
