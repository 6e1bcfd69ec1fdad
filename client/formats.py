"""Writers of page results as plain text, JSON, hOCR and ALTO XML v4.

Every writer takes the pages of a run as a sequence of ``(source, page)`` pairs, ``source``
being the file the page came from (as the user named it) and ``page`` an ``ocr.v1.PageResult``
whose ``page_index`` is the page's index in that file, and returns the whole document as a
string. Pages are written in the order given.

- ``txt``: each page's ``text``, ended by a newline, then a form feed (``\\f``) after every
  page, as Tesseract and pdftotext write pages: splitting the output on ``\\f`` gives one
  string per page (an empty page is an empty string), and the last piece is empty.
- ``json``: one document, ``{"pages": [{"source", "pageIndex", "result"}, ...]}`` where
  ``result`` is the page in the proto's canonical JSON mapping (``json_format``, so field
  names are the proto's JSON names, ``pageIndex``, ``upsideDown``...), every field present.
- ``hocr``: XHTML with one ``ocr_page`` per page (``image`` names the source file, ``ppageno``
  is the page's index in it, from 0), ``ocr_carea`` and ``ocr_par`` per block, ``ocr_line``,
  and ``ocrx_word`` with ``x_wconf`` (0..100). Lines whose quadrilateral is not the upright
  rectangle of their bbox also carry ``poly``; lines of a rotated page or turned upside down
  carry ``textangle`` (degrees counterclockwise, as the text lies in the image). Words
  without text are left out (an empty element would be misread by HTML parsers).
- ``alto``: ALTO 4.2, valid against every ALTO 4.x schema (``MeasurementUnit`` pixel), one
  ``Page`` per page with ``PHYSICAL_IMG_NR`` = the page's number in its source file (from
  1), a ``PrintSpace`` covering the page, one ``TextBlock`` per block, ``TextLine``, and
  ``String`` per word with ``WC`` (0..1) and ``SP`` between words.
  ``sourceImageInformation/fileName`` is set when all pages come from one file (ALTO has
  one per document).

All XML is built with ``xml.etree``, which escapes text and attribute values; characters that
XML 1.0 cannot carry at all (control characters, lone surrogates in file names) are replaced
by U+FFFD, so the output is always well-formed.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from google.protobuf import json_format

from ocr_client.proto.ocr.v1 import ocr_pb2

__all__ = [
    "ALTO_NAMESPACE",
    "ALTO_SCHEMA_LOCATION",
    "FORMATS",
    "OCR_SYSTEM",
    "FormatName",
    "PageEntry",
    "to_alto",
    "to_hocr",
    "to_json",
    "to_text",
    "write",
]

PageEntry: TypeAlias = tuple[str, ocr_pb2.PageResult]
FormatName: TypeAlias = Literal["txt", "json", "hocr", "alto"]

OCR_SYSTEM = "grpc-ocr-server"
ALTO_NAMESPACE = "http://www.loc.gov/standards/alto/ns-v4#"
ALTO_SCHEMA_LOCATION = "http://www.loc.gov/standards/alto/v4/alto-4-2.xsd"
_XSI_NAMESPACE = "http://www.w3.org/2001/XMLSchema-instance"
_XHTML_NAMESPACE = "http://www.w3.org/1999/xhtml"
# Tesseract's hOCR prologue, which hOCR consumers are written against.
_HOCR_PROLOGUE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
    '    "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
)
_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
_HOCR_CAPABILITIES = "ocr_page ocr_carea ocr_par ocr_line ocrx_word ocrp_wconf ocrp_poly"
PAGE_SEPARATOR = "\f"

# Everything outside XML 1.0's Char production.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# What cannot stand inside a quoted hOCR title string: the quote, the property separator,
# the escape and percent characters, and control characters.
_NOT_HOCR_STRING_CHAR = re.compile('[%";\\\\\x00-\x1f\x7f]')


def _xml_text(text: str) -> str:
    return _NOT_XML_CHAR.sub("\ufffd", text)


def _hocr_string(text: str) -> str:
    """A file name as an hOCR title string: characters that would end the string or the
    property are percent-encoded (UTF-8), which keeps it a valid relative URL of the file."""

    def encode(match: re.Match[str]) -> str:
        return "".join(f"%{b:02X}" for b in match.group().encode("utf-8"))

    return '"' + _NOT_HOCR_STRING_CHAR.sub(encode, _xml_text(text)) + '"'


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True, slots=True)
class _Box:
    """An axis-aligned box in page pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    @classmethod
    def of(cls, rect: ocr_pb2.Rect) -> _Box:
        return cls(rect.x, rect.y, max(rect.width, 0), max(rect.height, 0))

    @classmethod
    def union(cls, boxes: Sequence[_Box]) -> _Box:
        if not boxes:
            return cls(0, 0, 0, 0)
        x0 = min(b.x for b in boxes)
        y0 = min(b.y for b in boxes)
        x1 = max(b.x + b.w for b in boxes)
        y1 = max(b.y + b.h for b in boxes)
        return cls(x0, y0, x1 - x0, y1 - y0)

    def hocr(self) -> str:
        return f"bbox {self.x} {self.y} {self.x + self.w} {self.y + self.h}"

    def alto(self) -> dict[str, str]:
        return {
            "HPOS": str(self.x),
            "VPOS": str(self.y),
            "WIDTH": str(self.w),
            "HEIGHT": str(self.h),
        }


def _is_upright_rect(quad: ocr_pb2.Quad, box: _Box) -> bool:
    """Whether the quad is just its bbox (then a polygon would say nothing more)."""
    x0, y0, x1, y1 = box.x, box.y, box.x + box.w, box.y + box.h
    corners = {(x0, y0), (x1, y0), (x1, y1), (x0, y1)}
    return len(quad.points) != 4 or {(p.x, p.y) for p in quad.points} == corners


@dataclass(frozen=True, slots=True)
class _Word:
    text: str
    confidence: float
    box: _Box


def _words(line: ocr_pb2.PageLine) -> list[_Word]:
    """The line's words; a line without words is one word (both formats want words)."""
    if line.words:
        return [_Word(w.text, w.confidence, _Box.of(w.bounds)) for w in line.words]
    return [_Word(line.text, line.confidence, _Box.of(line.bounds))]


def _blocks(page: ocr_pb2.PageResult) -> list[tuple[_Box, list[int]]]:
    """The page's blocks as (bounds, line indexes), each line in exactly one block.

    Indexes out of range or already used are skipped, and lines no block names go into a
    last block of their own, so a page whose blocks are missing or inconsistent still has
    every line written once.
    """
    count = len(page.lines)
    used: set[int] = set()
    groups: list[tuple[_Box, list[int]]] = []
    for block in page.blocks:
        indexes = [i for i in block.lines if i < count and i not in used]
        if not indexes:
            continue
        used.update(indexes)
        box = _Box.of(block.bounds)
        if box.w == 0 or box.h == 0:
            box = _Box.union([_Box.of(page.lines[i].bounds) for i in indexes])
        groups.append((box, indexes))
    rest = [i for i in range(count) if i not in used]
    if rest:
        groups.append((_Box.union([_Box.of(page.lines[i].bounds) for i in rest]), rest))
    return groups


def _text_angle(page: ocr_pb2.PageResult, line: ocr_pb2.PageLine) -> int:
    """Counterclockwise angle of the line's text in the image: the page is turned clockwise
    by ``rotation`` to be upright, so its text lies turned that much counterclockwise."""
    return (page.rotation + (180 if line.upside_down else 0)) % 360


def _models(pages: Sequence[PageEntry]) -> list[str]:
    return list(dict.fromkeys(p.model for _, p in pages if p.model))


def _sources(pages: Sequence[PageEntry]) -> list[str]:
    return list(dict.fromkeys(source for source, _ in pages))


def _confidence(value: float) -> float:
    return min(max(value, 0.0), 1.0)


# --------------------------------------------------------------------------- text and JSON


def to_text(pages: Sequence[PageEntry]) -> str:
    """Each page's text, newline-ended, then a form feed after every page (see module doc)."""
    out: list[str] = []
    for _, page in pages:
        text = page.text
        if text and not text.endswith("\n"):
            text += "\n"
        out.append(text + PAGE_SEPARATOR)
    return "".join(out)


def to_json(pages: Sequence[PageEntry]) -> str:
    """``{"pages": [{"source", "pageIndex", "result"}]}``; ``result`` parses back into a
    PageResult with ``json_format.ParseDict``."""
    doc = {
        "pages": [
            {
                "source": source,
                "pageIndex": page.page_index,
                "result": json_format.MessageToDict(
                    page, always_print_fields_with_no_presence=True
                ),
            }
            for source, page in pages
        ]
    }
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


# --------------------------------------------------------------------------- hOCR


def _sub(parent: ET.Element, tag: str, attrib: dict[str, str], tail: str = "\n") -> ET.Element:
    element = ET.SubElement(parent, tag, {k: _xml_text(v) for k, v in attrib.items()})
    element.tail = tail
    return element


def _hocr_page(body: ET.Element, number: int, source: str, page: ocr_pb2.PageResult) -> None:
    page_box = _Box(0, 0, page.width, page.height)
    title = f"image {_hocr_string(source)}; {page_box.hocr()}; ppageno {page.page_index}"
    page_el = _sub(body, "div", {"class": "ocr_page", "id": f"page_{number}", "title": title})
    page_el.text = "\n"
    # Words without text are left out, and so are lines and blocks left empty by that: an
    # element without content would be written <span/>, which HTML parsers (most hOCR
    # consumers) read as an opening tag that swallows what follows. hOCR is about text
    # positions; an empty word has none to give.
    blocks: list[tuple[_Box, list[tuple[int, list[_Word]]]]] = []
    for block_box, indexes in _blocks(page):
        lines = [(i, [w for w in _words(page.lines[i]) if w.text]) for i in indexes]
        lines = [(i, words) for i, words in lines if words]
        if lines:
            blocks.append((block_box, lines))
    for b, (block_box, lines) in enumerate(blocks, start=1):
        ids = f"{number}_{b}"
        attrs = {"class": "ocr_carea", "id": f"block_{ids}", "title": block_box.hocr()}
        carea = _sub(page_el, "div", attrs)
        carea.text = "\n"
        par = _sub(carea, "p", {"class": "ocr_par", "id": f"par_{ids}", "title": block_box.hocr()})
        par.text = "\n"
        for i, words in lines:
            line = page.lines[i]
            line_box = _Box.of(line.bounds)
            props = [line_box.hocr()]
            if not _is_upright_rect(line.box, line_box):
                props.append("poly " + " ".join(f"{p.x} {p.y}" for p in line.box.points))
            angle = _text_angle(page, line)
            if angle:
                props.append(f"textangle {angle}")
            line_id = f"line_{number}_{i + 1}"
            attrs = {"class": "ocr_line", "id": line_id, "title": "; ".join(props)}
            line_el = _sub(par, "span", attrs)
            for w, word in enumerate(words, start=1):
                conf = round(_confidence(word.confidence) * 100)
                title = f"{word.box.hocr()}; x_wconf {conf}"
                attrs = {"class": "ocrx_word", "id": f"word_{number}_{i + 1}_{w}", "title": title}
                word_el = _sub(line_el, "span", attrs, tail=" " if w < len(words) else "")
                word_el.text = _xml_text(word.text)


def to_hocr(pages: Sequence[PageEntry]) -> str:
    """An hOCR 1.2 document (XHTML) with one ``ocr_page`` per page; needs at least one page
    (hOCR has no empty document)."""
    if not pages:
        raise ValueError("an hOCR document needs at least one page")
    html = ET.Element("html", {"xmlns": _XHTML_NAMESPACE})
    html.text = "\n"
    head = _sub(html, "head", {})
    head.text = "\n"
    _sub(head, "title", {}).text = _xml_text("OCR: " + ", ".join(_sources(pages)))
    _sub(head, "meta", {"http-equiv": "Content-Type", "content": "text/html; charset=utf-8"})
    system = " ".join([OCR_SYSTEM, *_models(pages)])
    _sub(head, "meta", {"name": "ocr-system", "content": system})
    _sub(head, "meta", {"name": "ocr-capabilities", "content": _HOCR_CAPABILITIES})
    _sub(head, "meta", {"name": "ocr-number-of-pages", "content": str(len(pages))})
    # The models read several scripts and say nothing of language or script, so these
    # recommended fields say "undetermined": BCP 47 "und" and ISO 15924 "Zyyy".
    _sub(head, "meta", {"name": "ocr-langs", "content": "und"})
    _sub(head, "meta", {"name": "ocr-scripts", "content": "Zyyy"})
    body = _sub(html, "body", {})
    body.text = "\n"
    for number, (source, page) in enumerate(pages, start=1):
        _hocr_page(body, number, source, page)
    return _HOCR_PROLOGUE + ET.tostring(html, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- ALTO


def _alto_description(root: ET.Element, pages: Sequence[PageEntry]) -> None:
    description = _sub(root, "Description", {})
    _sub(description, "MeasurementUnit", {}).text = "pixel"
    sources = _sources(pages)
    if len(sources) == 1:
        info = _sub(description, "sourceImageInformation", {})
        _sub(info, "fileName", {}).text = _xml_text(sources[0])
    # No processingCategory: ALTO 4.0 does not have it, and without it the document is
    # valid against every 4.x schema.
    processing = _sub(description, "Processing", {"ID": "OCR_0"})
    models = _models(pages)
    if models:
        settings = _sub(processing, "processingStepSettings", {})
        settings.text = _xml_text("model=" + ",".join(models))
    software = _sub(processing, "processingSoftware", {})
    _sub(software, "softwareName", {}).text = OCR_SYSTEM


def _alto_polygon(parent: ET.Element, quad: ocr_pb2.Quad, box: _Box) -> None:
    if not _is_upright_rect(quad, box):
        shape = _sub(parent, "Shape", {})
        points = " ".join(f"{p.x},{p.y}" for p in quad.points)
        _sub(shape, "Polygon", {"POINTS": points})


def _alto_page(layout: ET.Element, number: int, page: ocr_pb2.PageResult) -> None:
    attrs = {
        "ID": f"page_{number}",
        "PHYSICAL_IMG_NR": str(page.page_index + 1),
        "WIDTH": str(page.width),
        "HEIGHT": str(page.height),
        "PROCESSING": "OCR_0",
    }
    page_el = _sub(layout, "Page", attrs)
    space = _sub(page_el, "PrintSpace", _Box(0, 0, page.width, page.height).alto())
    for b, (block_box, indexes) in enumerate(_blocks(page), start=1):
        block_attrs = {"ID": f"block_{number}_{b}", **block_box.alto()}
        if page.rotation:
            block_attrs["ROTATION"] = str(page.rotation)
        block = _sub(space, "TextBlock", block_attrs)
        for i in indexes:
            line = page.lines[i]
            line_box = _Box.of(line.bounds)
            line_el = _sub(block, "TextLine", {"ID": f"line_{number}_{i + 1}", **line_box.alto()})
            _alto_polygon(line_el, line.box, line_box)
            words = _words(line)
            for w, word in enumerate(words, start=1):
                string_attrs = {
                    "ID": f"string_{number}_{i + 1}_{w}",
                    "CONTENT": word.text,
                    "WC": f"{_confidence(word.confidence):.4f}",
                    **word.box.alto(),
                }
                _sub(line_el, "String", string_attrs)
                if w < len(words):  # the space up to the next word
                    left = word.box
                    gap = words[w].box.x - (left.x + left.w)
                    sp_attrs = {"HPOS": str(left.x + left.w), "VPOS": str(left.y)}
                    if gap > 0:
                        sp_attrs["WIDTH"] = str(gap)
                    _sub(line_el, "SP", sp_attrs)


def to_alto(pages: Sequence[PageEntry]) -> str:
    """An ALTO 4.2 document with one ``Page`` per page; needs at least one page (ALTO's
    ``Layout`` holds one or more)."""
    if not pages:
        raise ValueError("an ALTO document needs at least one page")
    root = ET.Element(
        "alto",
        {
            "xmlns": ALTO_NAMESPACE,
            "xmlns:xsi": _XSI_NAMESPACE,
            "xsi:schemaLocation": f"{ALTO_NAMESPACE} {ALTO_SCHEMA_LOCATION}",
            "SCHEMAVERSION": "4.2",
        },
    )
    root.text = "\n"
    _alto_description(root, pages)
    layout = _sub(root, "Layout", {})
    for number, (_, page) in enumerate(pages, start=1):
        _alto_page(layout, number, page)
    ET.indent(root)
    return _XML_DECLARATION + ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- dispatch

_WRITERS: dict[str, Callable[[Sequence[PageEntry]], str]] = {
    "txt": to_text,
    "json": to_json,
    "hocr": to_hocr,
    "alto": to_alto,
}
FORMATS: tuple[str, ...] = tuple(_WRITERS)


def write(fmt: FormatName | str, pages: Sequence[PageEntry]) -> str:
    """The document for ``fmt`` (one of :data:`FORMATS`)."""
    try:
        writer = _WRITERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}") from None
    return writer(pages)
