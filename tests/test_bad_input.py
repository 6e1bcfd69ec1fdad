"""Hostile and malformed input against a real server: one table, every row through every path.

Each row of ``ROWS`` is one kind of bad (or merely unusual) input. The single table-driven
test sends it

* as a unary call: ``RecognizeLines``, and ``RecognizePage`` where a page can carry it;
* as ``StreamRecognize`` items (a line item, and a page item where page-relevant) followed by a
  good line item: an item's error comes back as that item's ``google.rpc.Status`` and the
  stream goes on, so the good item must still be read right;

and checks the gRPC status code *and* a piece of the message a person can act on (or, for an
image the server accepts, the text it reads). Requests are sent as serialized bytes, so a row
can also send bytes that are not a protobuf message at all.

The server is our own, with small limits so that "over the limit" rows stay small: 1 MiB
messages and 8 lines per request. Decompression bombs (a small file declaring a huge image)
must be refused from the header, before any pixel is decoded: those rows also check that each
call returns within a second and that the server's peak RSS (``VmHWM``) did not grow. After
every row the server process must still be alive; after the whole table it must still read a
rendered line right and report SERVING. ``docs/reliability.md`` lists the table in prose.
"""

from __future__ import annotations

import io
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from PIL import Image as PILImage

from ocr_client.proto.ocr.v1 import ocr_pb2
from tests.conftest import (
    ServerProcess,
    health_status,
    png,
    render_line,
    render_page,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.integration

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
NOT_FOUND = grpc.StatusCode.NOT_FOUND

MAX_MESSAGE_BYTES = 1 << 20
MAX_LINES = 8
LINE_TEXT = "Hello World 2026"
PAGE_LINES = ["Hello World 2026", "The quick brown fox"]
PAGE_TEXT = "\n".join(PAGE_LINES)
GOOD_TEXT = "still reading fine"
#: A decoded bomb costs gigabytes and seconds; a refused one a few kilobytes and milliseconds.
BOMB_MAX_SECONDS = 1.0
BOMB_MAX_HWM_GROWTH_KB = 32 * 1024
CALL_TIMEOUT_S = 60.0

UNDECODABLE = "is not a decodable PNG, JPEG, BMP, TIFF, WebP or GIF file"
INCOMPLETE = "check that the file is complete"


# ------------------------------------------------------------------------- input builders


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bomb(width: int, height: int) -> bytes:
    """An 83-byte PNG whose IHDR declares ``width`` x ``height`` 8-bit gray pixels.

    The IDAT holds a few compressed zero rows; a decoder that trusts the header allocates
    width * height bytes (2.5 GB for 50000 x 50000) before finding the data short.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def jpeg_bomb(width: int, height: int) -> bytes:
    """A real 8x8 JPEG whose frame header (SOF0) is patched to ``width`` x ``height``.

    libjpeg fills the missing scan data with gray, so before the server read sizes from the
    header this 333-byte file cost over 2 GB and 10 s of decoding at 20000 x 20000.
    """
    ok, buf = cv2.imencode(".jpg", np.full((8, 8), 255, np.uint8))
    assert ok
    data = bytearray(buf.tobytes())
    i = 2
    while data[i + 1] != 0xC0:  # walk the marker segments to the baseline frame header
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_bomb(width: int, height: int) -> bytes:
    """A 35-byte GIF: a ``width`` x ``height`` logical screen holding one 1x1 frame.

    The decoder allocates and clears the whole screen as its canvas (3 GB at 20000 x 20000).
    """
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global colour table, 2 colours
        + b"\x00\x00\x00\xff\xff\xff"
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0)  # image descriptor: 1x1 at (0, 0)
        + b"\x02\x02\x44\x01\x00"  # LZW data of one pixel
        + b"\x3b"
    )


def webp_bomb(width: int, height: int) -> bytes:
    """A lossless WebP header (VP8L) declaring ``width`` x ``height`` (at most 16384)."""
    bits = (width - 1) | (height - 1) << 14
    payload = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 16
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def pil_bytes(image: PILImage.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def cmyk_jpeg(gray: np.ndarray) -> bytes:
    """A CMYK JPEG (Pillow writes Adobe-style inverted CMYK, as Photoshop does)."""
    return pil_bytes(PILImage.fromarray(gray).convert("CMYK"), "JPEG", quality=95)


def palette_gif(gray: np.ndarray) -> bytes:
    return pil_bytes(PILImage.fromarray(gray).convert("P"), "GIF")


def animated_gif(gray: np.ndarray) -> bytes:
    """Two frames: the text, then a blank one. Reading the first frame gives the text."""
    frames = [PILImage.fromarray(gray).convert("P"), PILImage.new("P", gray.shape[::-1], 255)]
    return pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def animated_png(gray: np.ndarray) -> bytes:
    """An APNG whose first frame is the text and whose second is blank."""
    frames = [
        PILImage.fromarray(gray).convert("RGB"),
        PILImage.new("RGB", gray.shape[::-1], "white"),
    ]
    return pil_bytes(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)


def png16(gray: np.ndarray) -> bytes:
    return png(gray.astype(np.uint16) * 257)


def alpha_png(gray: np.ndarray) -> bytes:
    """Black everywhere, the text only in the alpha channel: it reads once put on white."""
    black = np.zeros_like(gray)
    return png(np.dstack([black, black, black, 255 - gray]))


def pgm(gray: np.ndarray) -> bytes:
    """A binary PGM: OpenCV decodes it, the API never promised it, the server refuses it."""
    h, w = gray.shape
    return f"P5\n{w} {h}\n255\n".encode() + gray.tobytes()


# ---------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Expect:
    """An expected outcome: a status code and a substring of its message, or OK and a text.

    ``text`` None means any text is fine (only the status matters).
    """

    code: grpc.StatusCode
    message: str = ""
    text: str | None = None


@dataclass(frozen=True)
class Row:
    """One bad input, as it is sent through each path, with what each path must answer.

    Request fields are serialized messages (or raw bytes that are not a message); None means
    the path does not apply. ``stream`` items are followed by a good line item (``good``)
    when the stream is expected to go on (``stream_call`` OK).
    """

    name: str
    lines: bytes | None
    lines_expect: Expect
    page: bytes | None = None
    page_expect: Expect | None = None
    stream: tuple[bytes, ...] = ()
    stream_items: dict[str, Expect] = field(default_factory=dict)
    stream_call: Expect = Expect(OK)
    bomb: bool = False


def data(blob: bytes) -> ocr_pb2.Image:
    return ocr_pb2.Image(data=blob)


def raw(width: int, height: int, channels: int, pixels: bytes) -> ocr_pb2.Image:
    return ocr_pb2.Image(
        raw=ocr_pb2.RawImage(width=width, height=height, channels=channels, pixels=pixels)
    )


def lines_request(*images: ocr_pb2.Image, model: str = "") -> bytes:
    return ocr_pb2.RecognizeLinesRequest(images=list(images), model=model).SerializeToString()


def page_request(image: ocr_pb2.Image, model: str = "") -> bytes:
    return ocr_pb2.RecognizePageRequest(image=image, model=model).SerializeToString()


def item(
    id_: str,
    line: ocr_pb2.Image | None = None,
    page: ocr_pb2.Image | None = None,
    options: ocr_pb2.StreamOptions | None = None,
) -> bytes:
    message = ocr_pb2.StreamRecognizeRequest(id=id_, options=options)
    if line is not None:
        message.line.CopyFrom(line)
    if page is not None:
        message.page.CopyFrom(page)
    return message.SerializeToString()


def image_row(
    name: str,
    line: ocr_pb2.Image,
    expect: Expect,
    page: ocr_pb2.Image | None = None,
    page_expect: Expect | None = None,
    bomb: bool = False,
) -> Row:
    """A row for one image: RecognizeLines and a stream line item, plus RecognizePage and a
    stream page item when ``page_expect`` is given (``page`` defaults to the same image).
    """
    page_image = page if page is not None else line
    stream = [item("bad-line", line=line)]
    items = {"bad-line": expect}
    if page_expect is not None:
        stream.append(item("bad-page", page=page_image))
        items["bad-page"] = page_expect
    return Row(
        name=name,
        lines=lines_request(line),
        lines_expect=expect,
        page=page_request(page_image) if page_expect is not None else None,
        page_expect=page_expect,
        stream=tuple(stream),
        stream_items=items,
        bomb=bomb,
    )


def undecodable(name: str, blob: bytes, message: str = UNDECODABLE) -> Row:
    expect = Expect(INVALID, message)
    return image_row(name, data(blob), expect, page_expect=expect)


def accepted(name: str, encode: Callable[[np.ndarray], bytes]) -> Row:
    """An unusual but valid encoding: the line and a two-line page must read right."""
    line = data(encode(render_line(LINE_TEXT)))
    page = data(encode(render_page(PAGE_LINES)))
    return image_row(name, line, Expect(OK, text=LINE_TEXT), page, Expect(OK, text=PAGE_TEXT))


def too_large(name: str, blob: bytes, width: int, height: int) -> Row:
    expect = Expect(EXHAUSTED, f"image is {width}x{height} = {width * height} pixels, over the")
    return image_row(name, data(blob), expect, page_expect=expect, bomb=True)


def _rows() -> list[Row]:
    line = render_line(LINE_TEXT)
    good_png = png(line)
    jpeg = cv2.imencode(".jpg", line)[1].tobytes()
    empty_page = Expect(OK, text="")
    fine = data(png(render_line("fine")))
    no_item = Expect(INVALID, "message has no item: set `line` or `page`")
    oversized = b"\x00" * (MAX_MESSAGE_BYTES + 1000)
    too_big = Expect(EXHAUSTED, f"Received message larger than max ({MAX_MESSAGE_BYTES + 1008}")
    unknown_model = Expect(NOT_FOUND, "model 'nope' is not served here; served models: [")
    return [
        image_row(
            "empty bytes",
            data(b""),
            Expect(INVALID, "image data is empty; send an encoded PNG, JPEG"),
            page_expect=Expect(INVALID, "image data is empty"),
        ),
        undecodable("random bytes", np.random.default_rng(5).bytes(4096)),
        undecodable("truncated PNG", good_png[: len(good_png) // 2], INCOMPLETE),
        undecodable("truncated JPEG", jpeg[: len(jpeg) // 2], INCOMPLETE),
        undecodable("JPEG cut inside its header", jpeg[:40], INCOMPLETE),
        undecodable("PGM (a format the API does not accept)", pgm(line), UNDECODABLE),
        image_row(
            "raw zero width",
            raw(0, 48, 1, b""),
            Expect(INVALID, "raw image is 0x48; width and height must both be at least 1"),
            page_expect=Expect(INVALID, "raw image is 0x48"),
        ),
        image_row(
            "raw zero height",
            raw(48, 0, 1, b""),
            Expect(INVALID, "raw image is 48x0; width and height must both be at least 1"),
            page_expect=Expect(INVALID, "raw image is 48x0"),
        ),
        image_row(
            "raw pixels one byte short",
            raw(100, 48, 3, b"\x00" * (100 * 48 * 3 - 1)),
            Expect(INVALID, "has 14399 bytes but width*height*channels = 100*48*3 = 14400"),
            page_expect=Expect(INVALID, "100*48*3 = 14400"),
        ),
        image_row(
            "raw pixels for a different size",
            raw(100, 48, 1, b"\x00" * (100 * 48 * 3)),
            Expect(INVALID, "has 14400 bytes but width*height*channels = 100*48*1 = 4800"),
            page_expect=Expect(INVALID, "100*48*1 = 4800"),
        ),
        image_row(
            "raw channels 2",
            raw(10, 10, 2, b"\x00" * 200),
            Expect(INVALID, "channels=2; use 1 (gray), 3 (colour) or 4 (colour+alpha)"),
            page_expect=Expect(INVALID, "channels=2"),
        ),
        image_row(
            "raw channels 5",
            raw(10, 10, 5, b"\x00" * 500),
            Expect(INVALID, "channels=5; use 1 (gray), 3 (colour) or 4 (colour+alpha)"),
            page_expect=Expect(INVALID, "channels=5"),
        ),
        image_row(
            "raw colour order 7 (not in the enum)",
            ocr_pb2.Image(
                raw=ocr_pb2.RawImage(
                    width=10, height=10, channels=3, pixels=b"\x00" * 300, color_order=7
                )
            ),
            Expect(INVALID, "raw image has color_order=7; use COLOR_ORDER_RGB (1) or"),
            page_expect=Expect(INVALID, "color_order=7"),
        ),
        image_row(
            "raw declaring 100000 x 100000",
            raw(100_000, 100_000, 1, b""),
            Expect(EXHAUSTED, "image is 100000x100000 = 10000000000 pixels, over the"),
            page_expect=Expect(EXHAUSTED, "over the server's limit"),
            bomb=True,
        ),
        image_row(
            "1x1 image",
            data(png(np.zeros((1, 1), np.uint8))),
            Expect(OK, text=""),
            page_expect=empty_page,
        ),
        image_row(
            "1 x 100000 line",
            data(png(np.zeros((1, 100_000), np.uint8))),
            Expect(
                INVALID,
                "at the model height of 48 px it would be 4800000 px wide, over the "
                "limit of 4096 px; split the line into shorter pieces",
            ),
            page_expect=empty_page,
        ),
        image_row(
            "100000 x 1 column",
            data(png(np.zeros((100_000, 1), np.uint8))),
            Expect(OK, text=""),
            page_expect=empty_page,
        ),
        too_large("PNG bomb 50000 x 50000", png_bomb(50_000, 50_000), 50_000, 50_000),
        too_large("JPEG bomb 20000 x 20000", jpeg_bomb(20_000, 20_000), 20_000, 20_000),
        too_large("GIF bomb 20000 x 20000", gif_bomb(20_000, 20_000), 20_000, 20_000),
        too_large("WebP bomb 16384 x 16384", webp_bomb(16_384, 16_384), 16_384, 16_384),
        accepted("16-bit PNG", png16),
        accepted("CMYK JPEG", cmyk_jpeg),
        accepted("PNG with alpha", alpha_png),
        accepted("palette GIF", palette_gif),
        accepted("animated GIF (first frame)", animated_gif),
        accepted("animated PNG (first frame)", animated_png),
        Row(
            name="message over the size limit",
            lines=lines_request(data(oversized)),
            lines_expect=too_big,
            page=page_request(data(oversized)),
            page_expect=too_big,
            stream=(item("big", line=data(oversized)),),
            stream_call=Expect(EXHAUSTED, "Received message larger than max"),
        ),
        Row(
            name="more lines than allowed",
            lines=lines_request(*[fine] * (MAX_LINES + 1)),
            lines_expect=Expect(
                EXHAUSTED,
                f"{MAX_LINES + 1} images in one request, over the limit of {MAX_LINES}; "
                "split them across several requests or use StreamRecognize",
            ),
            # A stream has no per-request count: each item is a request of one line.
            stream=tuple(item(f"line-{i}", line=fine) for i in range(MAX_LINES + 1)),
            stream_items={f"line-{i}": Expect(OK, text="fine") for i in range(MAX_LINES + 1)},
        ),
        Row(
            name="unknown model",
            lines=lines_request(fine, model="nope"),
            lines_expect=unknown_model,
            page=page_request(fine, model="nope"),
            page_expect=unknown_model,
            stream=(item("m", line=fine, options=ocr_pb2.StreamOptions(model="nope")),),
            stream_call=unknown_model,
        ),
        Row(
            name="stream garbage mid-way",
            lines=lines_request(fine, ocr_pb2.Image(), data(b"junk")),
            lines_expect=Expect(INVALID, "image 1: image is empty: set `data`"),
            page=page_request(ocr_pb2.Image()),
            page_expect=Expect(INVALID, "image is empty: set `data` (an encoded file) or `raw`"),
            stream=(
                item("", options=ocr_pb2.StreamOptions()),  # options alone: allowed, no answer
                item("before", line=fine),
                item("no-item"),
                item("late-options", line=fine, options=ocr_pb2.StreamOptions(ordered=True)),
                item("junk-line", line=data(b"junk")),
                item("unset-image", line=ocr_pb2.Image()),
                item("junk-page", page=data(b"junk")),
                item("bad-raw", line=raw(3, 3, 3, b"\x00")),
            ),
            stream_items={
                "before": Expect(OK, text="fine"),
                "no-item": no_item,
                "late-options": Expect(
                    INVALID, "stream options may only be set on the first message"
                ),
                "junk-line": Expect(INVALID, "image data (4 bytes) " + UNDECODABLE),
                "unset-image": Expect(INVALID, "image is empty: set `data`"),
                "junk-page": Expect(INVALID, "image data (4 bytes) " + UNDECODABLE),
                "bad-raw": Expect(INVALID, "has 1 bytes but width*height*channels"),
            },
        ),
        Row(
            name="bytes that are not a protobuf message",
            lines=b"\xff\xff\xff",
            lines_expect=Expect(INVALID, "not a valid ocr.v1.RecognizeLinesRequest (corrupt"),
            page=b"\x0a\x05abc",
            page_expect=Expect(INVALID, "not a valid ocr.v1.RecognizePageRequest (corrupt"),
            stream=(item("before", line=fine), b"\xff\xff\xff", item("after", line=fine)),
            stream_items={"before": Expect(OK, text="fine")},
            stream_call=Expect(
                INVALID,
                "message 2 of the stream is not a valid ocr.v1.StreamRecognizeRequest",
            ),
        ),
    ]


ROWS = _rows()


# --------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with small message and per-request limits, only for this table."""
    srv = start_server(
        tmp_path_factory.mktemp("bad_input") / "server.log",
        "--max-message-bytes", str(MAX_MESSAGE_BYTES),
        "--max-lines-per-request", str(MAX_LINES),
    )  # fmt: skip
    yield srv
    assert stop_server(srv) == 0, srv.log()


@pytest.fixture(scope="module")
def channel(small_server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(small_server.address) as ch:
        yield ch


def _identity(b: bytes) -> bytes:
    return b


def unary(channel: grpc.Channel, method: str, response: type[Message]) -> Callable[..., Message]:
    return channel.unary_unary(
        f"/ocr.v1.OcrService/{method}",
        request_serializer=_identity,
        response_deserializer=response.FromString,
    )


def peak_rss_kb(pid: int) -> int:
    """The process's peak resident set size (``VmHWM``) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def call(fn: Callable[[], Message]) -> tuple[grpc.StatusCode, str, Message | None]:
    try:
        return OK, "", fn()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", None


def check(what: str, expect: Expect, code: grpc.StatusCode, details: str, text: str) -> None:
    assert code == expect.code, f"{what}: expected {expect.code.name}, got {code.name}: {details}"
    if code is OK:
        if expect.text is not None:
            # The lines, in order; whether the two test lines (a gap of ~0.9 line heights,
            # right at the layout's paragraph threshold) form one block or two is layout's
            # business (tests/test_pages.py), not this table's.
            lines = [x for x in text.split("\n") if x]
            assert lines == [x for x in expect.text.split("\n") if x], f"{what}: read {text!r}"
        return
    assert expect.message in details, f"{what}: {expect.message!r} not in {details!r}"
    assert "Traceback" not in details and "request id" not in details, details


def stream_answers(
    channel: grpc.Channel, messages: Sequence[bytes]
) -> tuple[list[ocr_pb2.StreamRecognizeResponse], grpc.StatusCode, str]:
    stream = channel.stream_stream(
        "/ocr.v1.OcrService/StreamRecognize",
        request_serializer=_identity,
        response_deserializer=ocr_pb2.StreamRecognizeResponse.FromString,
    )
    answers: list[ocr_pb2.StreamRecognizeResponse] = []
    try:
        for answer in stream(iter(messages), timeout=CALL_TIMEOUT_S):
            answers.append(answer)
    except grpc.RpcError as exc:
        return answers, exc.code(), exc.details() or ""
    return answers, OK, ""


def item_outcome(answer: ocr_pb2.StreamRecognizeResponse) -> tuple[grpc.StatusCode, str, str]:
    kind = answer.WhichOneof("result")
    if kind == "error":
        code = next(c for c in grpc.StatusCode if c.value[0] == answer.error.code)
        return code, answer.error.message, ""
    return OK, "", answer.line.text if kind == "line" else answer.page.text


# ----------------------------------------------------------------------------- the test


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS])
def test_bad_input_gets_its_status_and_message_and_the_server_keeps_serving(
    row: Row, small_server: ServerProcess, channel: grpc.Channel
) -> None:
    pid = small_server.process.pid
    calls: list[tuple[str, Callable[[], tuple[grpc.StatusCode, str, str]]]] = []
    if row.lines is not None:
        lines_call = unary(channel, "RecognizeLines", ocr_pb2.RecognizeLinesResponse)
        request = row.lines

        def lines() -> tuple[grpc.StatusCode, str, str]:
            code, details, response = call(lambda: lines_call(request, timeout=CALL_TIMEOUT_S))
            texts = [r.text for r in response.results] if response is not None else [""]
            return code, details, texts[0]

        calls.append(("RecognizeLines", lines))
    if row.page is not None:
        page_call = unary(channel, "RecognizePage", ocr_pb2.PageResult)
        page_request_bytes = row.page

        def page() -> tuple[grpc.StatusCode, str, str]:
            code, details, response = call(
                lambda: page_call(page_request_bytes, timeout=CALL_TIMEOUT_S)
            )
            return code, details, response.text if response is not None else ""

        calls.append(("RecognizePage", page))

    for what, run in calls:
        expect = row.lines_expect if what == "RecognizeLines" else row.page_expect
        assert expect is not None
        peak_before, start = peak_rss_kb(pid), time.perf_counter()
        code, details, text = run()
        elapsed, growth = time.perf_counter() - start, peak_rss_kb(pid) - peak_before
        check(what, expect, code, details, text)
        if row.bomb:
            assert elapsed < BOMB_MAX_SECONDS, f"{what} took {elapsed:.2f} s: pixels decoded?"
            assert growth < BOMB_MAX_HWM_GROWTH_KB, f"{what}: peak RSS grew by {growth} KiB"

    goes_on = row.stream_call.code is OK
    messages = list(row.stream)
    if goes_on:
        messages.append(item("good", line=data(png(render_line(GOOD_TEXT)))))
    peak_before = peak_rss_kb(pid)
    answers, code, details = stream_answers(channel, messages)
    check("StreamRecognize call", row.stream_call, code, details, "")
    if row.bomb:
        assert peak_rss_kb(pid) - peak_before < BOMB_MAX_HWM_GROWTH_KB
    by_id = {a.id: a for a in answers}
    assert len(by_id) == len(answers), f"an item was answered twice: {[a.id for a in answers]}"
    expected_ids = set(row.stream_items) | ({"good"} if goes_on else set())
    assert set(by_id) == expected_ids
    for id_, expect in row.stream_items.items():
        check(f"stream item {id_!r}", expect, *item_outcome(by_id[id_]))
    if goes_on:
        check(
            "the good item after the bad ones",
            Expect(OK, text=GOOD_TEXT),
            *item_outcome(by_id["good"]),
        )

    assert small_server.process.poll() is None, small_server.log()[-3000:]
    assert health_status(small_server.address) == health_pb2.HealthCheckResponse.SERVING


def test_after_the_whole_table_the_server_reads_right_and_is_serving(
    small_server: ServerProcess, channel: grpc.Channel
) -> None:
    """Runs after the table (file order): the same process still does its job.

    Its log must hold no traceback, no INTERNAL and no ERROR line: every row above was an
    expected error, never a bug (a unary request that is not a protobuf message included).
    """
    lines_call = unary(channel, "RecognizeLines", ocr_pb2.RecognizeLinesResponse)
    texts = ["Genexis Theatre 42", "The quick brown fox"]
    response = lines_call(
        lines_request(*(data(png(render_line(t))) for t in texts)), timeout=CALL_TIMEOUT_S
    )
    assert [r.text for r in response.results] == texts
    for service in ("", "ocr.v1.OcrService"):
        assert health_status(small_server.address, service) == (
            health_pb2.HealthCheckResponse.SERVING
        )
    log = small_server.log()
    assert "INTERNAL" not in log, log[-5000:]
    assert not re.search(r'File "[^"]*(ocr_core|ocr_server|/server/)', log), log[-5000:]
    assert "Traceback" not in log, log[-5000:]
    assert [line for line in log.splitlines() if " ERROR " in line] == []


@pytest.mark.parametrize(
    ("method", "response", "streams"),
    [
        ("RecognizeDocument", ocr_pb2.PageResult, True),
        ("ListModels", ocr_pb2.ListModelsResponse, False),
        ("GetStats", ocr_pb2.GetStatsResponse, False),
    ],
)
def test_a_corrupt_request_to_any_unary_method_is_invalid_argument(
    method: str, response: type[Message], streams: bool, channel: grpc.Channel
) -> None:
    """Every method that takes one message answers bytes it cannot parse as the caller's error."""
    path = f"/ocr.v1.OcrService/{method}"
    garbage = b"\xff\xff\xff"
    with pytest.raises(grpc.RpcError) as caught:
        if streams:
            list(
                channel.unary_stream(path, _identity, response.FromString)(
                    garbage, timeout=CALL_TIMEOUT_S
                )
            )
        else:
            channel.unary_unary(path, _identity, response.FromString)(
                garbage, timeout=CALL_TIMEOUT_S
            )
    assert caught.value.code() == INVALID
    assert f"not a valid ocr.v1.{method}Request" in (caught.value.details() or "")
    good = channel.unary_unary("/ocr.v1.OcrService/ListModels", _identity, _identity)
    assert ocr_pb2.ListModelsResponse.FromString(
        good(ocr_pb2.ListModelsRequest().SerializeToString(), timeout=CALL_TIMEOUT_S)
    ).models
