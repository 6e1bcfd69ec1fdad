"""Log lines, text or JSON: one per record, with what an operator filters on."""

from __future__ import annotations

import json
import logging
import os

import pytest

from ocr_server.logs import configure_logging, request_id_var


def test_a_json_line_names_the_process_and_the_request(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        # As ``ocr-server`` starts: the handler it installs writes to sys.stderr, which
        # capsys holds now, and tags each record through its request-id filter.
        configure_logging("INFO", "json")
        log = logging.getLogger("ocr_server.app")
        token = request_id_var.set("req-7")
        try:
            log.info("hi %s", "x")
        finally:
            request_id_var.reset(token)
        log.info("outside a call")  # the id is read per record, not kept from the last one
    finally:
        # Give pytest's own handlers back, so other tests' log capture is unaffected.
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    docs = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(docs) == 2
    for doc in docs:
        assert doc["pid"] == os.getpid()  # several --processes children share one log stream
    assert [(d["level"], d["logger"], d["request_id"], d["msg"]) for d in docs] == [
        ("INFO", "ocr_server.app", "req-7", "hi x"),
        ("INFO", "ocr_server.app", "-", "outside a call"),
    ]


def test_a_text_line_names_the_process_and_the_request(capsys: pytest.CaptureFixture[str]) -> None:
    """Text logs had no pid, so the lines of ``--processes`` children could not be told apart."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("INFO", "text")
        token = request_id_var.set("req-7")
        try:
            logging.getLogger("ocr_server.app").info("hi %s", "x")
        finally:
            request_id_var.reset(token)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    line = capsys.readouterr().err.strip()
    assert line.split(" ", 2)[2] == f"[{os.getpid()}] INFO ocr_server.app [req-7] hi x"
