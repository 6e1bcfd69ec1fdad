"""The bound on calls and streams handled at once (``--max-concurrent-rpcs``), health exempt.

gRPC's own ``maximum_concurrent_rpcs`` counts every call, health checks included: with the
slots held by long-lived ``StreamRecognize`` streams, a Kubernetes liveness probe got
RESOURCE_EXHAUSTED, and the restart it triggered killed every one of those streams. This
interceptor counts every service but health, and refuses the call beyond the bound with
RESOURCE_EXHAUSTED and a message that says what to do, before its handler runs.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from ocr_server.security import OPEN_SERVICES


class CallLimitInterceptor(grpc.aio.ServerInterceptor):
    """Admits at most ``limit`` calls and streams at once, not counting health checks.

    A call's slot is freed when the RPC ends, however it ends (the context's done callback
    runs on completion, cancellation and abort alike). Only the event loop touches the count.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the call limit must be at least 1, got {limit}")
        self.limit = limit
        self.active = 0
        self._message = (
            f"the server is handling its limit of {limit} calls and streams at once "
            "(--max-concurrent-rpcs); retry with backoff, or send more work per call or stream"
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICES):
            return handler
        return self._counted(handler)

    async def _admit(self, context: grpc.aio.ServicerContext) -> None:
        """Take a slot for this call (freed when it ends), or abort it RESOURCE_EXHAUSTED."""
        if self.active >= self.limit:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._message)
        self.active += 1
        context.add_done_callback(self._release)

    def _release(self, _context: object) -> None:
        self.active -= 1

    def _counted(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` with its behaviour run only once a slot is taken."""
        if handler.request_streaming and handler.response_streaming:
            field = "stream_stream"
        elif handler.request_streaming:
            field = "stream_unary"
        elif handler.response_streaming:
            field = "unary_stream"
        else:
            field = "unary_unary"
        behaviour = getattr(handler, field)
        admit = self._admit

        if inspect.isasyncgenfunction(behaviour):

            async def generating(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                await admit(context)
                async for response in behaviour(request, context):
                    yield response

            return handler._replace(**{field: generating})

        async def returning(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admit(context)
            return await behaviour(request, context)

        return handler._replace(**{field: returning})
