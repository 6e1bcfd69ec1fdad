"""Page scans through a real server: RecognizePage, RecognizeDocument, page items in streams.

Pages are rendered here (OpenCV's Hershey font on white), so these tests need no data files;
the accuracy on real scans and photos is in test_accuracy_pages.py.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import cv2
import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from PIL import Image as PILImage

from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from tests.conftest import ServerProcess, png, render_line, render_page, start_server, stop_server

pytestmark = pytest.mark.integration

LINES = [
    "Quarterly report for the board",
    "Revenue grew by 12 percent",
    "Costs were flat at 4.2 million",
    "Next meeting on 14 March",
]
PAGE_TEXT = "\n".join(LINES)


@pytest.fixture(scope="module")
def stub(server: ServerProcess):
    with grpc.insecure_channel(server.address) as channel:
        yield ocr_pb2_grpc.OcrServiceStub(channel)


@pytest.fixture(scope="module")
def page() -> np.ndarray:
    return render_page(LINES)


def recognize_page(stub, image: np.ndarray, **options) -> ocr_pb2.PageResult:
    request = ocr_pb2.RecognizePageRequest(
        image=ocr_pb2.Image(data=png(image)), options=ocr_pb2.PageOptions(**options)
    )
    return stub.RecognizePage(request, timeout=120)


def inside(rect: ocr_pb2.Rect, outer: ocr_pb2.Rect, slack: int = 2) -> bool:
    return (
        rect.x >= outer.x - slack
        and rect.y >= outer.y - slack
        and rect.x + rect.width <= outer.x + outer.width + slack
        and rect.y + rect.height <= outer.y + outer.height + slack
    )


def test_page_lines_come_back_in_reading_order_with_boxes(stub, page: np.ndarray) -> None:
    result = recognize_page(stub, page)
    assert result.text == PAGE_TEXT
    assert [line.text for line in result.lines] == LINES
    assert result.lines_left_out == 0
    assert (result.width, result.height, result.rotation) == (page.shape[1], page.shape[0], 0)
    assert result.model == "ppocr-v6-small"
    tops = [line.bounds.y for line in result.lines]
    assert tops == sorted(tops)
    for line in result.lines:
        assert len(line.box.points) == 4
        assert 0.9 < line.confidence <= 1.0
        assert not line.upside_down
        # The quad is the line's box as the text reads: top-left first, top edge to the right.
        tl, tr, br, bl = line.box.points
        assert tl.x < tr.x and bl.x < br.x and tl.y < bl.y
        words = [w.text for w in line.words]
        assert " ".join(words) == line.text
        for word in line.words:
            assert inside(word.bounds, line.bounds)
        xs = [w.bounds.x for w in line.words]
        assert xs == sorted(xs)
    covered = [i for block in result.blocks for i in block.lines]
    assert sorted(covered) == list(range(len(result.lines)))
    assert all(result.lines[i].block == b for b, blk in enumerate(result.blocks) for i in blk.lines)


@pytest.mark.parametrize(
    ("turn", "expected_rotation"),
    [
        (cv2.ROTATE_90_CLOCKWISE, 270),
        (cv2.ROTATE_180, 180),
        (cv2.ROTATE_90_COUNTERCLOCKWISE, 90),
    ],
)
def test_rotated_page_is_read_upright(
    stub, page: np.ndarray, turn: int, expected_rotation: int
) -> None:
    rotated = cv2.rotate(page, turn)
    result = recognize_page(stub, rotated)
    assert result.rotation == expected_rotation
    assert result.text == PAGE_TEXT
    # Coordinates are in the pixels of the image as sent, not of the upright page.
    assert (result.width, result.height) == (rotated.shape[1], rotated.shape[0])
    for line in result.lines:
        b = line.bounds
        assert b.x + b.width <= rotated.shape[1] and b.y + b.height <= rotated.shape[0]
        # Each line box is where that line's ink is on the image sent.
        ink = rotated[b.y : b.y + b.height, b.x : b.x + b.width]
        assert (ink < 128).mean() > 0.03


def test_rotation_correction_can_be_turned_off(stub, page: np.ndarray) -> None:
    result = recognize_page(stub, cv2.rotate(page, cv2.ROTATE_180), correct_page_rotation=False)
    assert result.rotation == 0


def test_upside_down_line_is_turned_and_marked(stub, page: np.ndarray) -> None:
    turned = page.copy()
    turned[350:440, 40:1000] = cv2.rotate(turned[350:440, 40:1000], cv2.ROTATE_180)
    result = recognize_page(stub, turned)
    assert result.rotation == 0
    assert result.text == PAGE_TEXT
    assert [line.upside_down for line in result.lines] == [False, False, False, True]
    # The last line's quad starts at the text's top-left, which is the image's bottom-right.
    tl, tr, _br, bl = result.lines[-1].box.points
    assert tl.x > tr.x and tl.y > bl.y


def test_page_without_text_is_an_empty_result(stub) -> None:
    blank = np.full((600, 800), 255, np.uint8)
    cv2.rectangle(blank, (100, 100), (700, 500), 200, -1)  # a flat gray shape, no text
    result = recognize_page(stub, blank)
    assert (result.width, result.height) == (800, 600)
    assert list(result.lines) == [] and result.text == "" and list(result.blocks) == []


def test_bad_page_options_are_invalid_argument(stub, page: np.ndarray) -> None:
    for options in ({"max_side": 10}, {"box_threshold": 1.5}, {"min_confidence": 1.0}):
        with pytest.raises(grpc.RpcError) as info:
            recognize_page(stub, page, **options)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert next(iter(options)) in info.value.details()


def _tiff(pages: list[np.ndarray]) -> bytes:
    images = [PILImage.fromarray(p) for p in pages]
    out = io.BytesIO()
    images[0].save(out, format="TIFF", save_all=True, append_images=images[1:])
    return out.getvalue()


def _pdf(pages: list[np.ndarray]) -> bytes:
    images = [PILImage.fromarray(p).convert("RGB") for p in pages]
    out = io.BytesIO()
    images[0].save(out, format="PDF", save_all=True, append_images=images[1:], resolution=150)
    return out.getvalue()


DOC_PAGES = [["Page one alpha"], ["Page two bravo"], ["Page three charlie"], ["Page four delta"]]


@pytest.mark.parametrize("make", [_tiff, _pdf], ids=["tiff", "pdf"])
def test_document_pages_stream_back_in_order(stub, make) -> None:
    data = make([render_page(lines, width=900) for lines in DOC_PAGES])
    results = list(stub.RecognizeDocument(ocr_pb2.RecognizeDocumentRequest(data=data), timeout=120))
    assert [r.page_index for r in results] == [0, 1, 2, 3]
    assert [r.text for r in results] == [lines[0] for lines in DOC_PAGES]


def test_document_that_is_not_a_document_is_invalid_argument(stub) -> None:
    for data in (b"", b"not a document at all", b"II*\x00\xff\xff\xff\x00"):
        with pytest.raises(grpc.RpcError) as info:
            list(stub.RecognizeDocument(ocr_pb2.RecognizeDocumentRequest(data=data), timeout=60))
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, data


def test_stream_mixes_lines_and_pages_with_one_corrupt_item(stub, page: np.ndarray) -> None:
    line = ocr_pb2.Image(data=png(render_line("Hello World 2026")))
    good_page = ocr_pb2.Image(data=png(page))
    corrupt = ocr_pb2.Image(data=png(page)[:200])  # a truncated PNG

    def requests():
        yield ocr_pb2.StreamRecognizeRequest(
            id="l1", line=line, options=ocr_pb2.StreamOptions(ordered=True)
        )
        yield ocr_pb2.StreamRecognizeRequest(id="p1", page=good_page)
        yield ocr_pb2.StreamRecognizeRequest(id="bad", page=corrupt)
        yield ocr_pb2.StreamRecognizeRequest(id="l2", line=line)
        yield ocr_pb2.StreamRecognizeRequest(id="p2", page=good_page)

    responses = list(stub.StreamRecognize(requests(), timeout=120))
    assert [r.id for r in responses] == ["l1", "p1", "bad", "l2", "p2"]
    kinds = [r.WhichOneof("result") for r in responses]
    assert kinds == ["line", "page", "error", "line", "page"]
    assert responses[0].line.text == responses[3].line.text == "Hello World 2026"
    assert responses[1].page.text == responses[4].page.text == PAGE_TEXT
    assert responses[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "PNG" in responses[2].error.message


def test_stream_page_options_apply_to_every_page(stub, page: np.ndarray) -> None:
    rotated = ocr_pb2.Image(data=png(cv2.rotate(page, cv2.ROTATE_180)))
    options = ocr_pb2.StreamOptions(page_options=ocr_pb2.PageOptions(correct_page_rotation=False))

    def requests():
        yield ocr_pb2.StreamRecognizeRequest(id="a", page=rotated, options=options)
        yield ocr_pb2.StreamRecognizeRequest(id="b", page=rotated)

    responses = list(stub.StreamRecognize(requests(), timeout=120))
    assert [r.page.rotation for r in responses] == [0, 0]


def test_list_models_reports_page_support(stub) -> None:
    response = stub.ListModels(ocr_pb2.ListModelsRequest(), timeout=30)
    default = next(m for m in response.models if m.is_default)
    assert default.supports_pages and default.supports_page_rotation
    assert default.supports_line_rotation
    assert response.limits.max_document_pages >= 1 and response.limits.pdf_support
    assert response.limits.max_lines_per_page == 1000


def test_readme_grpcurl_page_request_json_works(stub, page: np.ndarray) -> None:
    """The JSON of the README's grpcurl RecognizePage example maps to a working request."""
    body = (
        '{"image": {"data": "' + base64.b64encode(png(page)).decode() + '"}, '
        '"options": {"maxSide": 2048}}'
    )
    request = json_format.Parse(body, ocr_pb2.RecognizePageRequest())
    assert request.options.HasField("max_side") and request.options.max_side == 2048
    result = stub.RecognizePage(request, timeout=120)
    assert result.text == PAGE_TEXT
    as_json = json.loads(json_format.MessageToJson(result))
    assert as_json["lines"][0]["box"]["points"][0].keys() == {"x", "y"}


def test_no_pages_server_reads_lines_and_refuses_pages_with_the_reason(
    tmp_path, page: np.ndarray
) -> None:
    """``--no-pages`` loads no page models: lines work, page calls say why they cannot."""
    srv = start_server(tmp_path / "no-pages.log", "--no-pages")
    try:
        assert "page models not loaded (--no-pages)" in srv.log()
        with grpc.insecure_channel(srv.address) as channel:
            stub = ocr_pb2_grpc.OcrServiceStub(channel)
            listed = stub.ListModels(ocr_pb2.ListModelsRequest(), timeout=30)
            models = listed.models
            assert [m.supports_pages for m in models] == [False]
            assert not listed.limits.pdf_support
            assert not models[0].supports_page_rotation and not models[0].supports_line_rotation

            for call in (
                lambda: recognize_page(stub, page),
                lambda: list(
                    stub.RecognizeDocument(
                        ocr_pb2.RecognizeDocumentRequest(data=png(page)), timeout=60
                    )
                ),
            ):
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
                assert "--no-pages" in info.value.details()

            line = ocr_pb2.Image(data=png(render_line("Hello World 2026")))
            requests = [
                ocr_pb2.StreamRecognizeRequest(id="p", page=ocr_pb2.Image(data=png(page))),
                ocr_pb2.StreamRecognizeRequest(id="l", line=line),
            ]
            responses = {r.id: r for r in stub.StreamRecognize(iter(requests), timeout=60)}
            assert responses["p"].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
            assert "--no-pages" in responses["p"].error.message
            assert responses["l"].line.text == "Hello World 2026"
            lines = stub.RecognizeLines(ocr_pb2.RecognizeLinesRequest(images=[line]), timeout=60)
            assert lines.results[0].text == "Hello World 2026"

        # The pages CLI says so once, before sending, not once per page.
        scan = tmp_path / "scan.png"
        scan.write_bytes(png(page))
        cli = [sys.executable, "-m", "ocr_client.cli", "--address", srv.address]
        proc = subprocess.run(
            [*cli, "pages", str(scan), str(scan)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr.startswith("error: model 'ppocr-v6-small' at "), proc.stderr
        assert "reads pre-cropped lines only" in proc.stderr
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
    finally:
        assert stop_server(srv) == 0, srv.log()


def test_a_page_over_the_line_limit_says_how_many_lines_it_left_out(
    tmp_path, page: np.ndarray
) -> None:
    """``--page-max-lines``: the best lines are read and the rest counted, never lost quietly.

    The page result, RecognizeDocument's pages and the pages CLI (a warning on stderr, the
    text still written) all carry the count; ListModels states the limit.
    """
    srv = start_server(tmp_path / "max-lines.log", "--page-max-lines", "2", "--workers", "1")
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = ocr_pb2_grpc.OcrServiceStub(channel)
            limits = stub.ListModels(ocr_pb2.ListModelsRequest(), timeout=30).limits
            assert limits.max_lines_per_page == 2
            result = recognize_page(stub, page)
            assert result.lines_left_out == 2
            texts = [line.text for line in result.lines]
            assert len(texts) == 2 and set(texts) <= set(LINES)
            assert texts == sorted(texts, key=LINES.index)
            (document_page,) = stub.RecognizeDocument(
                ocr_pb2.RecognizeDocumentRequest(data=png(page)), timeout=120
            )
            assert document_page.lines_left_out == 2 and len(document_page.lines) == 2
        assert "4 text lines found, only the 2 highest-scoring are read" in srv.log()

        scan = tmp_path / "scan.png"
        scan.write_bytes(png(page))
        cli = [sys.executable, "-m", "ocr_client.cli", "--address", srv.address]
        proc = subprocess.run(
            [*cli, "pages", str(scan)], capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == result.text + "\n\f", proc.stdout
        assert proc.stderr == (
            f"warning: {scan} page 1: 2 more text lines found than the server reads on one "
            "page, not read (its --page-max-lines)\n"
        )
    finally:
        assert stop_server(srv) == 0, srv.log()
