"""The client's exception tree.

Callers should not have to know gRPC to handle the errors that matter: "my input is bad",
"that model does not exist", "the server is busy, back off", "too slow", "server is gone".
Each gRPC status maps to one subclass of :class:`OcrClientError` here, in one place, so the
sync client, the async client and the per-item errors of a stream all agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "DeadlineExceeded",
    "InvalidRequest",
    "ModelNotFound",
    "OcrClientError",
    "ServerBusy",
    "ServerError",
    "ServerUnavailable",
    "Unauthenticated",
    "Unsupported",
    "from_rpc_error",
    "from_status",
]


class OcrClientError(Exception):
    """Base of every error the client raises for a failed call or a failed stream item.

    ``code`` is the gRPC status of the failure (``None`` when the error did not come from a
    status) and ``details`` the server's message, which says what to change.
    ``image_index`` is the position, in the call's images, of the image the failure is
    about, when the server named one (a ``google.rpc.BadRequest`` field violation on
    ``images[N]``); a caller with many images can then drop that one and resend the rest.
    """

    def __init__(
        self,
        details: str,
        code: grpc.StatusCode | None = None,
        image_index: int | None = None,
    ) -> None:
        super().__init__(details, code)
        self.details = details
        self.code = code
        self.image_index = image_index

    def __str__(self) -> str:
        return f"{self.details} ({self.code.name})" if self.code is not None else self.details


class InvalidRequest(OcrClientError):
    """INVALID_ARGUMENT: an image cannot be decoded, a raw buffer has the wrong size, a line
    is too long... The message names the offending image; resending unchanged will not help."""


class ModelNotFound(OcrClientError):
    """NOT_FOUND: the requested model is not served here (see ``list_models``)."""


class ServerBusy(OcrClientError):
    """RESOURCE_EXHAUSTED: the server's queue is full, or the request is over a size limit.

    A full queue is transient: retry with exponential backoff. A size limit is not: the
    message says which limit, and the request must be split or shrunk.
    """


class DeadlineExceeded(OcrClientError):
    """DEADLINE_EXCEEDED: the call's deadline passed; the server dropped its queued lines."""


class ServerUnavailable(OcrClientError):
    """UNAVAILABLE: the server cannot be reached or is shutting down; safe to retry."""


class Unauthenticated(OcrClientError):
    """UNAUTHENTICATED or PERMISSION_DENIED: the channel's credentials were refused."""


class Unsupported(OcrClientError):
    """FAILED_PRECONDITION or UNIMPLEMENTED: this server or model cannot do what was asked
    (pages from a ``--no-pages`` server or a recognizer-only model, a PDF on a server without
    PDF support). Retrying will not help: the message says which model or server can."""


class ServerError(OcrClientError):
    """Any other status (INTERNAL, UNKNOWN, CANCELLED...): a fault on the server side or in
    transport that the caller can only report (or retry)."""


_CLASS_BY_CODE: dict[grpc.StatusCode, type[OcrClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: ModelNotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ServerBusy,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: ServerUnavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: Unauthenticated,
    grpc.StatusCode.FAILED_PRECONDITION: Unsupported,
    grpc.StatusCode.UNIMPLEMENTED: Unsupported,
}

# google.rpc.Code numbers are the gRPC status numbers; grpc.StatusCode keeps the number as
# value[0] (value is (int, name)).
_STATUS_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


# The trailing-metadata key of the rich error model (google.rpc.Status, serialised).
STATUS_DETAILS_KEY = "grpc-status-details-bin"
_IMAGE_FIELD = re.compile(r"images\[(\d+)\]")


def _make(code: grpc.StatusCode, details: str, image_index: int | None = None) -> OcrClientError:
    return _CLASS_BY_CODE.get(code, ServerError)(details, code, image_index)


def image_index_of(trailing_metadata: Iterable[tuple[str, str | bytes]] | None) -> int | None:
    """The ``images[N]`` a failed call's ``google.rpc.Status`` details name, if any.

    Anything unexpected (no details, another kind of detail, bytes that do not parse) is
    ``None``: the index only adds to the message, which names the image too.
    """
    for key, value in trailing_metadata or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                request = error_details_pb2.BadRequest()
                if detail.Unpack(request):
                    for violation in request.field_violations:
                        if match := _IMAGE_FIELD.fullmatch(violation.field):
                            return int(match.group(1))
        except DecodeError:
            return None
    return None


def from_rpc_error(err: grpc.RpcError) -> OcrClientError:
    """The client exception for a failed call (sync ``RpcError`` or ``grpc.aio.AioRpcError``).

    ``grpc.RpcError`` itself promises no accessors; the errors grpc raises for calls are also
    ``grpc.Call`` objects with ``code()`` and ``details()``, so those are used when present.
    """
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    trailers_fn = getattr(err, "trailing_metadata", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else None
    index = image_index_of(trailers_fn()) if callable(trailers_fn) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return _make(code, details or str(err) or code.name, index)


def from_status(code: int, message: str) -> OcrClientError:
    """The client exception for a ``google.rpc.Status`` (a per-item error of a stream).

    ``code`` is a ``google.rpc.Code`` number; a number this grpc does not know becomes a
    :class:`ServerError` with code UNKNOWN rather than being dropped.
    """
    status_code = _STATUS_CODE_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    return _make(status_code, message or status_code.name)
