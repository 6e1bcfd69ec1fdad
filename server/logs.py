"""Structured logging: text or JSON lines, each record tagged with the current request id.

The request id lives in a ContextVar set by the servicer for each call; asyncio tasks copy
the context, so every record logged while serving a call carries that call's id.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


def request_id_of(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The call's ``x-request-id`` (at most 64 characters), or a new random one."""
    for key, value in metadata or ():
        if key == "x-request-id" and value:
            return str(value)[:64]
    return uuid.uuid4().hex[:16]


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            # Which server process: with --processes N several write to the same stream.
            "pid": record.process,
            "msg": record.getMessage(),
        }
        for key in ("method", "status", "duration_ms", "lines", "model", "peer"):
            if hasattr(record, key):
                doc[key] = getattr(record, key)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    """Install one stderr handler on the root logger (called once by ``ocr-server``)."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        # The pid, as in JSON: with --processes N several servers write to one stream.
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s [%(process)d] %(levelname)s %(name)s [%(request_id)s] %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def quiet_grpc_core() -> None:
    """Keep gRPC's C core to its errors unless ``GRPC_VERBOSITY`` says otherwise.

    By default it writes an INFO line of its own format (not JSON, no request id) for each
    failed TLS handshake, so any port scanner or plaintext client filled the log. Only has
    an effect before grpc is first imported; ``GRPC_VERBOSITY=INFO`` brings those lines back.
    """
    if not os.environ.get("GRPC_VERBOSITY"):
        os.environ["GRPC_VERBOSITY"] = "ERROR"
