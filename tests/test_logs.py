"""Log lines, text or JSON: one per record, with what an operator filters on."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator

import pytest

from ocr_server.logs import configure_logging, request_id_var


@pytest.fixture
def server_logging() -> Iterator[None]:
    """Lets a test call ``configure_logging`` as ``ocr-server`` does: its handler writes to
    sys.stderr, which capsys holds by then. Pytest's own handlers are given back after,
    so other tests' log capture is unaffected."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def _log_in_call(request_id: str, message: str) -> None:
    """Log ``message`` as the servicer does while serving a call with ``request_id``."""
    token = request_id_var.set(request_id)
    try:
        logging.getLogger("ocr_server.app").info(message)
    finally:
        request_id_var.reset(token)


def test_a_json_line_names_the_process_and_the_request(
    server_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "json")
    _log_in_call("req-7", "hi x")
    # The id is read per record, not kept from the last one.
    logging.getLogger("ocr_server.app").info("outside a call")
    docs = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(docs) == 2
    for doc in docs:
        assert doc["pid"] == os.getpid()  # several --processes children share one log stream
    assert [(d["level"], d["logger"], d["request_id"], d["msg"]) for d in docs] == [
        ("INFO", "ocr_server.app", "req-7", "hi x"),
        ("INFO", "ocr_server.app", "-", "outside a call"),
    ]


def test_a_text_line_names_the_process_and_the_request(
    server_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Text logs had no pid, so the lines of ``--processes`` children could not be told apart."""
    configure_logging("INFO", "text")
    _log_in_call("req-7", "hi x")
    line = capsys.readouterr().err.strip()
    assert line.split(" ", 2)[2] == f"[{os.getpid()}] INFO ocr_server.app [req-7] hi x"
