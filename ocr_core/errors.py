"""Domain exceptions of the OCR core.

Each carries a ``kind`` the server maps to a gRPC status in one place; messages are written
for the person who sent the request and say what to change. They never embed tracebacks.
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(Enum):
    """What went wrong, independent of the transport."""

    INVALID_INPUT = "invalid_input"
    TOO_LARGE = "too_large"
    OVERLOADED = "overloaded"
    NOT_FOUND = "not_found"
    DEADLINE = "deadline"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    UNSUPPORTED = "unsupported"
    UNIMPLEMENTED = "unimplemented"


class OcrError(Exception):
    """Base of every error the core raises on purpose.

    ``image_index`` is set when the error is about one image of a request's list (see
    :func:`about_image`), so a caller can tell which one without reading the message.
    """

    kind: ErrorKind = ErrorKind.INTERNAL
    image_index: int | None = None


def about_image(exc: OcrError, index: int, count: int) -> OcrError:
    """``exc`` as the error of image ``index`` of a request's ``count`` images: the index in
    ``image_index`` and, when there are several images, in front of the message."""
    error = type(exc)(f"image {index}: {exc}" if count > 1 else str(exc))
    error.image_index = index
    return error


class InvalidInput(OcrError):
    """The request's content cannot be processed as sent (undecodable image, bad raw size)."""

    kind = ErrorKind.INVALID_INPUT


class TooLarge(OcrError):
    """The request exceeds a size limit (lines per request, pixels per image)."""

    kind = ErrorKind.TOO_LARGE


class Overloaded(OcrError):
    """The server has no room for the work right now (queue full); retry later."""

    kind = ErrorKind.OVERLOADED


class ModelNotFound(OcrError):
    """The requested model is not served or not known."""

    kind = ErrorKind.NOT_FOUND


class DeadlineExpired(OcrError):
    """The caller's deadline passed before the work ran; the work was dropped."""

    kind = ErrorKind.DEADLINE


class ShuttingDown(OcrError):
    """The batcher is closed or closing; the work was not run."""

    kind = ErrorKind.UNAVAILABLE


class ModelLoadError(OcrError):
    """A model file is missing, has the wrong hash, or does not fit the CTC recognizer contract."""

    kind = ErrorKind.INTERNAL


class InferenceFailed(OcrError):
    """Inference of a batch raised; every line of that batch fails with this."""

    kind = ErrorKind.INTERNAL


class Unsupported(OcrError):
    """The model cannot do what was asked (a page request to a recognizer-only model)."""

    kind = ErrorKind.UNSUPPORTED


class NotInstalled(OcrError):
    """This installation lacks an optional part the request needs (PDF support)."""

    kind = ErrorKind.UNIMPLEMENTED
