"""``ocr.v1.OcrService`` on ``grpc.aio``: request mapping, streaming, and the error boundary.

Handlers only convert messages and await the engine; errors become status codes in
``_guard`` (whole calls) or ``_item_error`` (stream items), both through ``status.status_for``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from ocr_client.errors import STATUS_DETAILS_KEY
from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from ocr_core.batching import DEADLINE_SLACK_S
from ocr_core.engine import OcrEngine
from ocr_core.errors import InvalidInput, OcrError
from ocr_core.pages import PageOptions
from ocr_server.convert import (
    batcher_stats,
    image_source,
    image_sources,
    line_result,
    page_options,
    page_result,
)
from ocr_server.logs import request_id_of, request_id_var
from ocr_server.metrics import ServerMetrics
from ocr_server.status import status_details, status_for

log = logging.getLogger(__name__)
T = TypeVar("T")


#: How a call the server did not finish ended, by status code, for its log line.
_ENDED = {
    "CANCELLED": "cancelled by the client",
    "DEADLINE_EXCEEDED": "ended at the client's deadline",
    "UNAVAILABLE": "cut off by the server's shutdown (grace period over)",
}


def _request_id(context: grpc.aio.ServicerContext) -> str:
    return request_id_of(context.invocation_metadata())


@dataclass
class _Item:
    """An accepted stream item: its sequence number (input order) and response."""

    seq: int
    response: ocr_pb2.StreamRecognizeResponse
    is_page: bool = False


@dataclass
class _StreamState:
    """What the reader learns from the first message, shared with the response side."""

    model: str = ""
    ordered: bool = False
    page_options: PageOptions = field(default_factory=PageOptions)


class OcrServicer(ocr_pb2_grpc.OcrServiceServicer):
    """Serves the engine's models over gRPC."""

    def __init__(
        self,
        engine: OcrEngine,
        limits: ocr_pb2.ServerLimits,
        stream_max_pages_in_flight: int = 4,
        page_defaults: PageOptions | None = None,
        metrics: ServerMetrics | None = None,
        max_calls: int = 1000,
    ) -> None:
        """``max_calls``: calls and streams of this service handled at once
        (``--max-concurrent-rpcs``); the next is refused RESOURCE_EXHAUSTED."""
        self._engine = engine
        self._metrics = metrics
        self._max_calls = max_calls
        self._active_calls = 0
        self._limits = limits
        self._stream_max_pages = stream_max_pages_in_flight
        self._page_defaults = page_defaults or PageOptions()
        #: When the shutdown's grace period ends (``time.monotonic``); None while serving.
        self._cut_off_at: float | None = None

    def begin_shutdown(self, grace_s: float) -> None:
        """The server stops: calls still running in ``grace_s`` are cut off by gRPC."""
        self._cut_off_at = time.monotonic() + grace_s

    def _ended_code(self, context: grpc.aio.ServicerContext) -> str:
        """The status of a call gRPC cancelled: at its deadline, by the client going away
        (also during the drain), or at the end of the shutdown's grace period (the client
        sees UNAVAILABLE)."""
        remaining = context.time_remaining()
        if remaining is not None and remaining <= DEADLINE_SLACK_S:
            return "DEADLINE_EXCEEDED"
        cut_off = self._cut_off_at is not None and (
            time.monotonic() >= self._cut_off_at - DEADLINE_SLACK_S
        )
        return "UNAVAILABLE" if cut_off else "CANCELLED"

    def _page_options(self, options: ocr_pb2.PageOptions) -> PageOptions:
        """Request options over the server's defaults; an unset message is all defaults."""
        return page_options(options, self._page_defaults)

    def _record(self, method: str, code: str, start: float) -> None:
        if self._metrics is not None:
            self._metrics.observe_call(method, code, time.perf_counter() - start)

    @contextlib.asynccontextmanager
    async def _call_slot(
        self, context: grpc.aio.ServicerContext, method: str
    ) -> AsyncIterator[None]:
        """Hold one of the ``max_calls`` slots for the call, or refuse it RESOURCE_EXHAUSTED.

        Counted here rather than by gRPC's ``maximum_concurrent_rpcs``, which counts every
        service: with the slots held by streams, a health check was refused, so a Kubernetes
        liveness probe failed and the restart ended every one of those streams. A counter
        costs nothing per call, where a server interceptor costs every call a coroutine.
        """
        if self._active_calls >= self._max_calls:
            rid = _request_id(context)
            request_id_var.set(rid)
            message = (
                f"the server is handling its limit of {self._max_calls} calls and streams at "
                "once (--max-concurrent-rpcs); retry with backoff, or send more work per call "
                "or stream"
            )
            log.info(
                "%s RESOURCE_EXHAUSTED: %s",
                method,
                message,
                extra={"method": method, "status": "RESOURCE_EXHAUSTED"},
            )
            self._record(method, "RESOURCE_EXHAUSTED", time.perf_counter())
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, message, (("x-request-id", rid),)
            )
        self._active_calls += 1
        try:
            yield
        finally:
            self._active_calls -= 1

    async def _in_slot(
        self, context: grpc.aio.ServicerContext, method: str, responses: AsyncGenerator[T, None]
    ) -> AsyncIterator[T]:
        """A streaming handler's responses while its call holds a slot (``_call_slot``).

        ``responses`` is closed when this ends, however it ends: a client that goes away
        while the handler waits at ``yield`` closes it, which must end the work at once.
        """
        async with (
            self._call_slot(context, method),
            contextlib.aclosing(responses) as each,
        ):
            async for response in each:
                yield response

    def _count_page(self, model: str) -> None:
        if self._metrics is not None:
            self._metrics.pages.labels(model).inc()

    async def _guard(
        self, context: grpc.aio.ServicerContext, method: str, call: Callable[[], Awaitable[T]]
    ) -> T:
        """Run a unary handler body with a request id, a log line, and error mapping.

        The request id goes back in *trailing* metadata: it travels with the status in the
        call's last batch, whereas ``send_initial_metadata`` is a write of its own that cost
        about a tenth of the server's GIL time under one-line calls. A successful call logs
        at DEBUG (metrics count them); anything else logs at INFO.
        """
        async with self._call_slot(context, method):
            return await self._answer(context, method, call)

    async def _answer(
        self, context: grpc.aio.ServicerContext, method: str, call: Callable[[], Awaitable[T]]
    ) -> T:
        """``_guard``'s work, once the call holds a slot."""
        rid = _request_id(context)
        request_id_var.set(rid)
        context.set_trailing_metadata((("x-request-id", rid),))
        start = time.perf_counter()
        try:
            result = await call()
        except asyncio.CancelledError:
            code_name = self._ended_code(context)
            log.info("%s %s", method, _ENDED[code_name], extra={"method": method})
            self._record(method, code_name, start)
            raise
        except Exception as exc:  # the error boundary: everything maps to a status here
            code, message = status_for(exc, rid)
            details = status_details(exc, code, message)
        else:
            self._record(method, "OK", start)
            log.debug(
                "%s OK in %.1f ms",
                method,
                (time.perf_counter() - start) * 1e3,
                extra={"method": method, "status": "OK"},
            )
            return result
        log.info(
            "%s %s in %.1f ms: %s",
            method,
            code.name,
            (time.perf_counter() - start) * 1e3,
            message,
            extra={"method": method, "status": code.name},
        )
        self._record(method, code.name, start)
        trailers: tuple[tuple[str, str | bytes], ...] = (("x-request-id", rid),)
        if details is not None:
            trailers += ((STATUS_DETAILS_KEY, details),)
        await context.abort(code, message, trailers)
        raise AssertionError("context.abort returned")  # abort always raises

    async def RecognizeLines(
        self, request: ocr_pb2.RecognizeLinesRequest, context: grpc.aio.ServicerContext
    ) -> ocr_pb2.RecognizeLinesResponse:
        async def call() -> ocr_pb2.RecognizeLinesResponse:
            images = image_sources(list(request.images))
            model, results = await self._engine.recognize_lines(
                images, request.model, context.time_remaining()
            )
            return ocr_pb2.RecognizeLinesResponse(
                results=[line_result(r) for r in results], model=model
            )

        return await self._guard(context, "RecognizeLines", call)

    async def RecognizePage(
        self, request: ocr_pb2.RecognizePageRequest, context: grpc.aio.ServicerContext
    ) -> ocr_pb2.PageResult:
        async def call() -> ocr_pb2.PageResult:
            options = self._page_options(request.options)
            model, page = await self._engine.recognize_page(
                image_source(request.image), request.model, options, context.time_remaining()
            )
            self._count_page(model)
            return page_result(page, model)

        return await self._guard(context, "RecognizePage", call)

    async def RecognizeDocument(
        self, request: ocr_pb2.RecognizeDocumentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ocr_pb2.PageResult]:
        """Stream one PageResult per page; an error ends the stream with its status."""
        pages = self._recognize_document(request, context)
        async for page in self._in_slot(context, "RecognizeDocument", pages):
            yield page

    async def _recognize_document(
        self, request: ocr_pb2.RecognizeDocumentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[ocr_pb2.PageResult, None]:
        rid = _request_id(context)
        request_id_var.set(rid)
        await context.send_initial_metadata((("x-request-id", rid),))
        start = time.perf_counter()
        pages = 0
        failure: tuple[grpc.StatusCode, str] | None = None
        finished = False
        # The outcome is logged and counted in ``finally``: a client that cancels while the
        # generator waits at ``yield`` closes it (GeneratorExit), not with CancelledError.
        try:
            options = self._page_options(request.options)
            async for model, page in self._engine.recognize_document(
                request.data, request.model, options, request.pdf_dpi, context.time_remaining()
            ):
                self._count_page(model)
                yield page_result(page, model)
                pages += 1
            finished = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the error boundary of this streaming call
            failure = status_for(exc, rid)
        finally:
            if failure is not None:
                code_name = failure[0].name
                outcome = f"{code_name} after {pages} pages: {failure[1]}"
            elif finished:
                code_name = "OK"
                outcome = f"OK, {pages} pages in {(time.perf_counter() - start) * 1e3:.1f} ms"
            else:
                code_name = self._ended_code(context)
                outcome = f"{_ENDED[code_name]} after {pages} pages"
            log.info(
                "RecognizeDocument %s",
                outcome,
                extra={"method": "RecognizeDocument", "status": code_name},
            )
            self._record("RecognizeDocument", code_name, start)
        if failure is not None:
            await context.abort(*failure)

    async def ListModels(
        self, request: ocr_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> ocr_pb2.ListModelsResponse:
        async def call() -> ocr_pb2.ListModelsResponse:
            models = [
                ocr_pb2.ModelInfo(
                    name=name,
                    is_default=name == self._engine.default_model,
                    charset_size=served.recognizer.charset_size,
                    input_height=served.recognizer.input_height,
                    source=served.recognizer.source,
                    supports_pages=served.pages is not None,
                    supports_page_rotation=served.pages is not None
                    and served.pages.page_orientation is not None,
                    supports_line_rotation=served.pages is not None
                    and served.pages.line_orientation is not None,
                )
                for name, served in sorted(self._engine.models.items())
            ]
            return ocr_pb2.ListModelsResponse(models=models, limits=self._limits)

        return await self._guard(context, "ListModels", call)

    async def GetStats(
        self, request: ocr_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> ocr_pb2.GetStatsResponse:
        async def call() -> ocr_pb2.GetStatsResponse:
            return ocr_pb2.GetStatsResponse(
                batchers=[
                    batcher_stats(
                        name,
                        served.batcher.stats(),
                        served.batcher.queue_depth,
                        served.batcher.limits.queue_capacity,
                    )
                    for name, served in sorted(self._engine.models.items())
                ]
            )

        return await self._guard(context, "GetStats", call)

    async def StreamRecognize(
        self,
        request_iterator: AsyncIterator[ocr_pb2.StreamRecognizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[ocr_pb2.StreamRecognizeResponse]:
        """Answer a stream of items (``_stream_recognize``) while it holds a call slot."""
        answers = self._stream_recognize(request_iterator, context)
        async for answer in self._in_slot(context, "StreamRecognize", answers):
            yield answer

    async def _stream_recognize(
        self,
        request_iterator: AsyncIterator[ocr_pb2.StreamRecognizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncGenerator[ocr_pb2.StreamRecognizeResponse, None]:
        """Read items, run each as its own task, and send responses as they complete.

        A semaphore bounds the items in flight (accepted, response not yet sent): at the
        bound the reader stops reading, so gRPC flow control pushes back on the client.
        """
        rid = _request_id(context)
        request_id_var.set(rid)
        await context.send_initial_metadata((("x-request-id", rid),))
        in_flight = asyncio.Semaphore(self._limits.stream_max_in_flight)
        pages_in_flight = asyncio.Semaphore(self._stream_max_pages)
        done: asyncio.Queue[_Item | BaseException | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()
        state = _StreamState(page_options=self._page_defaults)
        reader = asyncio.create_task(
            self._read_stream(
                request_iterator, context, rid, (in_flight, pages_in_flight), done, tasks, state
            )
        )

        def release(item: _Item) -> None:
            in_flight.release()
            if item.is_page:
                pages_in_flight.release()

        next_seq = 0
        held: dict[int, _Item] = {}
        failure: tuple[grpc.StatusCode, str] | None = None
        start = time.perf_counter()
        finished = False
        answered = errors = 0
        try:
            while (item := await done.get()) is not None:
                if isinstance(item, BaseException):
                    failure = status_for(item, rid)
                    break
                if not state.ordered:
                    yield item.response
                    answered += 1
                    errors += item.response.HasField("error")
                    release(item)
                    continue
                held[item.seq] = item
                while next_seq in held:
                    ready = held.pop(next_seq)
                    yield ready.response
                    answered += 1
                    errors += ready.response.HasField("error")
                    next_seq += 1
                    release(ready)
            finished = True
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()
            if failure is not None:
                code = failure[0].name
            else:
                code = "OK" if finished else self._ended_code(context)
            self._record("StreamRecognize", code, start)
            self._log_stream_end(code, answered, errors, start, failure)
        if failure is not None:
            await context.abort(*failure)

    @staticmethod
    def _log_stream_end(
        code: str,
        answered: int,
        errors: int,
        start: float,
        failure: tuple[grpc.StatusCode, str] | None,
    ) -> None:
        """One INFO line per stream, as unary calls that fail get: a stream is long-lived and
        its item errors (counted here) are otherwise only in the responses."""
        ms = (time.perf_counter() - start) * 1e3
        extra = {"method": "StreamRecognize", "status": code}
        if code in _ENDED:
            log.info(
                "StreamRecognize %s after %d answers in %.1f ms",
                _ENDED[code],
                answered,
                ms,
                extra=extra,
            )
            return
        log.info(
            "StreamRecognize %s, %d answers (%d item errors) in %.1f ms%s",
            code,
            answered,
            errors,
            ms,
            f": {failure[1]}" if failure is not None else "",
            extra=extra,
        )

    async def _read_stream(
        self,
        request_iterator: AsyncIterator[ocr_pb2.StreamRecognizeRequest],
        context: grpc.aio.ServicerContext,
        rid: str,
        semaphores: tuple[asyncio.Semaphore, asyncio.Semaphore],
        done: asyncio.Queue[_Item | BaseException | None],
        tasks: set[asyncio.Task[None]],
        state: _StreamState,
    ) -> None:
        """Read the request stream, spawning one task per item; put None on the queue at the end.

        Every item takes a slot of ``in_flight``; a page item also takes one of the (much
        smaller) ``pages_in_flight``, since a page is many lines and a large image.
        """
        in_flight, pages_in_flight = semaphores
        seq = 0
        received = 0
        try:
            async for request in request_iterator:
                received += 1
                if received == 1 and request.HasField("options"):
                    state.model = request.options.model
                    state.ordered = request.options.ordered
                    self._engine.resolve(state.model)  # unknown model: fail the stream at once
                    # Unset fields (or no page_options at all) take the server's defaults.
                    state.page_options = self._page_options(request.options.page_options)
                    state.page_options.validate()  # bad options: fail the stream at once
                    if request.WhichOneof("item") is None:
                        continue
                    error = None
                elif request.HasField("options"):
                    error = InvalidInput(
                        "stream options may only be set on the first message of the stream"
                    )
                elif request.WhichOneof("item") is None:
                    error = InvalidInput("message has no item: set `line` or `page`")
                else:
                    error = None
                await in_flight.acquire()
                is_page = request.WhichOneof("item") == "page"
                if is_page:
                    await pages_in_flight.acquire()
                task = asyncio.create_task(
                    self._stream_item(seq, request, state, error, is_page, context, rid, done)
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                seq += 1
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            await done.put(None)
        except asyncio.CancelledError:
            raise
        except DecodeError:
            # A message that is not a StreamRecognizeRequest is the client's error, not a bug
            # (INTERNAL), and nothing after it can be read. Answer the items already accepted,
            # then fail the call.
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            await done.put(
                InvalidInput(
                    f"message {received + 1} of the stream is not a valid "
                    "ocr.v1.StreamRecognizeRequest (corrupt protobuf wire format); the items "
                    "before it were answered and nothing after it was read"
                )
            )
        except Exception as exc:  # handed to the response side, which maps it to a status
            await done.put(exc)

    async def _stream_item(
        self,
        seq: int,
        request: ocr_pb2.StreamRecognizeRequest,
        state: _StreamState,
        error: OcrError | None,
        is_page: bool,
        context: grpc.aio.ServicerContext,
        rid: str,
        done: asyncio.Queue[_Item | BaseException | None],
    ) -> None:
        response = ocr_pb2.StreamRecognizeResponse(id=request.id)
        outcome = "OK"
        try:
            if error is not None:
                raise error
            if is_page:
                model, page = await self._engine.recognize_page(
                    image_source(request.page),
                    state.model,
                    state.page_options,
                    context.time_remaining(),
                )
                response.page.CopyFrom(page_result(page, model))
            else:
                _, results = await self._engine.recognize_lines(
                    [image_source(request.line)], state.model, context.time_remaining()
                )
                response.line.CopyFrom(line_result(results[0]))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one item's error answers that item; the stream goes on
            code, message = status_for(exc, rid)
            outcome = code.name
            response.error.CopyFrom(status_pb2.Status(code=code.value[0], message=message))
        if self._metrics is not None:
            self._metrics.stream_items.labels("page" if is_page else "line", outcome).inc()
        if response.HasField("page"):
            self._count_page(response.page.model)
        await done.put(_Item(seq, response, is_page))


# ------------------------------------------------------------------- registration with grpc


@dataclass(frozen=True)
class _Undecodable:
    """Stands in for a unary request whose bytes are not the message the method expects."""

    message_type: str


def _tolerant(deserialize: Callable[[bytes], Any], message_type: str) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError:
            return _Undecodable(message_type)

    return parse


def _undecodable_message(request: _Undecodable) -> str:
    return (
        f"the request is not a valid {request.message_type} (corrupt protobuf wire format); "
        "send that message serialised with protobuf, as a client built from ocr.proto does"
    )


async def _refuse(
    servicer: OcrServicer, method: str, request: _Undecodable, context: grpc.aio.ServicerContext
) -> None:
    """Answer through the same error boundary as every other bad request (``_guard``)."""

    async def fail() -> None:
        raise InvalidInput(_undecodable_message(request))

    await servicer._guard(context, method, fail)


def _reject_unary(
    servicer: OcrServicer, behaviour: Callable[..., Awaitable[Any]], method: str
) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            await _refuse(servicer, method, request, context)
        return await behaviour(request, context)

    return handle


def _reject_unary_stream(
    servicer: OcrServicer, behaviour: Callable[..., AsyncIterator[Any]], method: str
) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, _Undecodable):
            await _refuse(servicer, method, request, context)
        async for response in behaviour(request, context):
            yield response

    return handle


class _HandlerCapture:
    """Takes the place of a server for the generated ``add_...ServicerToServer`` function."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: Mapping[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self.service, self.handlers = service, handlers


def add_to_server(servicer: OcrServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` like the generated function, but answer corrupt requests ourselves.

    grpcio parses a unary request before any handler runs; bytes that are not the method's
    message made it answer UNKNOWN and log a traceback, as if the server had a bug. Here
    such a request reaches the handler as ``_Undecodable`` and gets INVALID_ARGUMENT with a
    message saying what was wrong. Streamed requests are parsed one by one inside the
    handler already (``_read_stream``), so their handlers are left as they are.
    """
    capture = _HandlerCapture()
    ocr_pb2_grpc.add_OcrServiceServicer_to_server(servicer, capture)
    descriptor = ocr_pb2.DESCRIPTOR.services_by_name["OcrService"]
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for name, handler in capture.handlers.items():
        if handler.request_streaming:
            handlers[name] = handler
            continue
        message_type = descriptor.methods_by_name[name].input_type.full_name
        tolerant = _tolerant(handler.request_deserializer, message_type)
        if handler.response_streaming:
            handlers[name] = handler._replace(  # type: ignore[attr-defined]
                request_deserializer=tolerant,
                unary_stream=_reject_unary_stream(servicer, handler.unary_stream, name),
            )
        else:
            handlers[name] = handler._replace(  # type: ignore[attr-defined]
                request_deserializer=tolerant,
                unary_unary=_reject_unary(servicer, handler.unary_unary, name),
            )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(capture.service, handlers),)
    )
    server.add_registered_method_handlers(capture.service, handlers)
