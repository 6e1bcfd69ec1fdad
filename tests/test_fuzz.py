"""Property-based tests (hypothesis) of the decoding and request paths.

The bad-input table (tests/test_bad_input.py) checks the inputs someone thought of; these
check the ones nobody did. Each property is what the server's error boundary relies on:
whatever a client sends, the core raises only its own ``OcrError`` subclasses (which map to
INVALID_ARGUMENT, RESOURCE_EXHAUSTED, NOT_FOUND, ...), never a numpy/OpenCV/struct error that
would surface as INTERNAL, and never hands on an array whose shape disagrees with the size
the input declared.

Inputs are mostly *almost valid*: real encoded images of random size and format, then cut
short, with bytes overwritten or the header rewritten, since purely random bytes rarely get
past the first check of a decoder. Example counts are bounded and the examples derandomized,
so the file runs in seconds and a failure in CI is the same failure locally; to search
further, raise ``max_examples`` and drop ``derandomize`` in ``FUZZ`` for a local run.
"""

from __future__ import annotations

import asyncio
import math
import struct
from typing import TypeVar

import cv2
import grpc
import numpy as np
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from ocr_client.proto.ocr.v1 import ocr_pb2
from ocr_core.batching import BatchLimits
from ocr_core.detection import DetectedLine, DetectionOptions
from ocr_core.engine import OcrEngine, RequestLimits
from ocr_core.errors import InvalidInput, ModelNotFound, OcrError, TooLarge
from ocr_core.images import RawPixels, declared_size, decode_image, raw_to_bgr, to_bgr8
from ocr_core.pages import PageModels, PageOptions
from ocr_core.preprocess import (
    WidthBuckets,
    assemble_batch,
    prepare_line,
    resized_width,
)
from ocr_server.convert import image_source, image_sources, page_options
from ocr_server.status import status_for
from tests.conftest import FakeRecognizer

FUZZ = settings(
    max_examples=150,
    deadline=None,  # a shared 2-core machine: wall time per example varies a lot
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples every run: a CI failure replays locally
    database=None,  # so nothing to remember between runs, and no .hypothesis/ folder
)
HEIGHT = 48
MAX_PIXELS = 200_000
USER_ERRORS = (InvalidInput, TooLarge)

# ------------------------------------------------------------------------ input strategies

_ENCODINGS: dict[str, tuple[str, list[int]]] = {
    "png": (".png", []),
    "jpeg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 80]),
    "progressive jpeg": (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    "bmp": (".bmp", []),
    "tiff": (".tiff", []),
    "webp lossy": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 60]),
    "webp lossless": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
}


@st.composite
def pixels(draw: st.DrawFn, max_side: int = 80) -> np.ndarray:
    """A small image: gray, BGR, BGRA or 16-bit, random size, random content."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    channels = draw(st.sampled_from([1, 3, 4]))
    sixteen = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (h, w) if channels == 1 else (h, w, channels)
    if sixteen:
        return rng.integers(0, 65536, shape, dtype=np.uint16)
    return rng.integers(0, 256, shape, dtype=np.uint8)


@st.composite
def encoded_images(draw: st.DrawFn) -> bytes:
    """A real file in one of the formats OpenCV writes (the image fitted to what it takes)."""
    ext, params = _ENCODINGS[draw(st.sampled_from(sorted(_ENCODINGS)))]
    img = draw(pixels())
    if ext in (".jpg", ".bmp", ".webp") and img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if ext == ".jpg" and img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    ok, buf = cv2.imencode(ext, img, params)
    assert ok, (ext, img.shape, img.dtype)
    return buf.tobytes()


@st.composite
def mutated(draw: st.DrawFn, source: st.SearchStrategy[bytes]) -> bytes:
    """``source`` cut short, with some bytes overwritten, or with bytes inserted."""
    data = bytearray(draw(source))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["cut", "overwrite", "header", "insert"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "cut":
            del data[at:]
        elif kind == "overwrite":
            data[at : at + 4] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "header":  # sizes, lengths and offsets all live in the first bytes
            at = draw(st.integers(0, min(len(data), 40) - 1))
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


_MAGICS = [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBPVP8X",
    b"RIFF\x00\x00\x00\x00WEBPVP8L",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
]

image_bytes = st.one_of(
    st.binary(max_size=512),
    st.builds(lambda magic, rest: magic + rest, st.sampled_from(_MAGICS), st.binary(max_size=64)),
    encoded_images(),
    mutated(encoded_images()),
)

#: proto uint32 sizes: mostly small, sometimes at the edges that overflow careless arithmetic.
sizes = st.one_of(
    st.integers(1, 24), st.integers(0, 40), st.sampled_from([2**16, 2**31 - 1, 2**31, 2**32 - 1])
)
#: Valid channel counts twice as likely as invalid ones, so conversions get exercised too.
channel_counts = st.sampled_from([1, 3, 4, 1, 3, 4, 0, 2, 5, 2**32 - 1])


@st.composite
def raw_images(draw: st.DrawFn) -> RawPixels:
    """Raw buffers: usually of the declared length (when that is small), sometimes not."""
    width, height, channels = draw(sizes), draw(sizes), draw(channel_counts)
    expected = width * height * channels
    if expected <= 40 * 40 * 4 and draw(st.integers(0, 3)) > 0:
        length = expected
    else:
        length = draw(st.sampled_from([0, 1, max(0, expected - 1), expected + 1, 199]))
        length = min(length, 4096)
    data = draw(st.binary(min_size=length, max_size=length))
    return RawPixels(width, height, channels, data, bgr=draw(st.booleans()))


# ----------------------------------------------------------------------- (a) decoding


def _assert_bgr8(out: np.ndarray, width: int, height: int) -> None:
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3, (out.dtype, out.shape)
    assert out.shape[:2] == (height, width), (out.shape, width, height)


@FUZZ
@given(data=image_bytes, max_pixels=st.sampled_from([1, 64, 5_000, MAX_PIXELS]))
def test_decode_image_raises_only_user_errors_and_keeps_the_declared_size(
    data: bytes, max_pixels: int
) -> None:
    try:
        out = decode_image(data, max_pixels)
    except USER_ERRORS as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("decoded")
    declared = declared_size(data)
    assert declared is not None, "decoded a file whose size was not checked first"
    width, height = declared
    if data.startswith(b"\xff\xd8") and out.shape[:2] == (width, height):
        width, height = height, width  # EXIF orientation turned the JPEG a quarter turn
    _assert_bgr8(out, width, height)
    assert width * height <= max_pixels


@FUZZ
@given(data=encoded_images())
def test_every_file_opencv_writes_decodes_to_its_own_size(data: bytes) -> None:
    """The other half of the property above: valid files are not refused by mistake."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    height, width = img.shape[:2]
    assert declared_size(data) == (width, height)
    _assert_bgr8(decode_image(data, MAX_PIXELS), width, height)


#: Four 4-channel pixels, opaque, clear, half and quarter covered, each with red, green and
#: blue unlike, so a wrong channel order or a wrong composite shows.
RGBA_PIXELS = bytes([10, 100, 200, 255, 10, 100, 200, 0, 200, 50, 0, 128, 0, 255, 30, 64])


@FUZZ
@given(raw=raw_images(), max_pixels=st.sampled_from([1, 1_000, MAX_PIXELS]))
# Always run, whatever the drawn examples hold: few drawn buffers are 4-channel and of the
# declared length, and derandomize picks them by a hash of this function's source.
@example(raw=RawPixels(2, 2, 4, RGBA_PIXELS, bgr=False), max_pixels=MAX_PIXELS)
@example(raw=RawPixels(2, 2, 4, RGBA_PIXELS, bgr=True), max_pixels=MAX_PIXELS)
def test_raw_to_bgr_raises_only_user_errors_and_keeps_the_declared_size(
    raw: RawPixels, max_pixels: int
) -> None:
    try:
        out = raw_to_bgr(raw, max_pixels)
    except USER_ERRORS as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event(f"converted {raw.channels} channels")
    assert raw.channels in (1, 3, 4)
    assert len(raw.pixels) == raw.width * raw.height * raw.channels
    _assert_bgr8(out, raw.width, raw.height)
    given_ = np.frombuffer(raw.pixels, np.uint8).reshape(raw.height, raw.width, raw.channels)
    if raw.channels == 1:
        assert all(np.array_equal(out[:, :, c], given_[:, :, 0]) for c in range(3))
    elif raw.channels == 3:
        assert np.array_equal(out, given_ if raw.bgr else given_[:, :, ::-1])
    else:
        # Composited over white, as a viewer shows a transparent image: with a = alpha / 255,
        # each channel is c * a + 255 * (1 - a). Within 1: the code rounds its float32 result.
        bgra = given_ if raw.bgr else given_[:, :, [2, 1, 0, 3]]
        alpha = bgra[:, :, 3:4] / 255.0
        expected = bgra[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
        assert np.abs(out - expected).max() <= 1.0


# ----------------------------------------------------------------- (b) line preparation


@FUZZ
@given(
    image=pixels(max_side=120).map(to_bgr8),
    scale=st.sampled_from([1, 3, 20, 90]),
    max_width=st.sampled_from([256, 1024, 4096]),
)
def test_prepare_line_gives_the_model_height_and_a_bucket_by_the_rules(
    image: np.ndarray, scale: int, max_width: int
) -> None:
    """Model height, the aspect ratio kept, and a bucket that depends on the width alone.

    ``scale`` stretches lines sideways so that widths near and over ``max_width`` occur.
    """
    image = np.ascontiguousarray(np.repeat(image, scale, axis=1))
    h, w = image.shape[:2]
    buckets = WidthBuckets(max_width=max_width)
    new_w = resized_width(h, w, HEIGHT)
    assert new_w == max(1, math.ceil(HEIGHT * w / h))
    try:
        line = prepare_line(image, HEIGHT, buckets)
    except InvalidInput as exc:
        assert new_w > max_width and "split the line" in str(exc)
        squeezed = prepare_line(image, HEIGHT, buckets, squeeze_long=True)
        assert squeezed.pixels.shape == (HEIGHT, max_width, 3)
        assert squeezed.bucket_width == max_width and squeezed.orig_width == w
        return
    assert new_w <= max_width
    assert line.pixels.shape == (HEIGHT, new_w, 3) and line.pixels.dtype == np.uint8
    assert line.orig_width == w
    bucket = line.bucket_width
    assert bucket == buckets.bucket(new_w)  # a function of the line's own width only
    assert max(new_w, buckets.min_width) <= bucket <= max_width
    padded = max(new_w, buckets.min_width)
    step = max(buckets.min_step, (1 << (padded.bit_length() - 1)) // 8)
    assert bucket % step == 0 or bucket == max_width
    assert bucket - padded < step  # so padding is at most ~1/8 of a line wider than 128 px
    batch = assemble_batch([line, line], HEIGHT)
    assert batch.shape == (2, 3, HEIGHT, bucket) and batch.dtype == np.float32
    assert float(np.abs(batch).max()) <= 1.0


# ------------------------------------------------------------------- (c) whole requests


class _WholePageDetector:
    """Stands in for the DB detector: one line covering the page (when it is big enough)."""

    def detect(
        self, image: np.ndarray, options: DetectionOptions
    ) -> tuple[list[DetectedLine], int]:
        h, w = image.shape[:2]
        if min(h, w) < options.min_line_height or min(h, w) < 2:
            return [], 0
        quad = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
        return [DetectedLine(quad, 1.0)], 0


LIMITS = RequestLimits(max_lines_per_request=6, max_image_pixels=MAX_PIXELS, max_line_width=1024)


def _engine() -> OcrEngine:
    return OcrEngine(
        {"fake": FakeRecognizer(text="x")},  # type: ignore[dict-item]
        "fake",
        BatchLimits(max_delay_s=0.0),
        LIMITS,
        preprocess_threads=1,
        page_models={"fake": PageModels(detector=_WholePageDetector())},  # type: ignore[arg-type]
    )


@st.composite
def proto_images(draw: st.DrawFn) -> ocr_pb2.Image:
    """An ``Image`` as a client could send it: a real file or buffer, or anything at all."""
    kind = draw(st.sampled_from(["file", "file", "bytes", "raw", "raw", "unset"]))
    if kind == "file":
        return ocr_pb2.Image(data=draw(encoded_images()))
    if kind == "bytes":
        return ocr_pb2.Image(data=draw(image_bytes))
    if kind == "unset":
        return ocr_pb2.Image()
    raw = draw(raw_images())
    return ocr_pb2.Image(
        raw=ocr_pb2.RawImage(
            width=raw.width,
            height=raw.height,
            channels=raw.channels,
            pixels=raw.pixels,
            color_order=draw(st.integers(0, 5)),  # proto3 enums are open: 3..5 are unknown
        )
    )


M = TypeVar("M", bound=Message)
models = st.one_of(
    st.sampled_from(["", "fake"]),
    st.sampled_from(["nope", "FAKE", "fake ", "../fake"]),
    st.sampled_from(["", "fake"]),
)


def _over_the_wire(message: M) -> M:
    """What the server sees: the message serialized and parsed again."""
    return type(message).FromString(message.SerializeToString())


def _check_error(exc: OcrError) -> None:
    event(f"refused: {type(exc).__name__}")
    assert isinstance(exc, (*USER_ERRORS, ModelNotFound)), repr(exc)
    code, message = status_for(exc, "fuzz")
    assert code is not grpc.StatusCode.INTERNAL and message, (code, message)


@FUZZ
@given(images=st.lists(proto_images(), max_size=LIMITS.max_lines_per_request + 2), model=models)
def test_any_recognize_lines_request_gets_results_or_a_user_error(
    images: list[ocr_pb2.Image], model: str
) -> None:
    request = _over_the_wire(ocr_pb2.RecognizeLinesRequest(images=images, model=model))

    async def run() -> None:
        engine = _engine()
        engine.start()
        try:
            sources = image_sources(list(request.images))
            name, results = await engine.recognize_lines(sources, request.model)
        except OcrError as exc:
            _check_error(exc)
        else:
            event("recognized")
            assert name == "fake" and len(results) == len(request.images) >= 1
            assert all(r.text == "x" for r in results)
        finally:
            await engine.aclose()

    asyncio.run(run())


_floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


def _mostly(valid: st.SearchStrategy[object], wild: st.SearchStrategy[object]) -> st.SearchStrategy:
    """A value in range two times in three, anything the field can hold otherwise."""
    return st.one_of(valid, valid, wild)


@st.composite
def proto_page_options(draw: st.DrawFn) -> ocr_pb2.PageOptions | None:
    """Unset, or some fields set: mostly in their documented ranges, some far outside."""
    if draw(st.booleans()):
        return None
    fraction = st.floats(0.0625, 0.9375, width=32)  # bounds exact in float32
    fields = {
        "max_side": _mostly(st.integers(320, 1024), st.sampled_from([0, 319, 4097, 2**32 - 1])),
        "pixel_threshold": _mostly(fraction, _floats),
        "box_threshold": _mostly(fraction, _floats),
        "unclip_ratio": _mostly(st.floats(1.0, 4.0, width=32), _floats),
        "min_line_height": _mostly(st.integers(0, 50), st.just(2**32 - 1)),
        "correct_page_rotation": st.booleans(),
        "correct_line_rotation": st.booleans(),
        "min_confidence": _mostly(st.floats(0.0, 0.9375, width=32), _floats),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True))
    return ocr_pb2.PageOptions(**{name: draw(fields[name]) for name in chosen})


def _assert_in_documented_ranges(options: PageOptions) -> None:
    """The ranges ocr.proto documents for PageOptions; NaN is in none of them."""
    det = options.detection
    assert 320 <= det.max_side <= 4096 and 1.0 <= det.unclip_ratio <= 4.0, det
    assert 0.0 < det.pixel_threshold < 1.0 and 0.0 < det.box_threshold < 1.0, det
    assert 0.0 <= options.min_confidence < 1.0, options


@FUZZ
@given(options=proto_page_options())
def test_page_options_are_refused_by_name_or_within_their_ranges(
    options: ocr_pb2.PageOptions | None,
) -> None:
    core = page_options(_over_the_wire(options) if options is not None else None)
    try:
        core.validate()
    except InvalidInput as exc:
        event("refused")
        assert str(exc).startswith("page option ") and " must be " in str(exc), str(exc)
        return
    event("accepted")
    _assert_in_documented_ranges(core)


@FUZZ
@given(image=proto_images(), model=models, options=proto_page_options())
def test_any_recognize_page_request_gets_a_page_or_a_user_error(
    image: ocr_pb2.Image, model: str, options: ocr_pb2.PageOptions | None
) -> None:
    """Decoding, the page stages (with a stand-in detector), crops and the batcher."""
    request = _over_the_wire(
        ocr_pb2.RecognizePageRequest(image=image, model=model, options=options)
    )

    async def run() -> None:
        engine = _engine()
        engine.start()
        try:
            core_options = page_options(request.options if request.HasField("options") else None)
            name, page = await engine.recognize_page(
                image_source(request.image), request.model, core_options
            )
        except OcrError as exc:
            _check_error(exc)
        else:
            event(f"page with {min(len(page.lines), 1)}+ lines")
            assert name == "fake"
            assert all(line.text == "x" for line in page.lines)
            _assert_in_documented_ranges(core_options)
            assert page.width >= 1 and page.height >= 1
        finally:
            await engine.aclose()

    asyncio.run(run())


def test_the_strategies_reach_every_outcome() -> None:
    """Guards the fuzzing itself: the inputs must reach success and each kind of refusal."""
    seen: set[str] = set()

    @settings(max_examples=120, deadline=None, derandomize=True, database=None)
    @given(data=image_bytes)
    def probe(data: bytes) -> None:
        try:
            decode_image(data, MAX_PIXELS)
            seen.add("decoded")
        except TooLarge:
            seen.add("too large")
        except InvalidInput as exc:
            seen.add("empty" if "empty" in str(exc) else "undecodable")

    probe()
    assert {"decoded", "too large", "undecodable"} <= seen, seen


@pytest.mark.parametrize(
    "blob",
    [
        b"\xff\xd8\xff" + b"\xff" * 64,  # nothing but fill bytes
        b"\xff\xd8\xff\xc0\x00\x11",  # a frame header cut short
        b"\xff\xd8\xff\xe0\x00\x00",  # a segment length below 2
        b"II*\x00" + struct.pack("<I", 2**31),  # IFD offset past the end
        b"RIFF\x00\x00\x00\x00WEBPVP8L\x00",  # lossless header cut short
        b"BM" + b"\x00" * 12,  # no DIB header
    ],
)
def test_header_readers_give_up_on_cut_headers(blob: bytes) -> None:
    """Hand-picked edges of the header readers: each header ends before its size does."""
    assert declared_size(blob) is None
    with pytest.raises(InvalidInput, match="not a decodable"):
        decode_image(blob, MAX_PIXELS)
