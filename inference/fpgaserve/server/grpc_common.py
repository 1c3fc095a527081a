"""What every gRPC face shares: the call context, key checks, timing, and the one error mapping.

Role: ``grpc_v2`` and ``grpc_tfserving`` write plain ``async def method(request, services)``
functions and register them with ``unary_method``; the wrapper made here checks the caller's key
(``authorization: Bearer <key>`` metadata, against the same ``KeyStore`` as HTTP), times the call
into ``ServerMetrics``, and turns every domain error into a gRPC status, once, in ``grpc_status``:
the same errors (``errors.py``) that the HTTP faces turn into HTTP statuses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from fpgaserve.runtime.protocol import InvalidInput
from fpgaserve.server.auth import KeyStore, authenticate
from fpgaserve.server.dataplane import DataPlane
from fpgaserve.server.errors import (
    InferenceTimeout,
    InvalidRequest,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    QueueFull,
    RequestTimeout,
    ServerError,
    Unauthorized,
    UnsupportedMediaType,
)
from fpgaserve.server.metrics import ServerMetrics
from fpgaserve.server.settings import ServerSettings

__all__ = ["RETRY_PUSHBACK_KEY", "GrpcServices", "Method", "grpc_status", "unary_method"]

logger = logging.getLogger(__name__)

# gRPC's standard server pushback trailer: the client's retry policy waits this many milliseconds.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


@dataclass(frozen=True, kw_only=True)
class GrpcServices:
    """What a gRPC method reaches: the data plane, settings, metrics and (with auth) the keys."""

    plane: DataPlane
    settings: ServerSettings
    metrics: ServerMetrics
    keystore: KeyStore | None


Method = Callable[[Any, GrpcServices], Awaitable[Any]]

_STATUS_OF: tuple[tuple[type[ServerError], grpc.StatusCode], ...] = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (UnsupportedMediaType, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthorized, grpc.StatusCode.UNAUTHENTICATED),
    (ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (RequestTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
    (InferenceTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
    (PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ModelNotReady, grpc.StatusCode.UNAVAILABLE),
    (QueueFull, grpc.StatusCode.UNAVAILABLE),
)


def grpc_status(exc: Exception) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """The status code, message and trailing metadata of an error raised below a gRPC method."""
    if isinstance(exc, InvalidInput):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), ()  # names the input when it is known
    if isinstance(exc, ServerError):
        code = next((c for kind, c in _STATUS_OF if isinstance(exc, kind)), grpc.StatusCode.INTERNAL)
        trailers: tuple[tuple[str, str], ...] = ()
        retry_after = exc.headers.get("Retry-After")
        if retry_after is not None:
            trailers = ((RETRY_PUSHBACK_KEY, str(int(float(retry_after) * 1000))),)
            return code, f"{exc.message} (retry after {retry_after} s)", trailers
        return code, exc.message, trailers
    return grpc.StatusCode.INTERNAL, "internal server error; the server log has the details", ()


def _authorization(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None


def _check_key(services: GrpcServices, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    store = services.keystore
    if store is None:
        return
    authorization = _authorization(context)
    try:
        authenticate(store, authorization)  # no valid key at all (keys file emptied): UNAVAILABLE
    except Unauthorized:
        services.metrics.auth_failures.inc()
        if not authorization:
            raise Unauthorized("missing key: send the metadata 'authorization: Bearer <key>'") from None
        raise Unauthorized("invalid key: send 'authorization: Bearer <key>' with a current key") from None


def unary_method(
    method: Method,
    *,
    full_name: str,
    services: GrpcServices,
    request_class: Any,
    response_class: Any,
    open_method: bool = False,
) -> grpc.RpcMethodHandler:
    """A unary-unary handler running ``method`` behind the key check, timing and error mapping."""

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if not open_method:
                _check_key(services, context)
            return await method(request, services)
        except Exception as exc:
            code, message, trailers = grpc_status(exc)
            if code is grpc.StatusCode.INTERNAL and not isinstance(exc, ServerError):
                logger.exception("%s failed", full_name)
            elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                logger.warning("%s: %s", full_name, message)
            context.set_trailing_metadata(trailers)
            await context.abort(code, message)
            raise  # unreachable: abort raises
        except BaseException:
            code = grpc.StatusCode.CANCELLED  # the client went away first
            raise
        finally:
            services.metrics.observe_grpc(
                method=full_name, code=code.name, seconds=time.perf_counter() - start
            )

    return grpc.unary_unary_rpc_method_handler(
        handle,
        request_deserializer=request_class.FromString,
        response_serializer=response_class.SerializeToString,
    )
