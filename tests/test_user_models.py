"""A user model declared in a config file is checked on load, with errors that say what is off.

Uses the real default recognizer file as the "user's" ONNX model, paired with charsets and
heights that do and do not fit it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import onnxruntime
import pytest

from ocr_core.detection import TextDetector
from ocr_core.errors import ModelLoadError
from ocr_core.orientation import LineOrientation, PageOrientation
from ocr_core.preprocess import WidthBuckets, prepare_line
from ocr_core.recognizer import LineRecognizer, SessionConfig, _check_io
from ocr_core.registry import ModelRegistry, ModelSpec
from ocr_core.sessions import PooledModel
from tests.conftest import render_line

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_onnx() -> Path:
    return ModelRegistry.from_files().resolve("ppocr-v6-small").recognizer_path


def user_registry(tmp_path: Path, onnx: Path, body: str) -> ModelRegistry:
    config = tmp_path / "models.toml"
    config.write_text(f'[models.mine]\nrecognizer = "{onnx}"\n{body}', encoding="utf-8")
    return ModelRegistry.from_files(user_config=config)


def test_user_model_with_metadata_charset_loads_and_recognizes(tmp_path, real_onnx) -> None:
    spec = user_registry(tmp_path, real_onnx, 'charset_metadata_key = "character"\n').resolve(
        "mine"
    )
    rec = LineRecognizer.load(spec, SessionConfig(workers=1))
    assert rec.charset_size == 18708 and "user config" in rec.source
    # A real line, read exactly: a charset loaded in the wrong order or offset by one maps
    # every class to the wrong character, which a blank image (read as "") cannot show.
    text = "Hello World 2026"
    line = prepare_line(cv2.cvtColor(render_line(text), cv2.COLOR_GRAY2BGR), 48, WidthBuckets())
    read = rec.infer(0, [line])[0]
    assert read.text == text
    assert read.confidence > 0.5


def test_charset_that_does_not_match_the_output_classes_is_refused(tmp_path, real_onnx) -> None:
    (tmp_path / "dict.txt").write_text("a\nb\nc\n", encoding="utf-8")
    spec = user_registry(tmp_path, real_onnx, 'charset = "dict.txt"\n').resolve("mine")
    with pytest.raises(ModelLoadError, match=r"18710 classes but the charset has 3"):
        LineRecognizer.load(spec, SessionConfig(workers=1))


def test_wrong_input_height_is_refused(tmp_path, real_onnx) -> None:
    body = 'charset_metadata_key = "character"\ninput_height = 32\n'
    spec = user_registry(tmp_path, real_onnx, body).resolve("mine")
    with pytest.raises(ModelLoadError, match=r"input height is 48 but the model config says 32"):
        LineRecognizer.load(spec, SessionConfig(workers=1))


def test_a_file_that_is_not_onnx_is_refused_with_its_path(tmp_path) -> None:
    bogus = tmp_path / "rec.onnx"
    bogus.write_bytes(b"not a model")
    spec = user_registry(tmp_path, bogus, 'charset_metadata_key = "character"\n').resolve("mine")
    with pytest.raises(ModelLoadError, match="cannot load"):
        LineRecognizer.load(spec, SessionConfig(workers=1))


@pytest.mark.parametrize(
    ("cls", "wrong", "message"),
    [
        (PageOrientation, "line_classifier_path", r"first output \[N, 4\]"),
        (LineOrientation, "page_orientation_path", r"expected one input \[N, 3, 48, 192\]"),
        (TextDetector, "recognizer_path", r"expected one input \[1, 3, H, W\]"),
    ],
)
def test_a_page_model_file_in_the_wrong_role_is_refused_on_load(
    cls: type[PooledModel], wrong: str, message: str
) -> None:
    """Swapped files once loaded: a line classifier as the page classifier turned half the
    real pages by 270 degrees; others failed every page later, or the warm-up."""
    spec = ModelRegistry.from_files().resolve("ppocr-v6-small")
    right = {
        PageOrientation: spec.page_orientation_path,
        LineOrientation: spec.line_classifier_path,
        TextDetector: spec.detector_path,
    }[cls]
    assert right is not None
    cls.load(right, SessionConfig(workers=1), "model 'x' role")
    with pytest.raises(ModelLoadError, match=message) as info:
        cls.load(getattr(spec, wrong), SessionConfig(workers=1), "model 'x' role")
    assert "model 'x' role" in str(info.value) and "right file for this role" in str(info.value)


# ---------------------------------------------------------------- review, session 27


def test_a_charset_saved_with_a_byte_order_mark_reads_as_without(tmp_path, real_onnx) -> None:
    """Windows Notepad's UTF-8 starts with U+FEFF: it became part of the first character, so
    every '!' came out with an invisible character in front, and the load check passed."""
    meta = onnxruntime.InferenceSession(str(real_onnx)).get_modelmeta().custom_metadata_map
    chars = meta["character"]
    (tmp_path / "dict.txt").write_text("\ufeff" + chars, encoding="utf-8")
    spec = user_registry(tmp_path, real_onnx, 'charset = "dict.txt"\n').resolve("mine")
    recognizer = LineRecognizer.load(spec, SessionConfig(workers=1))
    assert recognizer.labels[1] == chars.split("\n")[0] and "\ufeff" not in recognizer.labels[1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("\u4e2d\n\u6587\n".encode("gb18030"), r"charset file .*dict.txt is not UTF-8 \(byte 0x"),
        (b"", r"charset file .*dict.txt is empty"),
        (b"\n\n", r"charset file .*dict.txt is empty"),
    ],
)
def test_a_charset_file_that_cannot_be_used_is_one_clear_error(
    tmp_path, real_onnx, content: bytes, message: str
) -> None:
    (tmp_path / "dict.txt").write_bytes(content)
    spec = user_registry(tmp_path, real_onnx, 'charset = "dict.txt"\n').resolve("mine")
    with pytest.raises(ModelLoadError, match=message):
        LineRecognizer.load(spec, SessionConfig(workers=1))


class _Node:
    def __init__(self, shape: list[object], type_: str = "tensor(float)") -> None:
        self.name, self.shape, self.type = "x", shape, type_


class _DeclaredSession:
    """An InferenceSession as far as the load checks look: declared inputs and outputs."""

    def __init__(self, input_shape: list[object], output_shape: list[object]) -> None:
        self._input, self._output = _Node(input_shape), _Node(output_shape)

    def get_inputs(self) -> list[_Node]:
        return [self._input]

    def get_outputs(self) -> list[_Node]:
        return [self._output]


@pytest.mark.parametrize(
    ("input_shape", "output_shape", "message"),
    [
        # PaddleOCR exports with a fixed batch or width loaded, then failed real calls
        ([1, 3, 48, "w"], ["n", "t", 5], r"fixes its batch 1; the server needs a dynamic"),
        (["n", 3, 48, 320], ["n", "t", 5], r"fixes its width 320"),
        ([1, 3, 48, 320], ["n", "t", 5], r"fixes its batch 1, width 320"),
        # a line classifier given as the recognizer, with 0 + 2 "classes"
        (["n", 3, 48, "w"], ["n", 5], r"output must be \[N, T, classes\]"),
    ],
)
def test_a_recognizer_whose_shapes_cannot_serve_lines_is_refused_on_load(
    input_shape: list[object], output_shape: list[object], message: str
) -> None:
    spec = ModelSpec(
        name="mine",
        description="",
        input_height=48,
        recognizer_path=Path("mine.onnx"),
        charset_path=None,
        charset_metadata_key="character",
        source="test",
    )
    with pytest.raises(ModelLoadError, match=message):
        _check_io(spec, _DeclaredSession(input_shape, output_shape), 3)  # type: ignore[arg-type]
    _check_io(spec, _DeclaredSession(["n", 3, 48, "w"], ["n", "t", 5]), 3)  # type: ignore[arg-type]
