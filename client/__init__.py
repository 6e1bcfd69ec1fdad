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
"""

from __future__ import annotations

from ocr_client.client import (
    AsyncOcrClient,
    LineResult,
    ModelInfo,
    OcrClient,
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
    "ServerBusy",
    "ServerError",
    "ServerUnavailable",
    "StreamItemResult",
    "Unauthenticated",
    "Word",
    "to_proto_image",
]
