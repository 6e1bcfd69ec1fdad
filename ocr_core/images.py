"""Turn what a client sent (an encoded file or raw pixels) into a 3-channel uint8 BGR array.

Every image the recognizer sees goes through here, so every colour layout is normalised in
one place: gray, BGR, BGRA/RGBA (alpha composited onto white, since text crops with a
transparent background are usually dark text meant to be shown on white), 16-bit samples
(scaled to 8 bits) and RGB raw buffers. Errors are ``InvalidInput``/``TooLarge`` with a
message that says what to change.

Decoders allocate the whole pixel buffer from the size a file's header declares, so a few
hundred bytes of JPEG, GIF or WebP can declare a 20000 x 20000 image and cost gigabytes and
seconds before a size check after decoding could refuse it. Every accepted format therefore
has its declared size read from its header and checked first; formats whose size cannot be
read that way (JPEG 2000, AVIF, PNM, ...: OpenCV decodes them, the API never promised them)
are refused.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ocr_core.errors import InvalidInput, TooLarge

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_SUPPORTED = "PNG, JPEG, BMP, TIFF, WebP or GIF"


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

    ``max_pixels`` bounds width * height. The size the file's header declares is checked
    *before* decoding, so a small file declaring a huge image is refused without allocating
    its pixels; a file whose header does not give a size is refused as undecodable. An
    animated GIF, PNG or WebP gives its first frame.
    """
    if not data:
        raise InvalidInput(f"image data is empty; send an encoded {_SUPPORTED} file")
    declared = declared_size(data)
    if declared is None:
        raise _undecodable(data)
    _check_pixels(*declared, max_pixels)
    buf = np.frombuffer(data, dtype=np.uint8)
    # JPEG: IMREAD_COLOR applies EXIF orientation and converts CMYK/gray; JPEG has no alpha.
    flags = cv2.IMREAD_COLOR if data.startswith(_JPEG_SIGNATURE) else cv2.IMREAD_UNCHANGED
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        raise _undecodable(data)
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


def _undecodable(data: bytes) -> InvalidInput:
    return InvalidInput(
        f"image data ({len(data)} bytes) is not a decodable {_SUPPORTED} file; "
        "check that the file is complete and in one of these formats"
    )


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) that an image file's header declares, without decoding any pixels.

    None when ``data`` is not a PNG, JPEG, BMP, TIFF, WebP or GIF file or its header is cut
    short. Each reader follows the header the way the decoder behind ``cv2.imdecode`` does,
    so the size checked is the size that decoder would allocate.
    """
    for magics, reader in _HEADER_READERS:
        if data.startswith(magics):
            try:
                return reader(data)
            except (struct.error, IndexError):
                return None
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


#: JPEG frame headers (SOF0-3, 5-7, 9-11, 13-15); C4 (DHT), C8 (JPG), CC (DAC) are not.
_JPEG_SOF = frozenset(
    {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), 0xCD, 0xCE, 0xCF}
)


#: Marker segments read before a JPEG's frame header at most. Real files have a handful
#: (APPn, DQT, DHT, COM; an ICC profile spread over APP2 is at most 255); a crafted file of
#: 4-byte segments would otherwise hold this pure-Python walk ~0.1 s per MiB, on the
#: event loop when the header declares a small image.
_JPEG_MAX_SEGMENTS = 1024


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the marker segments to the first frame header, skipping as libjpeg does."""
    i = 2
    segments = 0
    while i < len(data):
        segments += 1
        if segments > _JPEG_MAX_SEGMENTS:
            return None
        if data[i] != 0xFF:  # libjpeg skips stray bytes before a marker (with a warning)
            i = data.find(b"\xff", i)
            if i < 0:
                return None
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            i += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # SOI again, EOI or a scan before any frame header
            return None
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            return None
        i += 2 + length
    return None


def _gif_size(data: bytes) -> tuple[int, int] | None:
    width, height = struct.unpack("<HH", data[6:10])  # logical screen: the decoder's canvas
    return width, height


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", data[18:22])
        return width, height
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # a negative height means rows stored top-down


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth and ImageLength of the first page (the one ``cv2.imdecode`` reads)."""
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", data[4:8])
    return tiff_directory_size(data, offset, order)


def tiff_directory_size(data: bytes, offset: int, order: str) -> tuple[int, int] | None:
    """ImageWidth and ImageLength of the TIFF directory (one page) at ``offset``; ``order``
    is the struct byte order, "<" or ">". Raises ``struct.error`` when it is cut short."""
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    found: dict[int, int] = {}
    for k in range(count):
        entry = offset + 2 + 12 * k
        tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
        if tag in (256, 257) and kind in (3, 4):  # SHORT or LONG, stored in the entry
            fmt = order + ("H" if kind == 3 else "I")
            (found[tag],) = struct.unpack_from(fmt, data, entry + 8)
    if 256 not in found or 257 not in found:
        return None
    return found[256], found[257]


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended (alpha, animation): the canvas size
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return (width, height) if len(data) >= 30 else None
    if chunk == b"VP8L":  # lossless: 14-bit width-1 and height-1 after the 0x2f signature
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the key frame's start code
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


_HEADER_READERS: tuple[tuple[tuple[bytes, ...], Callable[[bytes], tuple[int, int] | None]], ...] = (
    ((_PNG_SIGNATURE,), _png_size),
    ((_JPEG_SIGNATURE,), _jpeg_size),
    ((b"GIF87a", b"GIF89a"), _gif_size),
    ((b"BM",), _bmp_size),
    ((b"II*\x00", b"MM\x00*"), _tiff_size),
    ((b"RIFF",), _webp_size),
)
