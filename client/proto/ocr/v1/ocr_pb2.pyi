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
    __slots__ = ("id", "line", "options")
    ID_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    line: Image
    options: StreamOptions
    def __init__(self, id: _Optional[str] = ..., line: _Optional[_Union[Image, _Mapping]] = ..., options: _Optional[_Union[StreamOptions, _Mapping]] = ...) -> None: ...

class StreamOptions(_message.Message):
    __slots__ = ("model", "ordered")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ORDERED_FIELD_NUMBER: _ClassVar[int]
    model: str
    ordered: bool
    def __init__(self, model: _Optional[str] = ..., ordered: _Optional[bool] = ...) -> None: ...

class StreamRecognizeResponse(_message.Message):
    __slots__ = ("id", "line", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    line: LineResult
    error: _status_pb2.Status
    def __init__(self, id: _Optional[str] = ..., line: _Optional[_Union[LineResult, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("max_lines_per_request", "max_image_pixels", "max_line_width", "max_message_bytes", "stream_max_in_flight")
    MAX_LINES_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_LINE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STREAM_MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    max_lines_per_request: int
    max_image_pixels: int
    max_line_width: int
    max_message_bytes: int
    stream_max_in_flight: int
    def __init__(self, max_lines_per_request: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_line_width: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., stream_max_in_flight: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "is_default", "charset_size", "input_height", "source")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    CHARSET_SIZE_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    is_default: bool
    charset_size: int
    input_height: int
    source: str
    def __init__(self, name: _Optional[str] = ..., is_default: _Optional[bool] = ..., charset_size: _Optional[int] = ..., input_height: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("batchers",)
    BATCHERS_FIELD_NUMBER: _ClassVar[int]
    batchers: _containers.RepeatedCompositeFieldContainer[BatcherStats]
    def __init__(self, batchers: _Optional[_Iterable[_Union[BatcherStats, _Mapping]]] = ...) -> None: ...

class BatcherStats(_message.Message):
    __slots__ = ("model", "lines_enqueued", "lines_inferred", "batches", "batch_size_counts", "queue_depth", "queue_capacity", "queue_wait_ms_total", "queue_wait_ms_max", "inference_ms_total", "content_pixels", "padded_pixels", "dropped_cancelled", "dropped_expired", "rejected_queue_full", "failed_batches")
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
    def __init__(self, model: _Optional[str] = ..., lines_enqueued: _Optional[int] = ..., lines_inferred: _Optional[int] = ..., batches: _Optional[int] = ..., batch_size_counts: _Optional[_Mapping[int, int]] = ..., queue_depth: _Optional[int] = ..., queue_capacity: _Optional[int] = ..., queue_wait_ms_total: _Optional[float] = ..., queue_wait_ms_max: _Optional[float] = ..., inference_ms_total: _Optional[float] = ..., content_pixels: _Optional[int] = ..., padded_pixels: _Optional[int] = ..., dropped_cancelled: _Optional[int] = ..., dropped_expired: _Optional[int] = ..., rejected_queue_full: _Optional[int] = ..., failed_batches: _Optional[int] = ...) -> None: ...
