"""``ocr-client``: recognise line images or pages, list models, or dump batcher stats.

    ocr-client lines line1.png line2.png            # path<TAB>text per image
    ocr-client lines crops/*.png --connections 8    # calls spread over 8 connections
    ocr-client lines line.png --json --model NAME   # results with confidences and words
    ocr-client pages scan.pdf page.png -f hocr -o out.hocr   # pages: txt, json, hocr, alto
    ocr-client models [--json]
    ocr-client stats
    ocr-client health [--service NAME]              # exit 0 only when SERVING

The server address comes from ``--address``, else ``$OCR_ADDRESS``, else localhost:50051;
several servers are ``h1:50051,h2:50051`` or ``dns:///name:50051`` (calls are balanced).
The connection options (``--address``, TLS, ``--timeout``) go before or after the command.
``--connections N`` (lines, pages) opens N connections and spreads the work over them, for
a server started with ``--processes`` (whose processes each take whole connections).
Expected failures (a server error, a missing file) print one ``error: ...`` line to stderr
and exit 1, without a traceback; usage errors exit 2. ``health`` exits 0 (SERVING),
1 (any other answer) or 2 (no answer: unreachable or timed out), for container and
orchestrator health checks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TextIO, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from ocr_client import documents, formats
from ocr_client.auth import tls_credentials
from ocr_client.client import (
    DEFAULT_ADDRESS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TIMEOUT_S,
    LineResult,
    OcrClient,
    Page,
    PageOptions,
    PageResult,
)
from ocr_client.errors import (
    DeadlineExceeded,
    InvalidRequest,
    OcrClientError,
    ServerUnavailable,
    Unauthenticated,
)

# The server's default max_lines_per_request; bigger inputs are sent as several calls.
MAX_IMAGES_PER_CALL = 256
# Bytes of a RecognizeLines request besides the image files, so that a call filled up to the
# message limit with files still fits: each image's field tags and lengths (at most 12
# bytes) and, once per request, the model name (counted apart) and spare room.
_IMAGE_FRAMING_BYTES = 16
# A StreamRecognize page request besides its image and id: tags, lengths, the options of
# the stream's first message.
_STREAM_FRAMING_BYTES = 128
_REQUEST_FRAMING_BYTES = 1024
# More connections than this gain nothing against any server layout this project measured
# (4 per process of `ocr-server --processes`); the cap catches typos like 1000.
MAX_CONNECTIONS = 64
# Confidences are float32 on the wire; more digits than this are noise in a report.
_CONFIDENCE_DIGITS = 4
# A health check must answer well within a container HEALTHCHECK's own timeout.
HEALTH_TIMEOUT_S = 5.0
# Exit statuses of `health`: a probe needs "serving", "answered: not serving" and "no answer"
# apart (2 is also argparse's usage error, which a fixed HEALTHCHECK line never makes).
EXIT_SERVING, EXIT_NOT_SERVING, EXIT_UNREACHABLE = 0, 1, 2


_T = TypeVar("_T")


class _CliError(Exception):
    """An expected failure detected by the CLI itself (not by the server)."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value

    return parse


#: The input name that reads standard input, as in most Unix tools.
STDIN = "-"


def _check_files(paths: Sequence[str]) -> None:
    """Every input is checked before the first call, so a typo in the last of many paths
    does not cost (or half-print) the recognition of the others.

    Anything that exists and is no folder is accepted: a FIFO or the ``/dev/fd/N`` of a
    shell's ``<(command)`` too (see :func:`_read_streams`)."""
    for p in paths:
        if p == STDIN:
            continue
        if not Path(p).exists():
            raise _CliError(f"{p}: no such file")
        if Path(p).is_dir():
            raise _CliError(f"{p}: is a directory, not a file")


def _read_streams(paths: Sequence[str]) -> dict[str, bytes]:
    """The bytes of every input in ``paths`` that is not a regular file (``-``, a FIFO, a
    shell's ``<(command)``), read whole, once, before anything is sent.

    Such an input can be read only once and has no size to plan calls with; regular files
    stay paths, read when their call is built, so many of them are never all in memory.
    """
    stdin = _read_stdin(paths)
    streams: dict[str, bytes] = {} if stdin is None else {STDIN: stdin}
    for p in paths:
        if p not in streams and not Path(p).is_file():
            streams[p] = Path(p).read_bytes()
    return streams


def _read_stdin(paths: Sequence[str]) -> bytes | None:
    """The bytes of ``-`` among ``paths`` (standard input, read whole, once), or None.

    So a pipeline needs no temporary file: ``pdftoppm -png scan.pdf | ocr-client pages -``.
    """
    given = paths.count(STDIN)
    if not given:
        return None
    if given > 1:
        raise _CliError("'-' (standard input) can be given only once")
    if sys.stdin is None or sys.stdin.isatty():
        raise _CliError("'-' reads a file from standard input, which is a terminal; pipe one in")
    data = sys.stdin.buffer.read()
    if not data:
        raise _CliError("-: standard input is empty")
    return data


def _line_json(image: str, line: LineResult) -> dict[str, Any]:
    return {
        "image": image,
        "text": line.text,
        "confidence": round(line.confidence, _CONFIDENCE_DIGITS),
        "words": [
            {
                "text": w.text,
                "confidence": round(w.confidence, _CONFIDENCE_DIGITS),
                "x_start": w.x_start,
                "x_end": w.x_end,
            }
            for w in line.words
        ],
    }


def _recognize_chunk(
    client: OcrClient, paths: Sequence[str | bytes], model: str
) -> tuple[str, list[LineResult | OcrClientError]]:
    """Each image's result or error, in order: an image the server refuses is left out and
    the rest are sent again, so one bad file costs only its own line.

    The server names the refused image in the error's details (``image_index``); an error
    that names none (server unreachable, unknown model, deadline) is the whole call's and
    is raised. A refused image fails before any inference, so a resend redoes no work.
    """
    outcomes: list[LineResult | OcrClientError | None] = [None] * len(paths)
    pending = list(range(len(paths)))
    ran = model
    while pending:
        try:
            # _recognize is recognize_lines plus the model name the server reports.
            ran, lines = client._recognize(
                [paths[i] for i in pending], model=model, color_order="rgb", timeout=None
            )
        except OcrClientError as err:
            index = err.image_index
            if index is None and len(pending) == 1 and isinstance(err, InvalidRequest):
                index = 0  # a server that sends no details: a lone image's refusal is its own
            if index is None or not 0 <= index < len(pending):
                raise
            outcomes[pending.pop(index)] = err
            continue
        for i, line in zip(pending, lines, strict=True):
            outcomes[i] = line
        break
    return ran, [o for o in outcomes if o is not None]


def _image_error(err: OcrClientError) -> str:
    """The error without its ``image N:`` prefix (N counts within one call, so it would
    mislead next to the file's name)."""
    text = str(err)
    return text if err.image_index is None else text.removeprefix(f"image {err.image_index}: ")


def _request_limits(client: OcrClient, ask: bool) -> tuple[int, int]:
    """The most images, and bytes, one RecognizeLines call may carry.

    The server's limits are asked only when ``ask`` (several images to split, or a large
    one): its ``--max-message-bytes``, higher or lower than the client's default, is the
    limit. One it does not report (0, or not asked) is taken as the client's default.
    """
    images, size = MAX_IMAGES_PER_CALL, DEFAULT_MAX_MESSAGE_BYTES
    if ask:
        limits = client.server_limits()
        # A server started with a lower --max-lines-per-request refuses bigger calls.
        images = min(images, limits.max_lines_per_request or images)
        size = limits.max_message_bytes or size
    return images, size


def _plan_calls(
    indices: Sequence[int], sizes: Sequence[int], images: int, room: int
) -> list[list[int]]:
    """``indices`` in order, cut into calls of at most ``images`` images whose files (with
    their framing) add up to at most ``room`` bytes; each image fits alone."""
    calls: list[list[int]] = []
    used = 0
    for i in indices:
        cost = sizes[i] + _IMAGE_FRAMING_BYTES
        if not calls or len(calls[-1]) == images or used + cost > room:
            calls.append([])
            used = 0
        calls[-1].append(i)
        used += cost
    return calls


def _run_calls(
    client: OcrClient, calls: Sequence[Sequence[str | bytes]], model: str, workers: int
) -> list[tuple[str, list[LineResult | OcrClientError]]]:
    """Each call's model and outcomes, in order, up to ``workers`` calls at once.

    On the first failure of a call, or Ctrl-C, the client is closed before the worker threads
    are waited for: that cancels the calls in flight (the server drops their queued lines),
    so the CLI exits at once rather than when the last call ends or times out. Calls not
    started yet are never sent.
    """
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(_recognize_chunk, client, call, model) for call in calls]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:  # the first failure in input order, of those done
            if future in done and future.exception() is not None:
                future.result()
        return [future.result() for future in futures]
    except BaseException:
        client.close()
        raise
    finally:
        pool.shutdown(cancel_futures=True)


def _too_big(size: int, limit: int, what: str = "the file") -> OcrClientError:
    """The failure of an image that would not fit in a request even alone."""
    return OcrClientError(
        f"{what} is {size:,} bytes, over the {limit:,} a request may carry (the server's "
        "--max-message-bytes or this client's limit); send it scaled down or compressed"
    )


def _cmd_lines(args: argparse.Namespace) -> int:
    paths: list[str] = args.images
    _check_files(paths)
    streams = _read_streams(paths)
    inputs: list[str | bytes] = [streams.get(p, p) for p in paths]
    sizes = [len(x) if isinstance(x, bytes) else os.stat(x).st_size for x in inputs]
    # An image that cannot be sent fails alone, as one the server refuses: named on stderr
    # while the others are still recognised and printed.
    outcomes: list[LineResult | OcrClientError | None] = [
        OcrClientError("the file is empty") if size == 0 else None for size in sizes
    ]
    answers: list[tuple[str, list[LineResult | OcrClientError]]] = []
    if any(outcome is None for outcome in outcomes):
        with _client(args) as client:
            several = sum(outcome is None for outcome in outcomes) > 1
            # A lone file over the default limit may still fit the server's own (asked then).
            ask = several or max(sizes) + _REQUEST_FRAMING_BYTES > DEFAULT_MAX_MESSAGE_BYTES
            images, limit = _request_limits(client, ask)
            room = limit - _REQUEST_FRAMING_BYTES - len(args.model.encode())
            for i, size in enumerate(sizes):
                if outcomes[i] is None and size + _IMAGE_FRAMING_BYTES > room:
                    outcomes[i] = _too_big(size, limit)
            sendable = [i for i, outcome in enumerate(outcomes) if outcome is None]
            # With several connections the images are split evenly, so that every connection
            # (and so every server process behind one) gets a share, and the calls run at once.
            per_call = min(images, -(-len(sendable) // args.connections))
            calls = _plan_calls(sendable, sizes, per_call, room) if sendable else []
            if calls:
                workers = min(args.connections, len(calls))
                batches = [[inputs[i] for i in call] for call in calls]
                answers = _run_calls(client, batches, args.model, workers)
            for call, (_, call_outcomes) in zip(calls, answers, strict=True):
                for i, outcome in zip(call, call_outcomes, strict=True):
                    outcomes[i] = outcome
    model = next((ran for ran, _ in answers if ran), "")
    done = [outcome for outcome in outcomes if outcome is not None]  # every one, by now
    failed = 0
    for p, outcome in zip(paths, done, strict=True):
        if isinstance(outcome, OcrClientError):
            failed += 1
            print(f"error: {p}: {_image_error(outcome)}", file=sys.stderr)
    if args.json:
        results = [
            _line_json(p, r)
            if isinstance(r, LineResult)
            else {"image": p, "error": _image_error(r)}
            for p, r in zip(paths, done, strict=True)
        ]
        doc = {"model": model, "results": results}
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    elif len(paths) == 1:
        if isinstance(done[0], LineResult):
            print(done[0].text)
    else:
        for p, r in zip(paths, done, strict=True):
            if isinstance(r, LineResult):
                print(f"{p}\t{r.text}")
    return 1 if failed else 0


def _merged(streams: Sequence[Iterator[_T]]) -> Iterator[_T]:
    """The items of several blocking streams as they arrive, each read on its own thread;
    the first failure is raised. One stream is read directly, on the caller's thread.

    A reader left blocked when this ends early (a failure) is released by closing the
    client, which cancels its call; readers are daemon threads, so none keeps the CLI up.
    """
    if len(streams) == 1:
        yield from streams[0]
        return
    inbox: queue.Queue[tuple[_T | None, BaseException | None]] = queue.Queue()

    def read(stream: Iterator[_T]) -> None:
        try:
            for item in stream:
                inbox.put((item, None))
        except BaseException as exc:  # raised again on the caller's thread
            inbox.put((None, exc))
        else:
            inbox.put((None, None))

    for stream in streams:
        threading.Thread(target=read, args=(stream,), daemon=True).start()
    running = len(streams)
    while running:
        item, error = inbox.get()
        if error is not None:
            raise error
        if item is None:
            running -= 1
        else:
            yield item


class _Window:
    """Bounds the pages in flight on the stream: the request side takes a slot before it
    sends a page and each answer frees one. The server pushes back too, but only after it
    has read what gRPC buffered; this keeps rendered pages from piling up in the client.

    ``enter`` waits in short steps so that a stream that has ended (``close``) never leaves
    the request thread blocked for good.
    """

    def __init__(self, size: int) -> None:
        self._slots = threading.Semaphore(size)
        self._closed = threading.Event()

    def enter(self) -> bool:
        while not self._closed.is_set():
            if self._slots.acquire(timeout=0.1):
                return True
        return False

    def leave(self) -> None:
        self._slots.release()

    def close(self) -> None:
        self._closed.set()


class _Progress:
    """A one-line progress bar on stderr (pages done / total), redrawn at most ten times a
    second. Messages (page errors) are printed above it, from any thread."""

    _WIDTH = 30

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self._total = total
        self._stream = stream
        self._enabled = enabled
        self._done = 0
        self._failed = 0
        self._drawn_at = 0.0
        self._start = time.monotonic()
        self._lock = threading.Lock()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._enabled or (not force and now - self._drawn_at < 0.1):
            return
        self._drawn_at = now
        fraction = self._done / self._total if self._total else 1.0
        filled = int(fraction * self._WIDTH)
        bar = "#" * filled + "." * (self._WIDTH - filled)
        failed = f", {self._failed} failed" if self._failed else ""
        self._stream.write(
            f"\rpages {self._done}/{self._total} [{bar}] {fraction:4.0%} "
            f"{now - self._start:.0f}s{failed}\x1b[K"
        )
        self._stream.flush()

    def advance(self, failed: bool = False) -> None:
        with self._lock:
            self._done += 1
            self._failed += failed
            self._draw(force=self._done == self._total)

    def message(self, text: str) -> None:
        with self._lock:
            if self._enabled:
                self._stream.write("\r\x1b[K")
            self._stream.write(text + "\n")
            self._draw(force=True)

    def close(self) -> None:
        with self._lock:
            if self._enabled:
                self._draw(force=True)
                self._stream.write("\n")
                self._stream.flush()


def _page_options(args: argparse.Namespace) -> PageOptions:
    options = PageOptions()
    if args.max_side is not None:
        options.max_side = args.max_side
    if args.no_rotation:
        options.correct_page_rotation = False
        options.correct_line_rotation = False
    return options


def _check_output(out: str | None) -> None:
    """Fail before any page is sent when ``-o`` cannot be written: found only at the end, it
    would cost the whole run's recognition. The file itself is written only at the end."""
    if out is None or out == "-":
        return
    target = Path(out)
    parent = target.parent
    if target.is_dir():
        raise _CliError(f"-o {out}: is a directory")
    if not parent.is_dir():
        raise _CliError(f"-o {out}: the folder {parent} does not exist")
    if not os.access(target if target.exists() else parent, os.W_OK):
        raise _CliError(f"-o {out}: not writable")


def _emit(document: str, out: str | None) -> None:
    """UTF-8 whatever the locale: the XML formats declare it, and CJK text must survive a
    C locale's ASCII stdout."""
    data = document.encode("utf-8")
    if out is not None and out != "-":
        Path(out).write_bytes(data)
        return
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(document)
    else:
        buffer.write(data)
        buffer.flush()


def _check_reads_pages(client: OcrClient, model: str, address: str) -> None:
    """A server started with ``--no-pages`` (or a model without a text detector) refuses
    every page with the same FAILED_PRECONDITION; say so once, before anything is sent,
    rather than once per page."""
    models = client.list_models()
    chosen = next((m for m in models if (m.name == model if model else m.is_default)), None)
    if chosen is None or chosen.supports_pages:
        return  # an unknown model is left to the server, whose NOT_FOUND names those served
    raise _CliError(
        f"model {chosen.name!r} at {address} reads pre-cropped lines only (the server runs "
        "with --no-pages, or the model has no text detector); nothing sent. Use "
        "`ocr-client lines` for line images, or a server that reads pages"
    )


def _cmd_pages(args: argparse.Namespace) -> int:
    paths: list[str] = args.files
    _check_files(paths)
    _check_output(args.output)
    files = {p: p for p in paths}  # the name a file is given as -> where to read it
    copies = _read_streams(paths)
    if not copies:
        return _recognize_pages(args, paths, files)
    with tempfile.TemporaryDirectory(prefix="ocr-client-") as folder:
        # Documents are read from a file (sniffed, split, rendered a page at a time), more
        # than once: standard input and FIFOs are copied to one first.
        for number, (name, data) in enumerate(copies.items()):
            files[name] = os.path.join(folder, f"input{number}")
            Path(files[name]).write_bytes(data)
        return _recognize_pages(args, paths, files)


def _recognize_pages(args: argparse.Namespace, paths: list[str], files: dict[str, str]) -> int:
    """``pages`` once its inputs are known: ``files`` maps each name in ``paths`` to the
    file to read (``-`` to a copy of standard input)."""
    # Format, page count and needed packages of every file before anything is sent. A file
    # that is no document (empty, another format) is reported and left out, as a page that
    # fails is; a missing package (ImportError) stops the run: every such file would fail.
    infos: list[documents.DocumentInfo] = []
    unreadable = 0
    for path in paths:
        try:
            infos.append(documents.inspect(files[path], name=path))
        except (documents.DocumentError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            unreadable += 1
    if not infos:
        raise _CliError("no file could be read; nothing sent")
    total = sum(info.page_count for info in infos)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    progress = _Progress(total, sys.stderr, show)
    window = _Window(args.max_in_flight)
    # Pages are numbered in input order as they are sent; answers (in any order) are put
    # back in that order. An id maps to a queue of numbers because the same file may be
    # named twice. Written by the request thread before the page is sent, so always before
    # its answer is read.
    sent: list[tuple[str, int]] = []
    numbers: dict[str, deque[int]] = {}
    lost = 0  # pages never sent because their file broke while being split

    def items() -> Iterator[Page]:
        nonlocal lost
        for info in infos:
            produced = 0
            try:
                pages_of = documents.iter_pages(
                    files[info.source], pdf_dpi=args.pdf_dpi, name=info.source
                )
                for page in pages_of:
                    # The request around the image: its id, framing, the stream's options.
                    size = page.image.ByteSize() + len(page.id.encode()) + _STREAM_FRAMING_BYTES
                    if size > room:
                        # The server (or this client) would end the whole stream over it.
                        lost += 1
                        produced += 1
                        progress.message(
                            f"error: {page.source} page {page.index + 1}: "
                            f"{_too_big(size, room, 'the page as sent')}; not sent"
                        )
                        progress.advance(failed=True)
                        continue
                    if not window.enter():
                        return
                    sent.append((page.source, page.index))
                    numbers.setdefault(page.id, deque()).append(len(sent) - 1)
                    produced += 1
                    yield Page(page.image, page.id)
            except (documents.DocumentError, OSError) as exc:
                # One broken file (a truncated TIFF page, a damaged PDF) does not stop the
                # other files; its remaining pages count as failed.
                missing = max(info.page_count - produced, 1)
                lost += missing
                progress.message(f"error: {exc} ({missing} page(s) not read)")
                for _ in range(missing):
                    progress.advance(failed=True)

    every_page = items()
    take = threading.Lock()

    def shared() -> Iterator[Page]:
        """One stream's pages: the next page of any file, whichever stream asks first.
        ``items`` runs under the lock: one page at a time is numbered, before it is sent."""
        while True:
            with take:
                page = next(every_page, None)
            if page is None:
                return
            yield page

    streams = max(1, min(args.connections, total))
    results: dict[int, tuple[str, PageResult]] = {}
    # --timeout is per page: a stream may carry every page.
    deadline = args.timeout * max(total, 1)
    with _client(args) as client:
        _check_reads_pages(client, args.model, args.address)
        room = _request_limits(client, ask=True)[1]
        stream = _merged(
            [
                client.stream_recognize(
                    shared(),
                    model=args.model,
                    ordered=args.ordered,
                    page_options=_page_options(args),
                    timeout=deadline,
                )
                for _ in range(streams)
            ]
        )
        ended: OcrClientError | None = None  # the whole stream failed (its pages are lost)
        try:
            for result in stream:
                window.leave()
                queue = numbers.get(result.id)
                if not queue:
                    raise _CliError(f"the server answered an item that was not sent: {result.id}")
                number = queue.popleft()
                source, index = sent[number]
                if result.page is not None:
                    result.page.page_index = index  # stream page items always say 0
                    results[number] = (source, result.page)
                    if result.page.lines_left_out:
                        progress.message(
                            f"warning: {source} page {index + 1}: "
                            f"{result.page.lines_left_out} more text lines found than the "
                            "server reads on one page, not read (its --page-max-lines)"
                        )
                    progress.advance()
                else:
                    progress.message(f"error: {source} page {index + 1}: {result.error}")
                    progress.advance(failed=True)
        except OcrClientError as exc:
            ended = exc
        finally:
            window.close()
            stream.close()
            progress.close()
    pages = [results[n] for n in sorted(results)]
    if ended is not None:
        if not pages:
            raise ended
        # A server restart or a dropped connection must not throw away the pages answered.
        print(
            f"error: the stream ended after {len(pages)} of {total} pages were recognised: "
            f"{ended}{_hint(ended, args)}; writing those",
            file=sys.stderr,
        )
    elif not pages:
        raise _CliError("no page was recognised; nothing written")
    _emit(formats.write(args.format, pages), args.output)
    # A page sent and not in the results failed (its error was reported above).
    return 1 if ended or unreadable or lost or len(pages) < len(sent) else 0


def _cmd_models(args: argparse.Namespace) -> int:
    with _client(args) as client:
        models = client.list_models()
    if args.json:
        doc = {"models": [dataclasses.asdict(m) for m in models]}
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        for m in models:
            mark = "*" if m.is_default else " "  # '*' marks the default model
            print(
                f"{mark} {m.name}\tcharset_size={m.charset_size}\t"
                f"input_height={m.input_height}\tpages={'yes' if m.supports_pages else 'no'}"
                f"\t{m.source}"
            )
    return 0


_64_BIT = (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64)


def _json_numbers(message: Message) -> dict[str, Any]:
    """``message`` as proto3 JSON (field names as in the .proto, zero values included),
    but with 64-bit integers as numbers.

    Proto3 JSON writes those as strings (a JavaScript double cannot hold every uint64),
    so jq compared a counter as text: ``.lines_inferred > 100`` was true for "7". The
    server's counters stay far below 2**53. No well-known types (Timestamp, ...) inside.
    """
    doc = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _with_numbers(doc, message.DESCRIPTOR)


def _with_numbers(doc: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    for field in descriptor.fields:
        if field.name in doc:
            doc[field.name] = _field_with_numbers(doc[field.name], field)
    return doc


def _field_with_numbers(value: Any, field: FieldDescriptor) -> Any:
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        value_field = entry.fields_by_name["value"]
        return {k: _field_with_numbers(v, value_field) for k, v in value.items()}
    if field.is_repeated:
        return [_one_with_numbers(v, field) for v in value]
    return _one_with_numbers(value, field)


def _one_with_numbers(value: Any, field: FieldDescriptor) -> Any:
    if field.message_type is not None:
        return _with_numbers(value, field.message_type)
    return int(value) if field.cpp_type in _64_BIT else value


def _cmd_stats(args: argparse.Namespace) -> int:
    with _client(args) as client:
        stats = client.get_stats()
    print(json.dumps(_json_numbers(stats), ensure_ascii=False, indent=2))
    return 0


def _cmd_health(args: argparse.Namespace) -> int:
    """One grpc.health.v1 Check: the status word on stdout, the exit status for scripts."""
    what = f"service {args.service!r}" if args.service else "the server"
    with _client(args) as client:
        try:
            status = client.check_health(args.service)
        except (ServerUnavailable, DeadlineExceeded) as err:
            print(f"error: no health answer from {args.address}: {err}", file=sys.stderr)
            return EXIT_UNREACHABLE
    print(status)
    if status == "SERVING":
        return EXIT_SERVING
    if status == "SERVICE_UNKNOWN":
        print(f"error: {args.address} has no health status for {what}", file=sys.stderr)
    return EXIT_NOT_SERVING


def _client(args: argparse.Namespace) -> OcrClient:
    """A client with the connection options: TLS from the flags, the token from $OCR_TOKEN.

    The token is read from the environment only, never from a flag, so it does not show in
    the process list or the shell history.
    """
    credentials = None
    if args.tls or args.ca or args.cert or args.key:
        credentials = tls_credentials(args.ca, args.cert, args.key)
    token = os.environ.get("OCR_TOKEN") or None
    return OcrClient(
        args.address,
        timeout=args.timeout,
        credentials=credentials,
        token=token,
        connections=getattr(args, "connections", 1),
    )


def _connection_options(timeout_help: str) -> argparse.ArgumentParser:
    """--address, the TLS options and --timeout, without defaults (``_fill_defaults`` sets them).

    They are accepted before the command (``ocr-client --address h:1 lines x.png``, as git and
    kubectl take global options) and after it (``ocr-client lines x.png --address h:1``).
    Without defaults of their own, a value given after the command wins over one given
    before, and neither is overwritten by a default of the other level (argparse copies every
    subcommand default over the top-level namespace).
    """
    options = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    options.add_argument(
        "--address",
        metavar="HOST:PORT",
        help=f"server address (default: $OCR_ADDRESS, else {DEFAULT_ADDRESS})",
    )
    options.add_argument(
        "--tls",
        action="store_true",
        help="connect with TLS (implied by --ca/--cert); the system roots unless --ca",
    )
    options.add_argument("--ca", metavar="PEM", help="CA bundle to trust for the server")
    options.add_argument("--cert", metavar="PEM", help="client certificate (mutual TLS)")
    options.add_argument("--key", metavar="PEM", help="private key of --cert")
    options.add_argument("--timeout", type=_positive_float, metavar="S", help=timeout_help)
    return options


def _fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """The connection options' defaults, for those given neither before nor after the command.

    `health` has its own default --timeout (a probe's, shorter than a call's deadline).
    """
    defaults: dict[str, Any] = {
        "address": os.environ.get("OCR_ADDRESS") or DEFAULT_ADDRESS,
        "tls": False,
        "ca": None,
        "cert": None,
        "key": None,
        "timeout": HEALTH_TIMEOUT_S if args.command == "health" else DEFAULT_TIMEOUT_S,
    }
    for name, value in defaults.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    return args


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line parsed, every connection option set (given or default)."""
    return _fill_defaults(_build_parser().parse_args(argv))


def _build_parser() -> argparse.ArgumentParser:
    common = _connection_options(f"deadline of each call in seconds (default: {DEFAULT_TIMEOUT_S})")
    # For the commands that carry many images: `ocr-server --processes N` gives each of its
    # processes whole connections, so one connection reaches one process.
    spread = argparse.ArgumentParser(add_help=False)
    spread.add_argument(
        "--connections",
        type=_int_in(1, MAX_CONNECTIONS),
        default=1,
        metavar="N",
        help="open N connections and spread the work over them (lines: up to N calls at "
        "once; pages: N streams); for a server started with --processes, about 4 per "
        "process (default: %(default)s)",
    )
    parser = argparse.ArgumentParser(
        prog="ocr-client",
        description="Client of the OCR gRPC service. The connection options (--address, "
        "--tls, --ca, --cert, --key, --timeout) go before or after the command.",
        parents=[
            _connection_options(
                f"deadline of each call in seconds (default: {DEFAULT_TIMEOUT_S}; "
                f"health: seconds to wait for the answer, default {HEALTH_TIMEOUT_S})"
            )
        ],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_lines = sub.add_parser(
        "lines",
        parents=[common, spread],
        help="recognise text-line images (one line of text each)",
    )
    p_lines.add_argument(
        "images", nargs="+", metavar="IMG", help="image files ('-': standard input)"
    )
    p_lines.add_argument("--json", action="store_true", help="print results as JSON")
    p_lines.add_argument("--model", default="", help="model name (default: the server's)")
    p_lines.set_defaults(func=_cmd_lines)

    p_pages = sub.add_parser(
        "pages",
        parents=[common, spread],
        help="recognise pages: images, multi-page TIFF, PDF",
        description=(
            "Recognise every page of the files on one stream (N with --connections N) and "
            "write them in input order. "
            "PNG/JPEG/BMP/WebP/GIF/TIFF pages are sent as they are; multi-page TIFF and PDF are "
            f"split here, which needs the extra: {documents.EXTRA_HINT}. "
            "A page that fails, is too large for a request, or a file that is no document "
            "(empty, another format), is reported on stderr and the others are still written; "
            "so are the pages recognised before the stream itself ended (a server restart). "
            "The exit status is then 1. "
            "A missing file or an -o that cannot be written stops before anything is sent. "
            "--timeout is per page."
        ),
    )
    p_pages.add_argument(
        "files", nargs="+", metavar="FILE", help="image, TIFF or PDF files ('-': standard input)"
    )
    p_pages.add_argument(
        "-f",
        "--format",
        choices=formats.FORMATS,
        default="txt",
        help="output format (default: txt; pages end with a form feed)",
    )
    p_pages.add_argument(
        "-o", "--output", metavar="OUT", help="write to this file (default: stdout)"
    )
    p_pages.add_argument("--model", default="", help="model name (default: the server's)")
    p_pages.add_argument(
        "--max-side",
        type=_int_in(320, 4096),
        metavar="N",
        help="longest side pages are scaled to for text detection (default: the server's "
        "--page-max-side, 1024 unless set)",
    )
    p_pages.add_argument(
        "--no-rotation",
        action="store_true",
        help="do not detect rotated pages or upside-down lines",
    )
    p_pages.add_argument(
        "--ordered",
        action="store_true",
        help="ask the server to answer in input order (output is in input order anyway)",
    )
    p_pages.add_argument(
        "--pdf-dpi",
        type=_int_in(50, 600),
        default=documents.DEFAULT_PDF_DPI,
        metavar="DPI",
        help="resolution PDF pages are rendered at (default: %(default)s); a page that would "
        f"be over {documents.DEFAULT_MAX_PAGE_PIXELS:,} pixels (the server's default "
        "--max-image-pixels) is rendered at the highest resolution under it",
    )
    p_pages.add_argument(
        "--max-in-flight",
        type=_int_in(1, 256),
        default=8,
        metavar="N",
        help="pages sent and not yet answered, at most (default: %(default)s)",
    )
    p_pages.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    p_pages.set_defaults(func=_cmd_pages)

    p_models = sub.add_parser("models", parents=[common], help="list the server's models")
    p_models.add_argument("--json", action="store_true", help="print as JSON")
    p_models.set_defaults(func=_cmd_models)

    p_stats = sub.add_parser("stats", parents=[common], help="print batcher stats as JSON")
    p_stats.set_defaults(func=_cmd_stats)

    p_health = sub.add_parser(
        "health",
        parents=[
            _connection_options(f"seconds to wait for the answer (default: {HEALTH_TIMEOUT_S})")
        ],
        help="gRPC health check: exit 0 SERVING, 1 not serving, 2 unreachable",
        description=(
            "Ask the server's grpc.health.v1 service whether it is serving; print the status "
            "(SERVING, NOT_SERVING, SERVICE_UNKNOWN). Exit 0 only when SERVING, 1 for any "
            "other answer, 2 when there is no answer (unreachable, or --timeout passed)."
        ),
    )
    p_health.add_argument(
        "--service",
        default="",
        metavar="NAME",
        help='service to check, e.g. ocr.v1.OcrService (default: "", the whole server)',
    )
    p_health.set_defaults(func=_cmd_health)
    return parser


def _hint(err: BaseException, args: argparse.Namespace) -> str:
    """What a CLI user can change for a whole-call failure, where the server's message speaks
    of gRPC (metadata, addresses) rather than of this command's flags."""
    if isinstance(err, Unauthenticated):
        if os.environ.get("OCR_TOKEN"):
            return "; the token in $OCR_TOKEN was refused"
        return "; set $OCR_TOKEN to the server's token"
    if isinstance(err, ServerUnavailable):
        return _connection_hint(err.details, args)
    if isinstance(err, DeadlineExceeded):
        return f"; --timeout (now {args.timeout:g} s) allows more"
    return ""


def _connection_hint(details: str, args: argparse.Namespace) -> str:
    """Which flag to check for an UNAVAILABLE call, from gRPC's own words (grpcio 1.85) when
    no connection could be made; a server answering UNAVAILABLE while it drains (which a
    retry fixes) gets none. TLS failures are told apart first: gRPC says "failed to connect"
    for them too, though the server is running."""
    tls = bool(args.tls or args.ca or args.cert or args.key)
    text = details.lower()
    if "failed to create security handshaker" in text:
        # --ca, --cert or --key was read but could not be used.
        return "; check --ca, --cert and --key: PEM files, --key the private key of --cert"
    if "wrong_version_number" in text:  # a TLS client, a plaintext server
        return "; the server does not seem to use TLS: leave out --tls, --ca, --cert and --key"
    if "certificate_verify_failed" in text:
        trusted = f"--ca {args.ca}" if args.ca else "the system's root CAs (no --ca given)"
        return f"; the server's certificate is not signed by {trusted}: --ca takes the CA's PEM"
    if "hostname verification" in text:
        return (
            f"; the server's certificate does not name the host of {args.address}: connect by "
            "a name or address it was issued for"
        )
    if "handshake failed" in text:
        return (
            "; the TLS handshake failed: check --ca, --cert and --key, and that the server uses TLS"
        )
    if "socket closed" in text:
        # A TLS server hangs up on a plaintext client, a mutual-TLS one on a client without a
        # certificate (or one from a CA it does not trust), with nothing more said.
        closed = "; the server closed the connection: if it"
        if not tls:
            return f"{closed} uses TLS, add --tls (and --ca for a private CA)"
        if not args.cert:
            return f"{closed} requires client certificates, give --cert and --key"
        return f"{closed} requires client certificates, check that it trusts the CA of --cert"
    if "errors resolving" in text or "dns resolution failed" in text:
        return f"; the host of {args.address} could not be resolved (--address or $OCR_ADDRESS)"
    if "failed to connect" in text:
        return f"; is the server running at {args.address}? (--address or $OCR_ADDRESS)"
    return ""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (argparse exits 2 itself on usage errors)."""
    args = parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except BrokenPipeError:
        # The reader went away (`ocr-client lines *.png | head -1`): end quietly with the
        # status of a process killed by SIGPIPE, as other command-line tools do, and point
        # stdout at /dev/null so that the interpreter's last flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    # OSError / ValueError: an input file that cannot be read or is empty (DocumentError is
    # a ValueError); ImportError: an optional package a document needs is missing.
    except (OcrClientError, _CliError, OSError, ValueError, ImportError) as err:
        print(f"error: {err}{_hint(err, args)}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
