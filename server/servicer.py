"""``ocr.v1.OcrService`` on ``grpc.aio``: request mapping, streaming, and the error boundary.

Handlers only convert messages and await the engine; errors become status codes in
``_guard`` (whole calls) or ``_item_error`` (stream items), both through ``status.status_for``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.rpc import status_pb2

from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from ocr_core.engine import OcrEngine
from ocr_core.errors import InvalidInput, OcrError
from ocr_server.convert import batcher_stats, image_source, image_sources, line_result
from ocr_server.logs import request_id_var
from ocr_server.status import status_for

log = logging.getLogger(__name__)
T = TypeVar("T")


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and value:
            return str(value)[:64]
    return uuid.uuid4().hex[:16]


@dataclass
class _Item:
    """An accepted stream item: its sequence number (input order) and response."""

    seq: int
    response: ocr_pb2.StreamRecognizeResponse


class OcrServicer(ocr_pb2_grpc.OcrServiceServicer):
    """Serves the engine's models over gRPC."""

    def __init__(self, engine: OcrEngine, limits: ocr_pb2.ServerLimits) -> None:
        self._engine = engine
        self._limits = limits

    async def _guard(
        self, context: grpc.aio.ServicerContext, method: str, call: Callable[[], Awaitable[T]]
    ) -> T:
        """Run a unary handler body with a request id, a log line, and error mapping."""
        rid = _request_id(context)
        request_id_var.set(rid)
        await context.send_initial_metadata((("x-request-id", rid),))
        start = time.perf_counter()
        try:
            result = await call()
        except asyncio.CancelledError:
            log.info("%s cancelled by the client", method, extra={"method": method})
            raise
        except Exception as exc:  # the error boundary: everything maps to a status here
            code, message = status_for(exc, rid)
        else:
            log.info(
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
        await context.abort(code, message)
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
        """Read items, run each as its own task, and send responses as they complete.

        A semaphore bounds the items in flight (accepted, response not yet sent): at the
        bound the reader stops reading, so gRPC flow control pushes back on the client.
        """
        rid = _request_id(context)
        request_id_var.set(rid)
        await context.send_initial_metadata((("x-request-id", rid),))
        in_flight = asyncio.Semaphore(self._limits.stream_max_in_flight)
        done: asyncio.Queue[_Item | BaseException | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()
        ordered_box: list[bool] = [False]
        reader = asyncio.create_task(
            self._read_stream(request_iterator, context, rid, in_flight, done, tasks, ordered_box)
        )
        next_seq = 0
        held: dict[int, ocr_pb2.StreamRecognizeResponse] = {}
        failure: tuple[grpc.StatusCode, str] | None = None
        try:
            while (item := await done.get()) is not None:
                if isinstance(item, BaseException):
                    failure = status_for(item, rid)
                    break
                if not ordered_box[0]:
                    yield item.response
                    in_flight.release()
                    continue
                held[item.seq] = item.response
                while next_seq in held:
                    yield held.pop(next_seq)
                    next_seq += 1
                    in_flight.release()
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()
        if failure is not None:
            await context.abort(*failure)

    async def _read_stream(
        self,
        request_iterator: AsyncIterator[ocr_pb2.StreamRecognizeRequest],
        context: grpc.aio.ServicerContext,
        rid: str,
        in_flight: asyncio.Semaphore,
        done: asyncio.Queue[_Item | BaseException | None],
        tasks: set[asyncio.Task[None]],
        ordered_box: list[bool],
    ) -> None:
        """Read the request stream, spawning one task per item; put None on the queue at the end."""
        model = ""
        seq = 0
        try:
            async for request in request_iterator:
                if seq == 0 and not tasks and request.HasField("options"):
                    model = request.options.model
                    ordered_box[0] = request.options.ordered
                    self._engine.resolve(model)  # unknown model: fail the stream at once
                    if request.WhichOneof("item") is None:
                        continue
                    error = None
                elif request.HasField("options"):
                    error = InvalidInput(
                        "stream options may only be set on the first message of the stream"
                    )
                elif request.WhichOneof("item") is None:
                    error = InvalidInput("message has no item: set `line`")
                else:
                    error = None
                await in_flight.acquire()
                task = asyncio.create_task(
                    self._stream_item(seq, request, model, error, context, rid, done)
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                seq += 1
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            await done.put(None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the response side, which maps it to a status
            await done.put(exc)

    async def _stream_item(
        self,
        seq: int,
        request: ocr_pb2.StreamRecognizeRequest,
        model: str,
        error: OcrError | None,
        context: grpc.aio.ServicerContext,
        rid: str,
        done: asyncio.Queue[_Item | BaseException | None],
    ) -> None:
        response = ocr_pb2.StreamRecognizeResponse(id=request.id)
        try:
            if error is not None:
                raise error
            _, results = await self._engine.recognize_lines(
                [image_source(request.line)], model, context.time_remaining()
            )
            response.line.CopyFrom(line_result(results[0]))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one item's error answers that item; the stream goes on
            code, message = status_for(exc, rid)
            response.error.CopyFrom(status_pb2.Status(code=code.value[0], message=message))
        await done.put(_Item(seq, response))
