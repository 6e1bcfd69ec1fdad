"""Accuracy metrics used by the accuracy tests and the benchmarks (not by the server).

CER is the edit distance between NFKC-normalised strings divided by the reference length,
summed over a set (total edits / total reference characters), the way the figures in
``shared/design/models.md`` were computed.

Pages are compared as bags of tokens (words for Latin script, characters for Chinese),
NFKC-normalised and case-folded; the page error of a set is total token errors / total
reference tokens.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


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


def page_tokens(text: str, by_chars: bool) -> Counter[str]:
    """The bag of tokens of a page: NFKC, case-folded; characters (CJK) or whitespace words.

    Order-insensitive on purpose: a page's reading order (columns, captions, sidebars) is
    ambiguous and its ground truth is often zone-ordered, so a page metric that compares
    sequences would mostly measure layout guessing rather than recognition.
    """
    folded = nfkc(text).casefold()
    if by_chars:
        return Counter(ch for ch in folded if not ch.isspace())
    return Counter(folded.split())


@dataclass(frozen=True)
class BagErrors:
    """Token counts of one page: in the reference, missed, and not in the reference."""

    reference: int
    missed: int
    extra: int

    def errors(self, count_extra: bool = True) -> int:
        """A substitution is one missed plus one extra token and counts once, hence ``max``.

        ``count_extra=False`` for pages whose ground truth deliberately leaves out some
        visible text (charts, watermarks): only what the reference has can be checked there.
        """
        return max(self.missed, self.extra) if count_extra else self.missed


def bag_errors(reference: str, hypothesis: str, by_chars: bool) -> BagErrors:
    """Compare two page texts as bags of tokens (see ``page_tokens``)."""
    ref = page_tokens(reference, by_chars)
    hyp = page_tokens(hypothesis, by_chars)
    return BagErrors(
        reference=sum(ref.values()),
        missed=sum((ref - hyp).values()),
        extra=sum((hyp - ref).values()),
    )
