"""Documents: multi-page TIFF, PDF (optional pypdfium2) and single images, one page at a time.

A document is opened once (its pages counted and checked against the page limit before any
page is read) and its pages are then decoded or rendered one by one, so a long document
never holds more than the pages being worked on in memory.

PDFium is not thread-safe, so every PDFium call goes through a lock the caller owns (the
engine has one); TIFF decoding needs no lock.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ocr_core.errors import InvalidInput, NotInstalled, TooLarge
from ocr_core.images import decode_image, tiff_directory_size, to_bgr8

DEFAULT_PDF_DPI = 200
PDF_DPI_RANGE = (50, 600)
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*")
_BIGTIFF_MAGICS = (b"II+\x00", b"MM\x00+")
_MAX_IFDS = 100_000


@dataclass(frozen=True)
class DocumentLimits:
    max_pages: int = 1000
    max_image_pixels: int = 16_000_000


class Document:
    """An opened document; ``page(i)`` gives page ``i`` as HxWx3 uint8 BGR."""

    def __init__(self, page_count: int) -> None:
        self.page_count = page_count

    def page(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the document's resources (PDFium handles); safe to call twice."""


def pdf_supported() -> bool:
    """Whether this installation can read PDF files (the optional ``[pdf]`` extra)."""
    try:
        import pypdfium2  # noqa: F401
    except ImportError:
        return False
    return True


def open_document(
    data: bytes, limits: DocumentLimits, pdf_lock: threading.Lock, pdf_dpi: int = 0
) -> Document:
    """Open ``data`` as a document by its leading bytes (never by a file name)."""
    if not data:
        raise InvalidInput("the document is empty (0 bytes); send the file's bytes in `data`")
    if data[:4] in _BIGTIFF_MAGICS:
        raise InvalidInput(
            "BigTIFF (64-bit offsets) is not supported; save the document as a classic "
            "TIFF or a PDF, or send its pages one by one"
        )
    if data[:4] in _TIFF_MAGICS:
        doc: Document = _TiffDocument(data, limits)
    elif data[:5] == b"%PDF-":
        doc = _PdfDocument(data, limits, pdf_lock, pdf_dpi)
    else:
        doc = _ImageDocument(data, limits)
    if doc.page_count > limits.max_pages:
        doc.close()
        raise TooLarge(
            f"the document has {doc.page_count} pages, over the limit of {limits.max_pages}; "
            "split it into smaller documents"
        )
    return doc


class _ImageDocument(Document):
    def __init__(self, data: bytes, limits: DocumentLimits) -> None:
        super().__init__(1)
        self._data = data
        self._limits = limits

    def page(self, index: int) -> np.ndarray:
        return decode_image(self._data, self._limits.max_image_pixels)


class _TiffDocument(Document):
    def __init__(self, data: bytes, limits: DocumentLimits) -> None:
        self._sizes = tiff_page_sizes(data)
        super().__init__(len(self._sizes))
        self._buffer = np.frombuffer(data, dtype=np.uint8)
        self._limits = limits

    def page(self, index: int) -> np.ndarray:
        # The decoder allocates what the page's directory declares: check that first, so a
        # small file declaring a huge page is refused without its seconds and gigabytes.
        size = self._sizes[index]
        if size is None:
            raise InvalidInput(
                f"TIFF page {index + 1} of {self.page_count} declares no width and height; "
                "the file is corrupt"
            )
        width, height = size
        if width * height > self._limits.max_image_pixels:
            raise TooLarge(
                f"TIFF page {index + 1} is {width}x{height} = {width * height} pixels, "
                f"over the limit of {self._limits.max_image_pixels}"
            )
        ok, mats = cv2.imdecodemulti(self._buffer, cv2.IMREAD_UNCHANGED, range=(index, index + 1))
        if not ok or not mats:
            raise InvalidInput(f"TIFF page {index + 1} of {self.page_count} cannot be decoded")
        image = mats[0]
        pixels = int(image.shape[0]) * int(image.shape[1])
        if pixels > self._limits.max_image_pixels:
            raise TooLarge(
                f"TIFF page {index + 1} is {image.shape[1]}x{image.shape[0]} = {pixels} pixels, "
                f"over the limit of {self._limits.max_image_pixels}"
            )
        return to_bgr8(image)


def tiff_page_sizes(data: bytes) -> list[tuple[int, int] | None]:
    """Each page's declared (width, height), None where its directory has none, by walking
    the chain of image file directories (IFDs).

    OpenCV can decode one page of a buffer but cannot count them without decoding all;
    the IFD chain is a few bytes per page. Classic TIFF only (BigTIFF is refused clearly).
    """
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        raise InvalidInput("the TIFF file is truncated (shorter than its 8-byte header)")
    (offset,) = struct.unpack(order + "I", data[4:8])
    sizes: list[tuple[int, int] | None] = []
    seen: set[int] = set()
    while offset:
        if offset in seen or len(sizes) >= _MAX_IFDS:
            raise InvalidInput("the TIFF file's page directory chain loops; the file is corrupt")
        seen.add(offset)
        if offset + 2 > len(data):
            raise InvalidInput(
                f"the TIFF file is truncated: page {len(sizes) + 1}'s directory is past the end"
            )
        (entries,) = struct.unpack(order + "H", data[offset : offset + 2])
        next_at = offset + 2 + 12 * entries
        if next_at + 4 > len(data):
            raise InvalidInput(
                f"the TIFF file is truncated: page {len(sizes) + 1}'s directory is past the end"
            )
        sizes.append(tiff_directory_size(data, offset, order))
        (offset,) = struct.unpack(order + "I", data[next_at : next_at + 4])
    if not sizes:
        raise InvalidInput("the TIFF file has no pages")
    return sizes


class _PdfDocument(Document):
    def __init__(self, data: bytes, limits: DocumentLimits, lock: threading.Lock, dpi: int) -> None:
        try:
            import pypdfium2 as pdfium
        except ImportError:
            raise NotInstalled(
                "this server cannot read PDF files: it was installed without PDF support "
                "(install the server with the [pdf] extra), or send the pages as images"
            ) from None
        dpi = dpi or DEFAULT_PDF_DPI
        low, high = PDF_DPI_RANGE
        if not low <= dpi <= high:
            raise InvalidInput(f"pdf_dpi must be in {low}..{high}, got {dpi}")
        self._lock = lock
        self._limits = limits
        self._dpi = dpi
        with lock:
            try:
                self._pdf: Any = pdfium.PdfDocument(data)
            except pdfium.PdfiumError as exc:
                raise InvalidInput(f"the PDF file cannot be read: {exc}") from None
            count = len(self._pdf)
        super().__init__(count)
        if count == 0:
            self.close()
            raise InvalidInput("the PDF file has no pages")

    def page(self, index: int) -> np.ndarray:
        with self._lock:
            page = self._pdf[index]
            try:
                width_pt, height_pt = page.get_size()
                scale = self._dpi / 72.0
                pixels = width_pt * height_pt * scale * scale
                if pixels > self._limits.max_image_pixels:
                    # Render within the pixel limit rather than refuse: the page is fine, the
                    # requested resolution is just more than this server accepts.
                    scale *= (self._limits.max_image_pixels / pixels) ** 0.5
                bitmap = page.render(scale=scale, fill_color=(255, 255, 255, 255))
                image = np.array(bitmap.to_numpy(), copy=True)
                bitmap.close()
            finally:
                page.close()
        if image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        return to_bgr8(image)

    def close(self) -> None:
        pdf = getattr(self, "_pdf", None)
        if pdf is not None:
            with self._lock:
                pdf.close()
            self._pdf = None
