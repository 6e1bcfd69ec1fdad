"""Image decoding and raw-pixel normalisation (ocr_core.images) on synthetic images."""

from __future__ import annotations

import io
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage

from ocr_core.errors import ErrorKind, InvalidInput, OcrError, TooLarge
from ocr_core.images import RawPixels, declared_size, decode_image, raw_to_bgr

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


# --- sizes from headers (decompression bombs) --------------------------------------------


def pil_encode(img: np.ndarray, fmt: str, mode: str | None = None, **options: object) -> bytes:
    """``img`` saved by Pillow (converted to ``mode`` first), for what OpenCV cannot write."""
    image = PILImage.fromarray(img)
    out = io.BytesIO()
    (image.convert(mode) if mode else image).save(out, fmt, **options)
    return out.getvalue()


def _rgba(h: int, w: int) -> np.ndarray:
    rgba = np.dstack([bgr_pattern(h, w), np.full((h, w), 128, np.uint8)])
    return rgba


def big_endian_tiff(gray: np.ndarray) -> bytes:
    """An uncompressed 8-bit gray TIFF in Motorola byte order (OpenCV and Pillow write Intel).

    Width and height are LONG here (SHORT in the Intel files), so both tag types are read.
    """
    h, w = gray.shape
    entries = [  # tag, type (3 SHORT, 4 LONG), value
        (256, 4, w),
        (257, 4, h),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 0),  # strip offset, patched below
        (277, 3, 1),
        (278, 4, h),
        (279, 4, w * h),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    pixels_at = 8 + ifd_size
    ifd = struct.pack(">H", len(entries))
    for tag, kind, value in entries:
        value = pixels_at if tag == 273 else value
        packed = struct.pack(">HI", value, 0)[:4] if kind == 3 else struct.pack(">I", value)
        ifd += struct.pack(">HHI", tag, kind, 1) + packed
    return b"MM\x00*" + struct.pack(">I", 8) + ifd + b"\x00" * 4 + gray.tobytes()


def _exif() -> bytes:
    """An EXIF block (APP1 before the frame header) with orientation 1, i.e. as stored."""
    exif = PILImage.Exif()
    exif[0x0112] = 1
    exif[0x010F] = "test camera"
    return exif.tobytes()


ENCODINGS = {
    "png": lambda img: encode(".png", img),
    "jpeg": lambda img: encode(".jpg", img),
    "progressive jpeg": lambda img: encode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    "jpeg with restart markers": lambda img: encode(
        ".jpg", img, [cv2.IMWRITE_JPEG_RST_INTERVAL, 1]
    ),
    "jpeg with exif": lambda img: pil_encode(img, "JPEG", exif=_exif()),
    "cmyk jpeg": lambda img: pil_encode(img, "JPEG", mode="CMYK"),
    "bmp": lambda img: encode(".bmp", img),
    "tiff": lambda img: encode(".tiff", img),
    "big-endian tiff": lambda img: big_endian_tiff(img[:, :, 0]),
    "lossy webp (VP8)": lambda img: encode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 90]),
    "lossless webp (VP8L)": lambda img: encode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101]),
    "webp with alpha (VP8X)": lambda img: pil_encode(_rgba(*img.shape[:2]), "WEBP"),
    "gif": lambda img: pil_encode(img, "GIF"),
}


@pytest.mark.parametrize("name", list(ENCODINGS))
@pytest.mark.parametrize(("h", "w"), [(1, 1), (13, 37), (300, 17)])
def test_declared_size_is_the_decoded_size(name: str, h: int, w: int) -> None:
    """The header readers agree with the decoder on real files of every accepted format."""
    data = ENCODINGS[name](bgr_pattern(h, w))
    assert declared_size(data) == (w, h)
    assert_bgr8(decode_image(data, MAX), h, w)


def _jpeg_with_size(w: int, h: int) -> bytes:
    data = bytearray(encode(".jpg", bgr_pattern(8, 8)))
    i = 2
    while data[i + 1] != 0xC0:
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    data[i + 5 : i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def _gif_with_size(w: int, h: int) -> bytes:
    data = bytearray(pil_encode(bgr_pattern(8, 8)[:, :, 0], "GIF"))
    data[6:10] = struct.pack("<HH", w, h)
    return bytes(data)


def _bmp_with_size(w: int, h: int) -> bytes:
    data = bytearray(encode(".bmp", bgr_pattern(8, 8)))
    data[18:26] = struct.pack("<ii", w, -h)  # negative: rows stored top-down
    return bytes(data)


def _tiff_with_size(w: int, h: int) -> bytes:
    data = bytearray(encode(".tiff", bgr_pattern(8, 8)))
    (ifd,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[ifd : ifd + 2])
    for k in range(count):
        entry = ifd + 2 + 12 * k
        tag, kind = struct.unpack("<HH", data[entry : entry + 4])
        if tag in (256, 257):
            value = w if tag == 256 else h
            fmt = "<H" if kind == 3 else "<I"
            data[entry + 8 : entry + 8 + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(data)


def _vp8l_with_size(w: int, h: int) -> bytes:
    data = bytearray(encode(".webp", bgr_pattern(8, 8), [cv2.IMWRITE_WEBP_QUALITY, 101]))
    assert data[12:16] == b"VP8L"
    (bits,) = struct.unpack("<I", data[21:25])
    data[21:25] = struct.pack("<I", (bits & ~0xFFFFFFF) | (w - 1) | (h - 1) << 14)
    return bytes(data)


def _vp8_with_size(w: int, h: int) -> bytes:
    data = bytearray(encode(".webp", bgr_pattern(8, 8), [cv2.IMWRITE_WEBP_QUALITY, 90]))
    assert data[12:16] == b"VP8 "
    data[26:30] = struct.pack("<HH", w, h)
    return bytes(data)


def _vp8x_with_size(w: int, h: int) -> bytes:
    data = bytearray(pil_encode(_rgba(8, 8), "WEBP"))
    assert data[12:16] == b"VP8X"
    data[24:30] = (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return bytes(data)


@pytest.mark.parametrize(
    ("make", "w", "h"),
    [
        pytest.param(png_header_only, 50_000, 50_000, id="png"),
        pytest.param(_jpeg_with_size, 20_000, 20_000, id="jpeg"),
        pytest.param(_gif_with_size, 20_000, 20_000, id="gif"),
        pytest.param(_bmp_with_size, 20_000, 20_000, id="bmp"),
        pytest.param(_tiff_with_size, 20_000, 20_000, id="tiff"),
        pytest.param(_vp8l_with_size, 16_384, 16_384, id="webp-vp8l"),
        pytest.param(_vp8_with_size, 16_000, 16_000, id="webp-vp8"),
        pytest.param(_vp8x_with_size, 16_384, 16_384, id="webp-vp8x"),
    ],
)
def test_small_file_declaring_a_huge_image_is_refused_before_decoding(
    make: object, w: int, h: int
) -> None:
    """A few hundred bytes declaring hundreds of megapixels: refused from the header alone.

    Before sizes were read from every format's header, the JPEG here took 10 s and 2.3 GB
    to decode and the GIF 3 GB; only PNG was checked first.
    """
    data = make(w, h)  # type: ignore[operator]
    assert declared_size(data) == (w, h)
    start = time.perf_counter()
    with pytest.raises(TooLarge, match=f"{w}x{h} = {w * h} pixels"):
        decode_image(data, MAX)
    assert time.perf_counter() - start < 0.5


def _jpeg_with_empty_segments(count: int) -> bytes:
    """An 8 x 8 JPEG with ``count`` empty APP15 segments between SOI and the first table."""
    data = encode(".jpg", bgr_pattern(8, 8))
    return data[:2] + b"\xff\xef\x00\x02" * count + data[2:]


def test_jpeg_with_a_few_hundred_segments_is_read() -> None:
    """An ICC profile spread over APP2 has at most 255 segments; files like that decode."""
    data = _jpeg_with_empty_segments(300)
    assert declared_size(data) == (8, 8)
    assert_bgr8(decode_image(data, MAX), 8, 8)


def test_jpeg_with_a_flood_of_segments_is_refused_without_walking_them() -> None:
    """Marker segments are walked in Python (on the event loop for a small declared size):
    a file of 4-byte segments once held it ~0.1 s per MiB before the frame header."""
    data = _jpeg_with_empty_segments(250_000)  # 1 MB
    assert declared_size(data) is None
    with pytest.raises(InvalidInput, match="not a decodable PNG, JPEG"):
        decode_image(data, MAX)


@pytest.mark.parametrize(
    ("ext", "img"),
    [
        (".jp2", bgr_pattern(64, 64)),
        (".avif", bgr_pattern()),
        (".pgm", bgr_pattern()[:, :, 0]),
        (".ppm", bgr_pattern()),
        (".ras", bgr_pattern()),
        (".hdr", bgr_pattern().astype(np.float32) / 255),
    ],
)
def test_formats_whose_size_cannot_be_read_first_are_refused(ext: str, img: np.ndarray) -> None:
    """OpenCV decodes these, but their size is not checked before decoding, so they are
    refused; the API only ever promised PNG, JPEG, BMP, TIFF and WebP (and GIF works)."""
    data = encode(ext, img)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None
    assert declared_size(data) is None
    with pytest.raises(InvalidInput, match="not a decodable PNG, JPEG, BMP, TIFF, WebP or GIF"):
        decode_image(data, MAX)


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


def test_a_jpeg_exif_orientation_is_applied_and_other_formats_are_as_stored() -> None:
    """The documented contract (proto, "Conventions"): a JPEG is read upright as viewers
    show it, so its sizes and coordinates are the displayed image's; a PNG's eXIf chunk is
    not applied. A marked corner tells where the stored top-left went."""
    stored = np.full((40, 100, 3), 255, np.uint8)
    stored[:8, :8] = 0  # the stored image's top-left corner
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    jpeg = pil_encode(stored, "JPEG", exif=exif.tobytes(), quality=95)
    upright = decode_image(jpeg, 10**6)
    assert upright.shape == (100, 40, 3)
    assert upright[:8, -8:].mean() < 60 and upright[:8, :8].mean() > 200  # now top-right
    png = pil_encode(stored, "PNG", exif=exif.tobytes())
    assert decode_image(png, 10**6).shape == (40, 100, 3)
