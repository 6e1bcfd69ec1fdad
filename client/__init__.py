"""Client for the OCR gRPC service (``ocr.v1.OcrService``).

Needs only grpcio, protobuf and googleapis-common-protos; numpy arrays are accepted when
numpy is installed, but never required::

    from ocr_client import OcrClient

    with OcrClient("localhost:50051", timeout=10) as client:
        client.wait_ready()
        for line in client.recognize_lines(["line1.png", "line2.png"]):
            print(line.text, line.confidence)

``AsyncOcrClient`` has the same methods for asyncio (``async with``, ``await``,
``async for``). Failures raise subclasses of :class:`OcrClientError`.

Pages: ``recognize_page`` and ``recognize_document`` return ``PageResult`` messages;
``stream_recognize`` takes ``Page(image, id)`` items beside line images.
``ocr_client.documents`` splits TIFF/PDF files into pages (extra ``[documents]``) and
``ocr_client.formats`` writes results as text, JSON, hOCR or ALTO.
"""

from __future__ import annotations

from ocr_client.auth import tls_credentials
from ocr_client.client import (
    AsyncOcrClient,
    LineResult,
    ModelInfo,
    OcrClient,
    Page,
    PageOptions,
    PageResult,
    StreamItemResult,
    Word,
)
from ocr_client.errors import (
    DeadlineExceeded,
    InvalidRequest,
    ModelNotFound,
    OcrClientError,
    ServerBusy,
    ServerError,
    ServerUnavailable,
    Unauthenticated,
    Unsupported,
)
from ocr_client.images import to_proto_image

__all__ = [
    "AsyncOcrClient",
    "DeadlineExceeded",
    "InvalidRequest",
    "LineResult",
    "ModelInfo",
    "ModelNotFound",
    "OcrClient",
    "OcrClientError",
    "Page",
    "PageOptions",
    "PageResult",
    "ServerBusy",
    "ServerError",
    "ServerUnavailable",
    "StreamItemResult",
    "Unauthenticated",
    "Unsupported",
    "Word",
    "tls_credentials",
    "to_proto_image",
]
