"""Line preprocessing (ocr_core.preprocess): width buckets, resizing and batch assembly."""

from __future__ import annotations

import numpy as np
import pytest

from ocr_core.errors import InvalidInput
from ocr_core.preprocess import (
    PAD_VALUE,
    PreparedLine,
    WidthBuckets,
    assemble_batch,
    prepare_line,
    resized_width,
)

BUCKETS = WidthBuckets()  # min_width 64, min_step 16, max_width 4096
HEIGHT = 48


def reference_bucket(width: int, min_width: int = 64, min_step: int = 16) -> int:
    """The documented rule, written independently: step = max(min_step, 2^floor(log2 w) / 8)."""
    w = max(width, min_width)
    largest_pow2 = 1
    while largest_pow2 * 2 <= w:
        largest_pow2 *= 2
    step = max(min_step, largest_pow2 // 8)
    return ((w + step - 1) // step) * step


# --- WidthBuckets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "bucket"),
    [
        (1, 64),
        (63, 64),
        (64, 64),
        (65, 80),
        (100, 112),
        (127, 128),
        (128, 128),
        (129, 144),
        (255, 256),
        (256, 256),
        (257, 288),
        (300, 320),
        (513, 576),
        (1000, 1024),
        (1025, 1152),
        (2049, 2304),
        (3000, 3072),
        (4000, 4096),
        (4096, 4096),
    ],
)
def test_bucket_exact_values(width: int, bucket: int) -> None:
    assert BUCKETS.bucket(width) == bucket
    assert reference_bucket(width) == bucket


def test_bucket_matches_documented_rule_up_to_max_width() -> None:
    for w in range(1, BUCKETS.max_width + 1):
        assert BUCKETS.bucket(w) == reference_bucket(w), w


def test_bucket_monotonic_and_never_narrower_than_the_line() -> None:
    previous = 0
    for w in range(1, 5001):
        b = BUCKETS.bucket(w)
        assert b >= previous, w
        assert b >= w, w
        assert b >= BUCKETS.min_width, w
        previous = b


def test_bucket_padding_waste_at_most_an_eighth_from_128() -> None:
    for w in range(128, BUCKETS.max_width + 1):
        b = BUCKETS.bucket(w)
        assert (b - w) / b <= 0.125, w


def test_bucket_is_a_fixed_point() -> None:
    for w in range(1, BUCKETS.max_width + 1):
        b = BUCKETS.bucket(w)
        assert BUCKETS.bucket(b) == b, w


def test_min_width_honoured_for_tiny_widths() -> None:
    buckets = WidthBuckets(min_width=100)
    for w in (1, 5, 50, 99, 100):
        assert buckets.bucket(w) == 112  # 100 rounded up to a multiple of 16
    assert WidthBuckets(min_width=32).bucket(1) == 32
    assert WidthBuckets(min_width=32).bucket(33) == 48


def test_min_step_honoured() -> None:
    buckets = WidthBuckets(min_step=32)
    assert buckets.bucket(65) == 96
    assert buckets.bucket(300) == 320  # step 256/8 = 32
    assert buckets.bucket(600) == 640  # step 512/8 = 64 > 32


def test_bucket_never_exceeds_max_width_for_lines_within_it() -> None:
    buckets = WidthBuckets(max_width=1000)
    for w in range(1, 1001):
        assert w <= buckets.bucket(w) <= 1000, w
    assert buckets.bucket(990) == 1000


def test_lines_of_close_widths_share_buckets() -> None:
    assert {BUCKETS.bucket(w) for w in range(97, 113)} == {112}
    assert {BUCKETS.bucket(w) for w in range(993, 1025)} == {1024}
    assert {BUCKETS.bucket(w) for w in range(1, 65)} == {64}
    # ... and the buckets are few: 64..128 by 16 (5), then 8 per octave up to 4096.
    assert len({BUCKETS.bucket(w) for w in range(1, 4097)}) == 5 + 8 * 5


# --- resized_width / prepare_line ------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "target", "expected"),
    [
        (32, 100, 48, 150),
        (48, 100, 32, 67),  # 66.67 rounds up
        (48, 96, 48, 96),
        (30, 10, 48, 16),
        (7, 3, 48, 21),  # 20.57 -> 21
        (1000, 1, 48, 1),  # 0.048 -> at least 1
        (100, 100, 48, 48),
    ],
)
def test_resized_width_rounds_up_and_is_at_least_one(
    height: int, width: int, target: int, expected: int
) -> None:
    assert resized_width(height, width, target) == expected


def test_prepare_line_resizes_to_target_height_and_picks_bucket() -> None:
    img = np.full((20, 50, 3), (10, 120, 250), dtype=np.uint8)
    line = prepare_line(img, HEIGHT, BUCKETS)
    assert line.pixels.shape == (HEIGHT, 120, 3)  # ceil(48 * 50 / 20) = 120
    assert line.pixels.dtype == np.uint8
    assert line.width == 120
    assert line.orig_width == 50
    assert line.bucket_width == BUCKETS.bucket(120) == 128
    # A uniform image stays uniform (and in BGR order) after resizing.
    assert (line.pixels == np.array([10, 120, 250], dtype=np.uint8)).all()


def test_prepare_line_rounds_width_up() -> None:
    img = np.zeros((48, 100, 3), dtype=np.uint8)
    line = prepare_line(img, 32, BUCKETS)
    assert line.pixels.shape == (32, 67, 3)
    assert line.bucket_width == 80


def test_prepare_line_too_wide_says_split_the_line() -> None:
    buckets = WidthBuckets(max_width=256)
    img = np.zeros((10, 100, 3), dtype=np.uint8)  # 480 px wide at height 48
    with pytest.raises(InvalidInput) as exc:
        prepare_line(img, HEIGHT, buckets)
    message = str(exc.value)
    assert "split the line" in message
    assert "480" in message
    assert "256" in message


def test_prepare_line_exactly_max_width_allowed() -> None:
    buckets = WidthBuckets(max_width=256)
    img = np.zeros((12, 64, 3), dtype=np.uint8)  # 256 px wide at height 48
    line = prepare_line(img, HEIGHT, buckets)
    assert line.width == 256
    assert line.bucket_width == 256


# --- assemble_batch --------------------------------------------------------------------------


def make_line(width: int, bucket: int, seed: int, height: int = HEIGHT) -> PreparedLine:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return PreparedLine(pixels=pixels, orig_width=width * 2, bucket_width=bucket)


def test_assemble_batch_shape_dtype_and_normalisation() -> None:
    pixels = np.zeros((4, 5, 3), dtype=np.uint8)
    pixels[1, 2] = (10, 128, 255)  # B, G, R
    pixels[3, 4] = (0, 51, 204)
    line = PreparedLine(pixels=pixels, orig_width=5, bucket_width=8)
    batch = assemble_batch([line], 4)
    assert batch.shape == (1, 3, 4, 8)
    assert batch.dtype == np.float32
    # Channel order stays B, G, R; values x * 2 / 255 - 1.
    np.testing.assert_allclose(
        batch[0, :, 1, 2], [10 * 2 / 255 - 1, 128 * 2 / 255 - 1, 1.0], rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(
        batch[0, :, 3, 4], [-1.0, 51 * 2 / 255 - 1, 204 * 2 / 255 - 1], rtol=0, atol=1e-6
    )
    assert batch[0, 0, 0, 0] == -1.0  # black content is -1, not the pad value
    # The whole content region equals the formula.
    expected = pixels.transpose(2, 0, 1).astype(np.float64) * 2 / 255 - 1
    np.testing.assert_allclose(batch[0, :, :, :5], expected, rtol=0, atol=1e-6)
    # The padding region is exactly the pad value.
    assert PAD_VALUE == 0.0
    assert (batch[0, :, :, 5:] == 0.0).all()


def test_assemble_batch_several_lines_each_padded_on_its_own() -> None:
    lines = [make_line(100, 112, 1), make_line(112, 112, 2), make_line(97, 112, 3)]
    batch = assemble_batch(lines, HEIGHT)
    assert batch.shape == (3, 3, HEIGHT, 112)
    for i, line in enumerate(lines):
        w = line.width
        expected = line.pixels.transpose(2, 0, 1).astype(np.float64) * 2 / 255 - 1
        np.testing.assert_allclose(batch[i, :, :, :w], expected, rtol=0, atol=1e-6)
        assert (batch[i, :, :, w:] == 0.0).all()
    assert batch.min() >= -1.0
    assert batch.max() <= 1.0


def test_assemble_batch_rejects_mixed_buckets() -> None:
    with pytest.raises(ValueError, match="one bucket"):
        assemble_batch([make_line(100, 112, 1), make_line(120, 128, 2)], HEIGHT)


def test_batch_invariance_row_equals_line_assembled_alone() -> None:
    rng = np.random.default_rng(7)
    lines = []
    for orig_w in (54, 55, 56, 58):  # resized to 162..174 px at height 48, all bucket 176
        img = rng.integers(0, 256, (16, orig_w, 3), dtype=np.uint8)
        lines.append(prepare_line(img, HEIGHT, BUCKETS))
    assert len({line.bucket_width for line in lines}) == 1
    assert len({line.width for line in lines}) == 4
    batch = assemble_batch(lines, HEIGHT)
    reversed_batch = assemble_batch(lines[::-1], HEIGHT)
    for i, line in enumerate(lines):
        alone = assemble_batch([line], HEIGHT)
        assert np.array_equal(batch[i], alone[0])
        assert np.array_equal(reversed_batch[len(lines) - 1 - i], alone[0])
