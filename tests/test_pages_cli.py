"""``ocr-client pages`` end to end: the CLI as a user runs it (a subprocess) against a real
server with the real default model, on pages rendered here (OpenCV's Hershey font on white):
a PNG, a 2-page TIFF and a PDF, all on one stream. The hOCR and ALTO it writes are checked
with the same validators as the unit tests (hocr-spec, the official ALTO XSDs)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from lxml import html
from PIL import Image

from ocr_client import formats
from tests.conftest import ServerProcess
from tests.test_formats import _alto_errors, _hocr_problems

pytestmark = pytest.mark.integration

PNG_LINES = ["Invoice number 4471", "Delivery on 12 May", "Total due 86 euros"]
TIFF_PAGES = [["First page of the letter"], ["Second page follows here"]]
PDF_LINES = ["Printed from a document"]
GIF_LINES = ["Scanned to a GIF file"]
CLI_TIMEOUT_S = 240


def _render(lines: list[str], width: int = 1200, line_height: int = 80) -> np.ndarray:
    """A gray page with ``lines`` drawn large, top to bottom, on white."""
    page = np.full((line_height * (len(lines) + 1), width), 255, np.uint8)
    for i, text in enumerate(lines):
        y = line_height * (i + 1)
        cv2.putText(page, text, (60, y), cv2.FONT_HERSHEY_DUPLEX, 1.6, 0, 2, cv2.LINE_AA)
    return page


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pages")
    png = folder / "invoice.png"
    Image.fromarray(_render(PNG_LINES)).save(png)
    tif = folder / "letter.tif"
    frames = [Image.fromarray(_render(lines)) for lines in TIFF_PAGES]
    frames[0].save(tif, save_all=True, append_images=frames[1:], compression="tiff_lzw")
    pdf = folder / "printed.pdf"
    # 200 dpi in the file, rendered back at the CLI's default 200 dpi: the same pixels.
    Image.fromarray(_render(PDF_LINES)).convert("RGB").save(pdf, resolution=200.0)
    broken = folder / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # a PNG header, then nothing
    gif = folder / "scan.gif"
    Image.fromarray(_render(GIF_LINES)).save(gif)
    notes = folder / "notes.txt"
    notes.write_text("not a page\n")
    return {"png": png, "tif": tif, "pdf": pdf, "broken": broken, "gif": gif, "notes": notes}


def _lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line]


def _pages_cli(
    server: ServerProcess, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ocr_client.cli", "pages", *args, "--address", server.address],
        input=stdin,
        capture_output=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def test_pages_of_every_file_come_back_in_order(
    server: ServerProcess, inputs: dict[str, Path]
) -> None:
    files = [str(inputs[k]) for k in ("png", "broken", "tif", "pdf")]
    proc = _pages_cli(server, *files, "-f", "json", "--max-in-flight", "2")
    err = proc.stderr.decode()
    # the broken file is that page's error; every other page is still written
    assert proc.returncode == 1, err
    assert err.startswith(f"error: {inputs['broken']} page 1: "), err
    assert "INVALID_ARGUMENT" in err
    assert len(err.strip().splitlines()) == 1, err
    doc = json.loads(proc.stdout)
    pages = doc["pages"]
    assert [(p["source"], p["pageIndex"]) for p in pages] == [
        (files[0], 0),
        (files[2], 0),
        (files[2], 1),
        (files[3], 0),
    ]
    # Lines in reading order; whether the server groups them into one block or several
    # (a blank line between blocks) is its layout's business, not the CLI's.
    texts = [_lines(p["result"]["text"]) for p in pages]
    assert texts == [PNG_LINES, *TIFF_PAGES, PDF_LINES]
    first = pages[0]["result"]
    assert first["width"] == 1200 and first["height"] == 320
    assert [line["text"] for line in first["lines"]] == PNG_LINES
    tops = [line["bounds"]["y"] for line in first["lines"]]
    assert tops == sorted(tops)


def test_a_document_piped_to_dash_is_read_as_any_file(
    server: ServerProcess, inputs: dict[str, Path]
) -> None:
    """``-`` reads standard input: here a 2-page TIFF (split by the CLI) beside a PNG file;
    its pages are named ``-`` in the results."""
    png = str(inputs["png"])
    proc = _pages_cli(server, png, "-", "-f", "json", stdin=inputs["tif"].read_bytes())
    assert proc.returncode == 0, proc.stderr.decode()
    pages = json.loads(proc.stdout)["pages"]
    assert [(p["source"], p["pageIndex"]) for p in pages] == [(png, 0), ("-", 0), ("-", 1)]
    assert [_lines(p["result"]["text"]) for p in pages] == [PNG_LINES, *TIFF_PAGES]


def test_a_gif_page_is_read_and_a_file_that_is_no_page_is_skipped(
    server: ServerProcess, inputs: dict[str, Path]
) -> None:
    files = [str(inputs[k]) for k in ("notes", "gif", "png")]
    proc = _pages_cli(server, *files)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.startswith(f"error: {inputs['notes']}: not a supported document"), err
    assert len(err.strip().splitlines()) == 1, err
    pages = proc.stdout.decode().split("\f")
    assert [_lines(p) for p in pages] == [GIF_LINES, PNG_LINES, []]


def test_pages_on_several_streams_come_back_in_order(
    server: ServerProcess, inputs: dict[str, Path]
) -> None:
    files = [str(inputs[k]) for k in ("tif", "png", "pdf")]
    proc = _pages_cli(server, *files, "-f", "json", "--connections", "3")
    assert proc.returncode == 0, proc.stderr.decode()
    pages = json.loads(proc.stdout)["pages"]
    assert [(p["source"], p["pageIndex"]) for p in pages] == [
        (files[0], 0),
        (files[0], 1),
        (files[1], 0),
        (files[2], 0),
    ]
    assert [_lines(p["result"]["text"]) for p in pages] == [*TIFF_PAGES, PNG_LINES, PDF_LINES]


def test_pages_text_output_is_form_feed_separated(
    server: ServerProcess, inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.txt"
    proc = _pages_cli(server, str(inputs["tif"]), "-o", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b""
    pages = out.read_text(encoding="utf-8").split("\f")
    assert [_lines(p) for p in pages] == [*TIFF_PAGES, []]
    assert all(p.endswith("\n") for p in pages[:-1])


def test_pages_hocr_is_valid_and_in_order(
    server: ServerProcess, inputs: dict[str, Path], tmp_path: Path
) -> None:
    proc = _pages_cli(server, str(inputs["png"]), str(inputs["tif"]), "-f", "hocr")
    assert proc.returncode == 0, proc.stderr.decode()
    document = proc.stdout.decode("utf-8")
    assert _hocr_problems(document, tmp_path) == []
    doc = html.fromstring(proc.stdout)
    page_titles = [p.get("title") for p in doc.xpath("//*[@class='ocr_page']")]
    assert page_titles == [
        f'image "{inputs["png"]}"; bbox 0 0 1200 320; ppageno 0',
        f'image "{inputs["tif"]}"; bbox 0 0 1200 160; ppageno 0',
        f'image "{inputs["tif"]}"; bbox 0 0 1200 160; ppageno 1',
    ]
    lines = [" ".join(ln.text_content().split()) for ln in doc.xpath("//*[@class='ocr_line']")]
    assert lines == [*PNG_LINES, *(t[0] for t in TIFF_PAGES)]


def test_pages_alto_is_valid_and_in_order(
    server: ServerProcess, inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.xml"
    proc = _pages_cli(server, str(inputs["tif"]), str(inputs["pdf"]), "-f", "alto", "-o", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    document = out.read_text(encoding="utf-8")
    for minor in (0, 2, 3):
        assert _alto_errors(document, minor) == []
    ns = {"a": formats.ALTO_NAMESPACE}
    root = ET.fromstring(document)
    alto_pages = root.findall("a:Layout/a:Page", ns)
    assert [p.get("PHYSICAL_IMG_NR") for p in alto_pages] == ["1", "2", "1"]
    words = [
        [s.get("CONTENT") for s in page.iter(f"{{{formats.ALTO_NAMESPACE}}}String")]
        for page in alto_pages
    ]
    assert words == [*(t[0].split() for t in TIFF_PAGES), PDF_LINES[0].split()]
    for string in root.iter(f"{{{formats.ALTO_NAMESPACE}}}String"):
        assert 0.5 <= float(string.get("WC", "0")) <= 1.0
        assert int(string.get("WIDTH", "0")) > 0
