"""Accuracy metrics (ocr_core.evaluation): edit distance, NFKC folding, CER totals."""

from __future__ import annotations

import pytest

from ocr_core.evaluation import char_errors, edit_distance, nfkc


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("kitten", "sitting", 3),
        ("sitting", "kitten", 3),
        ("", "", 0),
        ("", "abc", 3),
        ("abc", "", 3),
        ("abc", "abc", 0),
        ("abc", "abd", 1),  # substitution
        ("abc", "abxc", 1),  # insertion
        ("abc", "ac", 1),  # deletion
        ("flaw", "lawn", 2),
        ("intention", "execution", 5),
        ("ab", "ba", 2),  # no transposition operation
        ("中文字", "中字", 1),
        ("日本語", "日本人", 1),
        ("café", "cafe", 1),
        ("ÅΩ", "ΩÅ", 2),
    ],
)
def test_edit_distance_known_cases(a: str, b: str, distance: int) -> None:
    assert edit_distance(a, b) == distance


def test_edit_distance_is_symmetric_and_bounded() -> None:
    words = ["", "a", "ab", "abc", "xbcz", "kitten", "sitting", "中文"]
    for a in words:
        for b in words:
            d = edit_distance(a, b)
            assert d == edit_distance(b, a)
            assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))
            assert (d == 0) == (a == b)


def test_nfkc_folds_full_width_forms() -> None:
    assert nfkc("ＡＢ１，") == "AB1,"
    assert nfkc("ｶﾀｶﾅ") == "カタカナ"
    assert nfkc("ﬁ") == "fi"
    assert nfkc("plain ascii") == "plain ascii"
    assert nfkc("e\u0301") == "é"


def test_char_errors_totals_over_pairs() -> None:
    edits, chars = char_errors([("kitten", "sitting"), ("abc", "abc"), ("中文", "中")])
    assert (edits, chars) == (3 + 0 + 1, 6 + 3 + 2)


def test_char_errors_normalises_both_sides() -> None:
    # Full-width hypothesis equals the ASCII reference after NFKC.
    assert char_errors([("AB1,", "ＡＢ１，")]) == (0, 4)
    # The reference length is counted after NFKC too ("ﬁ" is two characters).
    assert char_errors([("ﬁx", "fix")]) == (0, 3)


def test_char_errors_empty() -> None:
    assert char_errors([]) == (0, 0)
    assert char_errors([("", "abc")]) == (3, 0)
    assert char_errors(iter([("ab", "")])) == (2, 2)
