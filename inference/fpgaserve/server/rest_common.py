"""What every REST face shares: the app keys, bounded body reading, JSON parsing.

Role: ``rest_score``, ``rest_v2``, ``rest_tfserving`` and ``rest_probes`` read their request bodies
and the data plane through these, so that size limits, read timeouts and JSON errors behave the
same on every route.
"""

from __future__ import annotations

import asyncio
import json
from importlib import metadata
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from fpgaserve.server.dataplane import DataPlane
from fpgaserve.server.errors import InvalidRequest, PayloadTooLarge, RequestTimeout
from fpgaserve.server.settings import ServerSettings

__all__ = [
    "DATAPLANE_KEY",
    "SETTINGS_KEY",
    "json_text",
    "json_text_response",
    "package_version",
    "parse_json",
    "read_body",
    "read_json",
]

DATAPLANE_KEY = web.AppKey("dataplane", DataPlane)
SETTINGS_KEY = web.AppKey("settings", ServerSettings)


async def read_body(request: web.Request) -> bytes:
    """The whole body, refused early when Content-Length is over the limit; bounded in time."""
    settings = request.app[SETTINGS_KEY]
    length = request.content_length
    if length is not None and length > settings.max_body_bytes:
        raise PayloadTooLarge(
            f"request body of {length} bytes exceeds the limit of {settings.max_body_bytes} bytes "
            "(--max-body-bytes); send fewer or smaller inputs per request"
        )
    try:
        return await asyncio.wait_for(request.read(), settings.request_timeout_s)
    except asyncio.TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {settings.request_timeout_s:g} s"
        ) from None
    except RequestPayloadError:
        # The client's mistake (bad chunked encoding, fewer bytes than Content-Length), not a bug:
        # a 400, and no traceback in the log.
        raise InvalidRequest(
            "the request body is malformed: its chunked encoding or Content-Length is invalid"
        ) from None


def parse_json(body: bytes) -> Any:
    """Parse a JSON document; ``InvalidRequest`` saying where it broke."""
    if not body.strip():
        raise InvalidRequest("the body is empty; send a JSON document")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidRequest("the JSON document is nested too deeply") from None


async def read_json(request: web.Request) -> Any:
    """The body as JSON (any content type: clients often omit it)."""
    return parse_json(await read_body(request))


def package_version() -> str:
    """The installed fpgaserve version, as /v2 and the OpenAPI document report it."""
    try:
        return metadata.version("fpgaserve")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def json_text(document: dict[str, Any], **raw: str) -> str:
    """``document`` as JSON, with ``raw`` members appended as already-encoded JSON text.

    Outputs are encoded by ``codec.floats_json`` (fast); everything else by ``json.dumps``.
    """
    text = json.dumps(document)
    if not raw:
        return text
    members = ",".join(f"{json.dumps(key)}:{value}" for key, value in raw.items())
    return f"{text[:-1]},{members}}}" if document else f"{{{members}}}"


def json_text_response(text: str, *, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=text, content_type="application/json", headers=headers)
