"""The OCR engine: served models, their batchers, and the decode/resize step in front of them.

The server's RPCs (unary and streaming alike) call ``OcrEngine.recognize_lines``,
``recognize_page`` or ``recognize_document``. Image decoding, resizing and the page stages
(orientation, detection, crops, layout) run in the engine's worker thread pool, recognition
in the batchers' worker pools, so nothing heavy runs on the event loop. Two exceptions make
a one-image call cheaper: an idle batcher decodes and recognises it in one hop on its idle
thread, and a busy one decodes it on the loop when it is small (``LOOP_DECODE_MAX_PIXELS``,
about a millisecond at most), since the hand-off to the pool costs more than that decode.
Every line crop of every page goes through the same batcher as ``recognize_lines``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ocr_core.batching import BatchLimits, MicroBatcher
from ocr_core.cpus import PinSwitch
from ocr_core.ctc import LineText
from ocr_core.detection import DetectionOptions
from ocr_core.documents import Document, DocumentLimits, open_document
from ocr_core.errors import (
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    OcrError,
    TooLarge,
    Unsupported,
    about_image,
)
from ocr_core.images import RawPixels, declared_size, decode_image, raw_to_bgr
from ocr_core.pages import (
    FoundLines,
    PageModels,
    PageOptions,
    PageText,
    assemble_page,
    check_abandoned,
    find_lines,
)
from ocr_core.preprocess import PreparedLine, WidthBuckets, prepare_line
from ocr_core.recognizer import LineRecognizer

log = logging.getLogger(__name__)

ImageSource = bytes | RawPixels


@dataclass(frozen=True)
class RequestLimits:
    """Per-request limits; each violation is a clear error naming the limit."""

    max_lines_per_request: int = 256
    max_image_pixels: int = 16_000_000
    max_line_width: int = 4096
    max_document_pages: int = 1000
    #: Pages between decode and result at once, engine-wide: each holds its full-resolution
    #: pixels and crops, so this bounds page memory whatever the number of calls.
    max_pages_in_flight: int = 4


#: Default largest line image (pixels, as its header declares them) that a busy engine
#: decodes on the event loop instead of the preprocessing pool. Handing a small image to a
#: pool thread and back costs more CPU than decoding it (the real lines' median, 18k pixels,
#: decodes and resizes in ~0.4 ms), and the bound keeps one decode on the loop near a
#: millisecond. docs/benchmarks.md has the measurements.
LOOP_DECODE_MAX_PIXELS = 64 * 1024
#: Most inference threads (all models') with which ``--loop-decode-max-pixels auto`` decodes
#: on the loop: measured on 2 (loop decode pays) and 16 (it costs a fifth of the lines and
#: the stream tail); 4 is the largest layout measured with every core busy (4 x 4 on 16
#: cores), i.e. cores, not the loop, the limit.
LOOP_DECODE_MAX_THREADS = 4


#: How ``warm_up`` reads its blank page: detection at the smallest max side (320 x 320).
#: What warming up is for, a session's slow first run, happens at any size; at the default
#: size the blank page is scaled up to 736 x 736, and the detector's arena kept those
#: buffers (70-80 MiB more, v6 small) in a server that may never read a page. A first real
#: page is no slower after the small warm-up: in process, 184-185 ms against 199-206 ms
#: after the 736 one (docs/benchmarks.md, "Levers measured").
WARM_UP_PAGE_OPTIONS = PageOptions(DetectionOptions(max_side=320))


@dataclass
class ServedModel:
    """A model as served: its recognizer and its batcher."""

    recognizer: LineRecognizer
    batcher: MicroBatcher
    buckets: WidthBuckets
    pages: PageModels | None = None


class OcrEngine:
    """Owns the served models and the preprocessing pool; ``start``/``aclose`` bracket its life."""

    def __init__(
        self,
        recognizers: Mapping[str, LineRecognizer],
        default_model: str,
        batch_limits: BatchLimits,
        request_limits: RequestLimits,
        preprocess_threads: int = 2,
        page_models: Mapping[str, PageModels] | None = None,
        worker_cpus: Mapping[str, Sequence[int]] | None = None,
        loop_decode_max_pixels: int = LOOP_DECODE_MAX_PIXELS,
        pages_off_reason: str = "",
    ) -> None:
        """``worker_cpus`` pins each model's batcher threads (``ocr_core.cpus``); none: unpinned.

        ``pages_off_reason``: set when the caller chose not to load any page models (a
        lines-only server); a page request is refused with it rather than with "no detector",
        which would send the user looking for another model.

        ``loop_decode_max_pixels``: a one-image request at most this large, arriving while
        the batcher is busy, is decoded on the event loop (0: always on the pool).
        """
        if default_model not in recognizers:
            raise ValueError(f"default model {default_model!r} is not among {list(recognizers)}")
        self.default_model = default_model
        self.batch_limits = batch_limits
        self.request_limits = request_limits
        buckets = WidthBuckets(max_width=request_limits.max_line_width)
        self._models = {
            name: ServedModel(
                rec,
                MicroBatcher(
                    name,
                    rec.infer,
                    rec.workers,
                    rec.input_height,
                    batch_limits,
                    rec.infer_idle if rec.has_idle_session else None,
                    (worker_cpus or {}).get(name, ()),
                ),
                buckets,
                (page_models or {}).get(name),
            )
            for name, rec in recognizers.items()
        }
        self._preprocess_threads = preprocess_threads
        self._loop_decode_max_pixels = loop_decode_max_pixels
        # A lone line decoded on the idle thread: up to twice the model's height at the idle
        # bound's width (~6 ms of PNG decode at the default bound); unbounded idle: any size.
        idle = batch_limits.idle_max_pixels
        self._alone_decode_max_pixels = 4 * idle if idle is not None else 2**62
        self._pool: ThreadPoolExecutor | None = None
        # Not bound to a loop until first used (Python >= 3.10), so it can be made here.
        self._page_slots = asyncio.Semaphore(request_limits.max_pages_in_flight)
        self._pins = PinSwitch(self._set_pinned)
        self._pdf_lock = threading.Lock()
        self._pages_off_reason = pages_off_reason

    def _set_pinned(self, active: bool) -> None:
        for served in self._models.values():
            served.batcher.set_pinned(active)

    @contextlib.asynccontextmanager
    async def _page_work(self) -> AsyncIterator[None]:
        """A page slot; while any page holds one, the batchers' threads are not pinned."""
        async with self._page_slots:
            self._pins.enter()
            try:
                yield
            finally:
                self._pins.leave()

    @property
    def models(self) -> Mapping[str, ServedModel]:
        return self._models

    def start(self) -> None:
        """Start the batchers and the preprocessing pool on the running loop."""
        self._pool = ThreadPoolExecutor(self._preprocess_threads, thread_name_prefix="preprocess")
        for served in self._models.values():
            served.batcher.start()

    async def warm_up(self) -> None:
        """Run one line through every session of every model so the first request is not slow.

        A model that loads but cannot run (a user model whose graph fails on a real line)
        fails here as ``ModelLoadError`` naming it, so the server refuses to start with one
        line instead of a traceback, or of reporting SERVING and failing every call.
        """
        line_image = np.full((48, 320, 3), 255, dtype=np.uint8)
        page = np.full((256, 256, 3), 255, dtype=np.uint8)
        loop = asyncio.get_running_loop()
        for name, served in self._models.items():
            rec = served.recognizer
            line = prepare_line(line_image, rec.input_height, served.buckets)
            what = f"a blank {rec.input_height}x{line.bucket_width} line"
            try:
                await asyncio.gather(
                    *(
                        loop.run_in_executor(self._pool, rec.infer, w, [line])
                        for w in range(rec.workers)
                    )
                )
                if rec.has_idle_session:
                    await loop.run_in_executor(self._pool, rec.infer_idle, [line])
                if served.pages is not None:
                    what = "a blank 256x256 page (detector, orientation)"
                    await loop.run_in_executor(
                        self._pool, find_lines, page, served.pages, WARM_UP_PAGE_OPTIONS
                    )
            except Exception as exc:
                raise ModelLoadError(
                    f"model {name!r} loaded but failed its warm-up run on {what}: {exc}"
                ) from exc

    async def aclose(self) -> None:
        """Close every batcher (queued lines fail with ShuttingDown) and the pool."""
        await asyncio.gather(*(s.batcher.aclose() for s in self._models.values()))
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def resolve(self, model: str) -> ServedModel:
        """The served model named ``model`` ("" = the default), or ``ModelNotFound``."""
        name = model or self.default_model
        served = self._models.get(name)
        if served is None:
            raise ModelNotFound(
                f"model {name!r} is not served here; served models: {sorted(self._models)} "
                "(see ListModels)"
            )
        return served

    async def recognize_lines(
        self, images: Sequence[ImageSource], model: str = "", timeout_s: float | None = None
    ) -> tuple[str, list[LineText]]:
        """Recognise line images with one model; returns (model name, results in order).

        ``timeout_s`` is the caller's remaining time; lines still queued when it runs out are
        dropped and the call fails with ``DeadlineExpired``.
        """
        served = self.resolve(model)
        limit = self.request_limits.max_lines_per_request
        if not images:
            raise InvalidInput("no images in the request; send at least one line image")
        if len(images) > limit:
            raise TooLarge(
                f"{len(images)} images in one request, over the limit of {limit}; "
                "split them across several requests or use StreamRecognize"
            )
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        # Larger requests decode faster on the pool's threads. A large image is not decoded
        # on the idle thread either: the batcher counts as busy meanwhile, so every other
        # caller would wait for its decode.
        if len(images) == 1 and self._within(images[0], self._alone_decode_max_pixels):
            results = await served.batcher.recognize_alone(
                lambda: self._prepare_all(served, images), deadline
            )
            if results is not None:
                return served.recognizer.name, results
        if len(images) == 1 and self._within(images[0], self._loop_decode_max_pixels):
            lines = self._prepare_all(served, images)  # cheaper than a trip to the pool
        else:
            lines = await loop.run_in_executor(self._pool, self._prepare_all, served, images)
        results = await served.batcher.recognize(lines, deadline)
        return served.recognizer.name, results

    @staticmethod
    def _within(image: ImageSource, max_pixels: int) -> bool:
        """Whether ``image`` is at most ``max_pixels`` (an encoded file: by its header, and
        at most 4 bytes per pixel, so no long run of metadata gets decoded either)."""
        if isinstance(image, RawPixels):
            pixels = image.width * image.height
        else:
            if len(image) > 4 * max_pixels:
                return False
            size = declared_size(image)
            if size is None:
                return False  # the pool's decode gives the error
            pixels = size[0] * size[1]
        return 0 < pixels <= max_pixels

    def _prepare_all(
        self, served: ServedModel, images: Sequence[ImageSource]
    ) -> list[PreparedLine]:
        height = served.recognizer.input_height
        prepared = []
        for index, image in enumerate(images):
            try:
                prepared.append(prepare_line(self._decode(image), height, served.buckets))
            except OcrError as exc:
                raise about_image(exc, index, len(images)) from exc
        return prepared

    async def recognize_page(
        self,
        image: ImageSource,
        model: str = "",
        options: PageOptions | None = None,
        timeout_s: float | None = None,
        page_index: int = 0,
    ) -> tuple[str, PageText]:
        """Find and recognise every line of a page image; returns (model name, page)."""
        served, options = self._page_request(model, options)
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        async with self._page_work():
            found, lines = await self._page_lines(
                lambda abandoned: self._lines_of(served, self._decode(image), options, abandoned)
            )
            page = await self._finish_page(served, found, lines, options, deadline, page_index)
        return served.recognizer.name, page

    async def recognize_document(
        self,
        data: bytes,
        model: str = "",
        options: PageOptions | None = None,
        pdf_dpi: int = 0,
        timeout_s: float | None = None,
    ) -> AsyncIterator[tuple[str, PageText]]:
        """Recognise every page of a document, yielding pages in order as they are done.

        Up to ``max_pages_in_flight`` pages are worked on at once (a page is rendered only
        when a slot frees up), so a long document costs the memory of a few pages.
        """
        served, options = self._page_request(model, options)
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        limits = DocumentLimits(
            max_pages=self.request_limits.max_document_pages,
            max_image_pixels=self.request_limits.max_image_pixels,
        )
        document = await loop.run_in_executor(
            self._pool, open_document, data, limits, self._pdf_lock, pdf_dpi
        )
        window = max(1, self.request_limits.max_pages_in_flight // 2)
        pending: list[asyncio.Task[PageText]] = []
        try:
            next_page = 0
            while next_page < document.page_count or pending:
                while next_page < document.page_count and len(pending) < window:
                    pending.append(
                        asyncio.create_task(
                            self._document_page(served, document, next_page, options, deadline)
                        )
                    )
                    next_page += 1
                page = await pending.pop(0)
                yield served.recognizer.name, page
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await loop.run_in_executor(self._pool, document.close)

    async def _document_page(
        self,
        served: ServedModel,
        document: Document,
        index: int,
        options: PageOptions,
        deadline: float | None,
    ) -> PageText:
        async with self._page_work():
            try:
                found, lines = await self._page_lines(
                    lambda abandoned: self._lines_of(
                        served, document.page(index), options, abandoned
                    )
                )
            except OcrError as exc:
                raise type(exc)(f"page {index + 1}: {exc}") from exc
            return await self._finish_page(served, found, lines, options, deadline, index)

    def _page_request(
        self, model: str, options: PageOptions | None
    ) -> tuple[ServedModel, PageOptions]:
        served = self.resolve(model)
        if served.pages is None:
            raise Unsupported(
                self._pages_off_reason
                or f"model {served.recognizer.name!r} has no text detector, so it reads only "
                "pre-cropped lines (RecognizeLines); use a model with a detector for pages "
                "(ListModels shows supports_pages)"
            )
        options = options or PageOptions()
        options.validate()
        return served, options

    async def _finish_page(
        self,
        served: ServedModel,
        found: FoundLines,
        lines: list[PreparedLine],
        options: PageOptions,
        deadline: float | None,
        page_index: int,
    ) -> PageText:
        texts = await served.batcher.recognize(lines, deadline) if lines else []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, assemble_page, found, texts, options, page_index
        )

    def _decode(self, image: ImageSource) -> np.ndarray:
        """An encoded file or raw pixels as HxWx3 uint8 BGR, within the pixel limit."""
        limit = self.request_limits.max_image_pixels
        if isinstance(image, RawPixels):
            return raw_to_bgr(image, limit)
        return decode_image(image, limit)

    async def _page_lines(
        self, stage: Callable[[threading.Event], tuple[FoundLines, list[PreparedLine]]]
    ) -> tuple[FoundLines, list[PreparedLine]]:
        """Run a page's first stage on the pool; a cancelled caller waits until the thread
        is done with the page, which the event tells to skip its remaining steps.

        Without the wait a cancelled call (the client gone, its deadline passed) released
        its page slot while the thread still decoded and detected the page, so more pages
        than ``max_pages_in_flight`` could be in memory, and pinning came back on beside a
        running detector.
        """
        assert self._pool is not None
        abandoned = threading.Event()
        work = self._pool.submit(stage, abandoned)
        try:
            return await asyncio.wrap_future(work)
        except asyncio.CancelledError:
            if not work.cancel():  # running: it stops at its next step
                abandoned.set()
                ended = asyncio.wrap_future(work)
                while not ended.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait([ended])
                ended.exception()  # PageAbandoned or a result no one wants: retrieved
            raise

    def _lines_of(
        self,
        served: ServedModel,
        bgr: np.ndarray,
        options: PageOptions,
        abandoned: threading.Event | None = None,
    ) -> tuple[FoundLines, list[PreparedLine]]:
        assert served.pages is not None
        check_abandoned(abandoned)
        found, crops = find_lines(bgr, served.pages, options, abandoned)
        check_abandoned(abandoned)
        height = served.recognizer.input_height
        lines = [prepare_line(c, height, served.buckets, squeeze_long=True) for c in crops]
        return found, lines
