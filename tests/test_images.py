"""Image decoding and raw-pixel normalisation (ocr_core.images) on synthetic images."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from ocr_core.errors import ErrorKind, InvalidInput, OcrError, TooLarge
from ocr_core.images import RawPixels, decode_image, raw_to_bgr

MAX = 10_000_000


def encode(ext: str, img: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, img, params or [])
    assert ok
    return buf.tobytes()


def bgr_pattern(h: int = 12, w: int = 20) -> np.ndarray:
    """A deterministic BGR image with distinct values per pixel and channel."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 11) % 256, (y * 17) % 256, (x * 3 + y * 5) % 256], axis=2).astype(
        np.uint8
    )


def assert_bgr8(out: np.ndarray, h: int, w: int) -> None:
    assert out.dtype == np.uint8
    assert out.shape == (h, w, 3)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR chunk declaring ``width`` x ``height``; no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    )


# --- encoded files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "params"),
    [
        (".png", []),
        (".bmp", []),
        (".tiff", []),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),  # > 100 = lossless
    ],
)
def test_lossless_formats_decode_bgr_exactly(ext: str, params: list[int]) -> None:
    img = bgr_pattern()
    out = decode_image(encode(ext, img, params), MAX)
    assert_bgr8(out, 12, 20)
    assert np.array_equal(out, img)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tiff"])
def test_gray_image_becomes_three_equal_channels(ext: str) -> None:
    gray = (np.arange(6 * 9, dtype=np.uint8).reshape(6, 9) * 4).astype(np.uint8)
    out = decode_image(encode(ext, gray), MAX)
    assert_bgr8(out, 6, 9)
    for c in range(3):
        assert np.array_equal(out[:, :, c], gray)


def test_jpeg_colour_decodes_close_to_source() -> None:
    img = np.zeros((16, 32, 3), dtype=np.uint8)
    img[:, :16] = (200, 30, 10)  # blue-ish (BGR)
    img[:, 16:] = (10, 30, 200)  # red-ish
    out = decode_image(encode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 100]), MAX)
    assert_bgr8(out, 16, 32)
    # Channel order kept: the left block is blue-dominant, the right block red-dominant.
    left = out[4:12, 2:12].reshape(-1, 3).astype(int)
    right = out[4:12, 20:30].reshape(-1, 3).astype(int)
    assert np.abs(left - (200, 30, 10)).max() <= 6
    assert np.abs(right - (10, 30, 200)).max() <= 6


def test_gray_jpeg_becomes_three_channels() -> None:
    gray = np.full((8, 8), 77, dtype=np.uint8)
    out = decode_image(encode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 100]), MAX)
    assert_bgr8(out, 8, 8)
    assert np.abs(out.astype(int) - 77).max() <= 2


def test_bgra_png_transparent_background_composited_on_white() -> None:
    bgra = np.zeros((4, 6, 4), dtype=np.uint8)  # fully transparent black
    bgra[1, 2] = (10, 20, 30, 255)  # opaque "ink"
    bgra[2, 3] = (0, 0, 0, 128)  # half-transparent black
    out = decode_image(encode(".png", bgra), MAX)
    assert_bgr8(out, 4, 6)
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[3, 5]) == (255, 255, 255)
    assert tuple(out[1, 2]) == (10, 20, 30)
    # 0 * 128/255 + 255 * (1 - 128/255) = 127
    assert np.abs(out[2, 3].astype(int) - 127).max() <= 1
    ink = np.zeros((4, 6), dtype=bool)
    ink[1, 2] = ink[2, 3] = True
    assert (out[~ink] == 255).all()


def test_opaque_bgra_png_keeps_colours_exactly() -> None:
    img = bgr_pattern(5, 7)
    bgra = np.dstack([img, np.full((5, 7), 255, np.uint8)])
    out = decode_image(encode(".png", bgra), MAX)
    assert_bgr8(out, 5, 7)
    assert np.array_equal(out, img)


def test_sixteen_bit_gray_png_scaled_to_eight_bits() -> None:
    gray16 = np.array([[65535, 256 * 100, 0, 255], [256, 32768, 65280, 511]], dtype=np.uint16)
    data = encode(".png", gray16)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    out = decode_image(data, MAX)
    assert_bgr8(out, 2, 4)
    expected = np.array([[255, 100, 0, 0], [1, 128, 255, 1]], dtype=np.uint8)
    for c in range(3):
        assert np.array_equal(out[:, :, c], expected)


def test_sixteen_bit_bgr_png_scaled_per_channel() -> None:
    img16 = np.zeros((2, 2, 3), dtype=np.uint16)
    img16[0, 0] = (65535, 256 * 100, 0)
    img16[1, 1] = (256 * 7, 256 * 200 + 255, 65535)
    out = decode_image(encode(".png", img16), MAX)
    assert_bgr8(out, 2, 2)
    assert tuple(out[0, 0]) == (255, 100, 0)
    assert tuple(out[1, 1]) == (7, 200, 255)
    assert tuple(out[0, 1]) == (0, 0, 0)


def test_empty_bytes_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode_image(b"", MAX)


def test_random_bytes_invalid_input() -> None:
    data = np.random.default_rng(1234).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(InvalidInput) as exc:
        decode_image(data, MAX)
    assert exc.value.kind is ErrorKind.INVALID_INPUT
    assert "4096 bytes" in str(exc.value)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_truncated_png_invalid_input(fraction: float) -> None:
    data = encode(".png", bgr_pattern(40, 60))
    with pytest.raises(InvalidInput):
        decode_image(data[: int(len(data) * fraction)], MAX)


@pytest.mark.parametrize("cut", [8, 20, 33, 60])
def test_truncated_file_raises_only_ocr_errors(cut: int) -> None:
    for ext in (".png", ".jpg", ".bmp", ".tiff", ".webp"):
        data = encode(ext, bgr_pattern(40, 60))
        try:
            out = decode_image(data[:cut], MAX)
        except OcrError as e:
            assert isinstance(e, InvalidInput)
        else:
            assert out.dtype == np.uint8
            assert out.ndim == 3
            assert out.shape[2] == 3


def test_png_header_declaring_huge_image_refused_before_decoding() -> None:
    data = png_header_only(50_000, 50_000)
    # Without the size check this would be InvalidInput (there is no pixel data at all).
    with pytest.raises(TooLarge) as exc:
        decode_image(data, MAX)
    message = str(exc.value)
    assert str(MAX) in message
    assert "50000x50000" in message
    assert exc.value.kind is ErrorKind.TOO_LARGE


def test_png_header_within_limit_but_no_pixels_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        decode_image(png_header_only(10, 10), MAX)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tiff"])
def test_decoded_image_over_max_pixels_too_large(ext: str) -> None:
    data = encode(ext, bgr_pattern(10, 20))
    with pytest.raises(TooLarge, match="199"):
        decode_image(data, max_pixels=199)
    # Exactly at the limit is allowed.
    assert decode_image(data, max_pixels=200).shape == (10, 20, 3)


# --- raw pixels ------------------------------------------------------------------------------


def test_raw_gray_to_bgr() -> None:
    gray = np.array([[0, 50, 255], [7, 8, 9]], dtype=np.uint8)
    out = raw_to_bgr(RawPixels(width=3, height=2, channels=1, pixels=gray.tobytes()), MAX)
    assert_bgr8(out, 2, 3)
    for c in range(3):
        assert np.array_equal(out[:, :, c], gray)


def test_raw_rgb_red_becomes_bgr_red() -> None:
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 1] = (255, 0, 0)  # red in RGB
    rgb[1, 2] = (1, 2, 3)
    out = raw_to_bgr(RawPixels(3, 2, 3, rgb.tobytes()), MAX)
    assert_bgr8(out, 2, 3)
    assert tuple(out[0, 1]) == (0, 0, 255)
    assert tuple(out[1, 2]) == (3, 2, 1)
    assert tuple(out[0, 0]) == (0, 0, 0)


def test_raw_bgr_kept_as_is() -> None:
    bgr = np.zeros((2, 3, 3), dtype=np.uint8)
    bgr[0, 1] = (0, 0, 255)  # red in BGR
    bgr[1, 2] = (1, 2, 3)
    out = raw_to_bgr(RawPixels(3, 2, 3, bgr.tobytes(), bgr=True), MAX)
    assert_bgr8(out, 2, 3)
    assert np.array_equal(out, bgr)


def test_raw_rgba_composited_and_reordered() -> None:
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 0, 0)  # transparent -> white
    rgba[0, 2] = (10, 20, 30, 255)
    out = raw_to_bgr(RawPixels(3, 1, 4, rgba.tobytes()), MAX)
    assert_bgr8(out, 1, 3)
    assert tuple(out[0, 0]) == (0, 0, 255)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert tuple(out[0, 2]) == (30, 20, 10)


def test_raw_bgra_composited_order_kept() -> None:
    bgra = np.zeros((1, 2, 4), dtype=np.uint8)
    bgra[0, 0] = (0, 0, 255, 255)  # opaque red (BGR)
    bgra[0, 1] = (0, 0, 0, 0)
    out = raw_to_bgr(RawPixels(2, 1, 4, bgra.tobytes(), bgr=True), MAX)
    assert tuple(out[0, 0]) == (0, 0, 255)
    assert tuple(out[0, 1]) == (255, 255, 255)


def test_raw_opaque_rgba_equals_rgb() -> None:
    rgb = bgr_pattern(3, 4)[:, :, ::-1].copy()
    rgba = np.dstack([rgb, np.full((3, 4), 255, np.uint8)])
    from_rgba = raw_to_bgr(RawPixels(4, 3, 4, rgba.tobytes()), MAX)
    from_rgb = raw_to_bgr(RawPixels(4, 3, 3, rgb.tobytes()), MAX)
    assert np.array_equal(from_rgba, from_rgb)
    assert np.array_equal(from_rgb, bgr_pattern(3, 4))


@pytest.mark.parametrize(("length", "channels"), [(23, 3), (25, 3), (0, 3), (6, 1), (31, 4)])
def test_raw_wrong_buffer_length(length: int, channels: int) -> None:
    expected = 4 * 2 * channels
    with pytest.raises(InvalidInput) as exc:
        raw_to_bgr(RawPixels(4, 2, channels, b"\x00" * length), MAX)
    message = str(exc.value)
    assert f"= {expected}" in message
    assert f"has {length} bytes" in message


@pytest.mark.parametrize("channels", [0, 2, 5])
def test_raw_unsupported_channel_count(channels: int) -> None:
    with pytest.raises(InvalidInput, match=f"channels={channels}"):
        raw_to_bgr(RawPixels(2, 2, channels, b"\x00" * (4 * max(channels, 1))), MAX)


@pytest.mark.parametrize(("width", "height"), [(0, 5), (5, 0), (-1, 5), (0, 0)])
def test_raw_non_positive_size(width: int, height: int) -> None:
    with pytest.raises(InvalidInput, match="at least 1"):
        raw_to_bgr(RawPixels(width, height, 1, b""), MAX)


def test_raw_over_max_pixels_too_large() -> None:
    with pytest.raises(TooLarge, match="over the server's limit of 99 pixels"):
        raw_to_bgr(RawPixels(10, 10, 1, b"\x00" * 100), max_pixels=99)
    assert raw_to_bgr(RawPixels(10, 10, 1, b"\x00" * 100), max_pixels=100).shape == (10, 10, 3)


def test_raw_huge_declared_size_too_large_without_buffer() -> None:
    # The size limit is checked before the buffer: a tiny buffer claiming a huge image is
    # refused as too large, not as a length mismatch.
    with pytest.raises(TooLarge):
        raw_to_bgr(RawPixels(100_000, 100_000, 3, b"\x00"), MAX)
