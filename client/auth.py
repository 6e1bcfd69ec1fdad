"""Client side of the server's security: TLS credentials from files, and bearer tokens.

A token travels as the metadata ``authorization: Bearer <token>`` on every call. It is added
by a channel interceptor (blocking client) or with each call (asyncio client, see
``AsyncOcrClient``) rather than by gRPC's call credentials, because gRPC refuses call
credentials on plaintext channels, and a token over plaintext is legitimate on loopback or
behind a TLS-terminating proxy. Over the internet, use TLS as well.
"""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path
from typing import Any

import grpc


def tls_credentials(
    ca: str | Path | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
) -> grpc.ChannelCredentials:
    """TLS channel credentials: ``ca`` to trust (default: the system roots), and for mutual
    TLS a client certificate chain ``cert`` with its private ``key`` (PEM files)."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs both cert and key")

    def read(path: str | Path | None) -> bytes | None:
        return Path(path).read_bytes() if path is not None else None

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert)
    )


class _Details(
    namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


def _bearer_header(token: str) -> tuple[str, str]:
    if not token:
        raise ValueError("the token is empty")
    return ("authorization", f"Bearer {token}")


def _with_token(details: Any, header: tuple[str, str]) -> _Details:
    metadata = [*(details.metadata or ()), header]
    return _Details(
        details.method,
        details.timeout,
        metadata,
        details.credentials,
        details.wait_for_ready,
        getattr(details, "compression", None),
    )


class BearerTokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call of a blocking channel."""

    def __init__(self, token: str) -> None:
        self._header = _bearer_header(token)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_token(details, self._header), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_token(details, self._header), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_with_token(details, self._header), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_with_token(details, self._header), requests)


def bearer_metadata(token: str) -> tuple[tuple[str, str]]:
    """``authorization: Bearer <token>`` as one call's metadata (the asyncio client sends
    it with every call)."""
    return (_bearer_header(token),)
