"""A thin typed client over the generated ``OcrService`` stub, sync and asyncio.

Why a wrapper at all, when the stub works: callers get plain dataclasses instead of proto
messages, a small exception tree instead of ``grpc.RpcError`` (see ``errors.py``), a
deadline on every call (a call without one can wait forever on a stuck server), and one
long-lived channel with message limits that fit images (gRPC's default receive limit of
4 MiB is smaller than a few hundred raw lines). A channel multiplexes any number of
concurrent calls, so one client per process and address is the intended use; do not pool.

The sync and the async client differ only in how they wait. Request building and response
conversion are module-level functions both use, so the two cannot drift apart.

Several servers: an address list (``"h1:50051,h2:50051"`` or ``["h1:50051", "h2:50051"]``)
or a ``dns:///name:port`` target gives one channel that spreads calls over every server with
gRPC's own ``round_robin`` load balancing, retries calls that fail with UNAVAILABLE (or
CANCELLED by a server shutting down) before any server answered them, and skips servers
whose health service says NOT_SERVING (starting or draining). See :func:`resolve_target`
and :func:`scale_out_service_config`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ocr_client.auth import BearerTokenInterceptor, bearer_metadata
from ocr_client.errors import (
    OcrClientError,
    ServerError,
    ServerUnavailable,
    from_rpc_error,
    from_status,
)
from ocr_client.images import ColorOrder, ImageInput, fill_proto_image
from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TIMEOUT_S",
    "AsyncOcrClient",
    "DocumentInput",
    "LineResult",
    "ModelInfo",
    "OcrClient",
    "Page",
    "PageOptions",
    "PageResult",
    "StreamItem",
    "StreamItemResult",
    "Word",
    "resolve_target",
    "scale_out_service_config",
]

DEFAULT_ADDRESS = "localhost:50051"
DEFAULT_TIMEOUT_S = 30.0
# The largest response this client accepts, and the request size the CLI plans for when a
# server does not report its own limit (the server's default --max-message-bytes). Requests
# themselves are not capped by the client: the server enforces its limit.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

SERVICE_NAME = "ocr.v1.OcrService"
# gRPC retries a call only while the request messages it sent are still buffered (and no
# server has answered). The default buffer is 256 KiB per call, less than one large page or
# a few dozen line PNGs; 16 MiB covers the usual requests, and the bytes are held only until
# the first server answers.
SCALE_OUT_RETRY_BUFFER_BYTES = 16 * 1024 * 1024
# Targets in these resolver schemes may name several servers, so they get load balancing.
_BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")

# Page results and options are the proto messages themselves: a page result is a tree of
# lines, words, quads and blocks that callers mostly hand on (to a writer in
# ``ocr_client.formats``, to json_format), and a mirror of it in dataclasses would be a second
# schema to keep in step with the proto for no gain.
PageResult = ocr_pb2.PageResult
PageOptions = ocr_pb2.PageOptions

# A document for RecognizeDocument: the file's bytes, or a path to read them from.
DocumentInput = bytes | bytearray | memoryview | str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class Page:
    """Marks a stream item as a whole page (text detection, then every line recognised) rather
    than a single text line, which is what a bare image in a stream means.

    A typed wrapper rather than a flag on the call because one stream may mix lines and pages.
    ``id`` is echoed in the item's result; None means the item's position ("0", "1", ...).
    Inside an ``(id, Page(...))`` tuple the tuple's id is used.
    """

    image: ImageInput
    id: str | None = None


# A stream item: an image (a line; its id is then its position, "0", "1", ...), (id, image),
# or a Page (or (id, Page)) for a page item.
StreamItem = tuple[str, ImageInput] | ImageInput | Page


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Word:
    """One word of a line: its text, mean character confidence in [0, 1], and its
    horizontal extent in pixels of the image sent, ``x_start`` inclusive, ``x_end``
    exclusive."""

    text: str
    confidence: float
    x_start: int
    x_end: int

    @classmethod
    def from_proto(cls, msg: ocr_pb2.Word) -> Word:
        return cls(msg.text, msg.confidence, msg.x_start, msg.x_end)


@dataclass(frozen=True, slots=True)
class LineResult:
    """The recognised text of one line image; ``text`` is empty when no text was found
    (then ``confidence`` is 0 and ``words`` is empty)."""

    text: str
    confidence: float
    words: tuple[Word, ...] = ()

    @classmethod
    def from_proto(cls, msg: ocr_pb2.LineResult) -> LineResult:
        return cls(msg.text, msg.confidence, tuple(Word.from_proto(w) for w in msg.words))


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model the server serves; ``name`` is what to pass as ``model=``."""

    name: str
    is_default: bool
    charset_size: int
    input_height: int
    source: str
    #: Reads whole pages (has a text detector, and the server loaded it; see ``--no-pages``).
    supports_pages: bool = False
    #: Turns pages scanned sideways or upside down upright (``PageOptions``).
    supports_page_rotation: bool = False
    #: Turns single upside-down lines on a page.
    supports_line_rotation: bool = False

    @classmethod
    def from_proto(cls, msg: ocr_pb2.ModelInfo) -> ModelInfo:
        return cls(
            msg.name,
            msg.is_default,
            msg.charset_size,
            msg.input_height,
            msg.source,
            msg.supports_pages,
            msg.supports_page_rotation,
            msg.supports_line_rotation,
        )


@dataclass(frozen=True, slots=True)
class StreamItemResult:
    """The answer to one stream item: exactly one of ``line``, ``page`` and ``error`` is set
    (``line`` for a line item, ``page`` for a :class:`Page` item).

    A failed item does not end the stream (the server goes on with the next item), so its
    error is returned here as a value, not raised. ``page`` is last and defaulted so that code
    built on the three-field form keeps working.
    """

    id: str
    line: LineResult | None
    error: OcrClientError | None
    page: PageResult | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_proto(cls, msg: ocr_pb2.StreamRecognizeResponse) -> StreamItemResult:
        kind = msg.WhichOneof("result")
        if kind == "line":
            return cls(msg.id, LineResult.from_proto(msg.line), None)
        if kind == "page":
            return cls(msg.id, None, None, msg.page)
        if kind == "error":
            return cls(msg.id, None, from_status(msg.error.code, msg.error.message))
        # Not something a conforming server sends; surface it rather than invent a result.
        return cls(msg.id, None, ServerError("server sent a response with no result", None))


# --------------------------------------------------------------------------- shared helpers


def _channel_options(options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Default message limits, overridden key by key by the caller's options.

    Requests are not capped here: the server's ``--max-message-bytes`` is the limit (it
    may be above this client's default), and it refuses a larger one RESOURCE_EXHAUSTED.
    """
    merged: dict[str, Any] = {
        "grpc.max_send_message_length": -1,
        "grpc.max_receive_message_length": DEFAULT_MAX_MESSAGE_BYTES,
    }
    merged.update(options)
    return list(merged.items())


# --------------------------------------------------------------------------- targets


def scale_out_service_config(
    *,
    max_attempts: int = 4,
    initial_backoff_s: float = 0.1,
    max_backoff_s: float = 2.0,
    metadata_timeout_s: float = 10.0,
) -> dict[str, Any]:
    """The gRPC service config of a channel to several servers, as a dict (``json.dumps`` it
    for the ``grpc.service_config`` channel option; other languages take the same JSON).

    - ``round_robin``: one connection per server and calls spread over the ready ones; the
      default ``pick_first`` would send everything to the first server that answers.
    - ``healthCheckConfig``: the channel watches each server's ``grpc.health.v1`` status for
      ``ocr.v1.OcrService`` and sends no calls to one that is NOT_SERVING (still warming up,
      or draining after SIGTERM). A server without a health service counts as healthy.
    - ``retryPolicy`` on UNAVAILABLE (and CANCELLED, below), with exponential backoff: a
      server that went away or refused the call (shutting down) is retried on another. gRPC
      retries a call only until it is *committed*: once a server has sent response headers,
      or the request outgrew the retry buffer, a failure is final. So a stream is never
      replayed after results were received from it; a StreamRecognize or RecognizeDocument
      call that failed before any answer is replayed whole (all its buffered requests) on
      another server, which is safe since nothing of it was delivered. Our server sends
      headers when it starts a call, so a call that a server accepted and then lost (killed,
      not drained) fails with UNAVAILABLE for the caller to retry; a SIGTERM drains calls in
      flight instead. CANCELLED is retried too: a server shutting down cancels the calls
      gRPC has received but not yet handed to its handlers (grpc/grpc#41785), which come
      back CANCELLED before any header. Our server never answers CANCELLED itself, and gRPC
      never retries a call its own caller cancelled, so nothing the caller gave up on is
      sent again.
    - Timeouts: ListModels and GetStats are cheap, so ``metadata_timeout_s`` caps them (a
      slow answer means a sick server). The OCR methods get none here: their deadline
      depends on the input (lines, pages) and every call of this client sends its own.
    """
    if not 2 <= max_attempts <= 5:
        raise ValueError(f"max_attempts must be in 2..5 (gRPC caps it at 5), got {max_attempts}")
    retry = {
        "maxAttempts": max_attempts,
        "initialBackoff": f"{initial_backoff_s:g}s",
        "maxBackoff": f"{max_backoff_s:g}s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
    }
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": SERVICE_NAME},
        "methodConfig": [
            {"name": [{"service": SERVICE_NAME}], "retryPolicy": retry},
            {
                "name": [
                    {"service": SERVICE_NAME, "method": "ListModels"},
                    {"service": SERVICE_NAME, "method": "GetStats"},
                ],
                "timeout": f"{metadata_timeout_s:g}s",
                "retryPolicy": retry,
            },
        ],
    }


def _split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; the port is required (a list has no default)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r}: expected HOST:PORT in an address list")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _ip_addresses(host: str, port: int) -> tuple[list[str], list[str]]:
    """(IPv4, IPv6) addresses of ``host``: the literal itself, or what the resolver says."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return ([str(ip)], []) if ip.version == 4 else ([], [str(ip)])
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from None
    v4 = [str(i[4][0]) for i in infos if i[0] == socket.AF_INET]
    v6 = [str(i[4][0]) for i in infos if i[0] == socket.AF_INET6]
    return list(dict.fromkeys(v4)), list(dict.fromkeys(v6))


def _address_parts(address: str | Sequence[str]) -> list[str]:
    """The servers ``address`` names: a ``dns:///``, ``ipv4:`` or ``ipv6:`` target whole,
    else each ``host:port`` of a list or of a comma-separated string."""
    if isinstance(address, str):
        balanced_target = address.startswith(_BALANCED_SCHEMES)
        parts = (
            [address] if balanced_target else [x.strip() for x in address.split(",") if x.strip()]
        )
    else:
        parts = [x.strip() if isinstance(x, str) else x for x in address]
    if not parts or not all(isinstance(p, str) and p for p in parts):
        raise ValueError(f"expected a server address or a list of them, got {address!r}")
    return parts


def resolve_target(address: str | Sequence[str]) -> tuple[str, bool]:
    """The gRPC target for ``address`` and whether it may name several servers.

    - One ``host:port`` (or any single target, e.g. ``unix:/path``): passed to gRPC as it
      is, with no load balancing; the behaviour of a one-server client does not change.
    - ``dns:///name:port``, ``ipv4:...``, ``ipv6:...``: passed as they are, balanced. With
      ``dns:///`` gRPC re-resolves the name (e.g. a Kubernetes headless Service), so servers
      that come and go are followed.
    - Several ``host:port`` (a list, or one string with commas): a static ``ipv4:`` (or
      ``ipv6:``) target of all their addresses. Host names are resolved once, here, because
      a gRPC target can name several addresses but not several names; for a membership that
      changes, give one DNS name instead.
    """
    parts = _address_parts(address)
    if len(parts) == 1:
        return parts[0], parts[0].startswith(_BALANCED_SCHEMES)
    v4: list[str] = []
    v6: list[str] = []
    all_v4 = all_v6 = True
    for part in parts:
        host, port = _split_host_port(part)
        four, six = _ip_addresses(host, port)
        v4 += [f"{ip}:{port}" for ip in four]
        v6 += [f"[{ip}]:{port}" for ip in six]
        all_v4 = all_v4 and bool(four)
        all_v6 = all_v6 and bool(six)
    # One target has one scheme: IPv4 where every server has an IPv4 address, else IPv6.
    if all_v4:
        return "ipv4:" + ",".join(dict.fromkeys(v4)), True
    if all_v6:
        return "ipv6:" + ",".join(dict.fromkeys(v6)), True
    raise ValueError(
        f"{address!r} mixes IPv4-only and IPv6-only servers; one gRPC channel takes one family"
    )


# The channel options a balanced target gets, built once (the config is the same every time).
_SCALE_OUT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.service_config", json.dumps(scale_out_service_config())),
    ("grpc.per_rpc_retry_buffer_size", SCALE_OUT_RETRY_BUFFER_BYTES),
)


def _target_and_options(
    address: str | Sequence[str], options: Sequence[tuple[str, Any]]
) -> tuple[str, str, list[tuple[str, Any]]]:
    """(address as text, gRPC target, channel options): a balanced target gets the scale-out
    service config and retry buffer, which the caller's options may still override."""
    target, balanced = resolve_target(address)
    text = address if isinstance(address, str) else ",".join(address)
    extra: list[tuple[str, Any]] = list(_SCALE_OUT_OPTIONS) if balanced else []
    name = _shared_host_name(address)
    if name is not None:
        # The list was resolved to addresses, so TLS would check the certificate against an
        # IP address; every server has the name, so that is the name to check.
        extra.append(("grpc.ssl_target_name_override", name))
    return text, target, _channel_options([*extra, *options])


def _shared_host_name(address: str | Sequence[str]) -> str | None:
    """The host name of every ``host:port`` when ``address`` lists several with one name
    (servers on several ports of a host, or replicas behind one name); else None."""
    parts = _address_parts(address)
    if len(parts) < 2:
        return None
    hosts = {_split_host_port(part)[0] for part in parts}
    if len(hosts) != 1:
        return None
    host = hosts.pop()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


def _open_channel(
    grpc_module: Any,
    target: str,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]],
    **kwargs: Any,
) -> Any:
    """A TLS channel with ``credentials``, else a plaintext one; ``grpc_module`` is ``grpc``
    or ``grpc.aio``, whose channel constructors take the same arguments."""
    if credentials is not None:
        return grpc_module.secure_channel(target, credentials, options=options, **kwargs)
    return grpc_module.insecure_channel(target, options=options, **kwargs)


def _check_connections(connections: int) -> int:
    if connections < 1:
        raise ValueError(f"connections must be at least 1, got {connections}")
    return connections


def _connection_options(
    options: Sequence[tuple[str, Any]], connections: int
) -> list[tuple[str, Any]]:
    """``options`` for one of ``connections`` channels: with several, each channel gets a
    subchannel pool of its own, so each opens its own connection (channels to the same
    target otherwise share one)."""
    if connections == 1:
        return list(options)
    return [*options, ("grpc.use_local_subchannel_pool", 1)]


_HEALTH_STATUS_NAMES = {
    v.number: v.name for v in health_pb2.HealthCheckResponse.ServingStatus.DESCRIPTOR.values
}


def _health_status(status: int) -> str:
    return _HEALTH_STATUS_NAMES.get(status, "UNKNOWN")


def _health_failure(err: grpc.RpcError) -> str:
    """A health Check that failed: "SERVICE_UNKNOWN" when the server does not know the
    service (the health protocol's answer is NOT_FOUND); any other failure raises."""
    error = from_rpc_error(err)
    if error.code == grpc.StatusCode.NOT_FOUND:
        return "SERVICE_UNKNOWN"
    raise error from err


@contextlib.contextmanager
def _rpc_errors() -> Iterator[None]:
    """A failed call raises the client's exception for its status, the ``grpc.RpcError``
    as its ``__cause__`` (a plain ``with`` serves the async client too)."""
    try:
        yield
    except grpc.RpcError as err:
        raise from_rpc_error(err) from err


def _not_ready(address: str, seconds: float) -> ServerUnavailable:
    return ServerUnavailable(
        f"server at {address} not ready within {seconds:g} s", grpc.StatusCode.UNAVAILABLE
    )


#: The longest deadline sent (ten years): gRPC takes one past its int64 nanoseconds (about
#: 9.2e9 s) as already passed, so ``math.inf`` or 1e10 failed every call at once.
_MAX_TIMEOUT_S = 10 * 365 * 86400.0


def _check_timeout(timeout: float) -> float:
    """A call's timeout in seconds: positive; ``math.inf`` (or anything over ten years)
    means no deadline in practice."""
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return min(float(timeout), _MAX_TIMEOUT_S)


def _is_path(x: object) -> bool:
    return isinstance(x, str | os.PathLike)


def _check_many(images: object, what: str) -> None:
    """Refuse one path or one file's bytes where a collection is expected: both iterate
    (as characters or ints), which failed later with FileNotFoundError: 'i'."""
    if isinstance(images, str | bytes | bytearray | memoryview | os.PathLike):
        raise TypeError(
            f"{what} takes a list of images (or items), got a single {type(images).__name__}; "
            "pass [image], or use recognize_line / recognize_page for one"
        )


def _recognize_request(
    images: Sequence[ImageInput], model: str, color_order: ColorOrder | str
) -> ocr_pb2.RecognizeLinesRequest:
    """Converts every image first, so a bad input fails before anything is sent."""
    request = ocr_pb2.RecognizeLinesRequest(model=model)
    for image in images:
        fill_proto_image(request.images.add(), image, color_order)
    return request


def _lines_from_response(response: ocr_pb2.RecognizeLinesResponse, sent: int) -> list[LineResult]:
    # The API promises one result per image in order; a mismatch would silently shift
    # every text onto the wrong image, so it is an error, not a shorter list.
    if len(response.results) != sent:
        raise ServerError(f"server returned {len(response.results)} results for {sent} images")
    return [LineResult.from_proto(r) for r in response.results]


def _split_item(index: int, item: StreamItem) -> tuple[str, ImageInput, bool]:
    """(id, image, is_page) of one stream item."""
    if isinstance(item, Page):
        return (str(index) if item.id is None else item.id), item.image, True
    if isinstance(item, tuple):
        if len(item) == 2 and isinstance(item[0], str):
            if isinstance(item[1], Page):
                return item[0], item[1].image, True
            return item[0], item[1], False
        raise TypeError("stream items must be images, Page(...) or (id: str, image) tuples")
    return str(index), item, False


def _stream_options(
    model: str, ordered: bool, page_options: PageOptions | None
) -> ocr_pb2.StreamOptions:
    options = ocr_pb2.StreamOptions(model=model, ordered=ordered)
    if page_options is not None:
        options.page_options.CopyFrom(page_options)
    return options


def _stream_request(
    item_id: str,
    image: ImageInput,
    color_order: ColorOrder | str,
    options: ocr_pb2.StreamOptions | None,
    is_page: bool = False,
) -> ocr_pb2.StreamRecognizeRequest:
    """One stream message; ``options`` only on the first (the server reads them there only)."""
    request = ocr_pb2.StreamRecognizeRequest(id=item_id)
    fill_proto_image(request.page if is_page else request.line, image, color_order)
    if options is not None:
        request.options.CopyFrom(options)
    return request


def _stream_requests(
    items: Iterable[StreamItem],
    model: str,
    ordered: bool,
    color_order: ColorOrder | str,
    page_options: PageOptions | None = None,
) -> Iterator[ocr_pb2.StreamRecognizeRequest]:
    """Lazily, so a long (or endless) item source is never held in memory."""
    options: ocr_pb2.StreamOptions | None = _stream_options(model, ordered, page_options)
    for index, item in enumerate(items):
        item_id, image, is_page = _split_item(index, item)
        yield _stream_request(item_id, image, color_order, options, is_page)
        options = None


def _page_request(
    image: ImageInput, model: str, options: PageOptions | None, color_order: ColorOrder | str
) -> ocr_pb2.RecognizePageRequest:
    request = ocr_pb2.RecognizePageRequest(model=model)
    fill_proto_image(request.image, image, color_order)
    if options is not None:
        request.options.CopyFrom(options)
    return request


def _document_request(
    data: DocumentInput, model: str, options: PageOptions | None, pdf_dpi: int
) -> ocr_pb2.RecognizeDocumentRequest:
    """Reads a path here, so an unreadable or empty file fails before the call."""
    if _is_path(data):
        payload = Path(data).read_bytes()
        if not payload:
            raise ValueError(f"{os.fspath(data)!s}: the file is empty")
    elif isinstance(data, bytes | bytearray | memoryview):
        payload = bytes(data)
        if not payload:
            raise ValueError("document bytes are empty; expected a TIFF, PDF or image file")
    else:
        raise TypeError(
            f"cannot send a {type(data).__name__} as a document: pass its bytes or a path"
        )
    request = ocr_pb2.RecognizeDocumentRequest(data=payload, model=model, pdf_dpi=pdf_dpi)
    if options is not None:
        request.options.CopyFrom(options)
    return request


class _FeedState:
    """Carries an exception raised while producing stream requests (the caller's iterable,
    or an input that cannot be converted) from the producing side to the reading side.

    Such an error is the caller's, not the server's: the call is cancelled and the reader
    raises the original exception instead of the CANCELLED status it sees.
    """

    def __init__(self) -> None:
        self.error: Exception | None = None


class _SyncRequestFeed(_FeedState):
    """The request iterator handed to grpc, which consumes it on its own thread.

    grpc's handling of an iterator that raises is to log a traceback and fail the call with
    UNKNOWN "Exception iterating requests!", losing the exception; this catches it first.
    The call object is known only after the stub returns, possibly after the iterator has
    already failed, hence ``attach`` and the lock.
    """

    def __init__(self, requests: Iterator[ocr_pb2.StreamRecognizeRequest]) -> None:
        super().__init__()
        self._requests = requests
        self._lock = threading.Lock()
        self._call: grpc.Future | None = None

    def __iter__(self) -> Iterator[ocr_pb2.StreamRecognizeRequest]:
        try:
            yield from self._requests
        except Exception as exc:
            with self._lock:
                self.error = exc
                call = self._call
            if call is not None:
                call.cancel()

    def attach(self, call: grpc.Future) -> None:
        with self._lock:
            self._call = call
            failed = self.error is not None
        if failed:
            call.cancel()


# --------------------------------------------------------------------------- sync client


class OcrClient:
    """Blocking client; one channel, closed by ``close()`` or by leaving a ``with`` block.

    Every call has a deadline: its ``timeout`` argument in seconds, or the client's
    ``timeout`` when that is None. Failures raise :class:`~ocr_client.OcrClientError`
    subclasses, with the ``grpc.RpcError`` as ``__cause__``. Thread-safe, like the channel.
    """

    def __init__(
        self,
        address: str | Sequence[str] = DEFAULT_ADDRESS,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        options: Sequence[tuple[str, Any]] = (),
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        connections: int = 1,
    ) -> None:
        """``address``: one ``host:port``, or several servers (a list, a comma-separated
        string, or a ``dns:///name:port`` target), see :func:`resolve_target`.
        ``credentials``: TLS (see :func:`ocr_client.tls_credentials`); ``token``: a bearer
        token sent with every call, for servers started with auth tokens.
        ``connections``: channels to open, each with its own connection, calls going to
        them in turn; for a server started with ``--processes``, whose processes share
        connections (not calls) as the kernel spreads them (8 or more for 4 processes)."""
        self._timeout = _check_timeout(timeout)
        self.address, self.target, opts = _target_and_options(address, options)
        count = _check_connections(connections)
        # The channels themselves (closed by close(), watched by wait_ready); the stubs call
        # through the token interceptor when there is a token.
        self._channels = [
            _open_channel(grpc, self.target, credentials, _connection_options(opts, count))
            for _ in range(count)
        ]
        stubs = []
        for channel in self._channels:
            calls = channel
            if token:
                calls = grpc.intercept_channel(channel, BearerTokenInterceptor(token))
            stubs.append((ocr_pb2_grpc.OcrServiceStub(calls), health_pb2_grpc.HealthStub(calls)))
        self._next_stubs = itertools.cycle(stubs)  # next() is atomic: safe across threads

    @property
    def _stub(self) -> Any:
        return next(self._next_stubs)[0]

    @property
    def _health(self) -> Any:
        return next(self._next_stubs)[1]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channels; calls in flight are cancelled."""
        for channel in self._channels:
            channel.close()

    def _deadline(self, timeout: float | None) -> float:
        return self._timeout if timeout is None else _check_timeout(timeout)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the channel is connected, e.g. right after starting a server.

        Raises :class:`~ocr_client.ServerUnavailable` when it is not within the timeout.
        """
        seconds = self._deadline(timeout)
        end = time.monotonic() + seconds
        for channel in self._channels:
            future = grpc.channel_ready_future(channel)
            try:
                future.result(timeout=max(0.0, end - time.monotonic()))
            except grpc.FutureTimeoutError:
                raise _not_ready(self.address, seconds) from None
            finally:
                future.cancel()  # stops watching the channel's connectivity

    def recognize_lines(
        self,
        images: Sequence[ImageInput],
        *,
        model: str = "",
        color_order: ColorOrder | str = "rgb",
        timeout: float | None = None,
    ) -> list[LineResult]:
        """Recognise line images in one call; one result per image, in order.

        The server limits the images per call (``max_lines_per_request``, default 256;
        beyond it :class:`~ocr_client.ServerBusy`). No images: no call, an empty list.
        """
        return self._recognize(images, model=model, color_order=color_order, timeout=timeout)[1]

    def recognize_line(
        self,
        image: ImageInput,
        *,
        model: str = "",
        color_order: ColorOrder | str = "rgb",
        timeout: float | None = None,
    ) -> LineResult:
        """Recognise one line image (a one-image ``recognize_lines``)."""
        lines = self.recognize_lines([image], model=model, color_order=color_order, timeout=timeout)
        return lines[0]

    def _recognize(
        self,
        images: Sequence[ImageInput],
        *,
        model: str,
        color_order: ColorOrder | str,
        timeout: float | None,
    ) -> tuple[str, list[LineResult]]:
        """``recognize_lines`` plus the name of the model that ran (the CLI reports it)."""
        _check_many(images, "recognize_lines")
        seconds = self._deadline(timeout)
        request = _recognize_request(images, model, color_order)
        if not request.images:
            return model, []
        with _rpc_errors():
            response = self._stub.RecognizeLines(request, timeout=seconds)
        return response.model, _lines_from_response(response, len(request.images))

    def stream_recognize(
        self,
        items: Iterable[StreamItem],
        *,
        model: str = "",
        ordered: bool = False,
        color_order: ColorOrder | str = "rgb",
        page_options: PageOptions | None = None,
        timeout: float | None = None,
    ) -> Generator[StreamItemResult, None, None]:
        """Recognise a stream of items on one call, yielding results as they arrive.

        ``items`` are images (text lines; ids "0", "1", ... by position), ``(id, image)``
        pairs, or :class:`Page` items (``Page(image, id)``, or ``(id, Page(image))``), which
        are read as whole pages with ``page_options`` and answered in ``result.page``; one
        stream may mix both. ``items`` is read lazily, as the server's flow control allows.
        Results come as items complete unless ``ordered``. An item's own error is in its
        result's ``error``; a failure of the whole call raises. The deadline covers the whole
        stream, so size ``timeout`` for it. Closing the generator early (``close()``, or
        dropping it after a ``break``) cancels the call, so the server stops working on the
        rest.
        """
        _check_many(items, "stream_recognize")
        seconds = self._deadline(timeout)
        feed = _SyncRequestFeed(_stream_requests(items, model, ordered, color_order, page_options))
        call = self._stub.StreamRecognize(iter(feed), timeout=seconds)
        feed.attach(call)
        try:
            for response in call:
                if feed.error is not None:
                    break
                yield StreamItemResult.from_proto(response)
        except grpc.RpcError as err:
            if feed.error is not None:
                raise feed.error from None
            raise from_rpc_error(err) from err
        finally:
            call.cancel()  # no-op once the call has ended; frees the server otherwise
        if feed.error is not None:
            raise feed.error

    def recognize_page(
        self,
        image: ImageInput,
        *,
        model: str = "",
        options: PageOptions | None = None,
        color_order: ColorOrder | str = "rgb",
        timeout: float | None = None,
    ) -> PageResult:
        """Find and recognise every line of a page image (a scan, photo or screenshot).

        ``options`` (a :class:`PageOptions`; unset fields are server defaults) tune detection
        and rotation handling. A page without text is a result with no lines, not an error.
        """
        seconds = self._deadline(timeout)
        request = _page_request(image, model, options, color_order)
        with _rpc_errors():
            response: PageResult = self._stub.RecognizePage(request, timeout=seconds)
        return response

    def recognize_document(
        self,
        data: DocumentInput,
        *,
        model: str = "",
        options: PageOptions | None = None,
        pdf_dpi: int = 0,
        timeout: float | None = None,
    ) -> Generator[PageResult, None, None]:
        """Recognise every page of a document file (multi-page TIFF, PDF where the server has
        PDF support, or one image), yielding one :class:`PageResult` per page in page order.

        ``data`` is the file's bytes or its path; the server splits and renders it
        (``pdf_dpi``: 0 means the server's 200). The file is read and the call starts at the
        first iteration; the deadline covers every page. An error after some pages were
        yielded raises then. Closing the generator early cancels the call. To split files
        on the client instead (no server PDF support needed, pages of many files on one
        call), stream :class:`Page` items from :mod:`ocr_client.documents`.
        """
        seconds = self._deadline(timeout)
        request = _document_request(data, model, options, pdf_dpi)
        call = self._stub.RecognizeDocument(request, timeout=seconds)
        try:
            with _rpc_errors():
                yield from call
        finally:
            call.cancel()  # no-op once the call has ended; frees the server otherwise

    def _list_models(self, timeout: float | None) -> ocr_pb2.ListModelsResponse:
        """ListModels, which answers both the models and the server's limits."""
        with _rpc_errors():
            return self._stub.ListModels(
                ocr_pb2.ListModelsRequest(), timeout=self._deadline(timeout)
            )

    def list_models(self, timeout: float | None = None) -> list[ModelInfo]:
        """The models this server serves (one has ``is_default``)."""
        return [ModelInfo.from_proto(m) for m in self._list_models(timeout).models]

    def server_limits(self, timeout: float | None = None) -> ocr_pb2.ServerLimits:
        """The server's request limits (images per call, pixels, line width, message size,
        stream window, document pages), as the proto message; 0 means not reported."""
        return self._list_models(timeout).limits

    def get_stats(self, timeout: float | None = None) -> ocr_pb2.GetStatsResponse:
        """The micro-batchers' counters, as the proto message (a diagnostics call)."""
        request = ocr_pb2.GetStatsRequest()
        with _rpc_errors():
            return self._stub.GetStats(request, timeout=self._deadline(timeout))

    def check_health(self, service: str = "", timeout: float | None = None) -> str:
        """The server's ``grpc.health.v1`` status of ``service`` ("" = the whole server):
        "SERVING", "NOT_SERVING" (starting or draining), "SERVICE_UNKNOWN" or "UNKNOWN".

        A status, not an exception, because NOT_SERVING is an answer; a server that cannot be
        reached raises :class:`~ocr_client.ServerUnavailable` (or ``DeadlineExceeded``). With
        several servers, one of them answers.
        """
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            response = self._health.Check(request, timeout=self._deadline(timeout))
        except grpc.RpcError as err:
            return _health_failure(err)
        return _health_status(response.status)


# --------------------------------------------------------------------------- async client

_T = TypeVar("_T")


async def _build_request(reads_files: bool, build: Callable[..., _T], *args: Any) -> _T:
    """``build(*args)``, in a worker thread when it reads files, so that the event loop never
    waits on a disk."""
    if reads_files:
        return await asyncio.to_thread(build, *args)
    return build(*args)


async def _aiter_items(
    items: Iterable[StreamItem] | AsyncIterable[StreamItem],
) -> AsyncIterator[StreamItem]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


#: What grpc.aio reports when a write fails because the call has just ended (grpc#36066).
_CORE_INTERNAL = "Internal error from Core"
#: How long a stream waits for the server's status after grpc.aio's INTERNAL stand-in.
_STATUS_GRACE_S = 1.0


def _settled(status_getter: Coroutine[Any, Any, _T]) -> _T:
    """The value of one of a finished grpc.aio call's status getters (``code()`` ...),
    which return without waiting once the call has a status."""
    try:
        status_getter.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    status_getter.close()
    raise RuntimeError("the call has no status yet")


class _StatusWitness:
    """Keeps the status the server ended a stream call with, for when grpc.aio loses it.

    A write that fails because the server has just ended the call makes grpc.aio replace
    the call's status with INTERNAL "Internal error from Core" (grpc#36066, open): the
    caller of a refused stream (unknown model, bad token) got ``ServerError`` instead of
    ``ModelNotFound`` or ``Unauthenticated`` in up to half of the tries. Every status the
    call takes passes through its done callbacks, so the server's own is seen here
    whichever of the two comes first.
    """

    def __init__(self, call: Any) -> None:
        self._status: asyncio.Future[grpc.aio.AioRpcError] = (
            asyncio.get_running_loop().create_future()
        )
        call.add_done_callback(self._on_status)

    def _on_status(self, call: Any) -> None:
        if self._status.done() or call.cancelled():
            return
        details = _settled(call.details())
        if details == _CORE_INTERNAL:
            return
        self._status.set_result(
            grpc.aio.AioRpcError(
                _settled(call.code()),
                grpc.aio.Metadata(),
                _settled(call.trailing_metadata()),
                details,
                _settled(call.debug_error_string()),
            )
        )

    async def real(self, err: grpc.RpcError) -> grpc.RpcError:
        """``err``, or the server's status when ``err`` is grpc.aio's stand-in for it (which
        may arrive just before the server's own: wait a moment for that)."""
        if not (isinstance(err, grpc.aio.AioRpcError) and err.details() == _CORE_INTERNAL):
            return err
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(self._status), _STATUS_GRACE_S)
        return err


async def _write_stream(
    call: Any,
    items: Iterable[StreamItem] | AsyncIterable[StreamItem],
    model: str,
    ordered: bool,
    color_order: ColorOrder | str,
    feed: _FeedState,
    page_options: PageOptions | None = None,
) -> None:
    """Writes the stream's requests (a task beside the reader, so that the server's flow
    control pausing our writes never stops us reading its responses)."""
    options: ocr_pb2.StreamOptions | None = _stream_options(model, ordered, page_options)
    try:
        index = 0
        async for item in _aiter_items(items):
            item_id, image, is_page = _split_item(index, item)
            request = await _build_request(
                _is_path(image), _stream_request, item_id, image, color_order, options, is_page
            )
            options = None
            index += 1
            try:
                await call.write(request)
            except (grpc.RpcError, asyncio.InvalidStateError):
                return  # the call has ended; the reader reports its status
        try:
            await call.done_writing()
        except (grpc.RpcError, asyncio.InvalidStateError):
            return
    except Exception as exc:  # the caller's iterable, or an input that cannot be converted
        feed.error = exc
        call.cancel()


class AsyncOcrClient:
    """The asyncio client: same methods as :class:`OcrClient`, awaited.

    The methods take a ``timeout`` (ruff's ASYNC109 prefers ``asyncio.timeout`` around the
    await) because it is sent to the server as the call's gRPC deadline, so the server drops
    queued work when it passes; a client-side ``asyncio.timeout`` could not do that.

    The channel is created on first use, inside the running event loop it then belongs to
    (a grpc.aio channel cannot move between loops); use one client per loop.
    """

    def __init__(
        self,
        address: str | Sequence[str] = DEFAULT_ADDRESS,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        options: Sequence[tuple[str, Any]] = (),
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        connections: int = 1,
    ) -> None:
        """``address``, ``credentials``, ``token`` and ``connections`` as for
        :class:`OcrClient` (host names in a list are resolved here, before any event loop
        runs)."""
        # The token goes as each call's metadata, not through grpc.aio interceptors: an
        # intercepted stream the server refused left grpc's request task pending ("Task was
        # destroyed but it is pending": 17 in a run of 120 refused streams; none since).
        self._metadata = bearer_metadata(token) if token else None
        self._timeout = _check_timeout(timeout)
        self.address, self.target, self._options = _target_and_options(address, options)
        self._connections = _check_connections(connections)
        self._credentials = credentials
        self._channels: list[grpc.aio.Channel] = []
        self._next_stubs: Iterator[tuple[Any, Any]] = iter(())
        self._closed = False

    async def __aenter__(self) -> Self:
        self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels; calls in flight are cancelled."""
        self._closed = True
        channels, self._channels = self._channels, []
        for channel in channels:
            await channel.close()

    def _open(self) -> list[grpc.aio.Channel]:
        """The channels, made with their stubs on first use (inside the running loop)."""
        if self._closed:
            raise ValueError("the AsyncOcrClient is closed")
        if not self._channels:
            options = _connection_options(self._options, self._connections)
            self._channels = [
                _open_channel(
                    grpc.aio,
                    self.target,
                    self._credentials,
                    options,
                )
                for _ in range(self._connections)
            ]
            self._next_stubs = itertools.cycle(
                [
                    (ocr_pb2_grpc.OcrServiceStub(c), health_pb2_grpc.HealthStub(c))
                    for c in self._channels
                ]
            )
        return self._channels

    def _get_stub(self) -> Any:
        self._open()
        return next(self._next_stubs)[0]

    def _get_health(self) -> Any:
        self._open()
        return next(self._next_stubs)[1]

    def _deadline(self, timeout: float | None) -> float:
        return self._timeout if timeout is None else _check_timeout(timeout)

    async def wait_ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until the channel is connected; :class:`~ocr_client.ServerUnavailable`
        when it is not within the timeout."""
        seconds = self._deadline(timeout)
        channels = self._open()
        try:
            await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), seconds)
        except TimeoutError:
            raise _not_ready(self.address, seconds) from None

    async def recognize_lines(
        self,
        images: Sequence[ImageInput],
        *,
        model: str = "",
        color_order: ColorOrder | str = "rgb",
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[LineResult]:
        """See :meth:`OcrClient.recognize_lines`. Files are read off the event loop."""
        _, lines = await self._recognize(
            images, model=model, color_order=color_order, timeout=timeout
        )
        return lines

    async def recognize_line(
        self,
        image: ImageInput,
        *,
        model: str = "",
        color_order: ColorOrder | str = "rgb",
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> LineResult:
        """Recognise one line image (a one-image ``recognize_lines``)."""
        lines = await self.recognize_lines(
            [image], model=model, color_order=color_order, timeout=timeout
        )
        return lines[0]

    async def _recognize(
        self,
        images: Sequence[ImageInput],
        *,
        model: str,
        color_order: ColorOrder | str,
        timeout: float | None,  # noqa: ASYNC109
    ) -> tuple[str, list[LineResult]]:
        _check_many(images, "recognize_lines")
        seconds = self._deadline(timeout)
        stub = self._get_stub()
        images = list(images)
        reads_files = any(_is_path(im) for im in images)
        request = await _build_request(reads_files, _recognize_request, images, model, color_order)
        if not request.images:
            return model, []
        with _rpc_errors():
            response = await stub.RecognizeLines(request, timeout=seconds, metadata=self._metadata)
        return response.model, _lines_from_response(response, len(request.images))

    async def stream_recognize(
        self,
        items: Iterable[StreamItem] | AsyncIterable[StreamItem],
        *,
        model: str = "",
        ordered: bool = False,
        color_order: ColorOrder | str = "rgb",
        page_options: PageOptions | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AsyncGenerator[StreamItemResult, None]:
        """See :meth:`OcrClient.stream_recognize`; ``items`` may also be an async iterable.

        A sync ``items`` is iterated on the event loop, so it must not block. To stop early,
        ``await aclose()`` the generator (or use ``contextlib.aclosing``): that cancels the
        call at once rather than when the generator is garbage-collected.
        """
        _check_many(items, "stream_recognize")
        seconds = self._deadline(timeout)
        call = self._get_stub().StreamRecognize(timeout=seconds, metadata=self._metadata)
        witness = _StatusWitness(call)
        feed = _FeedState()
        writer = asyncio.create_task(
            _write_stream(call, items, model, ordered, color_order, feed, page_options)
        )
        try:
            while True:
                try:
                    response = await call.read()
                except asyncio.CancelledError:
                    # grpc.aio reports a locally cancelled call as CancelledError: when the
                    # writer cancelled it and this task is not itself being cancelled,
                    # raise the writer's error.
                    task = asyncio.current_task()
                    if feed.error is not None and (task is None or task.cancelling() == 0):
                        raise feed.error from None
                    raise
                except grpc.RpcError as err:
                    if feed.error is not None:
                        raise feed.error from None
                    real = await witness.real(err)
                    raise from_rpc_error(real) from real
                if response is grpc.aio.EOF:
                    break
                yield StreamItemResult.from_proto(response)
        finally:
            call.cancel()  # no-op once the call has ended; frees the server otherwise
            writer.cancel()
        if feed.error is not None:
            raise feed.error

    async def recognize_page(
        self,
        image: ImageInput,
        *,
        model: str = "",
        options: PageOptions | None = None,
        color_order: ColorOrder | str = "rgb",
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> PageResult:
        """See :meth:`OcrClient.recognize_page`. A path is read off the event loop."""
        seconds = self._deadline(timeout)
        stub = self._get_stub()
        request = await _build_request(
            _is_path(image), _page_request, image, model, options, color_order
        )
        with _rpc_errors():
            response: PageResult = await stub.RecognizePage(
                request, timeout=seconds, metadata=self._metadata
            )
        return response

    async def recognize_document(
        self,
        data: DocumentInput,
        *,
        model: str = "",
        options: PageOptions | None = None,
        pdf_dpi: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AsyncGenerator[PageResult, None]:
        """See :meth:`OcrClient.recognize_document`: an async iterator of pages in page order.
        A path is read off the event loop. To stop early, ``await aclose()`` the generator."""
        seconds = self._deadline(timeout)
        stub = self._get_stub()
        request = await _build_request(
            _is_path(data), _document_request, data, model, options, pdf_dpi
        )
        call = stub.RecognizeDocument(request, timeout=seconds, metadata=self._metadata)
        try:
            with _rpc_errors():
                async for page in call:
                    yield page
        finally:
            call.cancel()  # no-op once the call has ended; frees the server otherwise

    async def _list_models(self, timeout: float | None) -> ocr_pb2.ListModelsResponse:  # noqa: ASYNC109
        """See :meth:`OcrClient._list_models`."""
        with _rpc_errors():
            return await self._get_stub().ListModels(
                ocr_pb2.ListModelsRequest(),
                timeout=self._deadline(timeout),
                metadata=self._metadata,
            )

    async def list_models(self, timeout: float | None = None) -> list[ModelInfo]:  # noqa: ASYNC109
        """The models this server serves (one has ``is_default``)."""
        return [ModelInfo.from_proto(m) for m in (await self._list_models(timeout)).models]

    async def server_limits(self, timeout: float | None = None) -> ocr_pb2.ServerLimits:  # noqa: ASYNC109
        """See :meth:`OcrClient.server_limits`."""
        return (await self._list_models(timeout)).limits

    async def get_stats(self, timeout: float | None = None) -> ocr_pb2.GetStatsResponse:  # noqa: ASYNC109
        """The micro-batchers' counters, as the proto message (a diagnostics call)."""
        request = ocr_pb2.GetStatsRequest()
        with _rpc_errors():
            return await self._get_stub().GetStats(
                request, timeout=self._deadline(timeout), metadata=self._metadata
            )

    async def check_health(self, service: str = "", timeout: float | None = None) -> str:  # noqa: ASYNC109
        """See :meth:`OcrClient.check_health`."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            response = await self._get_health().Check(
                request, timeout=self._deadline(timeout), metadata=self._metadata
            )
        except grpc.RpcError as err:
            return _health_failure(err)
        return _health_status(response.status)
