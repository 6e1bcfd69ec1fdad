"""Accuracy metrics used by the accuracy tests and the benchmarks (not by the server).

CER is the edit distance between NFKC-normalised strings divided by the reference length,
summed over a set (total edits / total reference characters), the way the figures in
``shared/design/models.md`` were computed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable


def nfkc(text: str) -> str:
    """NFKC-normalise (full-width forms to ASCII etc.) so equivalent glyphs compare equal."""
    return unicodedata.normalize("NFKC", text)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def char_errors(pairs: Iterable[tuple[str, str]]) -> tuple[int, int]:
    """Total edits and total reference characters over (reference, hypothesis) pairs, NFKC."""
    edits = chars = 0
    for ref, hyp in pairs:
        ref_n, hyp_n = nfkc(ref), nfkc(hyp)
        edits += edit_distance(ref_n, hyp_n)
        chars += len(ref_n)
    return edits, chars
