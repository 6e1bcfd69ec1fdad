"""Turn what a client sent (an encoded file or raw pixels) into a 3-channel uint8 BGR array.

Every image the recognizer sees goes through here, so every colour layout is normalised in
one place: gray, BGR, BGRA/RGBA (alpha composited onto white, since text crops with a
transparent background are usually dark text meant to be shown on white), 16-bit samples
(scaled to 8 bits) and RGB raw buffers. Errors are ``InvalidInput``/``TooLarge`` with a
message that says what to change.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np

from ocr_core.errors import InvalidInput, TooLarge

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_SUPPORTED = "PNG, JPEG, BMP, TIFF or WebP"


@dataclass(frozen=True)
class RawPixels:
    """An uncompressed uint8 buffer as a client sends it (row-major, channels interleaved)."""

    width: int
    height: int
    channels: int
    pixels: bytes
    bgr: bool = False


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an encoded image file into an HxWx3 uint8 BGR array.

    ``max_pixels`` bounds width * height. For PNG the declared size is read from the header
    and checked *before* decoding, so a small file declaring a huge image is refused without
    allocating its pixels; other formats are checked after decoding.
    """
    if not data:
        raise InvalidInput(f"image data is empty; send an encoded {_SUPPORTED} file")
    declared = _png_declared_size(data)
    if declared is not None:
        _check_pixels(*declared, max_pixels)
    buf = np.frombuffer(data, dtype=np.uint8)
    # JPEG: IMREAD_COLOR applies EXIF orientation and converts CMYK/gray; JPEG has no alpha.
    flags = cv2.IMREAD_COLOR if data.startswith(_JPEG_SIGNATURE) else cv2.IMREAD_UNCHANGED
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        raise InvalidInput(
            f"image data ({len(data)} bytes) is not a decodable {_SUPPORTED} file; "
            "check that the file is complete and in one of these formats"
        )
    _check_pixels(img.shape[1], img.shape[0], max_pixels)
    return to_bgr8(img)


def raw_to_bgr(raw: RawPixels, max_pixels: int) -> np.ndarray:
    """Check a raw pixel buffer against its declared size and return an HxWx3 uint8 BGR array."""
    if raw.width < 1 or raw.height < 1:
        raise InvalidInput(
            f"raw image is {raw.width}x{raw.height}; width and height must both be at least 1"
        )
    if raw.channels not in (1, 3, 4):
        raise InvalidInput(
            f"raw image has channels={raw.channels}; use 1 (gray), 3 (colour) or 4 (colour+alpha)"
        )
    _check_pixels(raw.width, raw.height, max_pixels)
    expected = raw.width * raw.height * raw.channels
    if len(raw.pixels) != expected:
        raise InvalidInput(
            f"raw image pixel buffer has {len(raw.pixels)} bytes but width*height*channels = "
            f"{raw.width}*{raw.height}*{raw.channels} = {expected}; send uint8 samples, row-major, "
            "without row padding"
        )
    arr = np.frombuffer(raw.pixels, dtype=np.uint8)
    if raw.channels == 1:
        return cv2.cvtColor(arr.reshape(raw.height, raw.width), cv2.COLOR_GRAY2BGR)
    arr = arr.reshape(raw.height, raw.width, raw.channels)
    if raw.channels == 3:
        return arr if raw.bgr else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    bgra = arr if raw.bgr else cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    return _composite_on_white(bgra)


def to_bgr8(img: np.ndarray) -> np.ndarray:
    """Normalise a decoded image (gray/BGR/BGRA, 8 or 16 bit) to HxWx3 uint8 BGR."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        # float TIFFs and the like: assume [0, 1] if the range says so, else clip to uint8.
        f = img.astype(np.float32)
        if np.nanmax(f) <= 1.0:
            f *= 255.0
        img = np.clip(np.nan_to_num(f), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 2:  # gray + alpha
        bgra = cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGRA)
        bgra[:, :, 3] = img[:, :, 1]
        return _composite_on_white(bgra)
    if channels == 3:
        return img
    if channels == 4:
        return _composite_on_white(img)
    raise InvalidInput(f"image has {channels} channels; expected 1 to 4")


def _composite_on_white(bgra: np.ndarray) -> np.ndarray:
    alpha = bgra[:, :, 3:4].astype(np.float32) * (1.0 / 255.0)
    if float(alpha.min()) >= 1.0:
        return np.ascontiguousarray(bgra[:, :, :3])
    out = bgra[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise TooLarge(
            f"image is {width}x{height} = {width * height} pixels, over the server's limit of "
            f"{max_pixels} pixels per image; downscale it or crop it into lines"
        )


def _png_declared_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk, or None if ``data`` is not a PNG."""
    if not data.startswith(_PNG_SIGNATURE) or len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height
