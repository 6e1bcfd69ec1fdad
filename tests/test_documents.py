"""Unit tests of ocr_client.documents: files built here with Pillow (TIFF, PDF, images),
split or passed through, and checked pixel by pixel against what was drawn."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from ocr_client import documents
from ocr_client.documents import DocumentError, detect_format, inspect, iter_pages
from ocr_client.proto.ocr.v1 import ocr_pb2


def _save(path: Path, image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    image.save(path, format=fmt, **kwargs)
    return path.read_bytes()


def _raw(page: documents.DocumentPage) -> ocr_pb2.RawImage:
    assert page.image.WhichOneof("source") == "raw"
    return page.image.raw


def _pixel(raw: ocr_pb2.RawImage, x: int, y: int) -> bytes:
    at = (y * raw.width + x) * raw.channels
    return raw.pixels[at : at + raw.channels]


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "png"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 12, "jpeg"),
        (b"BM" + b"\0" * 14, "bmp"),
        (b"RIFF\x10\0\0\0WEBPVP8 ", "webp"),
        (b"II*\x00\x08\0\0\0" + b"\0" * 8, "tiff"),
        (b"MM\x00*\0\0\0\x08" + b"\0" * 8, "tiff"),
        (b"II+\x00\x08\x00\x00\x00" + b"\0" * 8, "tiff"),  # BigTIFF
        (b"%PDF-1.7\n", "pdf"),
        (b"\xef\xbb\xbf junk before %PDF-1.4\n", "pdf"),
        (b"GIF89a" + b"\0" * 10, "gif"),
        (b"GIF87a" + b"\0" * 10, "gif"),
        (b"GIF90a" + b"\0" * 10, None),
        (b"RIFF\x10\0\0\0WAVEfmt ", None),
        (b"hello world, plain text", None),
    ],
)
def test_detect_format_by_magic_bytes(head: bytes, fmt: str | None) -> None:
    assert detect_format(head) == fmt


def test_unknown_and_empty_files_are_clear_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"  # the extension says PNG; the bytes say otherwise
    text.write_bytes(b"just some text\n")
    with pytest.raises(DocumentError, match=r"notes\.png: not a supported document .*just so"):
        inspect(text)
    with pytest.raises(DocumentError, match="not a supported document"):
        list(iter_pages(text))
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(DocumentError, match=r"empty\.tif: the file is empty"):
        inspect(empty)
    with pytest.raises(FileNotFoundError):
        inspect(tmp_path / "missing.pdf")


# --------------------------------------------------------------------------- single images


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("PNG", "a.png"), ("JPEG", "b.jpg"), ("BMP", "c.bmp"), ("WEBP", "d.webp"), ("TIFF", "e")],
)
def test_single_images_pass_through_unchanged(tmp_path: Path, fmt: str, name: str) -> None:
    image = Image.new("RGB", (40, 20), (200, 100, 50))
    data = _save(tmp_path / name, image, fmt)
    info = inspect(tmp_path / name)
    assert info.page_count == 1
    assert info.format == fmt.lower()
    (page,) = iter_pages(tmp_path / name)
    assert page.image.WhichOneof("source") == "data"
    assert page.image.data == data  # the file's bytes, not re-encoded
    assert (page.source, page.index, page.id) == (str(tmp_path / name), 0, f"{tmp_path / name}#1")


def test_extension_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "really-a-png.pdf"
    data = _save(path, Image.new("L", (8, 8), 3), "PNG")
    assert inspect(path).format == "png"
    (page,) = iter_pages(path)
    assert page.image.data == data


# --------------------------------------------------------------------------- TIFF


def _multipage_tiff(path: Path) -> list[Image.Image]:
    frames = [
        Image.new("L", (30, 20), 10),
        Image.new("RGB", (25, 15), (1, 2, 3)),
        Image.new("L", (10, 40), 250),
    ]
    # a mark on each page, to check page order and pixel layout beyond the first pixel
    ImageDraw.Draw(frames[0]).rectangle((5, 6, 7, 8), fill=99)
    ImageDraw.Draw(frames[1]).point((24, 14), fill=(7, 8, 9))
    ImageDraw.Draw(frames[2]).point((3, 39), fill=0)
    frames[0].save(path, save_all=True, append_images=frames[1:], compression="tiff_lzw")
    return frames


def test_multipage_tiff_splits_into_raw_pages_in_order(tmp_path: Path) -> None:
    path = tmp_path / "scan.tif"
    frames = _multipage_tiff(path)
    info = inspect(path)
    assert (info.format, info.page_count) == ("tiff", 3)
    pages = list(iter_pages(path))
    assert [p.index for p in pages] == [0, 1, 2]
    assert [p.id for p in pages] == [f"{path}#1", f"{path}#2", f"{path}#3"]
    raws = [_raw(p) for p in pages]
    assert [(r.width, r.height, r.channels) for r in raws] == [
        (30, 20, 1),
        (25, 15, 3),
        (10, 40, 1),
    ]
    for raw, frame in zip(raws, frames, strict=True):
        assert raw.pixels == frame.tobytes()  # exactly the pixels drawn, row-major, unpadded
    assert raws[1].color_order == ocr_pb2.COLOR_ORDER_RGB
    assert raws[0].color_order == ocr_pb2.COLOR_ORDER_UNSPECIFIED
    assert _pixel(raws[0], 6, 7) == b"\x63"
    assert _pixel(raws[1], 24, 14) == b"\x07\x08\x09"
    assert _pixel(raws[2], 3, 39) == b"\x00"


def test_tiff_frames_of_other_modes_become_gray_or_rgb(tmp_path: Path) -> None:
    path = tmp_path / "modes.tiff"
    frames = [
        Image.new("1", (5, 2), 1),  # bilevel -> gray 255
        Image.new("RGBA", (4, 2), (0, 0, 0, 0)),  # transparent -> white, as the server does
        Image.new("I;16", (3, 2), 0x1234),  # 16-bit -> top 8 bits
        Image.new("CMYK", (2, 2), (0, 0, 0, 0)),  # no ink -> white RGB
    ]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    raws = [_raw(p) for p in iter_pages(path)]
    assert [(r.channels, r.pixels[: r.channels]) for r in raws] == [
        (1, b"\xff"),
        (3, b"\xff\xff\xff"),
        (1, b"\x12"),
        (3, b"\xff\xff\xff"),
    ]
    assert all(len(r.pixels) == r.width * r.height * r.channels for r in raws)


def test_bigtiff_pages_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "big.tif"
    frames = [Image.new("L", (4, 4), v) for v in (1, 2)]
    frames[0].save(path, save_all=True, append_images=frames[1:], big_tiff=True)
    assert path.read_bytes()[:4] == b"II+\x00"
    assert inspect(path).page_count == 2
    assert [_raw(p).pixels[0] for p in iter_pages(path)] == [1, 2]


def test_truncated_tiff_is_a_document_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    _multipage_tiff(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DocumentError, match=r"truncated TIFF|cannot read the TIFF"):
        inspect(path)
    with pytest.raises(DocumentError, match=r"truncated TIFF|cannot read the TIFF"):
        list(iter_pages(path))


def test_tiff_with_a_looping_page_chain_is_refused(tmp_path: Path) -> None:
    # A little-endian TIFF whose single IFD (no entries) points back at itself.
    path = tmp_path / "loop.tif"
    path.write_bytes(b"II*\x00\x08\x00\x00\x00" + b"\x00\x00" + b"\x08\x00\x00\x00")
    with pytest.raises(DocumentError, match="does not end"):
        inspect(path)


# --------------------------------------------------------------------------- PDF


def _pdf(path: Path) -> None:
    """Two pages at 72 dpi (1 px = 1 pt): 144x72 white with a black square at (10..19,
    20..29), and 72x144 all black."""
    first = Image.new("RGB", (144, 72), "white")
    ImageDraw.Draw(first).rectangle((10, 20, 19, 29), fill="black")
    second = Image.new("RGB", (72, 144), "black")
    first.save(path, save_all=True, append_images=[second], resolution=72.0)


def test_pdf_renders_each_page_as_rgb_at_the_asked_resolution(tmp_path: Path) -> None:
    path = tmp_path / "doc.pdf"
    _pdf(path)
    info = inspect(path)
    assert (info.format, info.page_count) == ("pdf", 2)
    pages = list(iter_pages(path, pdf_dpi=144))  # 2 px per point
    assert [p.id for p in pages] == [f"{path}#1", f"{path}#2"]
    first, second = (_raw(p) for p in pages)
    assert (first.width, first.height, first.channels) == (288, 144, 3)
    assert (second.width, second.height, second.channels) == (144, 288, 3)
    assert first.color_order == ocr_pb2.COLOR_ORDER_RGB
    assert len(first.pixels) == 288 * 144 * 3
    # Pillow stores the pages as JPEG, so black and white are only nearly so.
    assert min(_pixel(first, 2, 2)) > 240
    assert max(_pixel(first, 30, 50)) < 16  # inside the square, at (15, 25) pt
    assert min(_pixel(first, 60, 50)) > 240
    assert max(_pixel(second, 70, 140)) < 16


def test_pdf_pages_are_kept_within_the_pixel_limit(tmp_path: Path) -> None:
    path = tmp_path / "doc.pdf"
    _pdf(path)
    for page in iter_pages(path, pdf_dpi=600, max_pixels=20_000):
        raw = _raw(page)
        assert raw.width * raw.height <= 20_000
        assert raw.width * raw.height > 15_000  # as large as the limit allows, about
        assert len(raw.pixels) == raw.width * raw.height * 3
    (big, _) = (_raw(p) for p in iter_pages(path, pdf_dpi=600, max_pixels=None))
    assert (big.width, big.height) == (1200, 600)


def test_broken_pdf_is_a_document_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.7\nthis is not really a pdf\n")
    with pytest.raises(DocumentError, match=r"broken\.pdf: cannot read the PDF"):
        inspect(path)


# --------------------------------------------------------------------------- laziness


def test_pages_are_produced_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing happens until a page is asked for, and each page is rendered only when
    asked for (so a long PDF is never all in memory)."""
    missing = iter_pages(tmp_path / "missing.pdf")
    assert isinstance(missing, Iterator)  # no error yet: nothing was read
    with pytest.raises(FileNotFoundError):
        next(missing)

    path = tmp_path / "doc.pdf"
    _pdf(path)
    rendered: list[int] = []
    real = documents._raw_image

    def counting(width: int, height: int, channels: int, pixels: bytes) -> ocr_pb2.Image:
        rendered.append(width)
        return real(width, height, channels, pixels)

    monkeypatch.setattr(documents, "_raw_image", counting)
    pages = iter_pages(path, pdf_dpi=72)
    assert rendered == []
    next(pages)
    assert rendered == [144]
    next(pages)
    assert rendered == [144, 72]


# --------------------------------------------------------------------------- extras missing


def test_missing_extras_name_the_package_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiff = tmp_path / "scan.tif"
    _multipage_tiff(tiff)
    pdf = tmp_path / "doc.pdf"
    _pdf(pdf)
    single = tmp_path / "one.tif"
    _save(single, Image.new("L", (4, 4)), "TIFF")
    monkeypatch.setitem(sys.modules, "PIL", None)  # `import PIL...` now fails
    monkeypatch.setitem(sys.modules, "pypdfium2", None)
    hint = r"pip install 'grpc-ocr-server\[documents\]'"
    with pytest.raises(ImportError, match=rf"multi-page TIFF needs Pillow: {hint}"):
        inspect(tiff)
    with pytest.raises(ImportError, match=rf"PDF needs pypdfium2: {hint}"):
        inspect(pdf)
    with pytest.raises(ImportError, match=hint):
        list(iter_pages(pdf))
    # a single-page TIFF needs neither: it is counted by its header and sent as it is
    assert inspect(single).page_count == 1
    (page,) = iter_pages(single)
    assert page.image.data == single.read_bytes()
