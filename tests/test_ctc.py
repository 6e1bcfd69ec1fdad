"""Greedy CTC decoding (ocr_core.ctc) on hand-built probability matrices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from ocr_core.ctc import LineText, Word, class_labels, decode_batch, decode_line

CHARSET = ["a", "b", "c"]
LABELS = class_labels(CHARSET)  # ["", "a", "b", "c", " "]
BLANK = "-"


def probs_matrix(steps: Sequence[tuple[str, float]], labels: Sequence[str]) -> np.ndarray:
    """A [T, C] softmax where step t's best class is ``steps[t][0]`` with prob ``steps[t][1]``.

    ``"-"`` names the blank class. The remaining mass is spread evenly over the other classes
    (every test probability is > 0.5, so the named class stays the argmax).
    """
    c = len(labels)
    out = np.empty((len(steps), c), dtype=np.float32)
    for t, (label, p) in enumerate(steps):
        cls = 0 if label == BLANK else labels.index(label)
        out[t, :] = (1.0 - p) / (c - 1)
        out[t, cls] = p
    return out


def decode(
    steps: Sequence[tuple[str, float]],
    labels: Sequence[str] = LABELS,
    *,
    input_width: int | None = None,
    content_width: int | None = None,
    orig_width: int | None = None,
) -> LineText:
    """Decode one line given per-step (label, prob), through ``decode_batch`` (stride 8)."""
    probs = probs_matrix(steps, labels)
    input_width = input_width if input_width is not None else 8 * len(steps)
    content_width = content_width if content_width is not None else input_width
    orig_width = orig_width if orig_width is not None else content_width
    (line,) = decode_batch(
        probs.argmax(axis=1)[None, :],
        probs.max(axis=1)[None, :],
        labels,
        [content_width],
        [orig_width],
        input_width,
    )
    return line


def seq(text: str, p: float = 0.9) -> list[tuple[str, float]]:
    """One step per character of ``text`` (``-`` is blank), all with probability ``p``."""
    return [(ch, p) for ch in text]


def test_class_labels_blank_first_space_last() -> None:
    assert class_labels(["x", "y"]) == ["", "x", "y", " "]
    assert len(LABELS) == len(CHARSET) + 2


def test_probs_matrix_helper_is_a_softmax_with_the_intended_argmax() -> None:
    m = probs_matrix([("-", 0.9), ("b", 0.6), (" ", 0.7)], LABELS)
    assert m.shape == (3, 5)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
    assert m.argmax(axis=1).tolist() == [0, 2, 4]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ("aa", "a"),  # a repeat without a blank is one character
        ("a-a", "aa"),  # a blank between repeats keeps both
        ("aaab", "ab"),
        ("--a--", "a"),  # blanks dropped
        ("ab-ba", "abba"),
        ("a--bb-c", "abc"),
        ("cc-c-cc", "ccc"),
    ],
)
def test_greedy_collapse(steps: str, expected: str) -> None:
    assert decode(seq(steps)).text == expected


def test_all_blank_gives_empty_text_zero_confidence_no_words() -> None:
    line = decode(seq("-----"))
    assert line == LineText(text="", confidence=0.0, words=())


def test_only_spaces_gives_empty_line() -> None:
    line = decode(seq(" - -  "))
    assert line.text == ""
    assert line.confidence == 0.0
    assert line.words == ()


def test_zero_steps_gives_empty_line() -> None:
    (line,) = decode_batch(
        np.zeros((1, 0), dtype=np.int64), np.zeros((1, 0), dtype=np.float32), LABELS, [8], [8], 8
    )
    assert line == LineText(text="", confidence=0.0, words=())


def test_leading_and_trailing_spaces_stripped_and_not_counted_in_confidence() -> None:
    steps = [(" ", 0.55), ("-", 0.9), ("a", 0.8), ("-", 0.9), ("b", 0.6), ("-", 0.9), (" ", 0.51)]
    line = decode(steps)
    assert line.text == "ab"
    assert line.confidence == pytest.approx((0.8 + 0.6) / 2, abs=1e-6)
    assert [w.text for w in line.words] == ["ab"]


def test_char_confidence_is_max_over_its_run_and_line_is_mean() -> None:
    # "a" run over three steps with 0.6, 0.95, 0.7 -> 0.95; "b" alone at 0.55.
    steps = [("a", 0.6), ("a", 0.95), ("a", 0.7), ("-", 0.99), ("b", 0.55)]
    line = decode(steps)
    assert line.text == "ab"
    assert line.confidence == pytest.approx((0.95 + 0.55) / 2, abs=1e-6)
    (word,) = line.words
    assert word.confidence == pytest.approx((0.95 + 0.55) / 2, abs=1e-6)


def test_blank_probabilities_do_not_count() -> None:
    line = decode([("-", 0.99), ("c", 0.6), ("-", 0.99)])
    assert line.confidence == pytest.approx(0.6, abs=1e-6)


def test_words_split_on_space_class_with_their_own_confidence() -> None:
    steps = [("a", 0.9), ("-", 0.9), ("b", 0.7), (" ", 0.8), ("c", 0.6)]
    line = decode(steps)
    assert line.text == "ab c"
    assert [w.text for w in line.words] == ["ab", "c"]
    assert line.words[0].confidence == pytest.approx(0.8, abs=1e-6)
    assert line.words[1].confidence == pytest.approx(0.6, abs=1e-6)
    # Internal spaces are characters of the line: they count in its confidence.
    assert line.confidence == pytest.approx((0.9 + 0.7 + 0.8 + 0.6) / 4, abs=1e-6)


def test_two_spaces_between_words_make_no_empty_word() -> None:
    line = decode(seq("a -  -b"))
    # " -" then " " (a blank-separated repeat of the space class) are two spaces.
    assert line.text == "a  b"
    assert [w.text for w in line.words] == ["a", "b"]


def test_cjk_characters_are_words_of_their_own() -> None:
    labels = class_labels(["中", "文", "a", "b"])
    line = decode(seq("中-文ab中"), labels)
    assert line.text == "中文ab中"
    assert [w.text for w in line.words] == ["中", "文", "ab", "中"]


def test_cjk_next_to_spaces_makes_no_empty_words() -> None:
    labels = class_labels(["中", "文", "a"])
    line = decode(seq("a 中 文"), labels)
    assert line.text == "a 中 文"
    assert [w.text for w in line.words] == ["a", "中", "文"]


def test_full_width_latin_stands_alone() -> None:
    labels = class_labels(["Ａ", "b"])
    line = decode(seq("bＡb"), labels)
    assert [w.text for w in line.words] == ["b", "Ａ", "b"]


def test_word_extent_maps_steps_to_original_pixels() -> None:
    # 10 steps over an 80 px input: stride 8; content 80 px, original 160 px: scale 2.
    steps = seq("--aa------")
    line = decode(steps, input_width=80, content_width=80, orig_width=160)
    (word,) = line.words
    assert word == Word(text="a", confidence=pytest.approx(0.9, abs=1e-6), x_start=32, x_end=64)


def test_decode_line_with_explicit_stride() -> None:
    probs = probs_matrix(seq("--aa------"), LABELS)
    line = decode_line(probs.argmax(1), probs.max(1), LABELS, 8.0, 80, 160)
    assert (line.words[0].x_start, line.words[0].x_end) == (32, 64)


def test_word_extent_of_several_words() -> None:
    # stride 8, scale 1: "ab" over steps 0..2, "c" at step 5.
    line = decode(seq("a-b  c----"), input_width=80, content_width=80, orig_width=80)
    assert [(w.text, w.x_start, w.x_end) for w in line.words] == [("ab", 0, 24), ("c", 40, 48)]


def test_word_extent_scales_down() -> None:
    # stride 8, content 80, original 40: scale 0.5; step 3 covers [24, 32) -> [12, 16).
    line = decode(seq("---b------"), input_width=80, content_width=80, orig_width=40)
    (word,) = line.words
    assert (word.x_start, word.x_end) == (12, 16)


def test_word_extent_clamped_to_original_width() -> None:
    # The batch is padded to 80 px but the line's content is only 40 px (orig 40): a char
    # emitted in the padding (step 9 -> [72, 80)) must still lie inside the image.
    line = decode(seq("a------- b"), input_width=80, content_width=40, orig_width=40)
    first, last = line.words
    assert (first.x_start, first.x_end) == (0, 8)
    assert last.x_start == 39
    assert last.x_end == 40
    assert 0 <= last.x_start < last.x_end <= 40


def test_word_extent_is_never_empty() -> None:
    # Scale 0.05: step 0 maps to [0, 0.4) -> at least one pixel wide.
    line = decode(seq("a---------"), input_width=80, content_width=80, orig_width=4)
    (word,) = line.words
    assert (word.x_start, word.x_end) == (0, 1)


def test_decode_batch_returns_one_result_per_line() -> None:
    p1 = probs_matrix(seq("ab-b------"), LABELS)
    p2 = probs_matrix([("c", 0.7), ("-", 0.9), (" ", 0.9), ("a", 0.8), *seq("------")], LABELS)
    probs = np.stack([p1, p2])
    results = decode_batch(probs.argmax(axis=2), probs.max(axis=2), LABELS, [80, 40], [160, 20], 80)
    assert len(results) == 2
    first, second = results
    assert first.text == "abb"
    assert [(w.text, w.x_start, w.x_end) for w in first.words] == [("abb", 0, 64)]
    assert second.text == "c a"
    # Line 2: stride 8, content 40, orig 20 -> scale 0.5.
    assert [(w.text, w.x_start, w.x_end) for w in second.words] == [("c", 0, 4), ("a", 12, 16)]
    assert second.confidence == pytest.approx((0.7 + 0.9 + 0.8) / 3, abs=1e-6)


def test_decode_batch_results_do_not_depend_on_batch_mates() -> None:
    p1 = probs_matrix(seq("a-b c-----"), LABELS)
    p2 = probs_matrix(seq("cc--b-a---"), LABELS)
    both = np.stack([p1, p2])
    together = decode_batch(both.argmax(2), both.max(2), LABELS, [70, 80], [140, 40], 80)
    alone = decode_batch(both[1:].argmax(2), both[1:].max(2), LABELS, [80], [40], 80)
    assert together[1] == alone[0]


def test_word_extent_exact_integer_boundary_not_lost_to_rounding() -> None:
    # stride 8, content 63, orig 549: step 7 starts at 7 * 8 * 549 / 63 = 488 exactly.
    steps = seq("-------a--")
    line = decode(steps, input_width=80, content_width=63, orig_width=549)
    (word,) = line.words
    assert word.x_start == 488


def test_word_end_exact_integer_boundary_not_lost_to_rounding() -> None:
    # stride 8, content 63, orig 261: a char at step 6 ends at 7 * 8 * 261 / 63 = 232.
    line = decode(seq("------a---"), input_width=80, content_width=63, orig_width=261)
    (word,) = line.words
    assert word.x_end == 232
