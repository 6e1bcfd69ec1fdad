"""Transport security and authentication: TLS / mutual TLS credentials and bearer tokens.

* TLS: a certificate chain and key from files; with a client CA the server requires and
  verifies client certificates (mutual TLS), so only holders of a certificate signed by that
  CA can connect at all.
* Tokens: when tokens are configured, every call except the health service must carry the
  metadata ``authorization: Bearer <token>`` with one of them, or it is answered
  UNAUTHENTICATED before any handler runs. Health stays open so load balancers and
  Kubernetes probes need no secret. Tokens are compared in constant time.

Tokens come from a file (one per line, ``#`` comments) or the ``OCR_AUTH_TOKENS`` environment
variable (comma-separated), never from a command-line flag, which any local user can read in
the process list.
"""

from __future__ import annotations

import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from ocr_server.logs import request_id_of, request_id_var

log = logging.getLogger(__name__)

#: Method-name prefixes reachable without a token.
OPEN_SERVICES = ("/grpc.health.v1.Health/",)


class SecurityConfigError(ValueError):
    """A TLS or token setting that cannot work; the message says which file and why."""


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    if not data.strip():
        raise SecurityConfigError(f"the {what} {path} is empty")
    return data


def server_credentials(
    cert: Path | None, key: Path | None, client_ca: Path | None
) -> grpc.ServerCredentials | None:
    """TLS credentials from PEM files, or None for plaintext (no cert and no key given)."""
    if cert is None and key is None:
        if client_ca is not None:
            raise SecurityConfigError(
                "--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first"
            )
        return None
    if cert is None or key is None:
        raise SecurityConfigError("TLS needs both --tls-cert and --tls-key")
    chain = _read(cert, "TLS certificate")
    private_key = _read(key, "TLS private key")
    if b"PRIVATE KEY" not in private_key:
        raise SecurityConfigError(f"the TLS private key {key} is not a PEM private key")
    if b"CERTIFICATE" not in chain:
        raise SecurityConfigError(f"the TLS certificate {cert} is not a PEM certificate")
    roots = _read(client_ca, "client CA") if client_ca is not None else None
    _check_with_openssl(cert, key, client_ca)
    return grpc.ssl_server_credentials(
        [(private_key, chain)],
        root_certificates=roots,
        require_client_auth=roots is not None,
    )


def _no_password() -> bytes:
    return b""  # an encrypted key then fails to load, with a reason, instead of prompting


def _check_with_openssl(cert: Path, key: Path, client_ca: Path | None) -> None:
    """Load the files as a TLS server will, before the models load: gRPC itself finds a
    key that is not the certificate's, or a broken CA, only when it binds, and then says
    the port is in use."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as exc:
        raise SecurityConfigError(
            f"the TLS certificate {cert} and key {key} cannot be used together "
            f"({exc.reason or exc}): the key must be the certificate's own, unencrypted, "
            "and the certificate file must start with the server's certificate"
        ) from None
    if client_ca is None:
        return
    try:
        context.load_verify_locations(cafile=str(client_ca))
    except ssl.SSLError as exc:
        raise SecurityConfigError(
            f"the client CA {client_ca} holds no usable PEM certificate ({exc.reason or exc})"
        ) from None


def load_tokens(tokens_file: Path | None, env_tokens: str) -> frozenset[str]:
    """The accepted bearer tokens from a file and/or a comma-separated string; may be empty."""
    tokens: set[str] = set()
    if tokens_file is not None:
        try:
            # utf-8-sig: a byte-order mark (Windows Notepad) is not part of the first token
            text = _read(tokens_file, "tokens file").decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SecurityConfigError(
                f"the tokens file {tokens_file} is not UTF-8 text (byte {exc.start})"
            ) from None
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                tokens.add(line)
        if not tokens:
            raise SecurityConfigError(f"the tokens file {tokens_file} holds no token")
    tokens.update(t.strip() for t in env_tokens.split(",") if t.strip())
    unsendable = [t for t in tokens if not all("!" <= ch <= "~" for ch in t)]
    if unsendable:
        # gRPC metadata values are printable ASCII: no client could ever send such a token.
        raise SecurityConfigError(
            f"{len(unsendable)} token(s) with characters other than printable ASCII "
            "(spaces, accents, control characters); clients cannot send them"
        )
    short = [t for t in tokens if len(t) < 16]
    if short:
        raise SecurityConfigError(
            f"{len(short)} token(s) shorter than 16 characters; use long random tokens "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return frozenset(tokens)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Answers UNAUTHENTICATED, before the handler runs, to calls without a valid token."""

    def __init__(
        self, tokens: Iterable[str], on_refused: Callable[[str], None] | None = None
    ) -> None:
        """``on_refused(method)`` is told of each refused call (its short name, as the
        metrics count calls), since no handler of the server's own sees it."""
        self._tokens = [t.encode() for t in tokens]
        self._on_refused = on_refused
        if not self._tokens:
            raise ValueError("TokenAuthInterceptor needs at least one token")

    def _authorised(self, metadata: Iterable[tuple[str, Any]] | None) -> bool:
        for key, value in metadata or ():
            if key != "authorization":
                continue
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer":
                return False
            offered = token.strip().encode()
            # Compare with every token, always, so timing says nothing about which matched.
            return any([hmac.compare_digest(offered, t) for t in self._tokens])
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        if self._authorised(handler_call_details.invocation_metadata):
            return handler
        if self._on_refused is not None:
            self._on_refused(method.rsplit("/", 1)[-1])
        return _refusing(handler, method)


_REFUSAL = (
    "missing or invalid credentials: send the metadata 'authorization: Bearer <token>' "
    "with a token this server accepts"
)


def _refusing(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that answers UNAUTHENTICATED.

    It logs the refusal and sends the call's request id back, as every other answer does,
    so that a client's log line and the server's can be matched.
    """

    async def abort(context: grpc.aio.ServicerContext) -> None:
        rid = request_id_of(context.invocation_metadata())
        request_id_var.set(rid)
        log.info(
            "%s UNAUTHENTICATED: missing or invalid bearer token",
            method,
            extra={"method": method.rsplit("/", 1)[-1], "status": "UNAUTHENTICATED"},
        )
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL, (("x-request-id", rid),))

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await abort(context)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context)
        yield  # pragma: no cover - abort raises; this makes the function a generator

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_stream)
    return grpc.unary_unary_rpc_method_handler(refuse)
