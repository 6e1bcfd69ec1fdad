"""JSON log lines: one object per record, with what an operator filters on."""

from __future__ import annotations

import json
import logging
import os

from ocr_server.logs import _JsonFormatter, request_id_var


def test_a_json_line_names_the_process_and_the_request() -> None:
    token = request_id_var.set("req-7")
    try:
        record = logging.LogRecord("ocr_server.app", logging.INFO, "f.py", 1, "hi %s", ("x",), None)
        record.request_id = request_id_var.get()
        doc = json.loads(_JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert doc["pid"] == os.getpid()  # several --processes children share one log stream
    assert (doc["level"], doc["logger"], doc["request_id"], doc["msg"]) == (
        "INFO",
        "ocr_server.app",
        "req-7",
        "hi x",
    )
