"""The one place where errors become gRPC status codes.

Domain errors (``ocr_core.errors``) carry a kind and a message written for the caller; they
map to a code here. Anything else is a bug: it becomes INTERNAL with a generic message that
names the request id, and the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from ocr_core.errors import ErrorKind, OcrError

log = logging.getLogger(__name__)

_CODES: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.DEADLINE: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorKind.UNSUPPORTED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
}


def status_for(exc: BaseException, request_id: str) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-facing message for ``exc``; logs what the caller must not see."""
    if isinstance(exc, OcrError):
        code = _CODES[exc.kind]
        if code is grpc.StatusCode.INTERNAL:
            log.error("internal error: %s", exc)
            return code, f"{exc} (request id {request_id})"
        return code, str(exc)
    log.error("unexpected error", exc_info=exc)
    return (
        grpc.StatusCode.INTERNAL,
        f"internal server error (request id {request_id}); the server logged the details",
    )


def status_details(exc: BaseException, code: grpc.StatusCode, message: str) -> bytes | None:
    """The status details naming the image ``exc`` is about (``image_status_details``), or
    None when it is about no one image."""
    index = exc.image_index if isinstance(exc, OcrError) else None
    return None if index is None else image_status_details(index, code, message)


def image_status_details(index: int, code: grpc.StatusCode, message: str) -> bytes:
    """``google.rpc.Status`` bytes with a ``google.rpc.BadRequest`` field violation on
    ``images[index]``, for the ``STATUS_DETAILS_KEY`` trailer.

    AIP-193's shape, which grpcurl prints and ``ocr_client.errors.image_index_of`` reads, so
    a caller with many images can drop the refused one and resend the rest without parsing
    the message. The status repeats the call's code and message, as the gRPC spec requires
    of these details.
    """
    violation = error_details_pb2.BadRequest.FieldViolation(
        field=f"images[{index}]", description=message
    )
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return status_pb2.Status(
        code=code.value[0], message=message, details=[detail]
    ).SerializeToString()
