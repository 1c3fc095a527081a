"""Domain errors of the inference server, and the one middleware that turns every error into JSON.

Role: the data plane and the protocol faces raise these (or the runtime's ``InvalidInput``);
``error_middleware`` (installed by ``web_app.make_app``) maps them, aiohttp's own HTTP errors and
any unexpected exception to ``{"error": "..."}`` with the right status and headers. No other
module writes an error response.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from aiohttp import web
from aiohttp.typedefs import Handler

from fpgaserve.runtime.protocol import InvalidInput

__all__ = [
    "InferenceTimeout",
    "InvalidRequest",
    "ModelNotFound",
    "ModelNotReady",
    "PayloadTooLarge",
    "QueueFull",
    "RequestTimeout",
    "ServerError",
    "Unauthorized",
    "UnsupportedMediaType",
    "error_middleware",
    "error_response",
]

logger = logging.getLogger(__name__)


class ServerError(Exception):
    """An error with an HTTP status; ``headers`` go out with the response."""

    status: ClassVar[int] = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class InvalidRequest(ServerError):
    """A malformed request: bad JSON, a missing field, a wrong shape or dtype."""

    status = 400


class Unauthorized(ServerError):
    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="fpgaserve"'})


class ModelNotFound(ServerError):
    status = 404


class RequestTimeout(ServerError):
    """The request body did not arrive in time."""

    status = 408


class PayloadTooLarge(ServerError):
    status = 413


class UnsupportedMediaType(ServerError):
    status = 415


class ModelNotReady(ServerError):
    status = 503

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class QueueFull(ServerError):
    status = 503

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class InferenceTimeout(ServerError):
    status = 504


def error_response(status: int, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """The one shape of every error body: ``{"error": message}``."""
    return web.json_response({"error": message}, status=status, headers=headers)


def _http_exception_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no route {request.method} {request.path}; the API is described at /openapi.json"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"method {request.method} is not allowed on {request.path}; allowed: {allowed}"
    if exc.status == 413:
        return f"request body too large: {exc.text}; send fewer or smaller inputs per request"
    text = exc.text or exc.reason
    # aiohttp's default texts read "404: Not Found"; keep only the explanation.
    return text.split(": ", 1)[-1] if text.startswith(f"{exc.status}: ") else text


# Headers of aiohttp's exceptions that still mean something on a JSON error response.
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every error raised below to a JSON body; 5xx are logged with their traceback."""
    try:
        return await handler(request)
    except ServerError as exc:
        if exc.status >= 500:
            logger.warning("%s %s: %s", request.method, request.path, exc.message)
        return error_response(exc.status, exc.message, headers=exc.headers)
    except InvalidInput as exc:
        return error_response(400, str(exc))  # names the input when it is known
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and other non-errors pass through untouched
        headers = {key: exc.headers[key] for key in _KEPT_HEADERS if key in exc.headers}
        return error_response(exc.status, _http_exception_message(request, exc), headers=headers)
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal server error; the server log has the details")
