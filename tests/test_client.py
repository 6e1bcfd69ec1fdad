"""Unit tests of ocr_client against a fake OcrService on a real gRPC server (port 0).

The fake describes what it received (byte counts, raw dimensions, colour order, first
pixel) in the returned text, so each assertion on a result proves how the request was
built. It also records every call's remaining deadline. A sync ``grpc.server`` on its own
threads serves both the sync and the async client tests. End-to-end OCR with the real
model is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import trustme
from google.rpc import status_pb2
from PIL import Image

from ocr_client import (
    AsyncOcrClient,
    DeadlineExceeded,
    InvalidRequest,
    LineResult,
    ModelInfo,
    ModelNotFound,
    OcrClient,
    OcrClientError,
    Page,
    PageOptions,
    ServerBusy,
    ServerError,
    ServerUnavailable,
    Unauthenticated,
    Unsupported,
    Word,
    cli,
    formats,
)
from ocr_client.errors import STATUS_DETAILS_KEY, from_rpc_error, from_status
from ocr_client.images import to_proto_image
from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from ocr_server.status import image_status_details

TIMEOUT_S = 5.0
# The deadline travels as a relative grpc-timeout header that is rounded up, so the
# server's time_remaining() can exceed the client's timeout by a few milliseconds.
DEADLINE_SLACK_S = 0.1

# --------------------------------------------------------------------------- the fake


class _BadImage(Exception):
    pass


def _abort_on_image(context: grpc.ServicerContext, index: int, message: str) -> None:
    """Abort as the real server does for a refused image: INVALID_ARGUMENT, the message,
    and the server's own status details naming ``images[index]``."""
    code = grpc.StatusCode.INVALID_ARGUMENT
    details = image_status_details(index, code, message)
    context.set_trailing_metadata(((STATUS_DETAILS_KEY, details),))
    context.abort(code, message)


def _describe(image: ocr_pb2.Image) -> ocr_pb2.LineResult:
    """The 'recognised text' of an image is a description of what arrived."""
    if image.WhichOneof("source") == "data":
        if image.data == b"bad":
            raise _BadImage("cannot decode the image")
        text = f"{len(image.data)} bytes"
    else:
        raw = image.raw
        if len(raw.pixels) != raw.width * raw.height * raw.channels:
            raise _BadImage("pixel buffer does not match width*height*channels")
        order = ocr_pb2.ColorOrder.Name(raw.color_order)
        first = raw.pixels[: raw.channels].hex()
        text = f"raw {raw.width}x{raw.height}x{raw.channels} {order} {first}"
    words = [
        ocr_pb2.Word(text=w, confidence=0.25, x_start=10 * i, x_end=10 * i + 5)
        for i, w in enumerate(text.split())
    ]
    return ocr_pb2.LineResult(text=text, confidence=0.5, words=words)


def _describe_page(image: ocr_pb2.Image, model: str = "fake-default") -> ocr_pb2.PageResult:
    """A page holding one line: the description of the image (see ``_describe``)."""
    line = _describe(image)
    if image.WhichOneof("source") == "raw":
        width, height = image.raw.width, image.raw.height
    else:
        width, height = 100, 50
    bounds = ocr_pb2.Rect(x=0, y=0, width=width, height=height)
    words = [
        ocr_pb2.PageWord(text=w.text, confidence=w.confidence, bounds=bounds) for w in line.words
    ]
    page_line = ocr_pb2.PageLine(
        text=line.text, confidence=line.confidence, bounds=bounds, words=words
    )
    return ocr_pb2.PageResult(
        width=width,
        height=height,
        lines=[page_line],
        blocks=[ocr_pb2.TextBlock(bounds=bounds, lines=[0])],
        text=line.text,
        model=model,
    )


class FakeOcr(ocr_pb2_grpc.OcrServiceServicer):
    """Model names steer it: ``fail:<STATUS>`` aborts with that status, ``slow`` waits
    until the caller's deadline has passed."""

    def __init__(self) -> None:
        self.deadlines: list[float | None] = []
        self.recognize_requests: list[ocr_pb2.RecognizeLinesRequest] = []
        #: The client end (address:port) of each RecognizeLines call: one per connection.
        self.recognize_peers: list[str] = []
        self.stream_requests: list[ocr_pb2.StreamRecognizeRequest] = []
        self.stream_cancelled = threading.Event()
        self.page_requests: list[ocr_pb2.RecognizePageRequest] = []
        self.document_requests: list[ocr_pb2.RecognizeDocumentRequest] = []
        self.max_lines_per_request = 256
        self.max_message_bytes = 0  # not reported, as by an older server

    def _enter(self, context: grpc.ServicerContext, model: str) -> None:
        self.deadlines.append(context.time_remaining())
        if model.startswith("fail:"):
            code = grpc.StatusCode[model.removeprefix("fail:")]
            context.abort(code, f"fake says {code.name}")
        if model == "slow":
            while context.is_active():
                time.sleep(0.01)
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "too late")

    def RecognizeLines(
        self, request: ocr_pb2.RecognizeLinesRequest, context: grpc.ServicerContext
    ) -> ocr_pb2.RecognizeLinesResponse:
        self.recognize_requests.append(request)
        self.recognize_peers.append(context.peer())
        self._enter(context, request.model)
        results = []
        for i, image in enumerate(request.images):
            try:
                results.append(_describe(image))
            except _BadImage as exc:
                _abort_on_image(context, i, f"image {i}: {exc}")
        return ocr_pb2.RecognizeLinesResponse(
            results=results, model=request.model or "fake-default"
        )

    def StreamRecognize(
        self,
        request_iterator: Iterator[ocr_pb2.StreamRecognizeRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[ocr_pb2.StreamRecognizeResponse]:
        context.add_callback(self.stream_cancelled.set)
        first = True
        for request in request_iterator:
            self.stream_requests.append(request)
            if first:
                self._enter(context, request.options.model)
            elif request.HasField("options"):
                yield ocr_pb2.StreamRecognizeResponse(
                    id=request.id,
                    error=status_pb2.Status(code=3, message="options on a later message"),
                )
                continue
            first = False
            item = request.WhichOneof("item")
            if item is None:
                continue
            try:
                if item == "page":
                    page = _describe_page(request.page)
                    yield ocr_pb2.StreamRecognizeResponse(id=request.id, page=page)
                else:
                    line = _describe(request.line)
                    yield ocr_pb2.StreamRecognizeResponse(id=request.id, line=line)
            except _BadImage as exc:
                error = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0])
                error.message = str(exc)
                yield ocr_pb2.StreamRecognizeResponse(id=request.id, error=error)

    def RecognizePage(
        self, request: ocr_pb2.RecognizePageRequest, context: grpc.ServicerContext
    ) -> ocr_pb2.PageResult:
        self.page_requests.append(request)
        self._enter(context, request.model)
        try:
            return _describe_page(request.image, request.model or "fake-default")
        except _BadImage as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"page: {exc}")
            raise  # not reached: abort raises

    def RecognizeDocument(
        self, request: ocr_pb2.RecognizeDocumentRequest, context: grpc.ServicerContext
    ) -> Iterator[ocr_pb2.PageResult]:
        """The fake's 'document' is pages of bytes separated by b"|"; a b"bad" page ends the
        stream with INVALID_ARGUMENT after the pages before it were sent."""
        self.document_requests.append(request)
        self._enter(context, request.model)
        for index, chunk in enumerate(request.data.split(b"|")):
            try:
                page = _describe_page(ocr_pb2.Image(data=chunk), request.model or "fake-default")
            except _BadImage as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"page {index}: {exc}")
            page.page_index = index
            yield page

    def ListModels(
        self, request: ocr_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> ocr_pb2.ListModelsResponse:
        self._enter(context, "")
        return ocr_pb2.ListModelsResponse(
            models=[
                ocr_pb2.ModelInfo(
                    name="latin",
                    is_default=True,
                    charset_size=95,
                    input_height=32,
                    source="pkg",
                    supports_pages=True,
                    supports_line_rotation=True,
                ),
                ocr_pb2.ModelInfo(name="cjk", charset_size=6000, input_height=48, source="cfg"),
            ],
            limits=ocr_pb2.ServerLimits(
                max_lines_per_request=self.max_lines_per_request,
                max_message_bytes=self.max_message_bytes,
            ),
        )

    def GetStats(
        self, request: ocr_pb2.GetStatsRequest, context: grpc.ServicerContext
    ) -> ocr_pb2.GetStatsResponse:
        self._enter(context, "")
        stats = ocr_pb2.BatcherStats(model="latin", lines_enqueued=7, batches=2)
        stats.batch_size_counts[4] = 1
        stats.batch_size_counts[3] = 1
        return ocr_pb2.GetStatsResponse(batchers=[stats])


@dataclass
class Fake:
    servicer: FakeOcr
    address: str


@contextlib.contextmanager
def _serve(servicer: ocr_pb2_grpc.OcrServiceServicer) -> Iterator[Fake]:
    """``servicer`` on a real gRPC server on a free loopback port, stopped afterwards."""
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    ocr_pb2_grpc.add_OcrServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Fake(servicer, f"127.0.0.1:{port}")  # type: ignore[arg-type]
    finally:
        server.stop(None).wait()


@pytest.fixture
def fake() -> Iterator[Fake]:
    with _serve(FakeOcr()) as served:
        yield served


@pytest.fixture
def client(fake: Fake) -> Iterator[OcrClient]:
    with OcrClient(fake.address, timeout=TIMEOUT_S) as c:
        yield c


@pytest.fixture
def dead_address() -> str:
    """An address nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


def _gray() -> np.ndarray:
    a = np.zeros((4, 6), np.uint8)
    a[0, 0] = 7
    return a


def _color(channels: int = 3) -> np.ndarray:
    a = np.zeros((4, 6, channels), np.uint8)
    a[0, 0] = [1, 2, 3, 4][:channels]
    return a


# --------------------------------------------------------------------------- images


def test_path_and_bytes_become_encoded_data(tmp_path: Path) -> None:
    f = tmp_path / "line.png"
    f.write_bytes(b"\x89PNG fake")
    assert to_proto_image(f).data == b"\x89PNG fake"
    assert to_proto_image(str(f)).data == b"\x89PNG fake"
    assert to_proto_image(b"abc").data == b"abc"
    assert to_proto_image(bytearray(b"abc")).data == b"abc"
    assert to_proto_image(memoryview(b"abcd")[1:]).data == b"bcd"


@pytest.mark.parametrize(
    ("array", "color_order", "channels", "order"),
    [
        (_gray(), "rgb", 1, ocr_pb2.COLOR_ORDER_UNSPECIFIED),
        (_gray()[:, :, None], "bgr", 1, ocr_pb2.COLOR_ORDER_UNSPECIFIED),
        (_color(3), "rgb", 3, ocr_pb2.COLOR_ORDER_RGB),
        (_color(3), "bgr", 3, ocr_pb2.COLOR_ORDER_BGR),
        (_color(4), "BGR", 4, ocr_pb2.COLOR_ORDER_BGR),
    ],
)
def test_arrays_become_raw_pixels(
    array: np.ndarray, color_order: str, channels: int, order: int
) -> None:
    raw = to_proto_image(array, color_order).raw
    assert (raw.width, raw.height, raw.channels) == (6, 4, channels)
    assert raw.color_order == order
    assert raw.pixels == array.tobytes()


def test_non_contiguous_array_is_sent_row_major() -> None:
    base = np.arange(4 * 12 * 3, dtype=np.uint8).reshape(4, 12, 3)
    view = base[:, ::2, ::-1]  # strided crop, channels reversed (RGB->BGR view)
    assert not view.flags.c_contiguous
    raw = to_proto_image(view).raw
    assert (raw.width, raw.height, raw.channels) == (6, 4, 3)
    assert raw.pixels == np.ascontiguousarray(view).tobytes()
    transposed = np.arange(24, dtype=np.uint8).reshape(6, 4).T
    assert to_proto_image(transposed).raw.pixels == bytes(transposed.flatten())


@pytest.mark.parametrize(
    "array",
    [np.zeros((4, 6), np.float32), np.zeros((4, 6, 3), np.uint16), np.zeros((4, 6), bool)],
)
def test_non_uint8_array_is_refused(array: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        to_proto_image(array)


def test_pil_images_are_sent_only_in_modes_whose_samples_the_server_reads() -> None:
    """A CMYK image went out as RGBA (K read as alpha: blank text, no error), a palette
    image as its indexes, YCbCr as RGB."""
    for mode in ("L", "RGB", "RGBA"):
        image = Image.new(mode, (6, 4))
        raw = to_proto_image(image).raw
        assert (raw.width, raw.height, raw.channels) == (6, 4, len(mode))
        assert raw.pixels == image.tobytes()
    for mode in ("CMYK", "P", "YCbCr", "LA", "I;16", "1"):
        with pytest.raises(ValueError, match=rf"mode '{re.escape(mode)}' cannot be sent"):
            to_proto_image(Image.new(mode, (6, 4)))


@pytest.mark.parametrize("shape", [(24,), (4, 6, 2), (4, 6, 5), (1, 4, 6, 3), (0, 6), (4, 0, 3)])
def test_bad_array_shape_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="shape"):
        to_proto_image(np.zeros(shape, np.uint8))


def test_other_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        to_proto_image(b"")
    with pytest.raises(TypeError, match="int"):
        to_proto_image(42)
    with pytest.raises(ValueError, match="color_order"):
        to_proto_image(_color(), "rgba")
    with pytest.raises(FileNotFoundError):
        to_proto_image(Path("/nonexistent/line.png"))


class _DuckArray:
    """Array-like with shape/dtype/tobytes and no numpy behind it."""

    shape = (2, 3, 3)
    dtype = "uint8"

    def tobytes(self) -> bytes:
        return bytes(range(18))


def test_duck_typed_array_without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)  # `import numpy` now fails
    raw = to_proto_image(_DuckArray(), "bgr").raw
    assert (raw.width, raw.height, raw.channels) == (3, 2, 3)
    assert raw.color_order == ocr_pb2.COLOR_ORDER_BGR
    assert raw.pixels == bytes(range(18))


def test_client_imports_without_numpy_extras_or_server_code() -> None:
    """The client installs with grpcio and protobuf only: numpy and the ``[documents]``
    extras are imported only when an array is sent, a TIFF split or a PDF rendered."""
    code = (
        "import sys\n"
        "for name in ('numpy', 'cv2', 'PIL', 'pypdfium2', 'lxml'):\n"
        "    sys.modules[name] = None\n"
        "import ocr_client, ocr_client.cli, ocr_client.documents, ocr_client.formats\n"
        "from ocr_client.images import to_proto_image\n"
        "assert to_proto_image(b'png').data == b'png'\n"
        "bad = [m for m in sys.modules if m.startswith(('ocr_core', 'ocr_server', 'onnx'))]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequest),
        (grpc.StatusCode.NOT_FOUND, ModelNotFound),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ServerBusy),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.UNAVAILABLE, ServerUnavailable),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, Unauthenticated),
        (grpc.StatusCode.FAILED_PRECONDITION, Unsupported),
        (grpc.StatusCode.UNIMPLEMENTED, Unsupported),
        (grpc.StatusCode.INTERNAL, ServerError),
        (grpc.StatusCode.UNKNOWN, ServerError),
    ],
)
def test_status_maps_to_exception(
    client: OcrClient, code: grpc.StatusCode, cls: type[OcrClientError]
) -> None:
    with pytest.raises(cls) as info:
        client.recognize_lines([b"x"], model=f"fail:{code.name}")
    err = info.value
    assert type(err) is cls
    assert err.code == code
    assert err.details == f"fake says {code.name}"
    assert str(err) == f"fake says {code.name} ({code.name})"
    assert isinstance(err.__cause__, grpc.RpcError)
    # the per-item form (google.rpc.Status) maps the same way
    item_err = from_status(code.value[0], "m")
    assert type(item_err) is cls
    assert item_err.code == code


def test_unknown_status_number_is_a_server_error() -> None:
    err = from_status(999, "odd")
    assert type(err) is ServerError
    assert err.code == grpc.StatusCode.UNKNOWN
    assert str(err) == "odd (UNKNOWN)"


def test_from_rpc_error_without_accessors() -> None:
    err = from_rpc_error(grpc.RpcError("plain"))
    assert type(err) is ServerError
    assert err.code == grpc.StatusCode.UNKNOWN
    assert err.details == "plain"


# --------------------------------------------------------------------------- sync client


def test_recognize_lines_builds_requests_and_keeps_order(
    client: OcrClient, fake: Fake, tmp_path: Path
) -> None:
    f = tmp_path / "a.png"
    f.write_bytes(b"12345")
    images = [f, b"123", _gray(), _color(3), _color(3)[:, :, ::-1], bytearray(b"1")]
    lines = client.recognize_lines(images, model="m1")
    assert [line.text for line in lines] == [
        "5 bytes",
        "3 bytes",
        "raw 6x4x1 COLOR_ORDER_UNSPECIFIED 07",
        "raw 6x4x3 COLOR_ORDER_RGB 010203",
        "raw 6x4x3 COLOR_ORDER_RGB 030201",
        "1 bytes",
    ]
    assert lines[0] == LineResult(
        "5 bytes", 0.5, (Word("5", 0.25, 0, 5), Word("bytes", 0.25, 10, 15))
    )
    (request,) = fake.servicer.recognize_requests
    assert request.model == "m1"
    assert len(request.images) == len(images)


def test_bgr_arrays_are_labelled_bgr(client: OcrClient) -> None:
    line = client.recognize_line(_color(3), color_order="bgr")
    assert line.text == "raw 6x4x3 COLOR_ORDER_BGR 010203"


def test_no_images_means_no_call(client: OcrClient, fake: Fake) -> None:
    assert client.recognize_lines([]) == []
    assert fake.servicer.recognize_requests == []


def test_bad_input_fails_before_any_call(client: OcrClient, fake: Fake) -> None:
    with pytest.raises(ValueError, match="uint8"):
        client.recognize_lines([b"ok", np.zeros((4, 6), np.float64)])
    assert fake.servicer.recognize_requests == []


def test_server_side_invalid_image(client: OcrClient) -> None:
    with pytest.raises(InvalidRequest, match="image 1: cannot decode"):
        client.recognize_lines([b"ok", b"bad"])


def test_every_call_has_a_deadline(client: OcrClient, fake: Fake) -> None:
    client.recognize_lines([b"x"])
    client.recognize_lines([b"x"], timeout=1.5)
    client.list_models()
    client.get_stats(timeout=2.0)
    list(client.stream_recognize([b"x"], timeout=2.5))
    limits = [TIMEOUT_S, 1.5, TIMEOUT_S, 2.0, 2.5]
    assert len(fake.servicer.deadlines) == len(limits)
    for remaining, limit in zip(fake.servicer.deadlines, limits, strict=True):
        assert remaining is not None
        assert 0 < remaining <= limit + DEADLINE_SLACK_S


def test_deadline_passes(client: OcrClient) -> None:
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        client.recognize_lines([b"x"], model="slow", timeout=0.3)
    assert time.monotonic() - t0 < TIMEOUT_S


def test_invalid_timeout_is_refused(fake: Fake) -> None:
    with pytest.raises(ValueError, match="timeout"):
        OcrClient(fake.address, timeout=0)
    with OcrClient(fake.address) as c, pytest.raises(ValueError, match="timeout"):
        c.recognize_lines([b"x"], timeout=-1)


def test_list_models_and_stats(client: OcrClient) -> None:
    assert client.list_models() == [
        ModelInfo("latin", True, 95, 32, "pkg", supports_pages=True, supports_line_rotation=True),
        ModelInfo("cjk", False, 6000, 48, "cfg"),
    ]
    stats = client.get_stats()
    assert isinstance(stats, ocr_pb2.GetStatsResponse)
    assert stats.batchers[0].lines_enqueued == 7
    assert dict(stats.batchers[0].batch_size_counts) == {3: 1, 4: 1}


def test_wait_ready(client: OcrClient, dead_address: str) -> None:
    client.wait_ready(timeout=TIMEOUT_S)
    with OcrClient(dead_address) as c:
        t0 = time.monotonic()
        with pytest.raises(ServerUnavailable, match="not ready"):
            c.wait_ready(timeout=0.3)
        assert time.monotonic() - t0 < TIMEOUT_S


def test_unreachable_server_is_unavailable(dead_address: str) -> None:
    with OcrClient(dead_address, timeout=TIMEOUT_S) as c, pytest.raises(ServerUnavailable):
        c.recognize_lines([b"x"])


def test_stream_per_item_error_and_options(client: OcrClient, fake: Fake) -> None:
    items = [("a", b"123"), ("b", b"bad"), ("c", _color(3))]
    results = list(client.stream_recognize(items, model="m2", ordered=True))
    assert [r.id for r in results] == ["a", "b", "c"]
    a, b, c = results
    assert a.ok and a.line is not None and a.line.text == "3 bytes"
    assert a.line.words[1] == Word("bytes", 0.25, 10, 15)
    assert not b.ok and b.line is None
    assert isinstance(b.error, InvalidRequest)
    assert b.error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert b.error.details == "cannot decode the image"
    assert c.line is not None and c.line.text == "raw 6x4x3 COLOR_ORDER_RGB 010203"
    first, *rest = fake.servicer.stream_requests
    assert first.HasField("options") and first.HasField("line")
    assert (first.options.model, first.options.ordered) == ("m2", True)
    assert rest and not any(r.HasField("options") for r in rest)


def test_stream_plain_images_get_positional_ids(client: OcrClient, fake: Fake) -> None:
    results = list(client.stream_recognize(iter([b"1", b"22", b"333"])))
    assert [(r.id, r.line.text if r.line else None) for r in results] == [
        ("0", "1 bytes"),
        ("1", "2 bytes"),
        ("2", "3 bytes"),
    ]
    first = fake.servicer.stream_requests[0]
    assert (first.options.model, first.options.ordered) == ("", False)


def test_stream_with_no_items(client: OcrClient) -> None:
    assert list(client.stream_recognize([])) == []


def test_stream_whole_call_failure_raises(client: OcrClient) -> None:
    with pytest.raises(ModelNotFound, match="fake says NOT_FOUND"):
        list(client.stream_recognize([b"1", b"2"], model="fail:NOT_FOUND"))


@pytest.mark.parametrize("bad_at", [0, 2])
def test_stream_bad_input_raises_the_input_error(client: OcrClient, bad_at: int) -> None:
    items: list[object] = [b"1", b"2", b"3"]
    items[bad_at] = np.zeros((4, 6), np.float32)
    with pytest.raises(ValueError, match="uint8"):
        list(client.stream_recognize(items))


def test_stream_items_iterable_error_is_raised(client: OcrClient) -> None:
    def items() -> Iterator[bytes]:
        yield b"1"
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        list(client.stream_recognize(items()))


def test_stream_bad_item_shape(client: OcrClient) -> None:
    with pytest.raises(TypeError, match="id: str"):
        list(client.stream_recognize([(1, b"x")]))


def test_stopping_a_stream_early_cancels_it(client: OcrClient, fake: Fake) -> None:
    def endless() -> Iterator[bytes]:
        while True:
            yield b"12"

    stream = client.stream_recognize(endless())
    assert next(stream).id == "0"
    stream.close()
    assert fake.servicer.stream_cancelled.wait(TIMEOUT_S)
    assert client.recognize_line(b"x").text == "1 bytes"  # the channel is still fine


# --------------------------------------------------------------------------- async client


async def test_async_recognize_and_models(fake: Fake, tmp_path: Path) -> None:
    f = tmp_path / "a.png"
    f.write_bytes(b"1234")
    async with AsyncOcrClient(fake.address, timeout=TIMEOUT_S) as c:
        await c.wait_ready()
        lines = await c.recognize_lines([f, b"12", _color(3)], color_order="bgr", timeout=2.0)
        assert [line.text for line in lines] == [
            "4 bytes",
            "2 bytes",
            "raw 6x4x3 COLOR_ORDER_BGR 010203",
        ]
        assert (await c.recognize_line(b"1")).text == "1 bytes"
        assert [m.name for m in await c.list_models()] == ["latin", "cjk"]
        assert (await c.get_stats()).batchers[0].model == "latin"
        assert await c.recognize_lines([]) == []
    limits = [2.0, TIMEOUT_S, TIMEOUT_S, TIMEOUT_S]
    for remaining, limit in zip(fake.servicer.deadlines, limits, strict=True):
        assert remaining is not None
        assert 0 < remaining <= limit + DEADLINE_SLACK_S


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequest),
        (grpc.StatusCode.NOT_FOUND, ModelNotFound),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ServerBusy),
        (grpc.StatusCode.UNAVAILABLE, ServerUnavailable),
        (grpc.StatusCode.INTERNAL, ServerError),
    ],
)
async def test_async_status_maps_to_exception(
    fake: Fake, code: grpc.StatusCode, cls: type[OcrClientError]
) -> None:
    async with AsyncOcrClient(fake.address, timeout=TIMEOUT_S) as c:
        with pytest.raises(cls) as info:
            await c.recognize_lines([b"x"], model=f"fail:{code.name}")
    assert type(info.value) is cls
    assert info.value.code == code
    assert isinstance(info.value.__cause__, grpc.aio.AioRpcError)


async def test_async_error_carries_the_refused_image_index_and_the_limits(fake: Fake) -> None:
    fake.servicer.max_lines_per_request = 7
    async with AsyncOcrClient(fake.address, timeout=TIMEOUT_S) as c:
        with pytest.raises(InvalidRequest) as info:
            await c.recognize_lines([b"1", b"bad"])
        assert (await c.server_limits()).max_lines_per_request == 7
    assert info.value.image_index == 1


async def test_async_deadline_passes(fake: Fake) -> None:
    async with AsyncOcrClient(fake.address) as c:
        with pytest.raises(DeadlineExceeded):
            await c.recognize_lines([b"x"], model="slow", timeout=0.3)


async def test_async_stream_from_async_iterable(fake: Fake) -> None:
    async def items() -> AsyncIterator[tuple[str, object]]:
        yield "a", b"123"
        yield "b", b"bad"
        yield "c", _gray()

    async with AsyncOcrClient(fake.address, timeout=TIMEOUT_S) as c:
        results = [r async for r in c.stream_recognize(items(), model="m3", ordered=True)]
    assert [r.id for r in results] == ["a", "b", "c"]
    assert results[0].line is not None and results[0].line.text == "3 bytes"
    assert isinstance(results[1].error, InvalidRequest)
    assert results[2].line is not None
    assert results[2].line.text == "raw 6x4x1 COLOR_ORDER_UNSPECIFIED 07"
    first, *rest = fake.servicer.stream_requests
    assert (first.options.model, first.options.ordered) == ("m3", True)
    assert not any(r.HasField("options") for r in rest)
    remaining = fake.servicer.deadlines[0]
    assert remaining is not None and 0 < remaining <= TIMEOUT_S + DEADLINE_SLACK_S


async def test_async_stream_from_sync_iterable_with_paths(fake: Fake, tmp_path: Path) -> None:
    f = tmp_path / "a.png"
    f.write_bytes(b"123456")
    async with AsyncOcrClient(fake.address, timeout=TIMEOUT_S) as c:
        results = [r async for r in c.stream_recognize([f, b"1"])]
    assert [(r.id, r.line.text if r.line else None) for r in results] == [
        ("0", "6 bytes"),
        ("1", "1 bytes"),
    ]


async def test_async_stream_failures(fake: Fake) -> None:
    async with AsyncOcrClient(fake.address, timeout=TIMEOUT_S) as c:
        with pytest.raises(ModelNotFound):
            _ = [r async for r in c.stream_recognize([b"1"], model="fail:NOT_FOUND")]
        for bad_at in (0, 2):
            items: list[object] = [b"1", b"2", b"3"]
            items[bad_at] = np.zeros((4, 6), np.float32)
            with pytest.raises(ValueError, match="uint8"):
                _ = [r async for r in c.stream_recognize(items)]
        # the client is still usable after those
        assert (await c.recognize_line(b"12")).text == "2 bytes"


async def test_async_stopping_a_stream_early_cancels_it(fake: Fake) -> None:
    def endless() -> Iterator[bytes]:
        while True:
            yield b"12"

    async with AsyncOcrClient(fake.address, timeout=TIMEOUT_S) as c:
        stream = c.stream_recognize(endless())
        async for result in stream:
            assert result.id == "0"
            break
        await stream.aclose()
        assert await asyncio.to_thread(fake.servicer.stream_cancelled.wait, TIMEOUT_S)
        assert (await c.recognize_line(b"x")).text == "1 bytes"


async def test_async_wait_ready_times_out(dead_address: str) -> None:
    async with AsyncOcrClient(dead_address) as c:
        with pytest.raises(ServerUnavailable, match="not ready"):
            await c.wait_ready(timeout=0.3)


async def test_async_closed_client_refuses_calls(fake: Fake) -> None:
    c = AsyncOcrClient(fake.address)
    assert (await c.recognize_line(b"1")).text == "1 bytes"  # channel made on first use
    await c.close()
    with pytest.raises(ValueError, match="closed"):
        await c.recognize_line(b"1")


# --------------------------------------------------------------------------- CLI


def _write_images(tmp_path: Path, *sizes: int) -> list[str]:
    paths = []
    for i, n in enumerate(sizes):
        p = tmp_path / f"img{i}.png"
        p.write_bytes(b"x" * n)
        paths.append(str(p))
    return paths


def test_cli_lines_single_and_several(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (one,) = _write_images(tmp_path, 3)
    assert cli.main(["lines", one, "--address", fake.address]) == 0
    assert capsys.readouterr().out == "3 bytes\n"
    paths = _write_images(tmp_path, 1, 22)
    assert cli.main(["lines", *paths, "--address", fake.address, "--model", "m"]) == 0
    assert capsys.readouterr().out == f"{paths[0]}\t1 bytes\n{paths[1]}\t22 bytes\n"
    assert fake.servicer.recognize_requests[-1].model == "m"


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_cli_lines_reads_dash_from_stdin(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _stdin(monkeypatch, b"from a pipe")
    assert cli.main(["lines", "-", "--address", fake.address]) == 0
    assert capsys.readouterr().out == "11 bytes\n"
    (one,) = _write_images(tmp_path, 3)
    _stdin(monkeypatch, b"piped")
    assert cli.main(["lines", one, "-", "--json", "--address", fake.address]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [(r["image"], r["text"]) for r in results] == [(one, "3 bytes"), ("-", "5 bytes")]


@pytest.mark.parametrize(
    ("argv", "data", "message"),
    [
        (["-", "-"], b"x", "'-' (standard input) can be given only once"),
        (["-"], b"", "-: standard input is empty"),
    ],
)
def test_cli_dash_refused_before_anything_is_sent(
    fake: Fake,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    data: bytes,
    message: str,
) -> None:
    for command in ("lines", "pages"):
        _stdin(monkeypatch, data)
        assert cli.main([command, *argv, "--address", fake.address]) == 1
        assert capsys.readouterr().err == f"error: {message}\n"
    assert not fake.servicer.recognize_requests and not fake.servicer.stream_requests


def test_cli_lines_json(fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = _write_images(tmp_path, 2, 5)
    assert cli.main(["lines", *paths, "--json", "--address", fake.address]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == "fake-default"
    assert [r["image"] for r in doc["results"]] == paths
    assert doc["results"][1] == {
        "image": paths[1],
        "text": "5 bytes",
        "confidence": 0.5,
        "words": [
            {"text": "5", "confidence": 0.25, "x_start": 0, "x_end": 5},
            {"text": "bytes", "confidence": 0.25, "x_start": 10, "x_end": 15},
        ],
    }


def test_cli_lines_are_chunked(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _write_images(tmp_path, *([1] * 300))
    assert cli.main(["lines", *paths, "--address", fake.address]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 300
    assert [len(r.images) for r in fake.servicer.recognize_requests] == [256, 44]


def test_cli_lines_split_evenly_over_connections_and_kept_in_order(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _write_images(tmp_path, *range(1, 11))
    assert cli.main(["lines", *paths, "--connections", "4", "--address", fake.address]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{p}\t{n} bytes" for n, p in enumerate(paths, start=1)]
    assert sorted(len(r.images) for r in fake.servicer.recognize_requests) == [1, 3, 3, 3]
    assert len(set(fake.servicer.recognize_peers)) == 4  # one call on each connection
    fake.servicer.recognize_requests.clear()
    paths = _write_images(tmp_path, *([1] * 300))
    assert cli.main(["lines", *paths, "--connections", "2", "--address", fake.address]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 300
    assert [len(r.images) for r in fake.servicer.recognize_requests] == [150, 150]


def test_cli_lines_failure_on_several_connections_is_one_error(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _write_images(tmp_path, *([1] * 8))
    args = ["lines", *paths, "--connections", "3", "--model", "fail:UNAVAILABLE"]
    assert cli.main([*args, "--address", fake.address]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: fake says UNAVAILABLE (UNAVAILABLE)\n"
    for bad in ("0", "65", "x"):
        with pytest.raises(SystemExit) as info:
            cli.main(["lines", paths[0], "--connections", bad])
        assert info.value.code == 2
    capsys.readouterr()


def test_cli_lines_reports_a_refused_image_by_name_and_prints_the_others(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _write_images(tmp_path, 1, 2, 3, 4)
    Path(paths[1]).write_bytes(b"bad")
    Path(paths[3]).write_bytes(b"bad")
    assert cli.main(["lines", *paths, "--address", fake.address]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"{paths[0]}\t1 bytes\n{paths[2]}\t3 bytes\n"
    # Named by file, without the server's per-call index (which counts within one call).
    assert captured.err == (
        f"error: {paths[1]}: cannot decode the image (INVALID_ARGUMENT)\n"
        f"error: {paths[3]}: cannot decode the image (INVALID_ARGUMENT)\n"
    )
    # Each refusal drops that image and resends the rest.
    sent = [len(r.images) for r in fake.servicer.recognize_requests]
    assert sent == [4, 3, 2]
    assert cli.main(["lines", *paths, "--json", "--address", fake.address]) == 1
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r.get("text") for r in results] == ["1 bytes", None, "3 bytes", None]
    assert results[1] == {"image": paths[1], "error": "cannot decode the image (INVALID_ARGUMENT)"}
    # A lone image the server refuses: the error, nothing on stdout.
    assert cli.main(["lines", paths[1], "--address", fake.address]) == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == (
        "",
        f"error: {paths[1]}: cannot decode the image (INVALID_ARGUMENT)\n",
    )
    # Without details (an older server), a lone image's INVALID_ARGUMENT is still its own,
    # and several images' is the whole call's.
    args = ["--model", "fail:INVALID_ARGUMENT", "--address", fake.address]
    assert cli.main(["lines", paths[0], *args]) == 1
    assert (
        capsys.readouterr().err
        == f"error: {paths[0]}: fake says INVALID_ARGUMENT (INVALID_ARGUMENT)\n"
    )
    assert cli.main(["lines", paths[0], paths[2], *args]) == 1
    assert capsys.readouterr().err == "error: fake says INVALID_ARGUMENT (INVALID_ARGUMENT)\n"


def test_client_error_carries_the_refused_image_index(client: OcrClient) -> None:
    with pytest.raises(InvalidRequest) as info:
        client.recognize_lines([b"1", b"2", b"bad"])
    assert info.value.image_index == 2
    assert info.value.details == "image 2: cannot decode the image"
    # A failure that names no image has none.
    with pytest.raises(ModelNotFound) as other:
        client.recognize_lines([b"1"], model="fail:NOT_FOUND")
    assert other.value.image_index is None


def test_cli_lines_splits_at_the_server_s_own_limit(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.servicer.max_lines_per_request = 2
    paths = _write_images(tmp_path, *([1] * 5))
    assert cli.main(["lines", *paths, "--address", fake.address]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    assert [len(r.images) for r in fake.servicer.recognize_requests] == [2, 2, 1]


def test_cli_lines_calls_stay_under_the_message_limit(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls are cut by bytes as well as by images (256 line PNGs of 300 KB are more than
    a 64 MiB request), under the server's reported limit (the client's default when it
    reports none); a file that cannot fit in any call fails alone, and the others are
    recognised."""
    fake.servicer.max_message_bytes = 100_000
    paths = _write_images(tmp_path, *([30_000] * 7), 200_000, 10)
    assert cli.main(["lines", *paths, "--address", fake.address]) == 1
    captured = capsys.readouterr()
    sizes = [*([30_000] * 7), None, 10]
    printed = [f"{p}\t{n} bytes" for p, n in zip(paths, sizes, strict=True) if n]
    assert captured.out.splitlines() == printed
    assert captured.err == (
        f"error: {paths[7]}: the file is 200,000 bytes, over the 100,000 a request may carry "
        "(the server's --max-message-bytes or this client's limit); send it scaled down or "
        "compressed\n"
    )
    requests = fake.servicer.recognize_requests
    assert [len(r.images) for r in requests] == [3, 3, 2]
    assert max(r.ByteSize() for r in requests) <= 100_000
    # The client's own limit (64 MiB, smaller here) holds when the server reports none, and
    # for a lone image, for which the server is not asked.
    fake.servicer.max_message_bytes = 0
    monkeypatch.setattr(cli, "DEFAULT_MAX_MESSAGE_BYTES", 100_000)
    requests.clear()
    assert cli.main(["lines", *paths, "--address", fake.address]) == 1
    assert [len(r.images) for r in requests] == [3, 3, 2]
    capsys.readouterr()
    assert cli.main(["lines", paths[7], "--address", fake.address]) == 1
    assert capsys.readouterr().err.startswith(f"error: {paths[7]}: the file is 200,000 bytes")
    assert len(requests) == 3  # nothing sent


def test_cli_lines_empty_file_fails_alone(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty file is named and the others printed (exit 1), as a file the server refuses
    and as an empty file given to `pages`; it is never sent."""
    paths = _write_images(tmp_path, 1, 0, 3)
    assert cli.main(["lines", *paths, "--address", fake.address]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"{paths[0]}\t1 bytes\n{paths[2]}\t3 bytes\n"
    assert captured.err == f"error: {paths[1]}: the file is empty\n"
    assert [len(r.images) for r in fake.servicer.recognize_requests] == [2]
    assert cli.main(["lines", paths[1], "--json", "--address", fake.address]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["results"] == [{"image": paths[1], "error": "the file is empty"}]
    assert len(fake.servicer.recognize_requests) == 1


def _fifo(path: Path, data: bytes) -> Callable[[], None]:
    """A FIFO at ``path`` that a thread writes ``data`` to; the function returned releases
    the thread if nothing read the FIFO."""
    os.mkfifo(path)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError):
            path.write_bytes(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()

    def release() -> None:
        if writer.is_alive():
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            writer.join(5)
            os.close(fd)

    return release


def test_cli_lines_reads_fifos_and_process_substitution(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO or a shell's ``<(command)`` (a /dev/fd/N pipe) is an input like a file."""
    release = _fifo(tmp_path / "line.fifo", b"from a fifo")
    read_end, write_end = os.pipe()
    os.write(write_end, b"substituted!")
    os.close(write_end)
    piped = f"/dev/fd/{read_end}"
    try:
        code = cli.main(["lines", str(tmp_path / "line.fifo"), piped, "--address", fake.address])
    finally:
        os.close(read_end)
        release()
    assert (code, capsys.readouterr().out) == (
        0,
        f"{tmp_path / 'line.fifo'}\t11 bytes\n{piped}\t12 bytes\n",
    )
    assert cli.main(["lines", str(tmp_path), "--address", fake.address]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path}: is a directory, not a file\n"
    assert len(fake.servicer.recognize_requests) == 1


def test_cli_pages_reads_fifos_beside_stdin(
    pages_fake: Fake,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A FIFO is copied once, as standard input is: a document is read more than once."""
    png, tif, _ = _documents(tmp_path)
    release = _fifo(tmp_path / "scan.fifo", Path(tif).read_bytes())
    _stdin(monkeypatch, Path(png).read_bytes())
    try:
        args = ["pages", str(tmp_path / "scan.fifo"), "-", "-f", "json"]
        code = cli.main([*args, "--address", pages_fake.address])
    finally:
        release()
    captured = capsys.readouterr()
    assert (code, captured.err) == (0, "")
    pages = json.loads(captured.out)["pages"]
    fifo = str(tmp_path / "scan.fifo")
    assert [(p["source"], p["pageIndex"]) for p in pages] == [
        (fifo, 0),
        (fifo, 1),
        (fifo, 2),
        ("-", 0),
    ]


# Ctrl-C in the CLI as in a terminal. Python turns SIGINT into KeyboardInterrupt only when
# SIGINT was not ignored at its start, as it is for a shell's background jobs: set it here.
_CLI_WITH_CTRL_C = (
    "import signal, sys\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "from ocr_client import cli\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


def test_cli_lines_ctrl_c_cancels_the_calls_in_flight(fake: Fake, tmp_path: Path) -> None:
    """Ctrl-C exits (130) at once, cancelling the calls in flight, rather than once they have
    ended or timed out; the server stops working on them."""
    paths = _write_images(tmp_path, 1, 2)
    args = ["lines", *paths, "--connections", "2", "--model", "slow", "--timeout", "30"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI_WITH_CTRL_C, *args, "--address", fake.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        end = time.monotonic() + 30
        while len(fake.servicer.recognize_requests) < 2 and time.monotonic() < end:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - start
    finally:
        proc.kill()
        proc.wait()
    assert (proc.returncode, out) == (130, ""), err
    assert elapsed < 5, err  # the calls' deadline is 30 s away


def test_cli_output_into_a_closed_pipe_ends_quietly(fake: Fake, tmp_path: Path) -> None:
    """`ocr-client lines *.png | head -1`: the reader leaves after one line. The CLI used to
    print 'error: [Errno 32] Broken pipe' and exit 1; now it ends silently with 141."""
    # Far more output than a pipe holds (64 KiB), so the CLI is still writing when the
    # reader leaves; with less, it could finish into the pipe's buffer first and exit 0.
    paths = _write_images(tmp_path, *[3] * 3000)
    command = [sys.executable, "-m", "ocr_client.cli", "lines", *paths]
    with subprocess.Popen(
        [*command, "--address", fake.address], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 128 + signal.SIGPIPE, err
    assert first.startswith(paths[0].encode() + b"\t")
    assert err == ""


class _HangOrFail(FakeOcr):
    """RecognizeLines with a b"hang" image waits until the call is cancelled; with a b"down"
    image it fails UNAVAILABLE once the hanging call has arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.hanging = threading.Event()
        self.cancelled = threading.Event()

    def RecognizeLines(
        self, request: ocr_pb2.RecognizeLinesRequest, context: grpc.ServicerContext
    ) -> ocr_pb2.RecognizeLinesResponse:
        data = [image.data for image in request.images]
        if b"hang" in data:
            self.hanging.set()
            while context.is_active():
                time.sleep(0.01)
            self.cancelled.set()
        if b"down" in data:
            self.hanging.wait(10)
            context.abort(grpc.StatusCode.UNAVAILABLE, "fake is going down")
        return super().RecognizeLines(request, context)


def test_cli_lines_failed_call_cancels_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first call to fail ends the run at once (its error reported), whatever the order
    of the calls, and cancels the others in flight."""
    paths = _write_images(tmp_path, 1, 1)
    Path(paths[0]).write_bytes(b"hang")
    Path(paths[1]).write_bytes(b"down")
    with _serve(_HangOrFail()) as served:
        args = ["lines", *paths, "--connections", "2", "--timeout", "30"]
        start = time.monotonic()
        assert cli.main([*args, "--address", served.address]) == 1
        assert time.monotonic() - start < 10  # the calls' deadline is 30 s away
        assert served.servicer.cancelled.wait(5)
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "error: fake is going down (UNAVAILABLE)\n")


def test_cli_whole_call_failures_say_which_flag_to_change(
    fake: Fake,
    dead_address: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (one,) = _write_images(tmp_path, 1)
    monkeypatch.delenv("OCR_TOKEN", raising=False)
    assert cli.main(["lines", one, "--address", dead_address, "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert err.endswith(f"; is the server running at {dead_address}? (--address or $OCR_ADDRESS)\n")
    args = ["lines", one, "--model", "fail:UNAUTHENTICATED", "--address", fake.address]
    assert cli.main(args) == 1
    assert capsys.readouterr().err.endswith("; set $OCR_TOKEN to the server's token\n")
    monkeypatch.setenv("OCR_TOKEN", "t0ken")
    assert cli.main(args) == 1
    assert capsys.readouterr().err.endswith("; the token in $OCR_TOKEN was refused\n")
    args = ["lines", one, "--model", "slow", "--timeout", "0.3", "--address", fake.address]
    assert cli.main(args) == 1
    assert capsys.readouterr().err.endswith("; --timeout (now 0.3 s) allows more\n")


@pytest.fixture
def tls_fake(tmp_path: Path) -> Iterator[tuple[Fake, Path]]:
    """The fake over TLS (a certificate for 127.0.0.1 from a throwaway CA) and the CA's PEM."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(ca_pem)
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    servicer = FakeOcr()
    ocr_pb2_grpc.add_OcrServiceServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials([(cert.private_key_pem.bytes(), chain)])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield Fake(servicer, f"127.0.0.1:{port}"), ca_pem
    finally:
        server.stop(None).wait()


def test_cli_tls_failures_say_which_flag_to_change(
    tls_fake: tuple[Fake, Path], fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A TLS mismatch against a running server is not "is the server running?"."""
    served, ca = tls_fake
    (one,) = _write_images(tmp_path, 3)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a PEM file\n")
    closed = "the server closed the connection: if it uses TLS, add --tls (and --ca for a "
    untrusted = "the server's certificate is not signed by the system's root CAs (no --ca given)"
    cases = [
        ([], f"{closed}private CA)"),
        (["--tls"], f"{untrusted}: --ca takes the CA's PEM"),
        (["--ca", str(garbage)], "check --ca, --cert and --key: PEM files, --key the private key"),
    ]
    for flags, hint in cases:
        assert cli.main(["lines", one, *flags, "--timeout", "5", "--address", served.address]) == 1
        err = capsys.readouterr().err
        assert f" (UNAVAILABLE); {hint}" in err, (flags, err)
    assert cli.main(["lines", one, "--ca", str(ca), "--address", served.address]) == 0
    assert capsys.readouterr().out == "3 bytes\n"
    # TLS to a plaintext server.
    assert (
        cli.main(["lines", one, "--ca", str(ca), "--timeout", "5", "--address", fake.address]) == 1
    )
    hint = "the server does not seem to use TLS: leave out --tls, --ca, --cert and --key"
    assert capsys.readouterr().err.endswith(f" (UNAVAILABLE); {hint}\n")


@pytest.mark.parametrize(
    ("details", "hint"),
    [
        # grpcio 1.85's words for each failure, as the CLI received them.
        (
            "errors resolving nosuchhost.invalid:50051: [field:hostname lookup error:address "
            "lookup failed for nosuchhost.invalid:50051: Domain name not found]",
            "the host of h:1 could not be resolved (--address or $OCR_ADDRESS)",
        ),
        (
            "DNS resolution failed for nosuchhost.invalid:50051",
            "the host of h:1 could not be resolved (--address or $OCR_ADDRESS)",
        ),
        (
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed "
            "to connect to remote host: Connection refused",
            "is the server running at h:1? (--address or $OCR_ADDRESS)",
        ),
        (
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:4: Custom "
            "verification check failed with error: UNAUTHENTICATED: Hostname Verification "
            "Check failed.",
            "the server's certificate does not name the host of h:1: connect by a name or "
            "address it was issued for",
        ),
        ("fake is going down", ""),
    ],
)
def test_cli_connection_hints(details: str, hint: str) -> None:
    args = cli.parse_args(["--address", "h:1", "models"])
    error = ServerUnavailable(details, grpc.StatusCode.UNAVAILABLE)
    assert cli._hint(error, args) == (f"; {hint}" if hint else "")


@pytest.mark.parametrize(
    ("flags", "hint"),
    [
        ([], "uses TLS, add --tls (and --ca for a private CA)"),
        (["--tls"], "requires client certificates, give --cert and --key"),
        (["--ca", "c"], "requires client certificates, give --cert and --key"),
        (
            ["--cert", "c", "--key", "k"],
            "requires client certificates, check that it trusts the CA of --cert",
        ),
    ],
)
def test_cli_hint_for_a_closed_connection_depends_on_the_tls_flags(
    flags: list[str], hint: str
) -> None:
    """A server that closes the connection at once is most likely a TLS server that a
    plaintext client reached, or a mutual-TLS one that refused the client's certificate."""
    closed = (
        "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:1.2.3.4:1: Socket closed"
    )
    args = cli.parse_args([*flags, "models"])
    error = ServerUnavailable(closed, grpc.StatusCode.UNAVAILABLE)
    assert cli._hint(error, args) == f"; the server closed the connection: if it {hint}"


def test_cli_address_from_environment(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCR_ADDRESS", fake.address)
    (one,) = _write_images(tmp_path, 4)
    assert cli.main(["lines", one]) == 0
    assert capsys.readouterr().out == "4 bytes\n"


def test_cli_connection_options_before_or_after_the_command(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on the environment's address: only a flag can reach the fake.
    monkeypatch.setenv("OCR_ADDRESS", "127.0.0.1:1")
    (one,) = _write_images(tmp_path, 5)
    assert cli.main(["--address", fake.address, "lines", one]) == 0
    assert capsys.readouterr().out == "5 bytes\n"
    assert cli.main(["--address", fake.address, "--timeout", "7", "models"]) == 0
    capsys.readouterr()
    # Given at both levels, the value after the command wins; neither level's default
    # overwrites a value given at the other.
    assert cli.main(["--address", "127.0.0.1:1", "lines", one, "--address", fake.address]) == 0
    args = cli.parse_args(["--timeout", "7", "--tls", "lines", one])
    assert (args.timeout, args.tls, args.address) == (7.0, True, "127.0.0.1:1")
    args = cli.parse_args(["--timeout", "7", "lines", one, "--timeout", "9"])
    assert args.timeout == 9.0
    assert cli.parse_args(["lines", one]).timeout == cli.DEFAULT_TIMEOUT_S
    assert cli.parse_args(["health"]).timeout == cli.HEALTH_TIMEOUT_S
    assert cli.parse_args(["--timeout", "2", "health"]).timeout == 2.0
    with pytest.raises(SystemExit) as info:
        cli.main(["--timeout", "0", "models"])
    assert info.value.code == 2
    capsys.readouterr()


def test_cli_missing_file_fails_before_any_call(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (ok,) = _write_images(tmp_path, 1)
    missing = str(tmp_path / "missing.png")
    assert cli.main(["lines", ok, missing, "--address", fake.address]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {missing}: no such file\n"
    assert fake.servicer.recognize_requests == []


def test_cli_server_error(fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (one,) = _write_images(tmp_path, 1)
    code = cli.main(["lines", one, "--model", "fail:NOT_FOUND", "--address", fake.address])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.err == "error: fake says NOT_FOUND (NOT_FOUND)\n"
    assert "Traceback" not in captured.err


def test_cli_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["lines"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        cli.main(["models", "--timeout", "0"])
    assert info.value.code == 2
    capsys.readouterr()


def test_cli_models_and_stats(fake: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "--address", fake.address]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("* latin\t") and out[1].startswith("  cjk\t")
    assert "\tpages=yes\t" in out[0] and "\tpages=no\t" in out[1]
    assert cli.main(["models", "--json", "--address", fake.address]) == 0
    models = json.loads(capsys.readouterr().out)["models"]
    assert models[0] == {
        "name": "latin",
        "is_default": True,
        "charset_size": 95,
        "input_height": 32,
        "source": "pkg",
        "supports_pages": True,
        "supports_page_rotation": False,
        "supports_line_rotation": True,
    }
    assert cli.main(["stats", "--address", fake.address]) == 0
    stats = json.loads(capsys.readouterr().out)
    batcher = stats["batchers"][0]
    assert batcher["model"] == "latin"
    # 64-bit counters as numbers (proto3 JSON would write strings), zero counters too.
    assert batcher["lines_enqueued"] == 7 and batcher["batches"] == 2
    assert batcher["dropped_expired"] == 0 and batcher["queue_wait_ms_total"] == 0.0
    assert batcher["batch_size_counts"] == {"3": 1, "4": 1}


# --------------------------------------------------------------------------- pages


def test_recognize_page_sends_image_model_and_options(client: OcrClient, fake: Fake) -> None:
    options = PageOptions(max_side=999, correct_page_rotation=False)
    page = client.recognize_page(_color(3), model="m", options=options, timeout=2.0)
    assert isinstance(page, ocr_pb2.PageResult)
    assert page.text == "raw 6x4x3 COLOR_ORDER_RGB 010203"
    assert (page.width, page.height, page.model) == (6, 4, "m")
    assert [w.text for w in page.lines[0].words] == ["raw", "6x4x3", "COLOR_ORDER_RGB", "010203"]
    (request,) = fake.servicer.page_requests
    assert request.options.max_side == 999
    assert request.options.HasField("correct_page_rotation")
    assert not request.options.correct_page_rotation
    assert not request.options.HasField("min_confidence")  # unset stays unset
    remaining = fake.servicer.deadlines[-1]
    assert remaining is not None and 0 < remaining <= 2.0 + DEADLINE_SLACK_S
    assert client.recognize_page(b"1234").text == "4 bytes"
    assert not fake.servicer.page_requests[-1].HasField("options")


def test_recognize_page_errors_map(client: OcrClient) -> None:
    with pytest.raises(InvalidRequest, match="page: cannot decode"):
        client.recognize_page(b"bad")
    with pytest.raises(ModelNotFound):
        client.recognize_page(b"1", model="fail:NOT_FOUND")
    with pytest.raises(ValueError, match="uint8"):
        client.recognize_page(np.zeros((4, 6), np.float32))


def test_recognize_document_yields_pages_in_order(
    client: OcrClient, fake: Fake, tmp_path: Path
) -> None:
    doc = tmp_path / "doc.tif"
    doc.write_bytes(b"1|22|333")
    pages = list(client.recognize_document(doc, model="m", pdf_dpi=300, timeout=2.0))
    assert [(p.page_index, p.text) for p in pages] == [
        (0, "1 bytes"),
        (1, "2 bytes"),
        (2, "3 bytes"),
    ]
    (request,) = fake.servicer.document_requests
    assert (request.data, request.model, request.pdf_dpi) == (b"1|22|333", "m", 300)
    assert [p.text for p in client.recognize_document(b"4444")] == ["4 bytes"]


def test_recognize_document_error_after_some_pages(client: OcrClient) -> None:
    seen: list[str] = []
    with pytest.raises(InvalidRequest, match="page 2: cannot decode"):
        for page in client.recognize_document(b"1|22|bad|4444"):
            seen.append(page.text)
    assert seen == ["1 bytes", "2 bytes"]
    with pytest.raises(ServerBusy):
        list(client.recognize_document(b"1", model="fail:RESOURCE_EXHAUSTED"))
    with pytest.raises(ValueError, match="empty"):
        list(client.recognize_document(b""))


def test_stream_mixes_line_and_page_items(client: OcrClient, fake: Fake) -> None:
    items = [
        b"1",
        Page(b"22", "p1"),
        ("p2", Page(_gray())),
        Page(b"bad"),
        ("l", b"333"),
    ]
    options = PageOptions(max_side=640)
    results = list(client.stream_recognize(items, ordered=True, page_options=options))
    assert [r.id for r in results] == ["0", "p1", "p2", "3", "l"]
    assert results[0].line is not None and results[0].page is None
    assert results[1].page is not None and results[1].line is None
    assert results[1].page.text == "2 bytes"
    assert results[2].page is not None
    assert results[2].page.text == "raw 6x4x1 COLOR_ORDER_UNSPECIFIED 07"
    assert results[3].page is None and isinstance(results[3].error, InvalidRequest)
    assert results[4].line is not None and results[4].line.text == "3 bytes"
    kinds = [r.WhichOneof("item") for r in fake.servicer.stream_requests]
    assert kinds == ["line", "page", "page", "page", "line"]
    first = fake.servicer.stream_requests[0]
    assert first.options.page_options.max_side == 640


async def test_async_page_calls(fake: Fake, tmp_path: Path) -> None:
    f = tmp_path / "page.png"
    f.write_bytes(b"12345")
    async with AsyncOcrClient(fake.address, timeout=TIMEOUT_S) as c:
        page = await c.recognize_page(f, options=PageOptions(max_side=700), timeout=2.0)
        assert page.text == "5 bytes"
        assert fake.servicer.page_requests[-1].options.max_side == 700
        with pytest.raises(InvalidRequest):
            await c.recognize_page(b"bad")
        pages = [p async for p in c.recognize_document(b"1|22", pdf_dpi=100)]
        assert [(p.page_index, p.text) for p in pages] == [(0, "1 bytes"), (1, "2 bytes")]
        assert fake.servicer.document_requests[-1].pdf_dpi == 100
        seen = []
        with pytest.raises(InvalidRequest, match="page 1"):
            async for p in c.recognize_document(b"1|bad|333"):
                seen.append(p.text)
        assert seen == ["1 bytes"]
        results = [
            r
            async for r in c.stream_recognize(
                [Page(f, "a"), b"22"], ordered=True, page_options=PageOptions(max_side=800)
            )
        ]
    assert [(r.id, r.page is not None, r.line is not None) for r in results] == [
        ("a", True, False),
        ("1", False, True),
    ]
    assert results[0].page is not None and results[0].page.text == "5 bytes"
    assert fake.servicer.stream_requests[0].options.page_options.max_side == 800


# --------------------------------------------------------------------------- CLI pages


class PagesFake(ocr_pb2_grpc.OcrServiceServicer):
    """A StreamRecognize that reads ahead on its own thread and answers in bursts, newest
    first, whenever no new item has come for a moment: answers arrive out of input order,
    and how many items were in flight at once (sent, not yet answered) is recorded."""

    def __init__(self) -> None:
        self.calls = 0
        self.peers: list[str] = []
        self.received: list[ocr_pb2.StreamRecognizeRequest] = []
        self.answered: list[str] = []
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def ListModels(
        self, request: ocr_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> ocr_pb2.ListModelsResponse:
        """One model that reads pages, one that reads lines only (as with ``--no-pages``)."""
        return ocr_pb2.ListModelsResponse(
            models=[
                ocr_pb2.ModelInfo(name="latin", is_default=True, supports_pages=True),
                ocr_pb2.ModelInfo(name="lines-only"),
            ]
        )

    def _answer(
        self, request: ocr_pb2.StreamRecognizeRequest, model: str
    ) -> ocr_pb2.StreamRecognizeResponse:
        image = request.page
        if image.WhichOneof("source") == "data" and b"bad" in image.data:
            error = status_pb2.Status(code=3, message="cannot decode the page")
            return ocr_pb2.StreamRecognizeResponse(id=request.id, error=error)
        if image.WhichOneof("source") == "data":
            image = ocr_pb2.Image(data=image.data)
        return ocr_pb2.StreamRecognizeResponse(id=request.id, page=_describe_page(image, model))

    def StreamRecognize(
        self,
        request_iterator: Iterator[ocr_pb2.StreamRecognizeRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[ocr_pb2.StreamRecognizeResponse]:
        with self._lock:
            self.calls += 1
            self.peers.append(context.peer())
        inbox: queue.Queue[ocr_pb2.StreamRecognizeRequest | None] = queue.Queue()

        def read() -> None:
            try:
                for request in request_iterator:
                    with self._lock:
                        self.received.append(request)
                        in_flight = len(self.received) - len(self.answered)
                        self.max_in_flight = max(self.max_in_flight, in_flight)
                    inbox.put(request)
            except grpc.RpcError:
                pass
            finally:
                inbox.put(None)

        threading.Thread(target=read, daemon=True).start()
        first = inbox.get(timeout=TIMEOUT_S)
        if first is None:
            return
        model = first.options.model
        if model.startswith("fail:"):
            code = grpc.StatusCode[model.removeprefix("fail:")]
            context.abort(code, f"fake says {code.name}")
        pending = [first]
        ended = False
        while pending or not ended:
            try:
                request = inbox.get(timeout=0.2)
            except queue.Empty:
                request = None
            else:
                if request is None:
                    ended = True
                else:
                    pending.append(request)
                    continue
            for item in reversed(pending):
                with self._lock:
                    self.answered.append(item.id)
                yield self._answer(item, model or "fake-pages")
            pending = []


@pytest.fixture
def pages_fake() -> Iterator[Fake]:
    with _serve(PagesFake()) as served:
        yield served


def _documents(tmp_path: Path) -> list[str]:
    """A PNG, a 3-page TIFF (pages 30, 31, 32 px wide) and a 2-page PDF."""
    png = tmp_path / "one.png"
    Image.new("L", (20, 10), 255).save(png)
    tif = tmp_path / "scan.tif"
    frames = [Image.new("L", (30 + i, 10), i) for i in range(3)]
    frames[0].save(tif, save_all=True, append_images=frames[1:])
    pdf = tmp_path / "doc.pdf"
    pages = [Image.new("RGB", (72, 36), "white"), Image.new("RGB", (36, 72), "white")]
    pages[0].save(pdf, save_all=True, append_images=pages[1:], resolution=72.0)
    return [str(png), str(tif), str(pdf)]


def _document_pages(png: str, tif: str, pdf: str) -> list[tuple[str, int]]:
    """(file, page index) of every page of ``_documents``' files, in input order."""
    return [(png, 0), (tif, 0), (tif, 1), (tif, 2), (pdf, 0), (pdf, 1)]


def test_cli_pages_streams_every_page_on_one_call_in_input_order(
    pages_fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, tif, pdf = _documents(tmp_path)
    args = ["pages", png, tif, pdf, "--format", "json", "--max-in-flight", "3"]
    args += ["--max-side", "900", "--no-rotation", "--pdf-dpi", "144", "--model", "m"]
    assert cli.main([*args, "--address", pages_fake.address]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # stderr is no terminal: no progress bar
    doc = json.loads(captured.out)
    assert [(p["source"], p["pageIndex"]) for p in doc["pages"]] == _document_pages(png, tif, pdf)
    texts = [p["result"]["text"] for p in doc["pages"]]
    assert texts == [
        f"{Path(png).stat().st_size} bytes",  # an image goes as its file
        "raw 30x10x1 COLOR_ORDER_UNSPECIFIED 00",  # TIFF pages as raw pixels
        "raw 31x10x1 COLOR_ORDER_UNSPECIFIED 01",
        "raw 32x10x1 COLOR_ORDER_UNSPECIFIED 02",
        "raw 144x72x3 COLOR_ORDER_RGB ffffff",  # PDF pages rendered at 144 dpi
        "raw 72x144x3 COLOR_ORDER_RGB ffffff",
    ]
    assert [p["result"]["pageIndex"] for p in doc["pages"]] == [0, 0, 1, 2, 0, 1]
    servicer: PagesFake = pages_fake.servicer  # type: ignore[assignment]
    assert servicer.calls == 1
    sent_ids = [r.id for r in servicer.received]
    assert sent_ids == [f"{source}#{index + 1}" for source, index in _document_pages(png, tif, pdf)]
    assert servicer.answered != sent_ids  # answers came out of order...
    assert 2 <= servicer.max_in_flight <= 3  # ...with at most --max-in-flight pages out
    assert all(r.WhichOneof("item") == "page" for r in servicer.received)
    options = servicer.received[0].options
    assert (options.model, options.ordered) == ("m", False)
    assert options.page_options.max_side == 900
    assert options.page_options.HasField("correct_page_rotation")
    assert not options.page_options.correct_page_rotation
    assert not options.page_options.correct_line_rotation


def test_cli_pages_on_several_connections_come_back_in_input_order(
    pages_fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, tif, pdf = _documents(tmp_path)
    args = ["pages", png, tif, pdf, png, "--format", "json", "--connections", "3"]
    assert cli.main([*args, "--address", pages_fake.address]) == 0
    doc = json.loads(capsys.readouterr().out)
    expected = [*_document_pages(png, tif, pdf), (png, 0)]
    assert [(p["source"], p["pageIndex"]) for p in doc["pages"]] == expected
    texts = [p["result"]["text"] for p in doc["pages"]]
    assert texts[1:4] == [f"raw {30 + i}x10x1 COLOR_ORDER_UNSPECIFIED 0{i}" for i in range(3)]
    assert texts[0] == texts[6] == f"{Path(png).stat().st_size} bytes"
    servicer: PagesFake = pages_fake.servicer  # type: ignore[assignment]
    assert servicer.calls == 3 and len(set(servicer.peers)) == 3  # 3 streams, 3 connections
    assert sorted(r.id for r in servicer.received) == sorted(
        f"{source}#{index + 1}" for source, index in expected
    )
    # More connections than pages: one stream per page.
    assert cli.main(["pages", png, "--connections", "8", "--address", pages_fake.address]) == 0
    assert capsys.readouterr().out == f"{Path(png).stat().st_size} bytes\n\f"
    assert servicer.calls == 4


def test_cli_pages_reports_failed_pages_and_writes_the_others(
    pages_fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, tif, _ = _documents(tmp_path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but bad inside")
    out = tmp_path / "out.txt"
    code = cli.main(["pages", png, str(bad), tif, "-o", str(out), "--address", pages_fake.address])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {bad} page 1: cannot decode the page (INVALID_ARGUMENT)\n"
    pages = out.read_text(encoding="utf-8").split("\f")
    assert pages == [
        f"{Path(png).stat().st_size} bytes\n",
        "raw 30x10x1 COLOR_ORDER_UNSPECIFIED 00\n",
        "raw 31x10x1 COLOR_ORDER_UNSPECIFIED 01\n",
        "raw 32x10x1 COLOR_ORDER_UNSPECIFIED 02\n",
        "",
    ]


def test_cli_pages_xml_formats_and_progress(
    pages_fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _documents(tmp_path)
    out = tmp_path / "out.xml"
    args = ["pages", *paths, "-f", "alto", "-o", str(out), "--progress"]
    assert cli.main([*args, "--address", pages_fake.address]) == 0
    err = capsys.readouterr().err
    assert "pages 6/6 [" in err and "100%" in err
    assert err.endswith("\n")
    root = ET.parse(out).getroot()
    ns = {"a": formats.ALTO_NAMESPACE}
    assert [p.get("PHYSICAL_IMG_NR") for p in root.findall("a:Layout/a:Page", ns)] == [
        "1",
        "1",
        "2",
        "3",
        "1",
        "2",
    ]
    assert cli.main(["pages", paths[1], "-f", "hocr", "--address", pages_fake.address]) == 0
    hocr = capsys.readouterr().out
    assert hocr.count('class="ocr_page"') == 3
    assert f"image &quot;{paths[1]}&quot;; bbox 0 0 31 10; ppageno 1" in hocr


def test_cli_pages_checks_every_file_before_any_call(
    pages_fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file (a typo) or an unwritable -o stops the run before anything is sent;
    a file that is no document is reported before anything is sent and left out."""
    png, _, _ = _documents(tmp_path)
    servicer: PagesFake = pages_fake.servicer  # type: ignore[assignment]
    missing = str(tmp_path / "missing.tif")
    assert cli.main(["pages", png, missing, "--address", pages_fake.address]) == 1
    assert capsys.readouterr().err == f"error: {missing}: no such file\n"
    nowhere = tmp_path / "no-such-folder" / "out.txt"
    assert cli.main(["pages", png, "-o", str(nowhere), "--address", pages_fake.address]) == 1
    assert capsys.readouterr().err == (
        f"error: -o {nowhere}: the folder {nowhere.parent} does not exist\n"
    )
    assert cli.main(["pages", png, "-o", str(tmp_path), "--address", pages_fake.address]) == 1
    assert capsys.readouterr().err == f"error: -o {tmp_path}: is a directory\n"
    assert servicer.calls == 0
    text = tmp_path / "notes.pdf"
    text.write_text("not a document")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    args = ["pages", str(text), png, str(empty), "--address", pages_fake.address]
    assert cli.main(args) == 1
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert err[0].startswith(f"error: {text}: not a supported document")
    assert err[1:] == [f"error: {empty}: the file is empty"]
    assert captured.out == f"{Path(png).stat().st_size} bytes\n\f"
    assert cli.main(["pages", str(text), str(empty), "--address", pages_fake.address]) == 1
    assert capsys.readouterr().err.endswith("error: no file could be read; nothing sent\n")
    assert servicer.calls == 1


def test_cli_pages_whole_call_failure_and_nothing_recognised(
    pages_fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, _, _ = _documents(tmp_path)
    code = cli.main(["pages", png, "--model", "fail:NOT_FOUND", "--address", pages_fake.address])
    assert code == 1
    assert capsys.readouterr().err == "error: fake says NOT_FOUND (NOT_FOUND)\n"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n bad")
    assert cli.main(["pages", str(bad), "-f", "alto", "--address", pages_fake.address]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"error: {bad} page 1: cannot decode the page (INVALID_ARGUMENT)",
        "error: no page was recognised; nothing written",
    ]


def test_cli_pages_to_a_lines_only_model_says_so_once_and_sends_nothing(
    pages_fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _documents(tmp_path)
    code = cli.main(["pages", *files, "--model", "lines-only", "--address", pages_fake.address])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"error: model 'lines-only' at {pages_fake.address} reads pre-cropped lines only (the "
        "server runs with --no-pages, or the model has no text detector); nothing sent. Use "
        "`ocr-client lines` for line images, or a server that reads pages"
    ]
    assert pages_fake.servicer.calls == 0


def test_cli_pages_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in (["--format", "pdf"], ["--max-side", "100"], ["--pdf-dpi", "1000"]):
        with pytest.raises(SystemExit) as info:
            cli.main(["pages", "x.png", *bad])
        assert info.value.code == 2
    capsys.readouterr()


class _EndsAfterTwo(FakeOcr):
    """Answers two stream items, then ends the stream as a server shutting down does."""

    def StreamRecognize(
        self,
        request_iterator: Iterator[ocr_pb2.StreamRecognizeRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[ocr_pb2.StreamRecognizeResponse]:
        for answered, request in enumerate(request_iterator):
            if answered == 2:
                context.abort(grpc.StatusCode.UNAVAILABLE, "cut off by the server's shutdown")
            page = _describe_page(request.page)
            yield ocr_pb2.StreamRecognizeResponse(id=request.id, page=page)


def test_cli_pages_writes_the_pages_answered_before_the_stream_ended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stream cut off midway (a server restart) threw away every page answered on it."""
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"p{i}.png"))
        Image.new("L", (20 + i, 10), 255).save(paths[-1])
    with _serve(_EndsAfterTwo()) as served:
        status = cli.main(
            ["pages", *paths, "-f", "json", "--max-in-flight", "1", "--address", served.address]
        )
    assert status == 1
    captured = capsys.readouterr()
    assert [p["source"] for p in json.loads(captured.out)["pages"]] == paths[:2]
    assert captured.err == (
        "error: the stream ended after 2 of 4 pages were recognised: cut off by the "
        "server's shutdown (UNAVAILABLE); writing those\n"
    )


def test_cli_pages_leaves_out_a_page_over_the_message_limit_and_sends_the_others(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server (or the client's channel) ended the whole stream over one such page."""
    fake.servicer.max_message_bytes = 20_000
    paths = [str(tmp_path / name) for name in ("a.png", "big.png", "c.png")]
    Image.new("L", (20, 10), 255).save(paths[0])
    noise = np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    Image.fromarray(noise).save(paths[1])
    Image.new("L", (22, 10), 255).save(paths[2])
    assert cli.main(["pages", *paths, "-f", "json", "--address", fake.address]) == 1
    captured = capsys.readouterr()
    assert [p["source"] for p in json.loads(captured.out)["pages"]] == [paths[0], paths[2]]
    assert captured.err.startswith(f"error: {paths[1]} page 1: the page as sent is ")
    assert captured.err.endswith(
        " bytes, over the 20,000 a request may carry (the server's --max-message-bytes or "
        "this client's limit); send it scaled down or compressed; not sent\n"
    )
    sent = [r.id for r in fake.servicer.stream_requests if r.HasField("page")]
    assert len(sent) == 2


def test_an_infinite_or_huge_timeout_means_no_deadline_in_practice(fake: Fake) -> None:
    """gRPC reads a deadline past ~9.2e9 s as already passed: these failed at once."""
    line = _gray()
    with OcrClient(fake.address, timeout=math.inf) as client:
        client.recognize_line(line)
        client.recognize_line(line, timeout=1e10)
    for remaining in fake.servicer.deadlines[-2:]:
        assert remaining is not None and remaining > 365 * 86400  # the wire rounds it

    async def run() -> None:
        async with AsyncOcrClient(fake.address, timeout=math.inf) as client:
            await client.recognize_line(line)

    asyncio.run(run())
    with pytest.raises(ValueError, match="positive number of seconds"):
        OcrClient(fake.address, timeout=math.nan)


def test_cli_lines_sends_a_file_over_the_default_limit_to_a_server_that_takes_it(
    fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client capped requests at its own 64 MiB whatever the server's --max-message-bytes
    allowed: an operator who raised the server's limit still had the file refused."""
    monkeypatch.setattr(cli, "DEFAULT_MAX_MESSAGE_BYTES", 100_000)
    fake.servicer.max_message_bytes = 1_000_000
    paths = _write_images(tmp_path, 200_000)
    assert cli.main(["lines", *paths, "--address", fake.address]) == 0
    assert [len(r.images) for r in fake.servicer.recognize_requests] == [1]


@pytest.mark.parametrize("single", ["line.png", b"\x89PNG...", Path("line.png")])
def test_a_single_image_where_a_list_is_expected_is_a_clear_type_error(
    fake: Fake, single: object
) -> None:
    """A path string iterated as characters failed with FileNotFoundError: 'l'."""
    with OcrClient(fake.address) as client:
        with pytest.raises(TypeError, match="takes a list of images"):
            client.recognize_lines(single)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="takes a list of images"):
            list(client.stream_recognize(single))  # type: ignore[arg-type]

    async def run() -> None:
        async with AsyncOcrClient(fake.address) as client:
            with pytest.raises(TypeError, match="takes a list of images"):
                await client.recognize_lines(single)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="takes a list of images"):
                async for _ in client.stream_recognize(single):  # type: ignore[arg-type]
                    pass

    asyncio.run(run())
    assert fake.servicer.recognize_requests == [] and fake.servicer.stream_requests == []
