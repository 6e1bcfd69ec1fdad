from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ColorOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLOR_ORDER_UNSPECIFIED: _ClassVar[ColorOrder]
    COLOR_ORDER_RGB: _ClassVar[ColorOrder]
    COLOR_ORDER_BGR: _ClassVar[ColorOrder]
COLOR_ORDER_UNSPECIFIED: ColorOrder
COLOR_ORDER_RGB: ColorOrder
COLOR_ORDER_BGR: ColorOrder

class Image(_message.Message):
    __slots__ = ("data", "raw")
    DATA_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    raw: RawImage
    def __init__(self, data: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ...) -> None: ...

class RawImage(_message.Message):
    __slots__ = ("width", "height", "channels", "pixels", "color_order")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    COLOR_ORDER_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    channels: int
    pixels: bytes
    color_order: ColorOrder
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., channels: _Optional[int] = ..., pixels: _Optional[bytes] = ..., color_order: _Optional[_Union[ColorOrder, str]] = ...) -> None: ...

class RecognizeLinesRequest(_message.Message):
    __slots__ = ("images", "model")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    model: str
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class RecognizeLinesResponse(_message.Message):
    __slots__ = ("results", "model")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[LineResult]
    model: str
    def __init__(self, results: _Optional[_Iterable[_Union[LineResult, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class LineResult(_message.Message):
    __slots__ = ("text", "confidence", "words")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    text: str
    confidence: float
    words: _containers.RepeatedCompositeFieldContainer[Word]
    def __init__(self, text: _Optional[str] = ..., confidence: _Optional[float] = ..., words: _Optional[_Iterable[_Union[Word, _Mapping]]] = ...) -> None: ...

class Word(_message.Message):
    __slots__ = ("text", "confidence", "x_start", "x_end")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    X_START_FIELD_NUMBER: _ClassVar[int]
    X_END_FIELD_NUMBER: _ClassVar[int]
    text: str
    confidence: float
    x_start: int
    x_end: int
    def __init__(self, text: _Optional[str] = ..., confidence: _Optional[float] = ..., x_start: _Optional[int] = ..., x_end: _Optional[int] = ...) -> None: ...

class StreamRecognizeRequest(_message.Message):
    __slots__ = ("id", "line", "page", "options")
    ID_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    line: Image
    page: Image
    options: StreamOptions
    def __init__(self, id: _Optional[str] = ..., line: _Optional[_Union[Image, _Mapping]] = ..., page: _Optional[_Union[Image, _Mapping]] = ..., options: _Optional[_Union[StreamOptions, _Mapping]] = ...) -> None: ...

class StreamOptions(_message.Message):
    __slots__ = ("model", "ordered", "page_options")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ORDERED_FIELD_NUMBER: _ClassVar[int]
    PAGE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    ordered: bool
    page_options: PageOptions
    def __init__(self, model: _Optional[str] = ..., ordered: _Optional[bool] = ..., page_options: _Optional[_Union[PageOptions, _Mapping]] = ...) -> None: ...

class StreamRecognizeResponse(_message.Message):
    __slots__ = ("id", "line", "page", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    line: LineResult
    page: PageResult
    error: _status_pb2.Status
    def __init__(self, id: _Optional[str] = ..., line: _Optional[_Union[LineResult, _Mapping]] = ..., page: _Optional[_Union[PageResult, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class RecognizePageRequest(_message.Message):
    __slots__ = ("image", "model", "options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: Image
    model: str
    options: PageOptions
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., model: _Optional[str] = ..., options: _Optional[_Union[PageOptions, _Mapping]] = ...) -> None: ...

class RecognizeDocumentRequest(_message.Message):
    __slots__ = ("data", "model", "options", "pdf_dpi")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PDF_DPI_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    model: str
    options: PageOptions
    pdf_dpi: int
    def __init__(self, data: _Optional[bytes] = ..., model: _Optional[str] = ..., options: _Optional[_Union[PageOptions, _Mapping]] = ..., pdf_dpi: _Optional[int] = ...) -> None: ...

class PageOptions(_message.Message):
    __slots__ = ("max_side", "pixel_threshold", "box_threshold", "unclip_ratio", "min_line_height", "correct_page_rotation", "correct_line_rotation", "min_confidence")
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    PIXEL_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BOX_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    UNCLIP_RATIO_FIELD_NUMBER: _ClassVar[int]
    MIN_LINE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CORRECT_PAGE_ROTATION_FIELD_NUMBER: _ClassVar[int]
    CORRECT_LINE_ROTATION_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    max_side: int
    pixel_threshold: float
    box_threshold: float
    unclip_ratio: float
    min_line_height: int
    correct_page_rotation: bool
    correct_line_rotation: bool
    min_confidence: float
    def __init__(self, max_side: _Optional[int] = ..., pixel_threshold: _Optional[float] = ..., box_threshold: _Optional[float] = ..., unclip_ratio: _Optional[float] = ..., min_line_height: _Optional[int] = ..., correct_page_rotation: _Optional[bool] = ..., correct_line_rotation: _Optional[bool] = ..., min_confidence: _Optional[float] = ...) -> None: ...

class PageResult(_message.Message):
    __slots__ = ("page_index", "width", "height", "rotation", "lines", "blocks", "text", "model", "lines_left_out")
    PAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LINES_LEFT_OUT_FIELD_NUMBER: _ClassVar[int]
    page_index: int
    width: int
    height: int
    rotation: int
    lines: _containers.RepeatedCompositeFieldContainer[PageLine]
    blocks: _containers.RepeatedCompositeFieldContainer[TextBlock]
    text: str
    model: str
    lines_left_out: int
    def __init__(self, page_index: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., rotation: _Optional[int] = ..., lines: _Optional[_Iterable[_Union[PageLine, _Mapping]]] = ..., blocks: _Optional[_Iterable[_Union[TextBlock, _Mapping]]] = ..., text: _Optional[str] = ..., model: _Optional[str] = ..., lines_left_out: _Optional[int] = ...) -> None: ...

class PageLine(_message.Message):
    __slots__ = ("text", "confidence", "box", "bounds", "words", "block", "upside_down")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    UPSIDE_DOWN_FIELD_NUMBER: _ClassVar[int]
    text: str
    confidence: float
    box: Quad
    bounds: Rect
    words: _containers.RepeatedCompositeFieldContainer[PageWord]
    block: int
    upside_down: bool
    def __init__(self, text: _Optional[str] = ..., confidence: _Optional[float] = ..., box: _Optional[_Union[Quad, _Mapping]] = ..., bounds: _Optional[_Union[Rect, _Mapping]] = ..., words: _Optional[_Iterable[_Union[PageWord, _Mapping]]] = ..., block: _Optional[int] = ..., upside_down: _Optional[bool] = ...) -> None: ...

class PageWord(_message.Message):
    __slots__ = ("text", "confidence", "box", "bounds")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    text: str
    confidence: float
    box: Quad
    bounds: Rect
    def __init__(self, text: _Optional[str] = ..., confidence: _Optional[float] = ..., box: _Optional[_Union[Quad, _Mapping]] = ..., bounds: _Optional[_Union[Rect, _Mapping]] = ...) -> None: ...

class TextBlock(_message.Message):
    __slots__ = ("bounds", "lines")
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    bounds: Rect
    lines: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, bounds: _Optional[_Union[Rect, _Mapping]] = ..., lines: _Optional[_Iterable[int]] = ...) -> None: ...

class Quad(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[Point]
    def __init__(self, points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ...) -> None: ...

class Rect(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "limits")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    limits: ServerLimits
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ...) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("max_lines_per_request", "max_image_pixels", "max_line_width", "max_message_bytes", "stream_max_in_flight", "max_document_pages", "pdf_support", "max_lines_per_page")
    MAX_LINES_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_LINE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STREAM_MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCUMENT_PAGES_FIELD_NUMBER: _ClassVar[int]
    PDF_SUPPORT_FIELD_NUMBER: _ClassVar[int]
    MAX_LINES_PER_PAGE_FIELD_NUMBER: _ClassVar[int]
    max_lines_per_request: int
    max_image_pixels: int
    max_line_width: int
    max_message_bytes: int
    stream_max_in_flight: int
    max_document_pages: int
    pdf_support: bool
    max_lines_per_page: int
    def __init__(self, max_lines_per_request: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_line_width: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., stream_max_in_flight: _Optional[int] = ..., max_document_pages: _Optional[int] = ..., pdf_support: _Optional[bool] = ..., max_lines_per_page: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "is_default", "charset_size", "input_height", "source", "supports_pages", "supports_page_rotation", "supports_line_rotation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    CHARSET_SIZE_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_PAGES_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_PAGE_ROTATION_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_LINE_ROTATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    is_default: bool
    charset_size: int
    input_height: int
    source: str
    supports_pages: bool
    supports_page_rotation: bool
    supports_line_rotation: bool
    def __init__(self, name: _Optional[str] = ..., is_default: _Optional[bool] = ..., charset_size: _Optional[int] = ..., input_height: _Optional[int] = ..., source: _Optional[str] = ..., supports_pages: _Optional[bool] = ..., supports_page_rotation: _Optional[bool] = ..., supports_line_rotation: _Optional[bool] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("batchers",)
    BATCHERS_FIELD_NUMBER: _ClassVar[int]
    batchers: _containers.RepeatedCompositeFieldContainer[BatcherStats]
    def __init__(self, batchers: _Optional[_Iterable[_Union[BatcherStats, _Mapping]]] = ...) -> None: ...

class BatcherStats(_message.Message):
    __slots__ = ("model", "lines_enqueued", "lines_inferred", "batches", "batch_size_counts", "queue_depth", "queue_capacity", "queue_wait_ms_total", "queue_wait_ms_max", "inference_ms_total", "content_pixels", "padded_pixels", "dropped_cancelled", "dropped_expired", "rejected_queue_full", "failed_batches", "idle_batches")
    class BatchSizeCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LINES_ENQUEUED_FIELD_NUMBER: _ClassVar[int]
    LINES_INFERRED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_MS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_MS_MAX_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CONTENT_PIXELS_FIELD_NUMBER: _ClassVar[int]
    PADDED_PIXELS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_QUEUE_FULL_FIELD_NUMBER: _ClassVar[int]
    FAILED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    IDLE_BATCHES_FIELD_NUMBER: _ClassVar[int]
    model: str
    lines_enqueued: int
    lines_inferred: int
    batches: int
    batch_size_counts: _containers.ScalarMap[int, int]
    queue_depth: int
    queue_capacity: int
    queue_wait_ms_total: float
    queue_wait_ms_max: float
    inference_ms_total: float
    content_pixels: int
    padded_pixels: int
    dropped_cancelled: int
    dropped_expired: int
    rejected_queue_full: int
    failed_batches: int
    idle_batches: int
    def __init__(self, model: _Optional[str] = ..., lines_enqueued: _Optional[int] = ..., lines_inferred: _Optional[int] = ..., batches: _Optional[int] = ..., batch_size_counts: _Optional[_Mapping[int, int]] = ..., queue_depth: _Optional[int] = ..., queue_capacity: _Optional[int] = ..., queue_wait_ms_total: _Optional[float] = ..., queue_wait_ms_max: _Optional[float] = ..., inference_ms_total: _Optional[float] = ..., content_pixels: _Optional[int] = ..., padded_pixels: _Optional[int] = ..., dropped_cancelled: _Optional[int] = ..., dropped_expired: _Optional[int] = ..., rejected_queue_full: _Optional[int] = ..., failed_batches: _Optional[int] = ..., idle_batches: _Optional[int] = ...) -> None: ...
