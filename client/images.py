"""Turning what a caller holds (a path, file bytes, a pixel array) into an ``ocr.v1.Image``.

The client must install with grpcio and protobuf only, so numpy is never imported at module
level: arrays are recognised by duck typing (``shape``, ``dtype``, ``tobytes()``), and numpy
is imported only once the caller has handed one over (it is then already loaded).

Checks that can be made here (dtype, rank, channel count) are made here, so a wrong array
fails with a ``ValueError`` that names the problem instead of a server round trip that
reports a buffer-size mismatch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeAlias

from ocr_client.proto.ocr.v1 import ocr_pb2

__all__ = ["ColorOrder", "ImageInput", "fill_proto_image", "to_proto_image"]

# Documents what is accepted; ``Any`` stands for a numpy-like uint8 array of shape (H, W),
# (H, W, 1), (H, W, 3) or (H, W, 4), which cannot be typed without importing numpy.
ImageInput: TypeAlias = str | os.PathLike[str] | bytes | bytearray | memoryview | Any

ColorOrder: TypeAlias = Literal["rgb", "bgr"]

_COLOR_ORDERS: dict[str, ocr_pb2.ColorOrder] = {
    "rgb": ocr_pb2.COLOR_ORDER_RGB,
    "bgr": ocr_pb2.COLOR_ORDER_BGR,
}


def _color_order_enum(color_order: str) -> ocr_pb2.ColorOrder:
    try:
        return _COLOR_ORDERS[color_order.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"color_order must be 'rgb' or 'bgr' (OpenCV arrays are 'bgr'), got {color_order!r}"
        ) from None


def _is_array_like(x: object) -> bool:
    return (hasattr(x, "shape") and hasattr(x, "dtype")) or hasattr(x, "__array_interface__")


def _dtype_name(dtype: object) -> str:
    # numpy dtypes have .name ("uint8"); other array libraries at least print as "uint8".
    return str(getattr(dtype, "name", dtype))


#: PIL modes whose array is samples the server reads as sent: gray, RGB, RGB + alpha.
_PIL_MODES = ("L", "RGB", "RGBA")


def _fill_raw(raw: ocr_pb2.RawImage, x: Any, color_order: str) -> None:
    """Pack a uint8 (H, W[, C]) array into ``raw`` as interleaved, unpadded, C-order pixels."""
    order = _color_order_enum(color_order)
    mode = getattr(x, "mode", None)  # a PIL image; its array does not say what it holds
    if isinstance(mode, str) and mode not in _PIL_MODES:
        # CMYK's K would be read as alpha, a palette's indexes as gray, YCbCr as RGB...
        raise ValueError(
            f"a PIL image in mode {mode!r} cannot be sent as raw pixels; convert it first, "
            "e.g. image.convert('RGB'), or send its encoded file"
        )
    try:
        import numpy as np
    except ImportError:  # a numpy-like array from some other library, numpy absent
        np = None
    if np is not None:
        # No copy for the usual C-contiguous array; a copy for views (crops, flips,
        # transposes), whose memory is not laid out as the RawImage wants. It also turns
        # objects that only expose __array__/__array_interface__ (PIL images) into arrays.
        x = np.ascontiguousarray(x)
    elif not hasattr(x, "shape") or not hasattr(x, "dtype") or not hasattr(x, "tobytes"):
        raise TypeError(
            f"{type(x).__name__} looks like an array but has no shape/dtype/tobytes(); "
            "install numpy or pass encoded image bytes"
        )
    shape = tuple(int(d) for d in x.shape)
    dtype = _dtype_name(x.dtype)
    if dtype != "uint8":
        raise ValueError(
            f"raw images must be uint8 (8-bit samples), got an array of dtype {dtype}; "
            "convert it (e.g. scale 16-bit or float data to 0..255) or send an encoded file"
        )
    if len(shape) == 2:
        height, width = shape
        channels = 1
    elif len(shape) == 3 and shape[2] in (1, 3, 4):
        height, width, channels = shape
    else:
        raise ValueError(
            f"raw images must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {shape}"
        )
    if height < 1 or width < 1:
        raise ValueError(f"raw images must be at least 1x1 pixels, got shape {shape}")
    raw.width = width
    raw.height = height
    raw.channels = channels
    raw.color_order = order if channels >= 3 else ocr_pb2.COLOR_ORDER_UNSPECIFIED
    # tobytes() is C (row-major) order by default, which is what RawImage wants even for a
    # non-contiguous array when numpy was not there to make it contiguous.
    raw.pixels = x.tobytes()


def fill_proto_image(
    target: ocr_pb2.Image, x: ImageInput, color_order: ColorOrder | str = "rgb"
) -> None:
    """:func:`to_proto_image` written into ``target``, an ``Image`` field of the request
    being built (``request.page``, ``request.images.add()``).

    The pixels are copied into the message once. Building an ``Image`` and handing it to the
    request's constructor copies them again at every level of nesting, by a slow merge:
    about three times the CPU time for a 2200 x 1700 RGB page. An ``ocr_pb2.Image`` input is
    copied in with ``CopyFrom``.
    """
    if isinstance(x, ocr_pb2.Image):
        target.CopyFrom(x)
    elif isinstance(x, str | os.PathLike):
        data = Path(x).read_bytes()
        if not data:
            raise ValueError(f"{os.fspath(x)!s}: the file is empty")
        target.data = data
    elif isinstance(x, bytes | bytearray | memoryview):
        data = bytes(x)
        if not data:
            raise ValueError("image bytes are empty; expected an encoded image file")
        target.data = data
    elif _is_array_like(x):
        _fill_raw(target.raw, x, color_order)
    else:
        raise TypeError(
            f"cannot send a {type(x).__name__} as an image: pass a path, encoded image bytes "
            "or a uint8 array of shape (H, W) or (H, W, 1|3|4)"
        )


def to_proto_image(x: ImageInput, color_order: ColorOrder | str = "rgb") -> ocr_pb2.Image:
    """Build the ``Image`` message for one input.

    - ``str`` or ``os.PathLike``: the file is read and sent encoded, as stored on disk (the
      server decodes it; sending the file is smaller than sending its pixels).
    - ``bytes``, ``bytearray``, ``memoryview``: an encoded image file (PNG, JPEG, ...).
    - a uint8 array of shape (H, W) or (H, W, 1|3|4): raw pixels. ``color_order`` says how
      3- and 4-channel arrays are ordered: ``"rgb"`` (PIL and most libraries, the default) or
      ``"bgr"`` (OpenCV's ``cv2.imread``).
    - an ``ocr_pb2.Image`` is passed through unchanged.

    Raises ``ValueError`` for arrays of another dtype or shape and for empty bytes,
    ``TypeError`` for anything else, and ``OSError`` when a file cannot be read.
    """
    if isinstance(x, ocr_pb2.Image):
        return x
    image = ocr_pb2.Image()
    fill_proto_image(image, x, color_order)
    return image
