"""The HTTP connection layer: slow clients, too many connections, and malformed requests.

Role: ``server_main`` serves through ``GuardedAppRunner`` instead of ``web.AppRunner``; each
connection is then a ``GuardedRequestHandler`` (aiohttp's protocol object), which adds what aiohttp
lacks in front of the app:

- a header timeout: a connection that has not sent a complete request head within
  ``header_timeout_s`` of connecting, or of starting one, is closed (slowloris);
- a cap on open connections: one more is answered 503 and closed before anything is parsed;
- malformed requests (aiohttp's parser errors) answered with a JSON 400 that names the kind of
  problem but never echoes the request (a header may hold a key), logged as one line without a
  stack: a warning the first time for each kind, debug after that.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    ContentLengthError,
    HttpProcessingError,
    InvalidHeader,
    LineTooLong,
    TransferEncodingError,
)
from aiohttp.web_protocol import RequestHandler

__all__ = ["ConnectionLimits", "GuardedAppRunner", "GuardedRequestHandler", "describe_parse_error"]

logger = logging.getLogger(__name__)

# Idle keep-alive connections are closed after this long (aiohttp's own default is an hour, which
# would let idle connections hold the connection cap).
KEEPALIVE_TIMEOUT_S = 75.0


class ConnectionLimits:
    """What each connection of one server enforces (``ServerSettings`` values)."""

    def __init__(self, *, header_timeout_s: float, max_connections: int) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.warned: set[str] = set()  # kinds of malformed request already logged at WARNING


def describe_parse_error(exc: BaseException | None) -> str:
    """What was wrong with a request the parser refused, without any of the request's bytes."""
    if isinstance(exc, LineTooLong):
        return "the request line or a header is too long (limit 8190 bytes)"
    if isinstance(exc, InvalidHeader):
        return "a header name or value is invalid (control characters and bare CR/LF are refused)"
    if isinstance(exc, (BadHttpMethod, BadStatusLine)):
        return "the request line is not HTTP/1.x"
    if isinstance(exc, (ContentLengthError, TransferEncodingError)):
        return "the body framing (Content-Length or Transfer-Encoding) is invalid"
    if isinstance(exc, BadHttpMessage):
        return "the request is not valid HTTP/1.x"
    return "the request could not be processed"


def _raw_response(status: int, reason: str, message: str, *, headers: dict[str, str] | None = None) -> bytes:
    body = json.dumps({"error": message}).encode()
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol with a header timeout, a connection cap and quiet, safe errors."""

    def __init__(self, manager: web.Server, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._server = manager
        self._limits = limits
        self._header_timer: asyncio.TimerHandle | None = None
        self._requests_seen = 0
        self._partial = False  # bytes arrived that did not complete a request head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if len(self._server.connections) > self._limits.max_connections:
            logger.debug("refusing a connection: %d open (--max-connections)", self._limits.max_connections)
            refusal = _raw_response(
                503,
                "Service Unavailable",
                f"too many open connections (limit {self._limits.max_connections}, --max-connections); "
                "retry shortly",
                headers={"Retry-After": "1"},
            )
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(refusal)
            self.force_close()  # closes the transport once the refusal is flushed
            return
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count == before and not self._request_in_progress:
            self._partial = True

    def _arm_header_timer(self) -> None:
        self._requests_seen = self._request_count
        self._partial = False
        self._header_timer = self._loop.call_later(self._limits.header_timeout_s, self._check_headers)

    def _check_headers(self) -> None:
        """Close the connection if it spent a whole period without completing a request head:
        either it never sent one, or it sent part of one; an idle keep-alive connection stays."""
        self._header_timer = None
        if self.transport is None or self._force_close:
            return
        stalled = self._request_count == self._requests_seen and not self._request_in_progress
        if stalled and (self._requests_seen == 0 or self._partial):
            logger.debug(
                "closing a connection: no complete request head within %g s (--header-timeout-s)",
                self._limits.header_timeout_s,
            )
            self.force_close()
            return
        self._arm_header_timer()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's parser errors (and any error it handles itself) as a JSON error body.

        aiohttp's own version logs a traceback at ERROR and echoes the parser's message, which
        quotes the offending line, header value included.
        """
        if isinstance(exc, HttpProcessingError) or status < 500:
            description = describe_parse_error(exc)
            kind = type(exc).__name__ if exc is not None else str(status)
            if kind not in self._limits.warned:
                self._limits.warned.add(kind)
                logger.warning(
                    "malformed request (%s): %s; further ones of this kind are logged at DEBUG",
                    kind,
                    description,
                )
            else:
                logger.debug("malformed request (%s): %s", kind, description)
            text = f"malformed request: {description}"
        else:
            logger.error("error handling a request: %s", type(exc).__name__ if exc else status)
            text = "internal server error; the server log has the details"
        if request.writer.output_size > 0:
            raise ConnectionError("the response is already under way; cannot send an error")
        response = web.json_response({"error": text}, status=status)
        response.force_close()
        return response


class _GuardedServer(web.Server):
    """aiohttp's low-level server, making ``GuardedRequestHandler`` connections."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, limits=self._limits, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are ``GuardedRequestHandler``s."""

    def __init__(self, app: web.Application, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT_S)
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app; its handler and request factory
        return _GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            limits=self._limits,
            **plain._kwargs,  # the handler arguments aiohttp assembled (loggers, keep-alive, ...)
        )
