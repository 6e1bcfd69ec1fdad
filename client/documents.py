"""Document files (images, multi-page TIFF, PDF) turned into page images for page items.

Why split on the client when ``RecognizeDocument`` exists: pages of many files then travel on
one ``StreamRecognize`` call with bounded in-flight pages, a PDF needs no PDF support on the
server, and a failed page is that page's item error instead of the end of the document.

What is sent:

- PNG, JPEG, BMP, WebP, GIF and single-page TIFF files go as their bytes, unchanged: the server
  decodes them, and the encoded file is smaller than its pixels. No extra package is needed.
- Multi-page TIFF is split with Pillow and PDF is rendered with pypdfium2 (the optional extra
  ``[documents]``); those pages go as ``RawImage`` (gray or RGB), so nothing is re-encoded.

Pages are produced lazily, one at a time, so a 500-page PDF is never all in memory: at most
the page being rendered plus what the caller keeps in flight. Formats are recognised by their
magic bytes, never by the file name's extension.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeAlias

from ocr_client.proto.ocr.v1 import ocr_pb2

__all__ = [
    "DEFAULT_MAX_PAGE_PIXELS",
    "DEFAULT_PDF_DPI",
    "EXTRA_HINT",
    "DocumentError",
    "DocumentInfo",
    "DocumentPage",
    "Format",
    "detect_format",
    "inspect",
    "iter_pages",
    "page_id",
]

Format: TypeAlias = Literal["png", "jpeg", "bmp", "webp", "gif", "tiff", "pdf"]
PathInput: TypeAlias = str | os.PathLike[str]

EXTRA_HINT = "pip install 'grpc-ocr-server[documents]'"
# The server's default for RecognizeDocument, so both ways of sending a PDF read alike.
DEFAULT_PDF_DPI = 200
# The server's default --max-image-pixels: a PDF page that would render larger is rendered
# at a lower resolution instead of being refused by the server.
DEFAULT_MAX_PAGE_PIXELS = 16_000_000
# The PDF header may follow up to 1024 bytes of junk (PDF 1.7, Annex H).
_SNIFF_BYTES = 1024
# A TIFF with more pages than this is taken to be corrupt (an IFD chain that does not end).
_MAX_TIFF_PAGES = 100_000
_PDF_POINTS_PER_INCH = 72.0


class DocumentError(ValueError):
    """A file that is not a readable document of a supported format; the message names it."""


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """What :func:`inspect` found: the file as given, its format and its number of pages."""

    source: str
    format: Format
    page_count: int


@dataclass(frozen=True, slots=True)
class DocumentPage:
    """One page of a document, ready to send: ``image`` is the ``ocr.v1.Image`` message."""

    source: str
    # Index of the page in its file, from 0 (as PageResult.page_index).
    index: int
    image: ocr_pb2.Image

    @property
    def id(self) -> str:
        """The page's stream id, ``file#N`` with N counted from 1 as people number pages."""
        return page_id(self.source, self.index)


def page_id(source: str, index: int) -> str:
    """``file.pdf#3`` for the page at index 2: readable in error messages and progress."""
    return f"{source}#{index + 1}"


def detect_format(head: bytes) -> Format | None:
    """The format of a file from its first bytes (at least 16; 1024 to find any PDF header),
    or None when it is none of those the server reads."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "tiff"  # classic TIFF and BigTIFF, either byte order
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"  # the server reads its first frame
    if b"%PDF-" in head[:_SNIFF_BYTES]:
        return "pdf"
    return None


def _sniff(path: Path, name: str) -> Format:
    with path.open("rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head:
        raise DocumentError(f"{name}: the file is empty")
    fmt = detect_format(head)
    if fmt is None:
        raise DocumentError(
            f"{name}: not a supported document (PNG, JPEG, BMP, WebP, GIF, TIFF or PDF); "
            f"it starts with {head[:8]!r}"
        )
    return fmt


def _tiff_page_count(f: BinaryIO, name: str) -> int:
    """Counts the pages of a TIFF by walking its chain of image file directories (IFDs),
    reading a few bytes per page and decoding nothing, so a single-page TIFF can be sent as it
    is without Pillow, and the page total is known before the first page is sent."""
    header = f.read(16)
    endian = "<" if header[:2] == b"II" else ">"
    version = struct.unpack(endian + "H", header[2:4])[0]
    if version == 42:
        (offset,) = struct.unpack(endian + "I", header[4:8])
        count_fmt, entry_size, next_fmt = "H", 12, "I"
    else:  # 43: BigTIFF
        (offset,) = struct.unpack(endian + "Q", header[8:16])
        count_fmt, entry_size, next_fmt = "Q", 20, "Q"
    count_size = struct.calcsize(count_fmt)
    next_size = struct.calcsize(next_fmt)
    seen: set[int] = set()
    while offset:
        if offset in seen or len(seen) >= _MAX_TIFF_PAGES:
            raise DocumentError(f"{name}: corrupt TIFF (its page chain does not end)")
        seen.add(offset)
        f.seek(offset)
        raw_count = f.read(count_size)
        if len(raw_count) < count_size:
            raise DocumentError(f"{name}: truncated TIFF (page {len(seen)} is cut off)")
        (entries,) = struct.unpack(endian + count_fmt, raw_count)
        f.seek(offset + count_size + entries * entry_size)
        raw_next = f.read(next_size)
        if len(raw_next) < next_size:
            raise DocumentError(f"{name}: truncated TIFF (page {len(seen)} is cut off)")
        (offset,) = struct.unpack(endian + next_fmt, raw_next)
    if not seen:
        raise DocumentError(f"{name}: TIFF without any page")
    return len(seen)


def _import_pillow(what: str) -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(f"{what} needs Pillow: {EXTRA_HINT}") from exc
    return Image


def _import_pdfium(what: str) -> Any:
    try:
        import pypdfium2
    except ImportError as exc:
        raise ImportError(f"{what} needs pypdfium2: {EXTRA_HINT}") from exc
    return pypdfium2


def _open_pdf(pdfium: Any, path: Path, name: str) -> Any:
    try:
        return pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        raise DocumentError(f"{name}: cannot read the PDF ({exc})") from exc


def inspect(path: PathInput, *, name: str | None = None) -> DocumentInfo:
    """Format and page count of a file, cheaply (no page is decoded or rendered).

    Meant to be called on every input before anything is sent, so that a wrong file, or a
    missing optional package, fails at once rather than after other files' pages were sent.
    Raises :class:`DocumentError` for an unsupported or unreadable file, ``ImportError``
    (naming the extra to install) when the file needs Pillow or pypdfium2 and it is missing,
    and ``OSError`` when the file cannot be opened. ``name``: what the file is called in
    ``source`` and in messages (default: ``path``), e.g. ``-`` for data read from stdin.
    """
    p = Path(path)
    source = os.fspath(path) if name is None else name
    fmt = _sniff(p, source)
    if fmt == "tiff":
        with p.open("rb") as f:
            count = _tiff_page_count(f, source)
        if count > 1:
            _import_pillow("splitting a multi-page TIFF")
        return DocumentInfo(source, fmt, count)
    if fmt == "pdf":
        pdfium = _import_pdfium("rendering a PDF")
        pdf = _open_pdf(pdfium, p, source)
        try:
            return DocumentInfo(source, fmt, len(pdf))
        finally:
            pdf.close()
    return DocumentInfo(source, fmt, 1)


def iter_pages(
    path: PathInput,
    *,
    pdf_dpi: int = DEFAULT_PDF_DPI,
    max_pixels: int | None = DEFAULT_MAX_PAGE_PIXELS,
    name: str | None = None,
) -> Iterator[DocumentPage]:
    """The pages of one file, in order, one at a time (a generator: nothing is read until the
    first page is asked for, and each page is made only when asked for).

    ``pdf_dpi`` is the resolution PDF pages are rendered at; a page that would exceed
    ``max_pixels`` (None: no limit) is rendered at the highest resolution within it.
    ``name`` as for :func:`inspect`. Raises as :func:`inspect` does.
    """
    if pdf_dpi <= 0:
        raise ValueError(f"pdf_dpi must be positive, got {pdf_dpi}")
    source = os.fspath(path) if name is None else name
    p = Path(path)
    fmt = _sniff(p, source)
    if fmt == "pdf":
        for index, image in enumerate(_pdf_images(p, source, pdf_dpi, max_pixels)):
            yield DocumentPage(source, index, image)
        return
    if fmt == "tiff":
        with p.open("rb") as f:
            count = _tiff_page_count(f, source)
        if count > 1:
            for index, image in enumerate(_tiff_images(p, source, count)):
                yield DocumentPage(source, index, image)
            return
    data = p.read_bytes()
    yield DocumentPage(source, 0, ocr_pb2.Image(data=data))


# --------------------------------------------------------------------------- TIFF


def _raw_image(width: int, height: int, channels: int, pixels: bytes) -> ocr_pb2.Image:
    # Filled in place: ``Image(raw=RawImage(...))`` would copy the pixels a second time.
    image = ocr_pb2.Image()
    raw = image.raw
    raw.width, raw.height, raw.channels = width, height, channels
    raw.color_order = ocr_pb2.COLOR_ORDER_RGB if channels == 3 else ocr_pb2.COLOR_ORDER_UNSPECIFIED
    raw.pixels = pixels
    return image


def _gray_or_rgb(pil_image: Any, image_module: Any) -> Any:
    """A frame as 8-bit gray ("L") or "RGB", the two layouts a RawImage page is sent in,
    treating alpha and 16-bit samples as the server does for encoded files (alpha composited
    onto white, 16-bit scaled to 8-bit)."""
    mode = pil_image.mode
    if mode in ("L", "RGB"):
        return pil_image
    if mode == "1":
        return pil_image.convert("L")
    if mode.startswith("I;16"):
        return pil_image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    has_alpha = "A" in mode or "a" in mode or "transparency" in pil_image.info
    if has_alpha:
        rgba = pil_image.convert("RGBA")
        white = image_module.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    if mode in ("I", "F"):
        return pil_image.convert("L")
    return pil_image.convert("RGB")  # palette, CMYK, YCbCr, LAB...


def _tiff_images(path: Path, name: str, count: int) -> Iterator[ocr_pb2.Image]:
    image_module = _import_pillow("splitting a multi-page TIFF")
    try:
        with image_module.open(path) as tiff:
            for index in range(count):
                tiff.seek(index)
                frame = _gray_or_rgb(tiff, image_module)
                channels = 1 if frame.mode == "L" else 3
                yield _raw_image(frame.width, frame.height, channels, frame.tobytes())
    except (OSError, EOFError, SyntaxError, ValueError) as exc:
        # Pillow reports broken files as any of these (SyntaxError for bad headers).
        raise DocumentError(f"{name}: cannot read the TIFF ({exc})") from exc


# --------------------------------------------------------------------------- PDF


def _pdf_scale(width_pt: float, height_pt: float, dpi: int, max_pixels: int | None) -> float:
    scale = dpi / _PDF_POINTS_PER_INCH
    area = width_pt * height_pt
    if max_pixels is None or area <= 0:
        return scale

    def pixels(s: float) -> int:  # the renderer rounds sizes up, at most
        return math.ceil(width_pt * s) * math.ceil(height_pt * s)

    if pixels(scale) > max_pixels:
        scale = math.sqrt(max_pixels / area)
        while pixels(scale) > max_pixels and scale > 1e-3:
            scale *= 0.995
    return scale


def _bitmap_bytes(bitmap: Any) -> bytes:
    """The bitmap's pixels without the row padding pdfium may add (RawImage has none)."""
    row = bitmap.width * bitmap.n_channels
    buffer = memoryview(bitmap.buffer).cast("B")
    if bitmap.stride == row:
        return buffer[: row * bitmap.height].tobytes()
    return b"".join(
        buffer[y * bitmap.stride : y * bitmap.stride + row] for y in range(bitmap.height)
    )


def _render_pdf_page(page: Any, where: str, dpi: int, max_pixels: int | None) -> ocr_pb2.Image:
    """One PDF page as a RawImage, RGB on white (``where`` names it in errors)."""
    width_pt, height_pt = page.get_size()
    scale = _pdf_scale(width_pt, height_pt, dpi, max_pixels)
    # rev_byteorder turns pdfium's BGR into RGB.
    bitmap = page.render(scale=scale, rev_byteorder=True)
    try:
        channels = bitmap.n_channels
        if channels not in (1, 3):
            raise DocumentError(f"{where} rendered with {channels} channels; expected gray or RGB")
        return _raw_image(bitmap.width, bitmap.height, channels, _bitmap_bytes(bitmap))
    finally:
        bitmap.close()


def _pdf_images(path: Path, name: str, dpi: int, max_pixels: int | None) -> Iterator[ocr_pb2.Image]:
    pdfium = _import_pdfium("rendering a PDF")
    pdf = _open_pdf(pdfium, path, name)
    try:
        for index in range(len(pdf)):
            page = pdf[index]
            try:
                image = _render_pdf_page(page, f"{name}: page {index + 1}", dpi, max_pixels)
            except pdfium.PdfiumError as exc:
                raise DocumentError(f"{name}: cannot render page {index + 1} ({exc})") from exc
            finally:
                page.close()
            yield image
    finally:
        pdf.close()
